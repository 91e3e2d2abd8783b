"""The node ingesting a live drive over DDS and answering queries about it (real processes)."""

import json
import math

import pytest
from ros_graph import (
    QUAT,
    START_NS,
    drive_position,
    node_params,
    query,
    ros_env,
    run_helper,
    start_node,
    stored_ids,
    wait_idle,
)


def check_segment(seg: dict) -> None:
    """Stamps from the headers, the path in the odometry frame at those stamps."""
    assert seg["frame_count"] == 24 and len(seg["path"]) == 24
    assert seg["frame_id"] == "odom" and seg["path_frames"] == ["odom"]
    stamps = seg["path_stamps_ns"]
    assert stamps[0] == seg["start_ns"] and stamps[-1] == seg["end_ns"]
    # frames at 10 Hz on the 20 Hz camera's stamps (inner stamps exact to ~250 ns: the float64
    # seconds of the stored rows). When DDS loses a frame under load (best effort), the sampler
    # takes the next one and keeps its 100 ms grid: one 150 ms step, then one 50 ms step.
    for a, b in zip(stamps, stamps[1:], strict=False):
        steps = round((b - a) / 50_000_000)
        assert steps in (1, 2, 3) and abs(b - a - steps * 50_000_000) < 1000
    assert (seg["start_ns"] - START_NS) % 50_000_000 == 0
    for stamp, xyz in zip(stamps, seg["path"], strict=True):
        assert xyz == pytest.approx(drive_position(stamp), abs=1e-5)  # interpolated exactly
    assert seg["start_position"] == seg["path"][0]
    span = (seg["end_ns"] - seg["start_ns"]) * 1e-9
    assert span >= 2.3 - 1e-9
    assert seg["distance"] == pytest.approx(span * math.hypot(5.0, 1.0), rel=1e-5)


def test_segments_are_stored_and_found(tmp_path, model_dir):
    env = ros_env()
    # a long input timeout: the "no input" warning after the drive must not turn diagnostics WARN
    node = start_node(tmp_path, env, *node_params(model_dir, tmp_path / "memory.db",
                                                  input_timeout_s=600.0))
    try:
        node.wait_for_output("active: ingesting /image_raw and /odom; serving /spartan/query")
        [sent] = run_helper(env, "publish", "--seconds", "5.0", "--speed", "2")
        assert sent["images"] == 101
        diag = wait_idle(env)
        ids = stored_ids(node.output())
        n = len(ids)
        assert n >= 4 and ids == list(range(1, n + 1))  # 5 unless DDS lost the first frames

        ingest, memory = diag["ingest"], diag["memory"]
        assert ingest["_level"] == "0" and ingest["provider"] == "CPUExecutionProvider"
        assert int(ingest["frames taken"]) >= 42 and int(ingest["segments stored"]) == n
        assert float(ingest["inference ms per frame (mean)"]) > 0
        assert memory["segments"] == str(n) and memory["last segment id"] == str(n)

        since = START_NS + 1_000_000_000
        trajectory = [[1.0 + t, 5 * t, t, 0.0, *QUAT] for t in (0.0, 0.5, 1.0, 1.5, 2.0)]
        requests = [
            {"text": "a straight road", "top_k": 100},
            {"text": "a straight road", "top_k": 2},
            {"text": "a straight road", "top_k": 100, "since_ns": since},
            {"text": "a straight road", "top_k": 100, "near": [0, 0, 0], "radius": 1.5},
            {"text": "a straight road", "top_k": 100, "trajectory": trajectory},
            {"text": "a straight road"},  # top_k 0: default_top_k (5)
        ]
        every, two, late, near, traj, default = run_helper(env, "call", json.dumps(requests))
        for answer in (every, two, late, near, traj, default):
            assert answer["success"], answer["message"]
        assert sorted(s["id"] for s in every["segments"]) == ids and every["candidates"] == n
        assert [s["rank"] for s in every["segments"]] == list(range(n))
        scores = [s["score"] for s in every["segments"]]
        assert scores == sorted(scores, reverse=True)
        for seg in every["segments"]:
            check_segment(seg)
        assert [s["id"] for s in two["segments"]] == [s["id"] for s in every["segments"][:2]]
        assert all(s["start_ns"] >= since for s in late["segments"])
        assert late["candidates"] == sum(s["start_ns"] >= since for s in every["segments"])
        assert near["candidates"] == 1 and near["segments"][0]["path"][0][0] < 1.5
        assert sorted(s["id"] for s in traj["segments"]) == ids
        assert len(default["segments"]) == min(5, n)

        # the CLI client, then the latched markers of its answer (what RViz shows)
        tum = tmp_path / "motion.tum"
        tum.write_text("# t x y z qx qy qz qw\n" + "".join(
            " ".join(map(str, row)) + "\n" for row in trajectory))
        cli = query(env, "a straight road", "--top-k", "3", "--trajectory", str(tum))
        assert cli["success"] and len(cli["segments"]) == 3
        assert [s["id"] for s in cli["segments"]] == [s["id"] for s in traj["segments"][:3]]
        [markers] = run_helper(env, "echo", "/spartan/matches",
                               "visualization_msgs/msg/MarkerArray", "--transient-local")
        kinds = [m["type"] for m in markers["markers"]]
        assert kinds == [0, 4, 9, 4, 9, 4, 9] and markers["markers"][0]["action"] == 3
        lines = markers["markers"][1::2]
        assert all(m["header"]["frame_id"] == "odom" and len(m["points"]) == 24 for m in lines)
        assert markers["markers"][2]["text"].startswith("#1 ")
        assert lines[0]["color"] != lines[-1]["color"]  # coloured by rank
        assert node.alive()
    finally:
        node.stop()


def test_compressed_images_sim_time_and_max_segments(tmp_path, model_dir):
    env = ros_env()
    params = node_params(model_dir, tmp_path / "memory.db", max_segments=2,
                         image_transport="compressed", use_sim_time=True)
    node = start_node(tmp_path, env, *params)
    try:
        # use_sim_time with no /clock at all: stamps come from the headers, ingest still works
        node.wait_for_output("active: ingesting /image_raw/compressed and /odom")
        run_helper(env, "publish", "--seconds", "5.0", "--speed", "2", "--compressed")
        diag = wait_idle(env)
        ids = stored_ids(node.output())
        assert len(ids) >= 4
        assert "evicted segments" in node.output()
        assert diag["memory"]["segments"] == "2"
        [answer] = run_helper(env, "call", json.dumps([{"text": "a road", "top_k": 100}]))
        assert sorted(s["id"] for s in answer["segments"]) == ids[-2:]  # the newest two
        assert int(diag["ingest"]["segments evicted"]) == len(ids) - 2
    finally:
        node.stop()
