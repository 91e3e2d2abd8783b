"""The node runs the precision the exporter made, and its memory never mixes precisions (real
processes over DDS, real ONNX Runtime sessions, real SQLite)."""

import json
import sqlite3

import pytest
from ros_graph import (
    QUAT,
    node_params,
    ros_env,
    run_helper,
    start_node,
    stored_count,
    tiny_model,
    wait_idle,
    watch_segments,
)

from spartan_ros.node import parameters


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    """The session's random `tiny` model exported again with the int8 image graph."""
    return tiny_model(tmp_path_factory.getbasetemp() / "models", int8=True)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "ERROR" in line or "FATAL" in line]


def test_precision_and_trajectory_speed_parameters_are_validated():
    assert parameters.validate({"precision": "int8", "trajectory_speed": 12.5}) == []
    assert parameters.validate({"precision": "fp8"}) == [
        "precision='fp8' is not one of float32, float16, int8"]
    assert parameters.validate({"trajectory_speed": 0.0}) == [
        "trajectory_speed=0.0 is below its minimum 0.1"]
    assert parameters.validate({"trajectory_speed": 250.0}) == [
        "trajectory_speed=250.0 is above its maximum 100.0"]


def test_int8_node_answers_and_its_memory_refuses_float32(tmp_path, int8_model):
    meta = json.loads((int8_model / "model.json").read_text())
    assert sorted(meta["graphs"]) == ["float32", "int8"]
    # the hash covers the graphs loaded: int8 features never pass for float32 ones
    assert meta["model_hashes"]["int8"] != meta["model_hashes"]["float32"]

    env = ros_env()
    memory = tmp_path / "memory.db"
    node = start_node(tmp_path, env, *node_params(int8_model, memory, precision="int8",
                                                  trajectory_speed=8.0), name="int8")
    segments = watch_segments(tmp_path, env)
    try:
        node.wait_for_output("active: ingesting")
        run_helper(env, "publish", "--seconds", "3.0", "--speed", "2")
        diag = wait_idle(env)
        assert diag["ingest"]["precision"] == "int8"
        stored = segments.wait_for(stored_count(diag))
        path = [[0.0, 5.0 * t, t, 0.0, *QUAT] for t in (0.0, 1.0, 2.0)]
        answer, planned = run_helper(env, "call", json.dumps([
            {"text": "a road", "top_k": 100},
            {"text": "a road", "top_k": 100, "trajectory": path}]))
        assert answer["success"], answer["message"]
        assert sorted(s["id"] for s in answer["segments"]) == [s["id"] for s in stored]
        assert len(stored) >= 1
        # speed 0 in the request: the node's trajectory_speed parameter (8 m/s here)
        assert planned["success"] and planned["message"].endswith(
            "trajectory without stamps timed along its 10.2 m at 8 m/s (1.3 s)")
    finally:
        node.stop()
        segments.stop()
    out = node.output()
    assert f"configured: model {meta['model_hashes']['int8'][:12]} (int8, " in out
    assert error_lines(out) == [] and "Traceback" not in out
    with sqlite3.connect(memory) as db:
        assert dict(db.execute("SELECT key, value FROM meta"))["precision"] == "int8"
        rows = db.execute("SELECT count(*) FROM segments").fetchone()[0]
    assert rows == len(stored)

    # the same memory file opened with the float32 graphs: refused in one line, file untouched
    again = start_node(tmp_path, env, *node_params(int8_model, memory), name="float32")
    code = again.popen.wait(60)
    out = again.output()
    again.stop()
    assert code == 1
    [error] = error_lines(out)
    hashes = meta["model_hashes"]
    assert f"encoded by model '{hashes['int8']}' (embed_dim 128, int8), but the loaded " \
           f"model is '{hashes['float32']}' (embed_dim 128, float32)" in error
    assert "The file was not modified" in error
    assert "Traceback" not in out
    with sqlite3.connect(memory) as db:
        assert db.execute("SELECT count(*) FROM segments").fetchone()[0] == rows


def test_precision_missing_from_the_export_fails_configure_with_one_line(tmp_path, model_dir):
    env = ros_env()
    node = start_node(tmp_path, env, *node_params(model_dir, precision="float16",
                                                  autostart=False))
    try:
        node.wait_for_output("waiting for a lifecycle manager (autostart is false)")
        [result] = run_helper(env, "lifecycle", "/spartan", "configure")
        assert (result["success"], result["state"]) == (False, "unconfigured")
        out = node.output()
        [error] = error_lines(out)
        assert error.endswith(
            f"cannot configure: precision 'float16' is not in the export in {model_dir} (it has "
            "float32): set precision to one of those, or re-export with `spartan-export --fp16`")
        assert "Traceback" not in out
        assert node.alive()  # unconfigured, waiting for a better try
    finally:
        node.stop()
