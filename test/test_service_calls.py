"""A new client's handshake with ~/query (real processes over DDS): it gives up at its deadline
while the node does not answer, keeps nothing pending, and succeeds once the node answers;
the lifecycle and parameter services take a harmless first request without a change."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from ros_graph import ros_env, run_helper, start_node

from spartan_ros import dds


def test_handshake_gives_up_on_a_stalled_node_and_succeeds_once_it_answers(tmp_path):
    env = ros_env()
    node = start_node(tmp_path, env)  # no model: a query is refused at once
    client = subprocess.Popen([sys.executable, str(Path(__file__).resolve())], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        node.wait_for_output("active: serving /spartan/query")
        assert client.stdout.readline().strip() == "ready"
        node.signal(signal.SIGSTOP)  # the node takes requests in but answers none
        try:
            client.stdin.write("go\n")
            client.stdin.flush()
            stalled = json.loads(client.stdout.readline())
        finally:
            node.signal(signal.SIGCONT)
        client.stdin.write("go\n")
        client.stdin.flush()
        resumed = json.loads(client.stdout.readline())
        assert client.wait(60) == 0
    finally:
        client.kill()
        node.stop()
    assert stalled["ok"] is False and 1.5 <= stalled["seconds"] < 5.0, stalled
    assert stalled["pending"] == 0  # what the node never answered is dropped
    assert resumed["ok"] is True, resumed
    assert resumed["answer"] == "memory is empty", resumed  # the real question, answered
    assert "Traceback" not in node.output()


def test_lifecycle_and_parameter_handshakes_change_nothing(tmp_path):
    env = ros_env(**dds.profile_env({}))  # as the launch file runs the node
    node = start_node(tmp_path, env, "-p", "autostart:=false")
    try:
        node.wait_for_output("waiting for a lifecycle manager")
        # Each helper handshakes first (an unknown transition label, an empty parameter list).
        [state] = run_helper(env, "lifecycle", "/spartan", "configure")
        [param] = run_helper(env, "set-params", "/spartan", json.dumps([["default_top_k", 7]]))
    finally:
        node.stop()
    assert state == {"transition": "configure", "success": True, "state": "inactive"}
    assert param["successful"], param
    out = node.output()
    assert "Traceback" not in out and "XMLPARSER" not in out, out  # Fast DDS took the profile


def _client() -> int:
    """Waits for the service, then for each "go" on stdin: a handshake (1.5 s, then 30 s) and,
    once it succeeds, one real question; prints a JSON line per handshake."""
    import rclpy
    from spartan_interfaces.srv import QuerySegments

    from spartan_ros.node.qos import QUERY_QOS
    from spartan_ros.node.query_client import query_handshake
    from spartan_ros.node.service_calls import node_spin

    rclpy.init()
    node = rclpy.create_node("handshake_client")
    client = node.create_client(QuerySegments, "/spartan/query", qos_profile=QUERY_QOS)
    assert client.wait_for_service(timeout_sec=60.0)
    print("ready", flush=True)
    spin = node_spin(node)
    for timeout in (1.5, 30.0):
        sys.stdin.readline()
        t0 = time.monotonic()
        ok = query_handshake(client, spin, timeout)
        # A request answered leaves the pending table on the next spin, one given up at once.
        line = {"ok": ok, "seconds": time.monotonic() - t0,
                "pending": len(client._pending_requests)}
        if ok:
            future = client.call_async(QuerySegments.Request(text="a road"))
            spin(future, 30.0)
            line["answer"] = future.result().message if future.done() else None
        print(json.dumps(line), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(_client())
