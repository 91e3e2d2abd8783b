"""Static checks of the package: parameters file, launch file, package manifests."""

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from spartan_ros.node import parameters

REPO = Path(__file__).resolve().parents[1]


def test_yaml_lists_exactly_the_declared_parameters():
    doc = yaml.safe_load((REPO / "config" / "spartan.yaml").read_text())
    values = doc["/**"]["ros__parameters"]
    declared = {p.name for p in parameters.PARAMETERS} | {"use_sim_time"}
    assert set(values) == declared
    for spec in parameters.PARAMETERS:
        assert type(values[spec.name]) is type(spec.default), spec.name
        assert values[spec.name] == spec.default, f"{spec.name}: yaml and code defaults differ"
    assert parameters.validate(values) == []


def test_every_parameter_has_a_comment_in_yaml():
    lines = (REPO / "config" / "spartan.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if ":" in stripped and not stripped.startswith("#") and line.startswith("    "):
            assert lines[i - 1].strip().startswith("#"), f"no comment above {stripped!r}"


def test_parameter_validation_messages():
    assert parameters.validate({"window_frames": 8, "stride_frames": 12}) == [
        "stride_frames=12 is larger than window_frames=8: frames between windows would never "
        "be stored"]
    assert "sample_rate_hz=0.0 is below its minimum 0.1" in parameters.validate(
        {"sample_rate_hz": 0.0})
    assert any("image_transport" in p for p in parameters.validate({"image_transport": "jpeg"}))
    # types and non-finite numbers: the values ROS refuses at declaration, said in one line each
    assert parameters.validate({"sample_rate_hz": 10, "max_pose_gap_s": float("nan"),
                                "window_frames": "abc", "autostart": 1,
                                "execution_providers": "cpu", "stride_frames": 2.0}) == [
        "sample_rate_hz=10 is an integer, this parameter is a double: write 10.0",
        "window_frames='abc' is a string, this parameter is an integer",
        "stride_frames=2.0 is a double, this parameter is an integer",
        "max_pose_gap_s=nan is not a finite number",
        "execution_providers='cpu' is a string, this parameter is a list: write [cpu]",
        "autostart=1 is an integer, this parameter is a boolean (true or false)",
    ]
    assert parameters.validate({"sample_rate_hz": float("inf")}, names=("sample_rate_hz",)) == [
        "sample_rate_hz=inf is not a finite number"]


def test_launch_file_is_valid_python_with_the_documented_arguments():
    source = (REPO / "launch" / "spartan.launch.py").read_text()
    tree = ast.parse(source)
    names = {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}
    assert "generate_launch_description" in names
    declared = {c.args[0].value for c in ast.walk(tree) if isinstance(c, ast.Call)
                and getattr(c.func, "id", "") == "DeclareLaunchArgument"
                and isinstance(c.args[0], ast.Constant)}
    [table] = [n.value for n in tree.body if isinstance(n, ast.Assign)
               and n.targets[0].id == "PARAMETER_ARGUMENTS"]
    node_params = {row.elts[0].value for row in table.elts}
    assert node_params == {"model_dir", "memory_path", "image_topic", "image_transport",
                           "odom_topic", "precision"}
    assert node_params <= {p.name for p in parameters.PARAMETERS} | {"precision"}
    assert declared == {"params_file", "namespace", "node_name", "use_sim_time", "log_level",
                        "fastdds_profile"}
    compile(source, "spartan.launch.py", "exec")


def test_default_topics_are_the_ones_spartan_bag_write_records():
    """`ros2 launch` with no arguments plus `spartan-bag play` of a written bag stores segments:
    the node's topics, resolved in the root namespace, are the bag's."""
    from spartan_train.bag.write import WriteConfig

    bag = WriteConfig(data=Path("."), seqs=["s"], out=Path("o"))
    values = yaml.safe_load((REPO / "config" / "spartan.yaml").read_text())["/**"][
        "ros__parameters"]
    image, odom = values["image_topic"], values["odom_topic"]
    assert "/" + image.lstrip("/") == bag.image_topic
    assert "/" + odom.lstrip("/") == bag.odom_topic
    # the command line's defaults are the same (the compressed topic is <image topic>/compressed
    # on both sides: test_node_ingest, test_bag)
    from spartan_ros.bag.cli import build_parser

    cli = build_parser().parse_args(["write", "--data", "d", "--seq", "s", "--out", "o"])
    assert (cli.image_topic, cli.odom_topic) == (bag.image_topic, bag.odom_topic)


def test_package_manifests():
    for path, build_type in [(REPO / "package.xml", "ament_python"),
                             (REPO / "interfaces/spartan_interfaces/package.xml", "ament_cmake")]:
        root = ET.parse(path).getroot()
        assert root.get("format") == "3"
        assert root.find("export/build_type").text == build_type
    from catkin_pkg.package import parse_package
    assert parse_package(str(REPO)).name == "spartan_ros"
    assert parse_package(str(REPO / "interfaces/spartan_interfaces")).name == "spartan_interfaces"


def test_interfaces_have_the_fields_planners_need():
    from spartan_interfaces.msg import Segment
    from spartan_interfaces.srv import QuerySegments

    seg = Segment()
    for field in ("id", "start", "end", "score", "frame_count", "path"):
        assert hasattr(seg, field)
    req, res = QuerySegments.Request(), QuerySegments.Response()
    for field in ("text", "top_k", "trajectory", "since", "until", "near", "radius"):
        assert hasattr(req, field)
    for field in ("success", "message", "segments"):
        assert hasattr(res, field)
