"""The node as a real process answering the query service over DDS (no model loaded)."""

import signal

from ros_graph import query, ros_env, start_node


def test_service_answers_over_dds(tmp_path):
    env = ros_env()
    node = start_node(tmp_path, env)
    try:
        node.wait_for_output("active: serving /spartan/query")
        answer = query(env, "the gas station where we turned left")
        assert answer == {"success": False, "message": "memory is empty", "candidates": 0,
                          "segments": []}

        empty = query(env, "   ")
        assert not empty["success"]
        assert "text is empty" in empty["message"]

        backwards = query(env, "a red car", "--since", "20", "--until", "10")
        assert not backwards["success"] and "after until" in backwards["message"]

        negative = query(env, "a red car", "--radius", "-1")
        assert not negative["success"] and "radius" in negative["message"]
        assert node.alive()
    finally:
        node.signal(signal.SIGINT)
        node.stop()


def test_namespace_moves_the_service(tmp_path):
    env = ros_env()
    node = start_node(tmp_path, env, "-r", "__ns:=/car1")
    try:
        node.wait_for_output("active: serving /car1/spartan/query")
        answer = query(env, "a crossing", service="/car1/spartan/query")
        assert answer["message"] == "memory is empty"
    finally:
        node.stop()


def test_bad_parameters_fail_fast_with_a_readable_line(tmp_path):
    env = ros_env()
    node = start_node(tmp_path, env, "-p", "window_frames:=8", "-p", "stride_frames:=12")
    code = node.popen.wait(60)
    out = node.output()
    node.stop()
    assert code != 0
    assert "stride_frames=12 is larger than window_frames=8" in out
    assert "Traceback" not in out
