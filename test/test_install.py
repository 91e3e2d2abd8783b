"""The install: the wall between the vehicle runtime and the desk / training side, package.xml
and the requirements files against the real imports, and the ROS prefix scripts/setup.sh makes
(what `ros2 run` and `ros2 launch` look for)."""

import filecmp
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib.metadata import distribution
from pathlib import Path

from import_graph import REPO, chain, closure, external, imports_of_file, package_modules

# Third-party modules of the vehicle runtime: (pip requirement, rosdep key or None).
# ftfy and safetensors have no rosdep key; onnxruntime and rosbags only unpinned pip keys, and
# rosdep could not choose between onnxruntime and onnxruntime-gpu: requirements/vehicle*.txt.
THIRD_PARTY = {
    "numpy": ("numpy", "python3-numpy"),
    "PIL": ("pillow", "python3-pil"),
    "regex": ("regex", "python3-regex"),
    "ftfy": ("ftfy", None),
    "safetensors": ("safetensors", None),
    "onnxruntime": ("onnxruntime", None),
    "rosbags": ("rosbags", None),
    "cv2": ("opencv-python-headless", "python3-opencv"),  # camera encodings (YUV, Bayer, 16-bit)
    "tqdm": ("tqdm", "python3-tqdm"),  # spartan-fleet push's progress bar
    "pymilvus": ("pymilvus", None),  # optional: fleet memory, requirements/fleet.txt
}
# Imported only by optional parts of the runtime, pinned in their own requirements file.
OPTIONAL = {"pymilvus": "fleet.txt"}
# ROS packages imported by name (the Python module is the package, and its rosdep key).
ROS_PACKAGES = {"rclpy", "rcl_interfaces", "builtin_interfaces", "std_msgs", "sensor_msgs",
                "nav_msgs", "geometry_msgs", "visualization_msgs", "diagnostic_msgs",
                "rosgraph_msgs", "spartan_interfaces", "ament_index_python", "launch",
                "launch_ros"}
# Listed without a direct import: the node is a lifecycle node (rclpy.lifecycle serves
# lifecycle_msgs services), which planners and `ros2 lifecycle` talk to.
EXTRA_EXEC_DEPENDS = {"lifecycle_msgs"}
# Never on the vehicle (training, desk tools, synthetic drives).
NOT_ON_VEHICLE = {"torch", "spartan_train", "matplotlib", "evo", "scipy", "yaml", "onnx",
                  "pandas"}


def vehicle_imports() -> dict[str, str | None]:
    return closure(package_modules("spartan_ros"))


def launch_imports() -> set[str]:
    return external(m for f in (REPO / "launch").glob("*.py") for m in imports_of_file(f))


