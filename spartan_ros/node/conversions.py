"""Conversions between ROS messages and the library's plain types (numpy, dataclasses)."""

from __future__ import annotations

import numpy as np
from spartan_interfaces.srv import QuerySegments

from spartan_ros.query import Query


def stamp_to_ns(stamp) -> int:  # builtin_interfaces/Time
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int, stamp_type):
    return stamp_type(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def pose_stamped_rows(poses) -> np.ndarray:
    """geometry_msgs/PoseStamped[] -> [N, 8] TUM rows (t in seconds)."""
    rows = np.empty((len(poses), 8), dtype=np.float64)
    for i, ps in enumerate(poses):
        p, q = ps.pose.position, ps.pose.orientation
        rows[i] = (stamp_to_ns(ps.header.stamp) * 1e-9, p.x, p.y, p.z, q.x, q.y, q.z, q.w)
    return rows


def query_from_request(request: QuerySegments.Request) -> Query:
    return Query(
        text=request.text,
        top_k=int(request.top_k),
        trajectory=pose_stamped_rows(request.trajectory) if request.trajectory else None,
        since_ns=stamp_to_ns(request.since),
        until_ns=stamp_to_ns(request.until),
        near=(request.near.x, request.near.y, request.near.z),
        radius=float(request.radius),
        min_score=float(request.min_score),
    )
