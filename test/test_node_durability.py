"""A segment the node reported stored survives SIGKILL mid-ingest (real processes, real SQLite)."""

import json
import signal
import sqlite3

from ros_graph import (
    helper,
    node_params,
    ros_env,
    run_helper,
    start_node,
    watch_segments,
)


def test_sigkill_mid_ingest_loses_no_reported_segment(tmp_path, model_dir):
    env = ros_env()
    memory = tmp_path / "memory.db"
    # stride 1: a commit for every taken frame, so the kill lands while segments are written
    params = node_params(model_dir, memory, stride_frames=1)
    node = start_node(tmp_path, env, *params, name="first")
    segments = watch_segments(tmp_path, env)
    publisher = helper(env, tmp_path / "publisher.log", "publish", "--seconds", "60",
                       "--speed", "2")
    try:
        segments.wait_for(4, timeout=90)
        # queries are answered while ingest runs, and only ever see whole segments
        [live] = run_helper(env, "call", json.dumps([{"text": "a road", "top_k": 10000}]))
        assert live["success"] and len(live["segments"]) >= 4
        assert all(s["frame_count"] == 24 and len(s["path"]) == 24 for s in live["segments"])
        segments.wait_for(8, timeout=90)
        node.signal(signal.SIGKILL)  # the whole process group, no chance to clean up
        node.popen.wait(10)
    finally:
        node.stop()
        publisher.stop()
        segments.stop()
    reported = segments.ids()  # each published after its commit
    assert len(reported) >= 8 and node.popen.returncode == -signal.SIGKILL

    again = start_node(tmp_path, env, *params, name="second")
    try:
        again.wait_for_output("active: ingesting")
        line = next(x for x in again.output().splitlines() if "configured:" in x)
        assert f"{memory} with " in line
        [answer] = run_helper(env, "call", json.dumps([{"text": "a road", "top_k": 10000}]))
        assert answer["success"], answer["message"]
        found = {s["id"] for s in answer["segments"]}
        assert set(reported) <= found
        for seg in answer["segments"]:
            assert seg["frame_count"] == 24 and len(seg["path"]) == 24
            assert 2_300_000_000 <= seg["end_ns"] - seg["start_ns"] < 4_000_000_000
    finally:
        again.stop()
    with sqlite3.connect(memory) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = {r[0] for r in db.execute("SELECT id FROM segments")}
    assert set(reported) <= rows
