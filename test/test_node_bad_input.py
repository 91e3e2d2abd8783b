"""Bad input never takes the node down or damages its memory (real processes over DDS)."""

import json

from ros_graph import (
    QUAT,
    helper,
    node_params,
    ros_env,
    run_helper,
    start_node,
    stored_count,
    wait_idle,
    watch_segments,
)


def ids_in_memory(env) -> list[int]:
    [answer] = run_helper(env, "call", json.dumps([{"text": "a road", "top_k": 10000}]))
    assert answer["success"], answer["message"]
    return sorted(s["id"] for s in answer["segments"])


def test_bad_messages_and_requests_leave_the_node_and_memory_intact(tmp_path, model_dir):
    env = ros_env()
    node = start_node(tmp_path, env, *node_params(model_dir, tmp_path / "memory.db"))
    segments = watch_segments(tmp_path, env)
    try:
        node.wait_for_output("active: ingesting")
        run_helper(env, "publish", "--seconds", "3.0", "--speed", "2")
        stored = segments.wait_for(stored_count(wait_idle(env)))
        before = ids_in_memory(env)
        assert before == [s["id"] for s in stored] and len(before) >= 1

        # malformed images (wrong step, short data, unknown encoding) and a NaN odometry sample
        run_helper(env, "publish", "--seconds", "1.0", "--only-bad", "--bad", "step@0.2",
                   "--bad", "length@0.4", "--bad", "encoding@0.6", "--bad", "nan_odom@0.5")
        diag = wait_idle(env)
        assert diag["ingest"]["dropped: malformed image"] == "3"
        assert diag["ingest"]["odometry rejected: not finite"] == "1"
        log = node.output()
        assert "dropped a camera frame: step 128 is smaller than width 64 x 3" in log
        assert "rejected: not finite" in log
        assert node.alive() and ids_in_memory(env) == before

        # every kind of bad request, then a good one
        line = [[t, 5 * t, t, 0.0, *QUAT] for t in (0.0, 1.0)]
        bad = [
            ({"text": ""}, "text is empty"),
            ({"text": "  \t "}, "text is empty"),
            ({"text": "a road", "since_ns": 20, "until_ns": 10}, "after until"),
            ({"text": "a road", "radius": -1.0}, "radius must be"),
            ({"text": "a road", "trajectory": line[:1]}, "at least 2 poses"),
            ({"text": "a road", "trajectory": [line[0], [1.0, float("nan"), *line[1][2:]]]},
             "not finite"),
            ({"text": "a road", "trajectory": [line[1], line[0]]}, "strictly increasing"),
        ]
        answers = run_helper(env, "call", json.dumps([r for r, _ in bad]
                                                     + [{"text": "a road", "top_k": 100}]))
        for (request, expected), answer in zip(bad, answers, strict=False):
            assert not answer["success"], request
            assert expected in answer["message"], (request, answer["message"])
            assert answer["segments"] == []
        assert answers[-1]["success"] and len(answers[-1]["segments"]) == len(before)

        # stamps going backwards: the drive replayed twice from the same start (a bag loop)
        run_helper(env, "publish", "--seconds", "3.0", "--speed", "2", "--loops", "2")
        diag = wait_idle(env)
        log = node.output()
        assert "(time jumped back): the window starts again" in log
        after = ids_in_memory(env)
        assert after[: len(before)] == before and len(after) > len(before)
        assert after == [s["id"] for s in segments.wait_for(stored_count(diag))]
        assert diag["memory"]["_level"] == "0" and "Traceback" not in log
        assert node.alive()
    finally:
        node.stop()
        segments.stop()


def test_a_second_odometry_source_is_a_warning_in_log_and_diagnostics(tmp_path, model_dir):
    env = ros_env()
    node = start_node(tmp_path, env, *node_params(model_dir))
    second = None
    try:
        node.wait_for_output("active: ingesting")
        second = helper(env, tmp_path / "second_odometry.log", "publish", "--seconds", "2.0",
                        "--no-images", "--frame-id", "base_odom")
        run_helper(env, "publish", "--seconds", "2.0")
        assert second.popen.wait(90) == 0
        diag = wait_idle(env)
        ingest = diag["ingest"]
        assert ingest["_level"] == "1", ingest  # WARN
        assert "odometry frame_id changed from" in ingest["_message"]
        assert "a second odometry source on the topic?" in ingest["_message"]
        assert int(ingest["odometry frame changes"]) >= 1
        warned = [line for line in node.output().splitlines()
                  if "odometry frame_id changed from" in line]
        assert warned and all("WARN" in line for line in warned), warned
        assert node.alive()
    finally:
        if second is not None:
            second.stop()
        node.stop()
