"""configure/activate/deactivate/cleanup cycles with ingest running and queries in flight
(real processes over DDS). SPARTAN_LIFECYCLE_CYCLES sets the count (the benchmark runs 100)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

from ros_graph import helper, node_params, ros_env, run_helper, start_node, stored_ids

CYCLES = int(os.environ.get("SPARTAN_LIFECYCLE_CYCLES", "25"))  # about 60 s on 2 busy cores


def test_lifecycle_cycles_with_ingest_and_queries_in_flight(tmp_path, model_dir):
    env = ros_env()
    memory = tmp_path / "memory.db"
    node = start_node(tmp_path, env, *node_params(model_dir, memory, stride_frames=1))
    publisher = helper(env, tmp_path / "publisher.log", "publish", "--seconds", "600",
                       "--speed", "1")
    # The callers stop on their own (about the cycles' length) and say goodbye: killing them
    # instead (SIGINT left them hanging in DDS then, SIGKILL after it) preceded each run where
    # the node then did not answer a new caller for 30 s (three full-suite runs); not
    # reproduced since, and the node's threads are dumped below should it come back.
    hammer = helper(env, tmp_path / "hammer.log", "hammer", "--clients", "3", "--seconds",
                    "30", "--timeout", "20")
    try:
        node.wait_for_output("stored segment ", timeout=90)
        t0 = time.monotonic()
        lines = run_helper(env, "lifecycle", "/spartan", "deactivate", "cleanup", "configure",
                           "activate", "--repeat", str(CYCLES), "--hold", "1.0",
                           timeout=60 + 20 * CYCLES)
        took = time.monotonic() - t0
        assert len(lines) == 4 * CYCLES and all(x["success"] for x in lines), lines
        assert lines[-1]["state"] == "active"
        print(f"{CYCLES} cycles in {took:.1f} s")
        assert hammer.popen.wait(120) == 0, hammer.tail()
        # Still answering after the cycles (what is stored is checked in the file below).
        try:
            [answer] = run_helper(env, "call", json.dumps([{"text": "a road", "top_k": 20}]))
        except AssertionError as exc:
            node.popen.send_signal(signal.SIGUSR1)  # where each of its threads waits
            time.sleep(2.0)
            threads = node.output()[-12000:]
            raise AssertionError(f"unanswered; the node's threads:\n{threads}") from exc
        assert answer["success"], answer["message"]
        assert 1 <= len(answer["segments"]) <= 20
        assert node.alive()
    finally:
        publisher.stop()
        hammer.stop()
        node.stop()
    out = node.output()
    assert "Traceback" not in out and "InvalidHandle" not in out, out[-4000:]
    reported = stored_ids(out)
    assert reported
    with sqlite3.connect(memory) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = {r[0] for r in db.execute("SELECT id FROM segments")}
    assert set(reported) <= rows  # nothing stored was lost


def test_queries_in_flight_are_answered_or_refused_clearly(tmp_path, model_dir):
    """Three clients query without pause while the node cycles: every call gets an answer
    (a result, or 'not active'), none times out, none is an internal error."""
    env = ros_env()
    node = start_node(tmp_path, env, *node_params(model_dir, tmp_path / "memory.db"))
    publisher = helper(env, tmp_path / "publisher.log", "publish", "--seconds", "600")
    try:
        node.wait_for_output("stored segment ", timeout=90)
        hammer = helper(env, tmp_path / "hammer.log", "hammer", "--clients", "3", "--seconds",
                        "20", "--timeout", "20")
        run_helper(env, "lifecycle", "/spartan", "deactivate", "cleanup", "configure",
                   "activate", "--repeat", "8", "--hold", "1.0", timeout=400)
        assert hammer.popen.wait(120) == 0
        [summary] = [json.loads(x) for x in hammer.output().splitlines() if x.startswith("{")]
    finally:
        publisher.stop()
        node.stop()
    counts, messages = summary["counts"], summary["messages"]
    print(counts, messages)
    # Every call is answered: the clients' deep response history (QUERY_QOS) keeps each
    # client's answer among the others' (test_query_responses.py shows how it got lost).
    assert counts.get("timed out", 0) == 0, counts
    assert counts.get("answered", 0) > 0 and counts.get("refused", 0) > 0
    allowed = ("the node is not active", "memory is empty")
    assert all(m.startswith(allowed) for m in messages), messages
    assert "Traceback" not in node.output()


def test_a_best_effort_camera_is_still_heard_and_named(tmp_path, model_dir):
    """input_reliability auto: reliable by default; a best-effort publisher makes the node
    subscribe again best effort, with a warning naming the topic."""
    env = ros_env()
    node = start_node(tmp_path, env, *node_params(model_dir, tmp_path / "memory.db"))
    try:
        node.wait_for_output("active: ingesting")
        run_helper(env, "publish", "--seconds", "4.0", "--best-effort")
        node.wait_for_output("stored segment ", timeout=60)
        out = node.output()
        assert "a best-effort publisher on /camera/image_raw: subscribed best effort" in out
        assert "best-effort publisher on /odom" not in out  # odometry stayed reliable
    finally:
        node.stop()
