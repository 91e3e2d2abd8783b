"""Fields the ingest needs from ROS-shaped messages, read without importing ROS.

The node passes rclpy messages, `spartan-bag eval` the ones rosbags deserialises: both have the
same field names, so one reader serves both.
"""

from __future__ import annotations

from typing import Any


def stamp_to_ns(stamp: Any) -> int:  # builtin_interfaces/Time
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def odometry_fields(msg: Any) -> tuple[int, tuple[float, ...], tuple[float, ...], str]:
    """nav_msgs/Odometry -> (stamp ns, position xyz, quaternion xyzw, frame_id)."""
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    return (stamp_to_ns(msg.header.stamp), (p.x, p.y, p.z), (q.x, q.y, q.z, q.w),
            msg.header.frame_id)
