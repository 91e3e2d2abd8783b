"""Start spartan_node with a parameter file.

ros2 launch spartan_ros spartan.launch.py model_dir:=/path/to/model params_file:=my.yaml \
    namespace:=vehicle use_sim_time:=true
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import LifecycleNode

from launch import LaunchContext, LaunchDescription


def _node(context: LaunchContext) -> list:
    arg = context.launch_configurations
    overrides: dict = {"use_sim_time": arg["use_sim_time"].lower() in ("true", "1", "yes")}
    # Only override the params file's model_dir / memory_path when given on the command line.
    for name in ("model_dir", "memory_path"):
        if arg[name]:
            overrides[name] = arg[name]
    return [LifecycleNode(
        package="spartan_ros",
        executable="spartan_node",
        name="spartan",
        namespace=arg["namespace"],
        parameters=[arg["params_file"], overrides],
        output="screen",
    )]


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("spartan_ros"), "config",
                                  "spartan.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML file with the node's parameters"),
        DeclareLaunchArgument("model_dir", default_value="",
                              description="Exported model directory (overrides params_file)"),
        DeclareLaunchArgument("memory_path", default_value="",
                              description="SQLite memory file (overrides params_file)"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use /clock, e.g. when replaying a bag"),
        OpaqueFunction(function=_node),
    ])
