"""A short history of odometry poses and the pose at any camera stamp (interpolated)."""

from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spartan_ros.poses import quat_normalize, quat_slerp

NO_ODOMETRY = "no odometry yet"
STALE = "stale"
FUTURE = "future"
NOT_FINITE = "not finite"
OUT_OF_RANGE = "position out of range"
NOT_UNIT = "not a unit quaternion"
STAMP_JUMP = "stamp jump not confirmed"

# Odometry positions beyond this (metres) are sensor or publisher errors: Earth-centred
# coordinates stay below 1e7 m, and the pose maths must not overflow on differences and squares.
MAX_POSITION_M = 1e9
# A unit quaternion is expected; within this norm range it is normalised, outside it refused
# (tf2 refuses anything not within 1 %: this is kinder to sloppy publishers, not to garbage).
QUAT_NORM_RANGE = (0.5, 2.0)


def check_pose_numbers(position: np.ndarray, quat_xyzw: np.ndarray) -> str | None:
    """Why a position [3] and quaternion [4] cannot be used as a pose, or None when they can."""
    if not (np.isfinite(position).all() and np.isfinite(quat_xyzw).all()):
        return NOT_FINITE
    if np.abs(position).max() > MAX_POSITION_M:
        return OUT_OF_RANGE
    # Scale before squaring so that huge components cannot overflow the norm.
    peak = float(np.abs(quat_xyzw).max())
    if peak == 0.0:
        return "zero quaternion"
    norm = peak * float(np.linalg.norm(quat_xyzw / peak))
    if not QUAT_NORM_RANGE[0] <= norm <= QUAT_NORM_RANGE[1]:
        return NOT_UNIT
    return None


@dataclass(frozen=True, eq=False)
class PoseLookup:
    """The pose at a stamp, or why there is none (``reason``)."""

    row: np.ndarray | None  # [8] TUM row [t (s), x, y, z, qx, qy, qz, qw]; None if reason
    frame_id: str
    reason: str | None  # None, NO_ODOMETRY, STALE, FUTURE or NOT_FINITE
    gap_s: float  # distance in time to the nearest sample used (0 inside a bracket)

    @property
    def ok(self) -> bool:
        return self.reason is None


