"""Sliding window over encoded frames: emits a segment every ``stride_frames`` frames."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# Re-add the running sum from the stored frames this often, so float64 rounding cannot build up
# over a long drive (the sum is otherwise updated by one add and one subtract per frame).
_RESYNC_EVERY = 4096


@dataclass(frozen=True, eq=False)
class WindowReady:
    """A full window, ready to become a stored segment."""

    start_ns: int  # stamp of the first frame
    end_ns: int  # stamp of the last frame
    stamps_ns: np.ndarray  # [T] int64
    poses: np.ndarray  # [T, 8] float64 absolute TUM rows (odometry frame)
    video_feat: np.ndarray  # [E] float32 = mean of the frame features (docs/model.md 4)
    encoded: int = 0  # frames of the window whose feature the mean is over (T unless subsampled)


class SlidingWindow:
    """Holds the last ``window_frames`` frame features, poses and stamps.

    Each frame is encoded once by the caller and pushed once; the window's video feature is kept
    as a running sum (add the new frame, subtract the one leaving), so emitting costs O(E), never
    a re-encode. A frame may come without a feature (``feature=None``: the caller encodes only
    every k-th frame); it still brings its pose and stamp, and the video feature is the mean of
    the frames of the window that have one. After the window first fills, a ``WindowReady``
    comes out every ``stride_frames`` frames. A stamp that does not increase, or a gap over
    ``max_gap_s``, empties the window (the frames around it are not one continuous clip).
    """

    def __init__(
        self, window_frames: int = 24, stride_frames: int = 6, max_gap_s: float = 2.4
    ) -> None:
        if window_frames < 1:
            raise ValueError(f"window_frames must be >= 1, got {window_frames}")
        if not 1 <= stride_frames <= window_frames:
            raise ValueError(
                f"stride_frames must be in [1, window_frames={window_frames}], got {stride_frames}"
            )
        if not (math.isfinite(max_gap_s) and max_gap_s > 0):
            raise ValueError(f"max_gap_s must be a positive number, got {max_gap_s}")
        self.window_frames = window_frames
        self.stride_frames = stride_frames
        self.max_gap_ns = int(max_gap_s * 1e9)
        self.counts: Counter[str] = Counter()
        self._feats: np.ndarray | None = None  # [T, E] float32 ring, allocated on first push
        self._sum: np.ndarray | None = None  # [E] float64
        self._poses = np.zeros((window_frames, 8), dtype=np.float64)
        self._stamps = np.zeros(window_frames, dtype=np.int64)
        self._has = np.zeros(window_frames, dtype=bool)  # slot holds a feature
        self._next = 0  # ring slot the next frame goes to
        self._count = 0  # frames in the window (<= T)
        self._since_emit = 0
        self._pushes = 0

    def __len__(self) -> int:
        return self._count

    @property
    def last_stamp_ns(self) -> int | None:
        return int(self._stamps[(self._next - 1) % self.window_frames]) if self._count else None

    def reset(self, reason: str = "requested") -> None:
        """Empty the window (e.g. the sampler reported a reset, or a frame had no pose)."""
        if self._count:
            self.counts[f"reset: {reason}"] += 1
        self._count = self._next = self._since_emit = 0
        self._has[:] = False
        if self._sum is not None:
            self._sum[:] = 0.0

    def push(
        self, stamp_ns: int, feature: npt.ArrayLike | None, pose_row: npt.ArrayLike
    ) -> WindowReady | None:
        """Add one frame (its feature, or None when it was not encoded) with its pose; returns
        a window when one is due."""
        feat = None if feature is None else np.asarray(feature, dtype=np.float32).reshape(-1)
        pose = np.asarray(pose_row, dtype=np.float64).reshape(-1)
        self._check_shapes(feat, pose)
        if not ((feat is None or np.isfinite(feat).all()) and np.isfinite(pose).all()):
            self.counts["dropped: not finite"] += 1
            self.reset("frame not finite")  # the clip now has a hole
            return None
        stamp = int(stamp_ns)
        if not self._accept_stamp(stamp):
            return None
        self._store(stamp, feat, pose)
        # Just filled (since_emit == T >= stride) or stride frames since the last window.
        if self._count < self.window_frames or self._since_emit < self.stride_frames:
            return None
        self._since_emit = 0
        return self._window()

    def _check_shapes(self, feat: np.ndarray | None, pose: np.ndarray) -> None:
        if pose.shape != (8,):
            raise ValueError(f"pose_row must be a TUM row [8], got shape {list(pose.shape)}")
        if self._feats is None and feat is not None:
            self._feats = np.zeros((self.window_frames, feat.shape[0]), dtype=np.float32)
            self._sum = np.zeros(feat.shape[0], dtype=np.float64)
        if feat is not None and self._feats is not None and feat.shape[0] != self._feats.shape[1]:
            raise ValueError(
                f"frame feature has {feat.shape[0]} values, earlier frames {self._feats.shape[1]}"
            )

    def _accept_stamp(self, stamp: int) -> bool:
        """False for a repeated stamp; a jump back or a gap starts a new clip."""
        last = self.last_stamp_ns
        if last is None:
            return True
        if stamp == last:
            self.counts["dropped: duplicate stamp"] += 1
            return False
        if stamp < last:
            self.reset("time jumped back")
        elif stamp - last > self.max_gap_ns:
            self.reset("gap")
        return True

    def _store(self, stamp: int, feat: np.ndarray | None, pose: np.ndarray) -> None:
        """Put the frame in the ring, over the oldest one once full, keeping the running sum."""
        slot = self._next
        if self._count == self.window_frames:
            if self._has[slot]:
                assert self._feats is not None and self._sum is not None
                self._sum -= self._feats[slot]
        else:
            self._count += 1
        self._has[slot] = feat is not None
        if feat is not None:
            assert self._feats is not None and self._sum is not None
            self._feats[slot] = feat
            self._sum += feat
        self._poses[slot] = pose
        self._stamps[slot] = stamp
        self._next = (slot + 1) % self.window_frames
        self._since_emit += 1
        self._pushes += 1
        self.counts["frames"] += 1
        if self._pushes % _RESYNC_EVERY == 0 and self._feats is not None:
            assert self._sum is not None
            self._sum[:] = self._feats[: self._count][self._has[: self._count]].sum(
                axis=0, dtype=np.float64)

    def _window(self) -> WindowReady | None:
        """The ring in time order, its feature the mean of the encoded frames."""
        encoded = int(self._has.sum())
        if encoded == 0 or self._sum is None:
            self.counts["dropped: window without an encoded frame"] += 1
            return None
        self.counts["windows"] += 1
        order = (self._next + np.arange(self.window_frames)) % self.window_frames
        stamps = self._stamps[order].copy()
        return WindowReady(
            start_ns=int(stamps[0]),
            end_ns=int(stamps[-1]),
            stamps_ns=stamps,
            poses=self._poses[order].copy(),
            video_feat=(self._sum / encoded).astype(np.float32),
            encoded=encoded,
        )
