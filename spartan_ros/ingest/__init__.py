"""Ingest without ROS: frame sampling, odometry interpolation and the sliding window."""

from spartan_ros.ingest.odometry import OdometryBuffer, PoseLookup
from spartan_ros.ingest.sampler import FrameSampler, SampleDecision
from spartan_ros.ingest.window import SlidingWindow, WindowReady

__all__ = [
    "FrameSampler",
    "OdometryBuffer",
    "PoseLookup",
    "SampleDecision",
    "SlidingWindow",
    "WindowReady",
]
