"""The node ingesting a live drive over DDS and answering queries about it (real processes)."""

import json
import math

import pytest
from rclpy.qos import HistoryPolicy
from ros_graph import (
    QUAT,
    START_NS,
    drive_position,
    node_params,
    query,
    ros_env,
    run_helper,
    start_node,
    stored_count,
    wait_idle,
    watch_segments,
)

from spartan_ros.node.spartan_node import SEGMENTS_QOS


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


@pytest.mark.parametrize("backend", ["sqlite", "milvus"])
def test_segments_are_stored_and_found(tmp_path, model_dir, backend):
    env = ros_env()
    # Milvus: Milvus Lite embedded in the node, the engine (and API) of a Milvus server
    memory = {"memory_path": tmp_path / "memory.db"} if backend == "sqlite" else {
        "memory_backend": "milvus", "milvus_uri": tmp_path / "memory.db"}
    # a long input timeout: the "no input" warning after the drive must not turn diagnostics WARN
    node = start_node(tmp_path, env, *node_params(model_dir, input_timeout_s=600.0,
                                                  vehicle_id="car1", **memory))
    segments = watch_segments(tmp_path, env)
    try:
        node.wait_for_output(
            "active: ingesting /camera/image_raw and /odom; serving /spartan/query")
        [sent] = run_helper(env, "publish", "--seconds", "5.0", "--speed", "2")
        assert sent["images"] == 101
        diag = wait_idle(env)
        stored = segments.wait_for(stored_count(diag))
        ids = [s["id"] for s in stored]
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
        # the same motion as a planner sends it: a path with zero stamps, timed at a speed
        path = [[0.0, *row[1:]] for row in trajectory]
        requests += [
            {"text": "a straight road", "top_k": 100, "trajectory": path,
             "trajectory_speed": math.hypot(5.0, 1.0)},
            {"text": "a straight road", "top_k": 100, "trajectory": path},  # node default 5 m/s
        ]
        every, two, late, near, traj, default, timed, slow = run_helper(
            env, "call", json.dumps(requests))
        for answer in (every, two, late, near, traj, default, timed, slow):
            assert answer["success"], answer["message"]
        assert "without stamps" not in traj["message"]
        assert timed["message"] == (f"{n} of {n} candidates; trajectory without stamps timed "
                                    "along its 10.2 m at 5.09902 m/s (2.0 s)")
        assert slow["message"].endswith("timed along its 10.2 m at 5 m/s (2.0 s)")
        # timed at the drive's own speed, the path is the stamped trajectory again
        assert [s["id"] for s in timed["segments"]] == [s["id"] for s in traj["segments"]]
        assert [s["score"] for s in timed["segments"]] == pytest.approx(
            [s["score"] for s in traj["segments"]], abs=1e-5)
        assert sorted(s["id"] for s in every["segments"]) == ids and every["candidates"] == n
        # ~/segments: reliable, the last 100 kept for late joiners (DDS discovery does not carry
        # the depth: SEGMENTS_QOS is checked in-process), each segment as the query returns it
        [qos] = run_helper(env, "publishers", "/spartan/segments")
        assert (qos["type"], qos["reliability"], qos["durability"]) == (
            "spartan_interfaces/msg/Segment", "RELIABLE", "TRANSIENT_LOCAL")
        assert (SEGMENTS_QOS.history, SEGMENTS_QOS.depth) == (HistoryPolicy.KEEP_LAST, 100)
        joiner = watch_segments(tmp_path, env, name="late")  # joins after ingest: gets them all
        try:
            assert [s["id"] for s in joiner.wait_for(n)] == ids
        finally:
            joiner.stop()
        found = {s["id"]: s for s in every["segments"]}
        for seg in stored:
            assert seg["frame_count"] == 24 and seg["poses"] == 24 and seg["frame_id"] == "odom"
            same = found[seg["id"]]
            assert (seg["start_ns"], seg["end_ns"]) == (same["start_ns"], same["end_ns"])
            assert seg["start_position"] == same["start_position"]
            assert seg["distance"] == pytest.approx(same["distance"])
        assert [s["rank"] for s in every["segments"]] == list(range(n))
        scores = [s["score"] for s in every["segments"]]
        assert scores == sorted(scores, reverse=True)
        for seg in every["segments"]:
            check_segment(seg)
            assert seg["vehicle_id"] == "car1"
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
        segments.stop()


def test_compressed_images_sim_time_and_max_segments(tmp_path, model_dir):
    env = ros_env()
    params = node_params(model_dir, tmp_path / "memory.db", max_segments=2,
                         image_transport="compressed", use_sim_time=True)
    node = start_node(tmp_path, env, *params)
    segments = watch_segments(tmp_path, env)
    try:
        # use_sim_time with no /clock at all: stamps come from the headers, ingest still works
        node.wait_for_output("active: ingesting /camera/image_raw/compressed and /odom")
        run_helper(env, "publish", "--seconds", "5.0", "--speed", "2", "--compressed")
        diag = wait_idle(env)
        ids = [s["id"] for s in segments.wait_for(stored_count(diag))]  # evicted ones too
        assert len(ids) >= 4
        assert "evicted segments" in node.output()
        assert diag["memory"]["segments"] == "2"
        [answer] = run_helper(env, "call", json.dumps([{"text": "a road", "top_k": 100}]))
        assert sorted(s["id"] for s in answer["segments"]) == ids[-2:]  # the newest two
        assert int(diag["ingest"]["segments evicted"]) == len(ids) - 2
    finally:
        node.stop()
        segments.stop()
