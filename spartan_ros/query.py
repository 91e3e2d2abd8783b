"""A text query to the segment memory, independent of ROS, and its validation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
    extra: dict = field(default_factory=dict)


def validate_query(query: Query) -> None:
    """Raise QueryError naming what is wrong with the request."""
    if not query.text or not query.text.strip():
        raise QueryError("text is empty: describe the place or event to look for")
    if query.top_k < 0:
        raise QueryError(f"top_k must be >= 0, got {query.top_k}")
    if query.since_ns < 0 or query.until_ns < 0:
        raise QueryError("since/until must not be negative")
    if query.since_ns and query.until_ns and query.since_ns > query.until_ns:
        raise QueryError(f"since ({query.since_ns} ns) is after until ({query.until_ns} ns)")
    if not np.isfinite(query.radius) or query.radius < 0:
        raise QueryError(f"radius must be a finite number >= 0, got {query.radius}")
    if query.radius > 0 and not np.all(np.isfinite(query.near)):
        raise QueryError("near has non-finite coordinates")
    if not np.isfinite(query.min_score):
        raise QueryError("min_score is not finite")
    if query.trajectory is not None:
        traj = np.asarray(query.trajectory, dtype=np.float64)
        if traj.ndim != 2 or traj.shape[1] != 8:
            raise QueryError(f"trajectory must be [N, 8] TUM rows, got shape {traj.shape}")
        if len(traj) < 2:
            raise QueryError(f"trajectory needs at least 2 poses, got {len(traj)}")
        bad = np.flatnonzero(~np.isfinite(traj).all(axis=1))
        if bad.size:
            raise QueryError(f"trajectory pose {int(bad[0])} is not finite")
        if not untimed(traj) and np.any(np.diff(traj[:, 0]) <= 0):
            raise QueryError("trajectory stamps must be strictly increasing (or all equal, e.g. "
                             "all zero: a path then timed at trajectory_speed)")
        norms = np.linalg.norm(traj[:, 4:8], axis=1)
        if np.any(norms < 1e-6):
            raise QueryError(f"trajectory pose {int(np.argmin(norms))} has a zero quaternion")
    speed = query.trajectory_speed
    if not (np.isfinite(speed) and 0 <= speed <= MAX_TRAJECTORY_SPEED):
        raise QueryError(f"trajectory_speed must be in [0, {MAX_TRAJECTORY_SPEED:g}] m/s "
                         f"(0 = the node's default), got {speed}")


def untimed(trajectory: np.ndarray) -> bool:
    """True for a trajectory whose stamps carry no timing: all equal (e.g. all zero), as
    planners send a nav_msgs/Path."""
    stamps = np.asarray(trajectory, dtype=np.float64)[:, 0]
    return len(stamps) >= 2 and bool(np.all(stamps == stamps[0]))
