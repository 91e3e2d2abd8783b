"""Start spartan_node on a vehicle.

    ros2 launch spartan_ros spartan.launch.py model_dir:=/path/to/model \\
        memory_path:=~/.spartan/memory.db image_topic:=/front/image_raw \\
        image_transport:=compressed odom_topic:=/vehicle/odom namespace:=car use_sim_time:=true

Every node-parameter argument left empty keeps the value of params_file (by default the package's
config/spartan.yaml: camera/image_raw and odom, relative to the namespace, raw images, float32),
so a params file of your own stays in charge unless the command line says otherwise. Topic
remaps (`--ros-args -r`) are not needed: the topics are parameters. See docs/install.md.

Camera images larger than Fast DDS's default shared-memory segment (512 KB) are mostly lost
between processes; fastdds_profile (default auto: the package's config/fastdds.xml unless the
environment configures Fast DDS itself) is put in the environment of this launch, so the node
and every process started after it in the same launch (a camera driver included) use it. A
camera driver started elsewhere needs FASTDDS_DEFAULT_PROFILES_FILE set to it: docs/ingest.md.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch_ros.actions import LifecycleNode

from launch import LaunchContext, LaunchDescription
from spartan_ros import dds

# Node parameters a launch argument can set: (name, description). Empty = keep params_file's.
PARAMETER_ARGUMENTS = (
    ("model_dir", "Exported model directory (spartan-export OUT_DIR); empty: params_file's"),
    ("memory_path", "SQLite memory file, kept across restarts; empty: params_file's (the "
                    "package's: RAM only)"),
    ("image_topic", "Camera topic, relative names follow the namespace; empty: params_file's "
                    "(the package's: camera/image_raw)"),
    ("image_transport", "raw (sensor_msgs/Image) or compressed (CompressedImage on "
                        "<image_topic>/compressed); empty: params_file's (the package's: raw)"),
    ("odom_topic", "nav_msgs/Odometry topic; empty: params_file's (the package's: odom)"),
    ("precision", "Graphs of the export to run: float32, float16 or int8; empty: "
                  "params_file's (float32)"),
)


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("true", "1", "yes", "on")


def _fastdds_profile(context: LaunchContext) -> list:
    choice = context.launch_configurations["fastdds_profile"].strip()
    if choice == "none":
        return []
    environment = getattr(context, "environment", os.environ)  # older launch: os.environ
    env = (dds.profile_env(environment) if choice == "auto"
           else {dds.PROFILE_VARIABLE: os.path.expanduser(choice)})
    return [SetEnvironmentVariable(name, value) for name, value in env.items()]


def _node(context: LaunchContext) -> list:
    arg = context.launch_configurations
    overrides: dict = {"use_sim_time": _truthy(arg["use_sim_time"])}
    for name, _ in PARAMETER_ARGUMENTS:
        if arg[name]:
            overrides[name] = os.path.expanduser(arg[name]) if name.endswith(("_dir", "_path")) \
                else arg[name]
    return [LifecycleNode(
        package="spartan_ros",
        executable="spartan_node",
        name=arg["node_name"],
        namespace=arg["namespace"],
        parameters=[arg["params_file"], overrides],
        ros_arguments=["--log-level", arg["log_level"]],
        output="screen",
        emulate_tty=True,
    )]


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("spartan_ros"), "config",
                                  "spartan.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML file with the node's parameters"),
        *(DeclareLaunchArgument(name, default_value="", description=text)
          for name, text in PARAMETER_ARGUMENTS),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument("node_name", default_value="spartan",
                              description="Name of the node (its service is <name>/query)"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use /clock, e.g. with `spartan-bag play --clock`"),
        DeclareLaunchArgument("log_level", default_value="info",
                              description="debug, info, warn or error"),
        DeclareLaunchArgument("fastdds_profile", default_value="auto",
                              description="Fast DDS profile for this launch's processes: auto "
                              "(the package's, for large images, unless the environment sets "
                              "its own), a path, or none"),
        OpaqueFunction(function=_fastdds_profile),
        OpaqueFunction(function=_node),
    ])