class OdometryBuffer:
    """Odometry samples (stamp, position, orientation xyzw, frame) of the last ``max_age_s``.

    Samples may arrive slightly out of order; they are kept sorted by stamp. A sample older than
    the newest by more than ``jump_back_s``, or newer by more than ``max_age_s``, is refused as
    a stamp jump; when the next sample follows it, the clock really jumped (a bag restarted, a
    simulator reset) and the history starts again from that next sample, as it does when the
    frame id changes. ``counts`` tallies accepted samples, rejections and resets by reason.
    """

    def __init__(self, max_age_s: float = 10.0, jump_back_s: float = 1.0) -> None:
        if not (max_age_s > 0 and math.isfinite(max_age_s)):
            raise ValueError(f"max_age_s must be a positive number, got {max_age_s}")
        if not (jump_back_s >= 0 and math.isfinite(jump_back_s)):
            raise ValueError(f"jump_back_s must be >= 0, got {jump_back_s}")
        self.max_age_ns = int(max_age_s * 1e9)
        self.jump_back_ns = int(jump_back_s * 1e9)
        self.counts: Counter[str] = Counter()
        self.frame_id = ""
        self._stamps: list[int] = []
        self._pos: list[np.ndarray] = []
        self._quat: list[np.ndarray] = []
        self._jumped: int | None = None  # stamp of the last sample refused as a jump

    def _continues(self, newest: int, stamp: int) -> bool:
        """Whether ``stamp`` can follow a history whose newest sample is ``newest``."""
        return newest - self.jump_back_ns <= stamp <= newest + self.max_age_ns

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def newest_ns(self) -> int | None:
        return self._stamps[-1] if self._stamps else None

    def clear(self) -> None:
        self._jumped = None
        self._stamps.clear()
        self._pos.clear()
        self._quat.clear()

    def add(
        self, stamp_ns: int, position: npt.ArrayLike, quat_xyzw: npt.ArrayLike, frame_id: str = ""
    ) -> str | None:
        """Insert a sample; returns None when accepted, else the reason it was rejected."""
        pos = np.asarray(position, dtype=np.float64).reshape(-1)
        quat = np.asarray(quat_xyzw, dtype=np.float64).reshape(-1)
        if pos.shape != (3,) or quat.shape != (4,):
            raise ValueError(
                f"odometry needs a position [3] and a quaternion [4], got {pos.shape}, {quat.shape}"
            )
        reason = check_pose_numbers(pos, quat)
        if reason is not None:
            self.counts[f"rejected: {reason}"] += 1
            return reason
        stamp = int(stamp_ns)
        if self._stamps and frame_id != self.frame_id:
            self.counts["reset: frame changed"] += 1
            self.clear()
        elif self._stamps and not self._continues(self._stamps[-1], stamp):
            # One sample far from the history is more often a bad stamp than a new clock: it
            # is refused, and the history restarts only when the next sample follows it.
            jumped, self._jumped = self._jumped, stamp
            if jumped is None or not self._continues(jumped, stamp):
                self.counts[f"rejected: {STAMP_JUMP}"] += 1
                return STAMP_JUMP
            back = stamp < self._stamps[-1]
            self.counts[f"reset: time jumped {'back' if back else 'forward'}"] += 1
            self.clear()
        self._jumped = None
        self.frame_id = frame_id
        q = quat_normalize(quat)
        i = bisect.bisect_left(self._stamps, stamp)
        if i < len(self._stamps) and self._stamps[i] == stamp:  # same stamp: the newer wins
            self._pos[i], self._quat[i] = pos, q
        else:
            self._stamps.insert(i, stamp)
            self._pos.insert(i, pos)
            self._quat.insert(i, q)
        # Forget samples older than max_age behind the newest.
        cut = bisect.bisect_left(self._stamps, self._stamps[-1] - self.max_age_ns)
        if cut:
            del self._stamps[:cut], self._pos[:cut], self._quat[:cut]
        self.counts["accepted"] += 1
        return None

    def pose_at(self, stamp_ns: int, max_gap_s: float) -> PoseLookup:
        """Pose at ``stamp_ns``: linear position and slerp orientation between the bracketing
        samples. Within ``max_gap_s`` outside the history the nearest end sample is held."""

        def fail(reason: str, gap: float = math.inf) -> PoseLookup:
            return PoseLookup(None, self.frame_id, reason, gap)

        if not (math.isfinite(max_gap_s) and max_gap_s >= 0):
            raise ValueError(f"max_gap_s must be a finite number >= 0, got {max_gap_s}")
        if not math.isfinite(float(stamp_ns)):
            return fail(NOT_FINITE)
        if not self._stamps:
            return fail(NO_ODOMETRY)
        stamp, max_gap = int(stamp_ns), int(max_gap_s * 1e9)
        stamps = self._stamps
        i = bisect.bisect_left(stamps, stamp)
        if i < len(stamps) and stamps[i] == stamp:
            pos, quat, gap = self._pos[i], self._quat[i], 0
        elif i == len(stamps):  # after the newest sample
            gap = stamp - stamps[-1]
            if gap > max_gap:
                return fail(FUTURE, gap * 1e-9)
            pos, quat = self._pos[-1], self._quat[-1]
        elif i == 0:  # before the oldest sample
            gap = stamps[0] - stamp
            if gap > max_gap:
                return fail(STALE, gap * 1e-9)
            pos, quat = self._pos[0], self._quat[0]
        else:
            s0, s1 = stamps[i - 1], stamps[i]
            near_gap = min(stamp - s0, s1 - stamp)
            if near_gap > max_gap:
                return fail(STALE, near_gap * 1e-9)
            alpha = (stamp - s0) / (s1 - s0)
            pos = self._pos[i - 1] + alpha * (self._pos[i] - self._pos[i - 1])
            quat = quat_slerp(self._quat[i - 1], self._quat[i], alpha)
            gap = 0
        row = np.concatenate([[stamp * 1e-9], pos, quat])
        if not np.isfinite(row).all():
            return fail(NOT_FINITE)
        return PoseLookup(row, self.frame_id, None, gap * 1e-9)