def requirement_names(path: Path) -> set[str]:
    """Distribution names a requirements file pins (following -r includes)."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            names |= requirement_names(path.parent / line[3:].strip())
        elif line:
            names.add(re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0].lower())
    return names


def test_vehicle_runtime_imports_nothing_of_the_desk_or_training_side():
    parent = vehicle_imports()
    crossing = [chain(parent, m) for m in parent if m.split(".")[0] in NOT_ON_VEHICLE]
    assert crossing == []
    assert external(parent) <= set(THIRD_PARTY) | ROS_PACKAGES, external(parent)


def test_bag_eval_needs_no_torch():
    """`spartan-bag eval` (and write) run an exported ONNX model: no torch on their path, lazy
    imports included."""
    parent = closure(["spartan_train.bag.commands", "spartan_ros.bag.cli"])
    assert "spartan_train.bag.evaluate" in parent  # the closure does follow run_eval's import
    assert [chain(parent, m) for m in parent if m.split(".")[0] == "torch"] == []
    # and at run time: the modules import without pulling torch in
    code = ("import sys, spartan_train.bag.commands, spartan_train.bag.evaluate, "
            "spartan_ros.bag.cli as c; c.build_parser(); "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_package_xml_lists_what_the_vehicle_runtime_imports():
    used = external(vehicle_imports()) | launch_imports()
    keys = {THIRD_PARTY[m][1] if m in THIRD_PARTY else m for m in used} - {None}
    root = ET.parse(REPO / "package.xml").getroot()
    listed = [e.text for e in root.findall("exec_depend")]
    assert len(listed) == len(set(listed)), "an exec_depend is listed twice"
    assert set(listed) - EXTRA_EXEC_DEPENDS == keys
    assert {"rcl_interfaces", "ament_index_python"} <= set(listed)


def test_vehicle_requirements_pin_every_module_without_a_rosdep_key():
    used = external(vehicle_imports())
    pip_names = {THIRD_PARTY[m][0] for m in used if m in THIRD_PARTY and m not in OPTIONAL}
    req = REPO / "requirements"
    cpu, gpu = requirement_names(req / "vehicle.txt"), requirement_names(req / "vehicle-gpu.txt")
    ort = {"onnxruntime", "onnxruntime-gpu"}
    assert cpu & ort == {"onnxruntime"} and gpu & ort == {"onnxruntime-gpu"}  # never both
    assert pip_names <= cpu and pip_names - {"onnxruntime"} | {"onnxruntime-gpu"} <= gpu
    training_side = {"torch", "onnx", "matplotlib", "evo", "scipy", "pyyaml", "clip-anytorch"}
    assert not (cpu | gpu) & training_side
    for module, file in OPTIONAL.items():
        assert THIRD_PARTY[module][0] in requirement_names(req / file), module
    # The desk and training files add to a vehicle file and never bring an ONNX Runtime of
    # their own (which would sit beside the GPU one).
    for name in ("desk.txt", "train.txt", "dev.txt", "ros.txt"):
        assert not requirement_names(req / name) & ort, name
    assert "torch" in requirement_names(req / "train.txt")
    assert "torch" not in requirement_names(req / "desk.txt")


# -- the ROS prefix of the set-up environment ----------------------------------------------------


def test_setup_prefix_resolves_like_a_colcon_install():
    """After scripts/setup.sh the venv is a ROS prefix holding spartan_ros as colcon lays it out."""
    from ament_index_python.packages import get_package_prefix, get_package_share_directory

    prefix = Path(sys.prefix)
    assert Path(get_package_prefix("spartan_ros")) == prefix
    share = Path(get_package_share_directory("spartan_ros"))
    assert share == prefix / "share" / "spartan_ros"
    expected = ["package.xml", *(f"launch/{p.name}" for p in (REPO / "launch").glob("*.py")),
                *(f"config/{p.name}" for p in (REPO / "config").glob("*.yaml"))]
    for rel in expected:
        installed = share / rel
        assert installed.is_file() and not installed.is_symlink(), rel
        assert filecmp.cmp(installed, REPO / rel, shallow=False), f"{rel} is out of date"
    for folder in ("launch", "config"):
        assert not (share / folder).is_symlink()

    scripts = {ep.name for ep in distribution("spartan_ros").entry_points
               if ep.group == "console_scripts"}
    assert {"spartan_node", "spartan_query", "spartan-bag"} <= scripts
    lib = prefix / "lib" / "spartan_ros"
    assert {p.name for p in lib.iterdir()} == scripts
    for name in scripts:
        assert os.access(lib / name, os.X_OK), name
    # `ros2 run spartan_ros spartan_query --help`, as ros2run would call it
    out = subprocess.run([str(lib / "spartan_query"), "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "usage" in out.stdout, out.stderr


def test_vocabulary_is_package_data_with_its_licence():
    import spartan_ros.tokenizer as tk

    assert os.environ.get("SPARTAN_BPE_PATH") is None
    assert tk.default_vocab_path() == tk.packaged_vocab_path()
    assert tk.default_vocab_path() == Path(tk.__file__).parent / "vocab" / tk.VOCAB_FILENAME
    notice = (REPO / "spartan_ros" / "vocab" / "NOTICE.md").read_text()
    assert "OpenAI" in notice and "Permission is hereby granted" in notice  # the MIT licence
