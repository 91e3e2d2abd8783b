"""A vehicle-only environment: `scripts/setup.sh --vehicle` into a fresh venv (the vehicle and ROS
requirements, spartan_interfaces, spartan_ros as a regular install: a wheel). torch, matplotlib,
evo and the desk / training package are not importable there, yet the node runs on a model
exported in the development environment, `spartan-bag play` from the vehicle venv fills its
memory with the default topics on both sides, and a text query is answered (tokenizer
vocabulary included)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ros_graph import REPO, Process, repo_build_lock, ros_env, wait_idle

# Variables of the development environment that must not leak into the vehicle one (the ROS
# wheels' bootstrap sets LD_LIBRARY_PATH to this venv's libraries).
LEAKS = ("VIRTUAL_ENV", "PYTHONPATH", "LD_LIBRARY_PATH", "AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH",
         "_ROS_WHEELS_BOOTSTRAP_COMPLETE", "PYTHONHOME", "SPARTAN_BPE_PATH")


def vehicle_env(venv: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LEAKS}
    here = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *(p for p in env["PATH"].split(os.pathsep)
                                                         if p != here)])
    env["VIRTUAL_ENV"] = str(venv)
    env["AMENT_PREFIX_PATH"] = str(venv)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def vehicle(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("vehicle") / "venv"
    t0 = time.monotonic()
    env = vehicle_env(venv, SPARTAN_VENV=str(venv), PYTHON=sys._base_executable)
    # spartan_interfaces is copied from this environment (same wheels, same Python) rather than
    # built again with CMake: the wall under test is the Python requirements.
    with repo_build_lock():
        out = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), "--vehicle",
                              "--interfaces-from", sys.prefix], env=env, capture_output=True,
                             text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    print(f"vehicle venv set up in {time.monotonic() - t0:.0f} s:\n{out.stdout}")
    return venv


def run(venv: Path, *args: str | Path) -> subprocess.CompletedProcess:
    """Run in the vehicle venv, away from the source tree (`python -c` would import from it)."""
    return subprocess.run([str(a) for a in args], env=vehicle_env(venv), capture_output=True,
                          text=True, timeout=120, cwd=venv)


@pytest.mark.slow
def test_vehicle_venv_has_no_training_side(vehicle):
    py = vehicle / "bin" / "python"
    for module in ("torch", "matplotlib", "evo", "scipy", "spartan_train"):
        out = run(vehicle, py, "-c", f"import {module}")
        assert out.returncode != 0 and f"No module named '{module}'" in out.stderr, module
    ok = run(vehicle, py, "-c", "import onnxruntime, rclpy, spartan_interfaces.srv, "
             "spartan_ros.node.spartan_node, spartan_ros.tokenizer as t; t.tokenize('a road'); "
             "print(t.default_vocab_path())")
    assert ok.returncode == 0, ok.stderr
    assert "site-packages/spartan_ros/vocab/" in ok.stdout  # package data of the wheel
    listed = run(vehicle, py, "-m", "pip", "list", "--format=json")
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "onnxruntime" in names and "onnxruntime-gpu" not in names
    # spartan-bag on a vehicle: play, and a clear line for the desk tools
    out = run(vehicle, vehicle / "bin" / "spartan-bag", "write", "--help")
    assert out.returncode == 1 and "comes with spartan_train" in out.stderr


@pytest.mark.slow
def test_vehicle_venv_runs_the_node_on_a_played_bag(vehicle, model_dir, tmp_path):
    # The demo's kind of bag, written with the desk tools of the development environment.
    data, bag = tmp_path / "synth", tmp_path / "bag"
    subprocess.run([sys.executable, "-m", "spartan_train.data.synth.generate", "--out", str(data),
                    "--sequences", "1", "--frames", "60", "--width", "64", "--height", "48",
                    "--seed", "3", "--quiet"], check=True, timeout=300)
    [seq] = sorted(p.name for p in (data / "images").iterdir())
    subprocess.run([sys.executable, "-m", "spartan_ros.bag", "write", "--data", str(data),
                    "--seq", seq, "--out", str(bag), "--quiet"], check=True, timeout=300)

    graph = ros_env()  # a ROS domain of its own, loopback only
    env = vehicle_env(vehicle, **{k: v for k, v in graph.items()
                                  if k.startswith("ROS_") or k == "RMW_IMPLEMENTATION"})
    # As `ros2 launch` starts it: the installed executable and params file, no topic parameters.
    share = vehicle / "share" / "spartan_ros"
    node = Process([str(vehicle / "lib" / "spartan_ros" / "spartan_node"), "--ros-args",
                    "--params-file", str(share / "config" / "spartan.yaml"),
                    "-p", f"model_dir:={model_dir}", "-p", f"memory_path:={tmp_path / 'm.db'}",
                    "-p", "execution_providers:=[cpu]"], env, tmp_path / "node.log")
    try:
        node.wait_for_output("active: ingesting /camera/image_raw and /odom", timeout=120)
        play = subprocess.run([str(vehicle / "bin" / "spartan-bag"), "play", str(bag), "--json"],
                              env=env, capture_output=True, text=True, timeout=120)
        assert play.returncode == 0, play.stdout + play.stderr
        wait_idle(graph)  # a helper of the development environment
        query = subprocess.run([str(vehicle / "bin" / "spartan_query"), "a road", "--json",
                                "--top-k", "3", "--timeout", "60"], env=env,
                               capture_output=True, text=True, timeout=90)
    finally:
        code = node.stop()
    assert code == 0, node.output()[-3000:]
    assert query.returncode == 0, query.stdout + query.stderr + node.output()[-2000:]
    answer = json.loads(query.stdout.strip().splitlines()[-1])
    assert answer["success"], answer["message"]
    assert len(answer["segments"]) == 3
    assert node.output().count("stored segment ") >= 5  # 60 frames: windows at 24, 30, ... 60
