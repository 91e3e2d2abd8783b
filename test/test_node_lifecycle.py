"""Lifecycle driven from outside, the "no input" warning, and start-up failures (real processes)."""

import json

from ros_graph import (
    node_params,
    ros_env,
    run_helper,
    start_node,
    stored_count,
    wait_idle,
    watch_segments,
)

from spartan_ros.memory.store import SegmentStore


def transitions(env, *names: str) -> list[tuple[bool, str]]:
    lines = run_helper(env, "lifecycle", "/spartan", *names)
    return [(x["success"], x["state"]) for x in lines]


def test_lifecycle_transitions_from_a_manager(tmp_path, model_dir):
    env = ros_env()
    node = start_node(tmp_path, env, *node_params(model_dir, tmp_path / "memory.db",
                                                  autostart=False))
    segments = watch_segments(tmp_path, env)
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
        stored = segments.wait_for(stored_count(wait_idle(env)))
        [answer] = run_helper(env, "call", json.dumps([{"text": "a road", "top_k": 100}]))
        assert answer["success"] and len(stored) >= 1
        assert sorted(s["id"] for s in answer["segments"]) == [s["id"] for s in stored]
        assert transitions(env, "deactivate") == [(True, "inactive")]
        assert node.alive()
    finally:
        node.stop()
        segments.stop()


def test_no_input_warns_with_topic_and_qos(tmp_path, model_dir):
    env = ros_env()
    node = start_node(tmp_path, env, *node_params(model_dir, input_timeout_s=1.0,
                                                  odom_topic="/vehicle/odom"))
    try:
        node.wait_for_output("no image on /camera/image_raw (sensor_msgs/Image) for ")
        node.wait_for_output("no odometry on /vehicle/odom (nav_msgs/Odometry) for ")
        assert "subscribed with QoS reliable, keep last 50; no publisher" in node.output()
        [msg] = run_helper(env, "echo", "/diagnostics", "diagnostic_msgs/msg/DiagnosticArray",
                           "--contains", "no odometry on /vehicle/odom")
        ingest = msg["status"][0]
        assert ingest["level"] == [1]  # WARN
        assert "no image on /camera/image_raw" in ingest["message"]
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


# Each value is refused with one line naming the parameter; `ros2 run ... --ros-args -p` parses
# values as YAML (10 is an integer, .nan a double, abc a string).
BAD_PARAMETERS = {
    "sample_rate_hz": ("1000.0", "sample_rate_hz=1000.0 is above its maximum 100.0"),
    "max_pose_gap_s": (".nan", "max_pose_gap_s=nan is not a finite number"),
    "input_timeout_s": ("10", "input_timeout_s=10 is an integer, this parameter is a double: "
                              "write 10.0"),
    "window_frames": ("abc", "window_frames='abc' is a string, this parameter is an integer"),
    "stride_frames": ("0", "stride_frames=0 is below its minimum 1"),
    "max_segments": ("-1", "max_segments=-1 is below its minimum 0"),
    "image_transport": ("jpeg", "image_transport='jpeg' is not one of raw, compressed"),
    "execution_providers": ("cpu", "execution_providers='cpu' is a string, this parameter is a "
                                   "list: write [cpu]"),
    "publish_matches": ("5", "publish_matches=5 is an integer, this parameter is a boolean"),
    "diagnostics_period_s": (".inf", "diagnostics_period_s=inf is not a finite number"),
    "encode_batch_size": ("2.5", "encode_batch_size=2.5 is a double, this parameter is an "
                                 "integer"),
    "default_top_k": ("-3", "default_top_k=-3 is below its minimum 1"),
}


def test_bad_parameter_values_exit_with_one_readable_line(tmp_path):
    env = ros_env()
    args = []
    for name, (value, _) in BAD_PARAMETERS.items():
        args += ["-p", f"{name}:={value}"]
    node = start_node(tmp_path, env, *args)
    code = node.popen.wait(60)
    out = node.output()
    node.stop()
    assert code == 1 and "Traceback" not in out, out
    errors = [line for line in out.splitlines() if "ERROR" in line or "FATAL" in line]
    assert len(errors) == 1, out
    assert "cannot configure: bad parameter: " in errors[0]
    for _, message in BAD_PARAMETERS.values():
        assert message in errors[0], (message, errors[0])


def test_set_parameters_refuses_bad_values_with_a_reason(tmp_path):
    env = ros_env()
    node = start_node(tmp_path, env, "-p", "model_dir:=''")
    try:
        node.wait_for_output("active:")
        values = [["default_top_k", 0], ["default_top_k", 2.5], ["input_timeout_s", "nan"],
                  ["input_timeout_s", 5], ["publish_matches", "yes"],
                  ["sample_rate_hz", 20.0], ["default_top_k", 7], ["input_timeout_s", 2.0]]
        results = run_helper(env, "set-params", "/spartan", json.dumps(values))
        assert [r["successful"] for r in results] == [False] * 6 + [True, True]
        for r in results[:6]:
            assert r["reason"] and "\n" not in r["reason"], r
        assert "read-only" in results[5]["reason"]
        assert node.alive() and "Traceback" not in node.output()
    finally:
        node.stop()


def test_missing_vocabulary_fails_at_configure(tmp_path, model_dir):
    env = ros_env()
    env["SPARTAN_BPE_PATH"] = str(tmp_path / "no_vocabulary.txt.gz")
    node = start_node(tmp_path, env, *node_params(model_dir))
    code = node.popen.wait(60)
    out = node.output()
    node.stop()
    assert code == 1 and "Traceback" not in out, out
    errors = [line for line in out.splitlines() if "ERROR" in line or "FATAL" in line]
    assert len(errors) == 1, out
    assert "cannot configure: cannot load the text tokenizer: SPARTAN_BPE_PATH points to" in (
        errors[0])
