"""Replay a rosbag2 into the live ROS graph without ``ros2 bag`` (``spartan-bag play``).

rclpy is imported only when a bag plays; bags are read with the ``rosbags`` library. Writing and
evaluating bags are desk tools: ``spartan_train.bag``.
"""

from spartan_ros.bag.play import BagError, PlayConfig, PlaySummary, play_bag

__all__ = ["BagError", "PlayConfig", "PlaySummary", "play_bag"]
