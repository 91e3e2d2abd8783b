"""Bad input never takes the node down or damages its memory (real processes over DDS)."""

import json

from ros_graph import (
    QUAT,
    node_params,
    ros_env,
    run_helper,
    start_node,
    stored_ids,
    wait_idle,
)


def ids_in_memory(env) -> list[int]:
    [answer] = run_helper(env, "call", json.dumps([{"text": "a road", "top_k": 10000}]))
    assert answer["success"], answer["message"]
    return sorted(s["id"] for s in answer["segments"])


def test_bad_messages_and_requests_leave_the_node_and_memory_intact(tmp_path, model_dir):
    env = ros_env()
    node = start_node(tmp_path, env, *node_params(model_dir, tmp_path / "memory.db"))
    try:
        node.wait_for_output("active: ingesting")
        run_helper(env, "publish", "--seconds", "3.0", "--speed", "2")
        wait_idle(env)
        before = ids_in_memory(env)
        assert before == stored_ids(node.output()) and len(before) >= 1

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
        assert after == stored_ids(log)
        assert diag["memory"]["_level"] == "0" and "Traceback" not in log
        assert node.alive()
    finally:
        node.stop()
