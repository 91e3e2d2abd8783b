"""A text query to the segment memory, independent of ROS, and its validation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spartan_ros.ingest.odometry import MAX_POSITION_M, check_pose_numbers

# The model reads 248 tokens (about a thousand characters); a longer text is a mistake, and it
# would cost time to clean and split before being cut.
MAX_TEXT_CHARS = 65536
# Positions and radii beyond this many metres are not places on a vehicle's map, and the
# distance maths must not overflow on them (the same bound as odometry positions).
MAX_DISTANCE_M = MAX_POSITION_M
# Trajectory stamps (seconds) beyond this are not times: about year 2286 since the epoch.
MAX_STAMP_S = 1e10
MAX_TOP_K = 1_000_000
SCOPES = ("vehicle", "fleet")
MAX_TRAJECTORY_SPEED = 100.0  # m/s; the node's trajectory_speed parameter has the same bound


class QueryError(ValueError):
    """A request that cannot be answered; the message is meant for the caller."""


@dataclass
class Query:
    text: str
    top_k: int = 0  # 0 = the caller's default
    # Optional motion to match: [N, 8] TUM rows [t, x, y, z, qx, qy, qz, qw]; None = each
    # segment's own recorded motion.
    trajectory: np.ndarray | None = None
    # m/s for timing a trajectory whose stamps are all equal (a path); 0 = the caller's default
    trajectory_speed: float = 0.0
    since_ns: int = 0  # 0 = unbounded
    until_ns: int = 0  # 0 = unbounded
    near: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radius: float = 0.0  # 0 = no spatial filter
    min_score: float = 0.0
    scope: str = "vehicle"  # "vehicle": this vehicle's memory; "fleet": every vehicle's
    vehicle_id: str = ""  # only segments of this vehicle ("" = any)
    extra: dict = field(default_factory=dict)


def validate_query(query: Query) -> None:
    """Raise QueryError naming what is wrong with the request."""
    if not isinstance(query.text, str) or not query.text.strip():
        raise QueryError("text is empty: describe the place or event to look for")
    if len(query.text) > MAX_TEXT_CHARS:
        raise QueryError(f"text is {len(query.text)} characters long, at most {MAX_TEXT_CHARS} "
                         "are accepted (the model reads its first 248 tokens)")
    if not 0 <= query.top_k <= MAX_TOP_K:
        raise QueryError(f"top_k must be in [0, {MAX_TOP_K}], got {query.top_k}")
    if query.since_ns < 0 or query.until_ns < 0:
        raise QueryError("since/until must not be negative")
    if query.since_ns and query.until_ns and query.since_ns > query.until_ns:
        raise QueryError(f"since ({query.since_ns} ns) is after until ({query.until_ns} ns)")
    if not (np.isfinite(query.radius) and 0 <= query.radius <= MAX_DISTANCE_M):
        raise QueryError(f"radius must be a number of metres in [0, {MAX_DISTANCE_M:g}], "
                         f"got {query.radius}")
    if query.radius > 0:
        near = np.asarray(query.near, dtype=np.float64)
        if not np.all(np.isfinite(near)):
            raise QueryError("near has non-finite coordinates")
        if np.abs(near).max() > MAX_DISTANCE_M:
            raise QueryError(f"near {near.tolist()} is out of range: coordinates must be "
                             f"within +-{MAX_DISTANCE_M:g} m")
    if query.scope not in SCOPES:
        raise QueryError(f"scope must be one of {', '.join(SCOPES)}, got {query.scope!r}")
    if not np.isfinite(query.min_score):
        raise QueryError("min_score is not finite")
    if query.trajectory is not None:
        _validate_trajectory(np.asarray(query.trajectory, dtype=np.float64))
    speed = query.trajectory_speed
    if not (np.isfinite(speed) and 0 <= speed <= MAX_TRAJECTORY_SPEED):
        raise QueryError(f"trajectory_speed must be in [0, {MAX_TRAJECTORY_SPEED:g}] m/s "
                         f"(0 = the node's default), got {speed}")


def _validate_trajectory(traj: np.ndarray) -> None:
    if traj.ndim != 2 or traj.shape[1] != 8:
        raise QueryError(f"trajectory must be [N, 8] TUM rows, got shape {traj.shape}")
    if len(traj) < 2:
        raise QueryError(f"trajectory needs at least 2 poses, got {len(traj)}")
    bad = np.flatnonzero(~np.isfinite(traj).all(axis=1))
    if bad.size:
        raise QueryError(f"trajectory pose {int(bad[0])} is not finite")
    late = np.flatnonzero(np.abs(traj[:, 0]) > MAX_STAMP_S)
    if late.size:
        raise QueryError(f"trajectory pose {int(late[0])} has stamp {traj[late[0], 0]:g} s, "
                         f"beyond +-{MAX_STAMP_S:g} s")
    if not untimed(traj) and np.any(np.diff(traj[:, 0]) <= 0):
        raise QueryError("trajectory stamps must be strictly increasing (or all equal, e.g. "
                         "all zero: a path then timed at trajectory_speed)")
    for i, row in enumerate(traj):
        reason = check_pose_numbers(row[1:4], row[4:8])
        if reason is not None:
            detail = {"position out of range": f" (coordinates must be within "
                                               f"+-{MAX_POSITION_M:g} m)"}.get(reason, "")
            raise QueryError(f"trajectory pose {i}: {reason}{detail}")


def untimed(trajectory: np.ndarray) -> bool:
    """True for a trajectory whose stamps carry no timing: all equal (e.g. all zero), as
    planners send a nav_msgs/Path."""
    stamps = np.asarray(trajectory, dtype=np.float64)[:, 0]
    return len(stamps) >= 2 and bool(np.all(stamps == stamps[0]))
