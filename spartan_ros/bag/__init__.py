"""Rosbag tools without ``ros2 bag``: write synthetic drives into a rosbag2, replay a bag live.

``spartan-bag write`` (:mod:`spartan_ros.bag.write`) needs no ROS; ``spartan-bag play``
(:mod:`spartan_ros.bag.play`) imports rclpy only when it runs. Both use the ``rosbags`` library.
"""

from spartan_ros.bag.play import BagError, PlayConfig, PlaySummary, play_bag
from spartan_ros.bag.write import (
    CAPTIONS_FILE,
    WriteConfig,
    WriteSummary,
    plan_bag,
    read_captions,
    write_bag,
)

__all__ = [
    "CAPTIONS_FILE",
    "BagError",
    "PlayConfig",
    "PlaySummary",
    "WriteConfig",
    "WriteSummary",
    "plan_bag",
    "play_bag",
    "read_captions",
    "write_bag",
]
