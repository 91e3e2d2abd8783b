"""Lifecycle driven from outside, the "no input" warning, and start-up failures (real processes)."""

import json

from ros_graph import (
    node_params,
    ros_env,
    run_helper,
    start_node,
    stored_ids,
    wait_idle,
)

from spartan_ros.memory.store import SegmentStore


def transitions(env, *names: str) -> list[tuple[bool, str]]:
    lines = run_helper(env, "lifecycle", "/spartan", *names)
    return [(x["success"], x["state"]) for x in lines]


def test_lifecycle_transitions_from_a_manager(tmp_path, model_dir):
    env = ros_env()
    node = start_node(tmp_path, env, *node_params(model_dir, tmp_path / "memory.db",
                                                  autostart=False))
    try:
        node.wait_for_output("waiting for a lifecycle manager (autostart is false)")
        assert transitions(env, "configure", "activate") == [(True, "inactive"),
                                                             (True, "active")]
        assert "configured: model" in node.output()
        [empty] = run_helper(env, "call", json.dumps([{"text": "a road"}]))
        assert not empty["success"] and empty["message"] == "memory is empty"

        assert transitions(env, "deactivate", "cleanup") == [(True, "inactive"),
                                                             (True, "unconfigured")]
        assert "inactive: ingest and ~/query stopped" in node.output()
        assert "cleaned up: memory closed, model unloaded" in node.output()

        # configure again (reopens the same file) and ingest after re-activation
        assert transitions(env, "configure", "activate") == [(True, "inactive"),
                                                             (True, "active")]
        run_helper(env, "publish", "--seconds", "3.0", "--speed", "2")
        wait_idle(env)
        [answer] = run_helper(env, "call", json.dumps([{"text": "a road", "top_k": 100}]))
        assert answer["success"]
        assert sorted(s["id"] for s in answer["segments"]) == stored_ids(node.output())
        assert transitions(env, "deactivate") == [(True, "inactive")]
        assert node.alive()
    finally:
        node.stop()


def test_no_input_warns_with_topic_and_qos(tmp_path, model_dir):
    env = ros_env()
    node = start_node(tmp_path, env, *node_params(model_dir, input_timeout_s=1.0,
                                                  odom_topic="/vehicle/odom"))
    try:
        node.wait_for_output("no image on /image_raw (sensor_msgs/Image) for ")
        node.wait_for_output("no odometry on /vehicle/odom (nav_msgs/Odometry) for ")
        assert "subscribed with QoS reliable, keep last 50; no publisher" in node.output()
        [msg] = run_helper(env, "echo", "/diagnostics", "diagnostic_msgs/msg/DiagnosticArray",
                           "--contains", "no odometry on /vehicle/odom")
        ingest = msg["status"][0]
        assert ingest["level"] == [1]  # WARN
        assert "no image on /image_raw" in ingest["message"]
        assert node.alive()
    finally:
        node.stop()


def test_model_mismatch_exits_with_one_readable_line(tmp_path, model_dir):
    memory = tmp_path / "memory.db"
    SegmentStore(memory, "another-model-hash", 128).close()  # written by some other model
    env = ros_env()
    node = start_node(tmp_path, env, *node_params(model_dir, memory))
    code = node.popen.wait(60)
    out = node.output()
    node.stop()
    assert code == 1
    errors = [line for line in out.splitlines() if "ERROR" in line or "FATAL" in line]
    assert len(errors) == 1, out
    assert "holds segments encoded by model 'another-model-hash'" in errors[0]
    assert "re-index" in errors[0] and "new (or empty) file" in errors[0]
    assert "Traceback" not in out


def test_missing_model_dir_exits_with_one_readable_line(tmp_path):
    env = ros_env()
    node = start_node(tmp_path, env, *node_params(tmp_path / "no_such_model"))
    code = node.popen.wait(60)
    out = node.output()
    node.stop()
    assert code == 1
    errors = [line for line in out.splitlines() if "ERROR" in line or "FATAL" in line]
    assert len(errors) == 1 and "no_such_model' does not exist" in errors[0], out
    assert "spartan-export" in errors[0] and "Traceback" not in out
