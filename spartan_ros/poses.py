"""Pose windows and small quaternion helpers (numpy only).

Pose rows are TUM order ``[t, x, y, z, qx, qy, qz, qw]``: quaternions are scalar-last
``[x, y, z, w]`` everywhere here. All quaternion helpers broadcast over leading dimensions.
"""

from __future__ import annotations

import numpy as np

CONVENTIONS = ("reference", "heading")

# Below this angle between two quaternions slerp's sin(theta) loses precision; lerp is exact enough.
_SLERP_LINEAR_DOT = 0.9995


def quat_normalize(q: np.ndarray) -> np.ndarray:
    """Unit quaternion(s) ``q / |q|``; raises ValueError on a zero-length quaternion."""
    q = np.asarray(q, dtype=np.float64)
    if q.shape[-1:] != (4,):
        raise ValueError(f"quaternion must have a last dimension of 4, got shape {q.shape}")
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(~(norm > 0)) or not np.all(np.isfinite(norm)):
        raise ValueError("cannot normalise a zero-length or non-finite quaternion")
    return q / norm


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    """Conjugate ``[-x, -y, -z, w]``; the inverse for unit quaternions."""
    q = np.asarray(q, dtype=np.float64)
    return np.concatenate([-q[..., :3], q[..., 3:]], axis=-1)


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` (apply ``b`` first, then ``a``)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ax, ay, az, aw = np.moveaxis(a, -1, 0)
    bx, by, bz, bw = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ],
        axis=-1,
    )


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix ``[..., 3, 3]`` of (normalised) quaternion(s) ``[..., 4]``."""
    x, y, z, w = np.moveaxis(quat_normalize(q), -1, 0)
    m = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    )  # fmt: skip
    return m.reshape(m.shape[:-1] + (3, 3))


def quat_rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vector(s) ``v [..., 3]`` by (normalised) quaternion(s) ``q [..., 4]``."""
    v = np.asarray(v, dtype=np.float64)
    if v.shape[-1:] != (3,):
        raise ValueError(f"vector must have a last dimension of 3, got shape {v.shape}")
    u = quat_normalize(q)
    r, w = u[..., :3], u[..., 3:]
    # v' = v + 2w (r x v) + 2 r x (r x v), the expanded form of q v q*.
    t = 2.0 * np.cross(r, v)
    return v + w * t + np.cross(r, t)


def quat_from_axis_angle(axis: np.ndarray, angle: np.ndarray | float) -> np.ndarray:
    """Quaternion rotating by ``angle`` radians about ``axis`` (normalised here)."""
    axis = np.asarray(axis, dtype=np.float64)
    norm = np.linalg.norm(axis, axis=-1, keepdims=True)
    if np.any(~(norm > 0)):
        raise ValueError("rotation axis must be non-zero")
    half = 0.5 * np.asarray(angle, dtype=np.float64)[..., None]
    return np.concatenate([axis / norm * np.sin(half), np.cos(half)], axis=-1)


def quat_from_yaw(yaw: np.ndarray | float) -> np.ndarray:
    """Quaternion of a pure rotation by ``yaw`` radians about +z."""
    return quat_from_axis_angle(np.array([0.0, 0.0, 1.0]), yaw)


def quat_yaw(q: np.ndarray) -> np.ndarray:
    """Heading (rotation about +z, ZYX Euler convention) in radians, in (-pi, pi]."""
    x, y, z, w = np.moveaxis(quat_normalize(q), -1, 0)
    return np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def quat_slerp(q0: np.ndarray, q1: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
    """Spherical interpolation from ``q0`` (alpha 0) to ``q1`` (alpha 1) along the shorter arc."""
    q0 = quat_normalize(q0)
    q1 = quat_normalize(q1)
    a = np.asarray(alpha, dtype=np.float64)[..., None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    # q and -q are the same rotation; flip q1 so we never take the long way round.
    q1 = np.where(dot < 0.0, -q1, q1)
    dot = np.abs(dot)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    sin_theta = np.sin(theta)
    near = dot > _SLERP_LINEAR_DOT
    safe_sin = np.where(near, 1.0, sin_theta)
    w0 = np.where(near, 1.0 - a, np.sin((1.0 - a) * theta) / safe_sin)
    w1 = np.where(near, a, np.sin(a * theta) / safe_sin)
    return quat_normalize(w0 * q0 + w1 * q1)


def interpolate_pose(t: np.ndarray | float, rows: np.ndarray) -> np.ndarray:
    """Pose at time(s) ``t`` from TUM rows ``[N, 8]`` with strictly increasing timestamps.

    Positions are interpolated linearly, orientations with slerp. A scalar ``t`` gives one row
    ``[8]``, an array of times gives ``[M, 8]``. Times outside ``[rows[0, 0], rows[-1, 0]]`` raise
    ValueError (no extrapolation: a stale pose is worse than a clear error).
    """
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != 8 or rows.shape[0] == 0:
        raise ValueError(f"pose rows must have shape [N, 8] with N >= 1, got {rows.shape}")
    _check_finite(rows)
    times = rows[:, 0]
    if np.any(np.diff(times) <= 0):
        bad = int(np.argmax(np.diff(times) <= 0)) + 1
        raise ValueError(f"pose timestamps must be strictly increasing (row {bad})")
    ts = np.asarray(t, dtype=np.float64)
    scalar = ts.ndim == 0
    ts = np.atleast_1d(ts)
    if not np.all(np.isfinite(ts)):
        raise ValueError("query time must be finite")
    if np.any(ts < times[0]) or np.any(ts > times[-1]):
        raise ValueError(
            f"query time outside the pose range [{times[0]!r}, {times[-1]!r}]: "
            f"{ts[(ts < times[0]) | (ts > times[-1])][0]!r}"
        )
    if len(rows) == 1:
        out = np.repeat(rows, len(ts), axis=0)
        out[:, 0] = ts
        return out[0] if scalar else out
    # Segment i spans rows i and i+1; clip so t == last time uses the last segment with alpha 1.
    i = np.clip(np.searchsorted(times, ts, side="right") - 1, 0, len(rows) - 2)
    r0, r1 = rows[i], rows[i + 1]
    alpha = (ts - r0[:, 0]) / (r1[:, 0] - r0[:, 0])
    pos = r0[:, 1:4] + alpha[:, None] * (r1[:, 1:4] - r0[:, 1:4])
    quat = quat_slerp(r0[:, 4:8], r1[:, 4:8], alpha)
    out = np.concatenate([ts[:, None], pos, quat], axis=1)
    return out[0] if scalar else out


def _check_finite(poses: np.ndarray) -> None:
    finite = np.isfinite(poses).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise ValueError(f"pose row {row} has a non-finite value: {poses[row].tolist()}")


def relative_window(poses: np.ndarray, convention: str = "reference") -> np.ndarray:
    """Make a TUM pose window ``[T, 8]`` relative to its first row; returns float32 ``[T, 8]``.

    ``"reference"`` reproduces SPARTAN's dataset (docs/model.md 5.1, Q4): columns 0..3 minus row 0
    (in the input's own float precision), quaternion left absolute, then rounded through float16
    because the network was trained on fp16 poses.

    ``"heading"`` removes the first frame's pose entirely: time relative to row 0, positions in the
    first frame's body axes (``R0^T (p - p0)``), orientation ``q0^-1 q`` with ``qw >= 0``; no
    rounding. The result does not depend on where the trajectory lies or which way it faces.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown pose convention {convention!r}; expected one of {CONVENTIONS}")
    arr = np.asarray(poses)
    if arr.ndim != 2 or arr.shape[1] != 8 or arr.shape[0] == 0:
        raise ValueError(f"pose window must have shape [T, 8] with T >= 1, got {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"pose window must be numeric, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    _check_finite(arr)

    if convention == "reference":
        rel = arr.copy()
        rel[:, :4] -= arr[0, :4]
        with np.errstate(over="ignore"):  # overflow is reported below with the row number
            half = rel.astype(np.float16)
        if not np.all(np.isfinite(half)):
            row = int(np.argmin(np.isfinite(half).all(axis=1)))
            raise ValueError(f"pose row {row} overflows float16 after relativisation: {rel[row]}")
        return half.astype(np.float32)

    a = arr.astype(np.float64)
    norms = np.linalg.norm(a[:, 4:8], axis=1)
    if np.any(norms == 0):
        raise ValueError(f"pose row {int(np.argmin(norms))} has a zero-length quaternion")
    q = a[:, 4:8] / norms[:, None]
    q0_inv = quat_conjugate(q[0])
    out = np.empty_like(a)
    out[:, 0] = a[:, 0] - a[0, 0]
    out[:, 1:4] = quat_rotate(q0_inv, a[:, 1:4] - a[0, 1:4])
    q_rel = quat_multiply(q0_inv, q)
    out[:, 4:8] = np.where(q_rel[:, 3:4] < 0, -q_rel, q_rel)
    out[0, 4:8] = (0.0, 0.0, 0.0, 1.0)  # exact identity instead of q0^-1 q0 rounding noise
    return out.astype(np.float32)


WINDOW_ALIGNS = ("start", "center", "end")


def resample_window(
    rows: np.ndarray, frames: int = 24, rate_hz: float = 10.0, align: str = "center"
) -> np.ndarray:
    """A trajectory of any length and rate (TUM rows ``[N, 8]``) -> a ``[frames, 8]`` window.

    The window keeps real time: ``frames`` samples ``1 / rate_hz`` apart (2.3 s for 24 at 10 Hz),
    because the network sees time and distance, and squeezing a longer drive into the window
    would make it look faster than it was. ``align`` picks which part of a longer trajectory is
    kept (its start, middle or end). Where a shorter trajectory does not reach, the pose is held
    at its first / last row (the vehicle is taken as standing) while the time column keeps
    advancing. Poses between rows are interpolated with ``interpolate_pose`` (linear position,
    slerp orientation). Returns float64 absolute rows; the time column starts at the first sample.
    """
    if align not in WINDOW_ALIGNS:
        raise ValueError(f"align must be one of {WINDOW_ALIGNS}, got {align!r}")
    if isinstance(frames, bool) or not isinstance(frames, int | np.integer) or frames < 1:
        raise ValueError(f"frames must be a positive integer, got {frames!r}")
    if not (np.isfinite(rate_hz) and rate_hz > 0):
        raise ValueError(f"rate_hz must be a positive number, got {rate_hz!r}")
    arr = np.asarray(rows, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 8 or arr.shape[0] == 0:
        raise ValueError(f"trajectory must have shape [N, 8] with N >= 1, got {arr.shape}")
    first, last = arr[0, 0], arr[-1, 0]
    span = (frames - 1) / rate_hz
    start = {"start": first, "center": 0.5 * (first + last - span), "end": last - span}[align]
    times = start + np.arange(frames) / rate_hz
    # interpolate_pose validates the rows (finite, increasing stamps) and never extrapolates
    out = interpolate_pose(np.clip(times, first, last), arr)
    out[:, 0] = times
    return out


def path_length(rows: np.ndarray) -> float:
    """Length in metres of the polyline through the positions of TUM rows ``[N, 8]``."""
    xyz = np.asarray(rows, dtype=np.float64)[:, 1:4]
    return float(np.linalg.norm(np.diff(xyz, axis=0), axis=1).sum())


def time_along_path(rows: np.ndarray, speed_mps: float) -> np.ndarray:
    """Poses without timing (a planner's path) -> the same poses driven at ``speed_mps``.

    Each pose gets the time the vehicle needs to reach it along the path at constant speed,
    ``t_i = s_i / speed`` with ``s_i`` the path length up to pose ``i`` (so the first pose is at
    0 s). A pose at the same position as the one before adds no time and is dropped, the first of
    such a run kept. Raises ValueError when the path does not move at all.
    """
    if not (np.isfinite(speed_mps) and speed_mps > 0):
        raise ValueError(f"speed must be a positive number of m/s, got {speed_mps!r}")
    arr = np.asarray(rows, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 8 or arr.shape[0] == 0:
        raise ValueError(f"trajectory must have shape [N, 8] with N >= 1, got {arr.shape}")
    _check_finite(arr)
    steps = np.linalg.norm(np.diff(arr[:, 1:4], axis=0), axis=1)
    keep = np.concatenate([[True], steps > 0])
    if keep.sum() < 2:
        raise ValueError("all its poses are at one position: without stamps it cannot be timed "
                         "(give real stamps, or poses along the way)")
    out = arr[keep].copy()
    out[:, 0] = np.concatenate([[0.0], np.cumsum(steps[steps > 0])]) / speed_mps
    return out
