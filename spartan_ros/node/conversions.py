"""Conversions between ROS messages and the library's plain types (numpy, dataclasses)."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from spartan_interfaces.msg import Segment
from spartan_interfaces.srv import QuerySegments

from spartan_ros.ingest.messages import stamp_to_ns
from spartan_ros.memory.service import Match
from spartan_ros.query import Query
from spartan_ros.runtime.lru import LruCache

_SCOPES = {QuerySegments.Request.SCOPE_VEHICLE: "vehicle",
           QuerySegments.Request.SCOPE_FLEET: "fleet"}


def ns_to_stamp(ns: int, stamp_type=Time):
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
        trajectory_speed=float(request.trajectory_speed),
        since_ns=stamp_to_ns(request.since),
        until_ns=stamp_to_ns(request.until),
        near=(request.near.x, request.near.y, request.near.z),
        radius=float(request.radius),
        min_score=float(request.min_score),
        scope=_SCOPES.get(int(request.scope), f"unknown ({int(request.scope)})"),
        vehicle_id=request.vehicle_id,
    )


def _pose_stamped(row: np.ndarray, stamp_ns: int, frame_id: str) -> PoseStamped:
    ps = PoseStamped()
    ps.header.frame_id = frame_id
    ps.header.stamp = ns_to_stamp(stamp_ns)
    p, q = ps.pose.position, ps.pose.orientation
    p.x, p.y, p.z = (float(v) for v in row[1:4])
    q.x, q.y, q.z, q.w = (float(v) for v in row[4:8])
    return ps


class PathCache:
    """The path messages of recently returned segments. A stored segment never changes, and
    building its PoseStamped messages costs more than the rest of an answer, so planners asking
    again and again get the same (read-only) messages back."""

    def __init__(self, size: int = 512) -> None:
        self._paths: LruCache[tuple, list[PoseStamped]] = LruCache(size)

    def poses(self, match: Match) -> list[PoseStamped]:
        key = (match.vehicle_id, match.id, match.start_ns, match.end_ns, match.frame_id)
        found = self._paths.get(key)
        if found is None:
            found = _path_poses(match)
            self._paths.put(key, found)
        return found


def _path_poses(match: Match) -> list[PoseStamped]:
    return [_pose_stamped(row, int(ns), match.frame_id)
            for row, ns in zip(match.poses, match.stamps_ns, strict=True)]


def match_to_msg(match: Match, paths: PathCache | None = None) -> Segment:
    """A query result as spartan_interfaces/Segment (path in the odometry frame)."""
    seg = Segment(id=int(match.id), score=float(match.score), rank=int(match.rank),
                  frame_count=match.frame_count, distance=float(match.distance),
                  vehicle_id=match.vehicle_id)
    seg.start = ns_to_stamp(match.start_ns)
    seg.end = ns_to_stamp(match.end_ns)
    seg.path.header.frame_id = match.frame_id
    seg.path.header.stamp = seg.start
    seg.path.poses = paths.poses(match) if paths is not None else _path_poses(match)
    seg.start_pose = seg.path.poses[0]
    return seg
