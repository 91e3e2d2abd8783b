"""The colcon path a ROS 2 workspace uses: build both packages from this repo with colcon, then
run the node and its query client from the install space."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from ros_graph import Process, helper, node_params, repo_build_lock, ros_env

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_colcon_builds_both_packages(tmp_path, model_dir):
    venv = Path(sys.prefix)
    env = dict(os.environ)
    env["AMENT_PREFIX_PATH"] = f"{venv}:{env.get('AMENT_PREFIX_PATH', '')}".rstrip(":")
    env["CMAKE_PREFIX_PATH"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    install = tmp_path / "install"
    # The documented command (README, "Building with colcon"), with the build kept out of the repo.
    cmd = [
        str(venv / "bin" / "colcon"), "--log-base", str(tmp_path / "log"), "build",
        "--base-paths", str(REPO), str(REPO / "interfaces"),
        "--build-base", str(tmp_path / "build"), "--install-base", str(install), "--merge-install",
        "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF",
        f"-DCMAKE_PROJECT_INCLUDE={REPO / 'cmake' / 'fix_wheel_include_dirs.cmake'}",
    ]
    with repo_build_lock():
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    for pkg in ("spartan_interfaces", "spartan_ros"):
        assert f"Finished <<< {pkg}" in out.stdout, out.stdout

    assert (install / "lib" / "spartan_ros" / "spartan_node").exists()
    assert (install / "share" / "spartan_ros" / "launch" / "spartan.launch.py").exists()
    assert (install / "share" / "spartan_ros" / "config" / "spartan.yaml").exists()
    # the Fast DDS profile: where a camera driver's user points at it, and beside its module
    assert (install / "share" / "spartan_ros" / "config" / "fastdds.xml").exists()
    assert (install / "share" / "ament_index" / "resource_index" / "packages" /
            "spartan_ros").exists()

    # The interfaces colcon built import from the workspace's install space.
    pyver = sysconfig.get_python_version()
    site = install / "lib" / f"python{pyver}" / "site-packages"
    assert (site / "spartan_ros" / "dds" / "fastdds.xml").exists()
    env["PYTHONPATH"] = str(site)
    env["LD_LIBRARY_PATH"] = f"{install / 'lib'}:{env.get('LD_LIBRARY_PATH', '')}"
    probe = subprocess.run(
        [sys.executable, "-c", "import spartan_interfaces.srv as s; print(s.__file__); "
         "print(s.QuerySegments.Request().top_k)"],
        env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert str(install) in probe.stdout

    # The node and the client from the install space (as `ros2 run` starts them), not the source
    # tree: the vocabulary comes with the installed package.
    env.pop("SPARTAN_BPE_PATH", None)
    env["AMENT_PREFIX_PATH"] = f"{install}:{env['AMENT_PREFIX_PATH']}"
    probe = subprocess.run(
        [sys.executable, "-c", "import spartan_ros.tokenizer as t, ament_index_python as a; "
         "print(t.__file__); print(t.default_vocab_path()); "
         "print(a.get_package_share_directory('spartan_ros'))"],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    module, vocab, share = probe.stdout.split()
    assert module.startswith(str(site)) and vocab.startswith(str(site)), probe.stdout
    assert Path(share) == install / "share" / "spartan_ros"
    graph = ros_env(**{k: env[k] for k in ("PYTHONPATH", "LD_LIBRARY_PATH", "AMENT_PREFIX_PATH")})
    node = Process([str(install / "lib" / "spartan_ros" / "spartan_node"), "--ros-args",
                    "--params-file", share + "/config/spartan.yaml",
                    *node_params(model_dir)], graph, tmp_path / "node.log")
    publisher = helper(graph, tmp_path / "publisher.log", "publish", "--seconds", "4")
    try:
        node.wait_for_output("stored segment 1 ", timeout=120)
        out = subprocess.run([str(install / "lib" / "spartan_ros" / "spartan_query"),
                              "a straight road", "--json", "--timeout", "60"],
                             env=graph, capture_output=True, text=True, timeout=90, cwd=tmp_path)
    finally:
        publisher.stop()
        assert node.stop() == 0, node.output()[-3000:]
    assert out.returncode == 0, out.stdout + out.stderr
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["success"] and answer["segments"], answer
