"""The vehicle's memory as plain calls: ingest frames and odometry, store segments, answer queries.

``MemoryService`` owns the sampler, the odometry history, the sliding window, the engine and the
segment store; it knows nothing about ROS. The node feeds it from subscription callbacks and runs
``process()`` in a worker thread (``IngestWorker``); ``spartan-bag eval`` drives the same calls
offline, in message order, with the same results.

Per camera frame (``add_frame``, cheap, safe to call from a callback): the sampler decides whether
the frame is taken at the model's rate; a taken frame waits in a bounded queue (the oldest is
dropped when inference falls behind). ``process()`` takes the frames whose pose can be
decided, interpolates the vehicle pose at each stamp, encodes the batch once, pushes the features
into the window, and stores every window that comes out as a segment. A frame's pose is decided
once odometry reaches its stamp (so it is interpolated, not extrapolated), or once a camera frame
``odometry_wait_s`` newer arrived (odometry is late or missing: the lookup then fails, or holds
the last sample within ``max_pose_gap_s``); live (with a ``wall_clock``) the frame must also have
waited that long in wall time. Offline the decision uses message stamps only, so a replay in
message order gives the same segments every time.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from spartan_ros.ingest import FrameSampler, OdometryBuffer, SlidingWindow, WindowReady
from spartan_ros.ingest.sampler import STAMP_JUMP
from spartan_ros.memory.backend import MemoryBackend, Searchable
from spartan_ros.memory.integrity import StorageError
from spartan_ros.memory.store import Segment
from spartan_ros.poses import path_length, time_along_path
from spartan_ros.query import Query, QueryError, untimed, validate_query
from spartan_ros.runtime.scoring import FusionHead

BAD_STAMP = "bad stamp (zero or negative)"

# A frame is an RGB uint8 [H, W, 3] array, or a function returning one (decoded in the worker).
FrameSource = np.ndarray | Callable[[], np.ndarray]


class Encoder(Protocol):
    """What the service needs from ``spartan_ros.runtime.engine.Engine``."""

    model_hash: str
    embed_dim: int
    window: int  # T poses per window
    window_rate_hz: float  # ... at this rate
    fusion_head: FusionHead

    def encode_frames(self, images: Any, color: str = "rgb") -> np.ndarray: ...
    def encode_text(self, texts: list[str]) -> np.ndarray: ...
    def encode_pose(self, windows_abs: np.ndarray) -> np.ndarray: ...
    def encode_query(self, texts: list[str], windows_abs: np.ndarray) -> np.ndarray: ...
    def resample_window(
        self, rows: np.ndarray, frames: int | None = None, rate_hz: float | None = None,
        align: str = "center",
    ) -> np.ndarray: ...


class Log(Protocol):
    def info(self, msg: str) -> Any: ...
    def warning(self, msg: str) -> Any: ...
    def error(self, msg: str) -> Any: ...


@dataclass
class ServiceConfig:
    sample_rate_hz: float = 10.0
    window_frames: int = 24
    stride_frames: int = 6
    max_pose_gap_s: float = 0.25
    max_pending_frames: int = 64
    encode_batch_size: int = 8
    # Encode every k-th taken frame (1 = all); a window's feature is the mean of those it encoded.
    encode_every: int = 1
    max_segments: int = 0  # 0 = unbounded
    default_top_k: int = 5
    trajectory_speed: float = 5.0  # m/s for a query trajectory without stamps (speed 0 asked)
    odometry_history_s: float = 10.0
    # A taken frame waits this long (in camera time, and live in wall time too) for odometry to
    # reach its stamp, so its pose is interpolated even when odometry arrives late; then it is
    # decided with what is there.
    # 3 s: reliable odometry arrives in order but late when the computer is starved of CPU.
    odometry_wait_s: float = 3.0
    log_every_s: float = 5.0  # throttle of repeated warnings
    warn_hold_s: float = 30.0  # diagnostics stay WARN this long after an odometry frame change

    @property
    def window_span_s(self) -> float:
        """Duration of one window: a gap longer than this starts a new clip."""
        return self.window_frames / self.sample_rate_hz


@dataclass(frozen=True, eq=False)
class Match:
    """One query result (ROS-free), best first."""

    id: int
    rank: int
    score: float
    start_ns: int
    end_ns: int
    frame_id: str
    poses: np.ndarray  # [T, 8] absolute TUM rows in frame_id
    stamps_ns: np.ndarray  # [T] int64 stamps of the poses
    distance: float  # path length, metres
    vehicle_id: str = ""  # the vehicle that recorded the segment

    @property
    def frame_count(self) -> int:
        return int(self.poses.shape[0])


@dataclass(frozen=True)
class QueryResult:
    matches: list[Match]
    candidates: int  # segments left after the time and spatial filters
    notes: tuple[str, ...] = ()  # how the request was read, for the caller (e.g. timing)


@dataclass(frozen=True)
class StoredInfo:
    id: int
    start_ns: int
    end_ns: int
    evicted: tuple[int, ...] = ()


@dataclass
class _Pending:
    stamp_ns: int
    image: FrameSource
    reset: str | None  # the window must be emptied before this frame (time jump, gap)
    arrived: float = 0.0  # wall clock (wall_clock) when it came in; 0 without one


@dataclass
class Latency:
    """Running figures of the frame encoder, milliseconds per frame."""

    last_ms: float = 0.0
    mean_ms: float = 0.0  # exponential moving mean
    batches: int = 0

    def add(self, seconds: float, frames: int) -> None:
        per_frame = 1000.0 * seconds / max(frames, 1)
        self.last_ms = per_frame
        self.mean_ms = per_frame if self.batches == 0 else 0.9 * self.mean_ms + 0.1 * per_frame
        self.batches += 1


@dataclass
class _Throttle:
    period_s: float
    _last: dict[str, float] = field(default_factory=dict)

    def ready(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -math.inf) >= self.period_s:
            self._last[key] = now
            return True
        return False


def _fmt_stamp(ns: int) -> str:
    return f"{ns * 1e-9:.3f} s"


def check_rgb(image: object) -> np.ndarray:
    """The frame as an RGB uint8 [H, W, 3] array, or ValueError saying what is wrong."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"a frame must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"a frame must be uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"a frame must not be empty, got {list(image.shape)}")
    return image


def _check_config(cfg: ServiceConfig) -> None:
    if not 1 <= cfg.stride_frames <= cfg.window_frames:
        raise ValueError(f"stride_frames must be in [1, window_frames], got {cfg.stride_frames}")
    for name in ("max_pending_frames", "encode_batch_size", "default_top_k"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if not 1 <= cfg.encode_every <= cfg.window_frames:
        raise ValueError(f"encode_every must be in [1, window_frames={cfg.window_frames}], "
                         f"got {cfg.encode_every}")
    if cfg.max_segments < 0:
        raise ValueError(f"max_segments must be >= 0, got {cfg.max_segments}")


class MemoryService:
    """Ingest and query, driven by plain calls. Thread-safe: any number of threads may call
    ``add_*`` and ``query``; ``process`` runs in one thread at a time."""

    def __init__(
        self,
        engine: Encoder,
        store: MemoryBackend,
        config: ServiceConfig | None = None,
        log: Log | None = None,
        fleet: Searchable | None = None,
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        self.engine = engine
        # Live, a frame also waits odometry_wait_s of this clock: after a stall one stream can
        # arrive seconds of camera time ahead of the other (see _decidable). None: message
        # stamps only, so an offline replay in message order always decides the same way.
        self._wall = wall_clock
        self.store = store
        self.fleet = fleet  # answers requests with scope "fleet" (every vehicle's segments)
        self.config = cfg = config or ServiceConfig()
        if store.model_hash != engine.model_hash or store.embed_dim != engine.embed_dim:
            raise ValueError("the store was opened for another model than the engine")
        _check_config(cfg)
        self.log: Log = log or logging.getLogger("spartan_ros.memory")
        self.odometry = OdometryBuffer(max_age_s=cfg.odometry_history_s)
        self.sampler = FrameSampler(cfg.sample_rate_hz, max_gap_s=cfg.window_span_s)
        self.window = SlidingWindow(cfg.window_frames, cfg.stride_frames, cfg.window_span_s)
        self.counts: Counter[str] = Counter()
        self.latency = Latency()
        self.last_segment: StoredInfo | None = None
        self._wait_ns = int(max(cfg.max_pose_gap_s, cfg.odometry_wait_s) * 1e9)
        self._lock = threading.Lock()  # odometry, sampler, queue, counts
        self._work = threading.Condition(self._lock)
        self._process_lock = threading.Lock()  # window, store writes: one processor at a time
        self._pending: deque[_Pending] = deque()
        self._in_flight = 0  # frames taken off the queue and not yet pushed / stored
        self._carry_reset: str | None = None  # reset of a frame that was dropped
        self._latest_image_ns: int | None = None
        self._flushing = False
        self._window_frame_id: str | None = None
        self._since_encoded = 0  # frames pushed without a feature since the last encoded one
        self._throttle = _Throttle(cfg.log_every_s)
        self._frame_warning: tuple[str, float] | None = None  # (text, monotonic time)
        self._odom_frame: str | None = None  # frame_id of the last accepted odometry sample
        self._held: _Pending | None = None  # a frame whose stamp jumped, until the next one
        # Called with each segment (as a Match with rank 0 and score 0) once its commit returned,
        # from the thread that stored it; the node publishes it on ~/segments.
        self.on_stored: Callable[[Match], None] | None = None
        self.storage_error: str | None = None  # the last failed write, until one succeeds
        self._writes_cv = threading.Condition()
        self._writes: deque[Segment] | None = None  # segments for the writer thread, if any
        self._writer: threading.Thread | None = None
        self._writing = 0
        for problem in store.problems:  # damage found when the file was opened: say it loudly
            self.log.error(problem)

    # -- input ----------------------------------------------------------------------------------

    def add_odometry(
        self,
        stamp_ns: int,
        position: npt.ArrayLike,
        quat_xyzw: npt.ArrayLike,
        frame_id: str = "",
    ) -> str | None:
        """One odometry sample; returns None when accepted, else why it was rejected."""
        with self._work:
            resets = self._odometry_resets()
            reason = BAD_STAMP if int(stamp_ns) <= 0 else self.odometry.add(
                stamp_ns, position, quat_xyzw, frame_id)
            self.counts["odometry received"] += 1
            if reason is not None:
                self.counts[f"odometry rejected: {reason}"] += 1
                self._warn(f"odometry: {reason}",
                           f"odometry sample at {_fmt_stamp(stamp_ns)} rejected: {reason} "
                           f"({self.counts[f'odometry rejected: {reason}']} so far)")
            elif self._odom_frame is not None and frame_id != self._odom_frame:
                self._frame_changed(self._odom_frame, frame_id)
            elif self._odometry_resets() != resets:
                self.log.info(f"odometry history restarted at {_fmt_stamp(stamp_ns)} "
                              "(the stamps jumped)")
            if reason is None:
                self._odom_frame = frame_id
            self._work.notify_all()
            return reason

    def _frame_changed(self, old: str, new: str) -> None:
        """A WARN (log and diagnostics): poses of two frames cannot be mixed in one window, and
        two odometry sources alternating on one topic means nothing can be stored."""
        self.counts["odometry frame changes"] += 1
        n = self.counts["odometry frame changes"]
        self._frame_warning = (
            f"odometry frame_id changed from {old!r} to {new!r} ({n} change{'s' * (n > 1)} "
            "so far; a second odometry source on the topic?): the odometry history and the "
            "window restart at each change", time.monotonic())
        self._warn("odometry frame", self._frame_warning[0])

    def add_frame(self, stamp_ns: int, image: FrameSource) -> bool:
        """One camera frame (RGB, or a function decoding it); True when the sampler took it."""
        stamp = int(stamp_ns)
        with self._work:
            self.counts["frames received"] += 1
            if stamp <= 0:  # unset (0) or negative: not a time at all
                self._drop_frame(BAD_STAMP, stamp)
                return False
            decision = self.sampler.offer(stamp)
            held, self._held = self._held, None
            if held is not None and decision.discard:
                self._drop_frame(STAMP_JUMP, held.stamp_ns)
            if held is not None and decision.release is not None:  # the stream restarted
                held.reset = decision.release
                self._enqueue(held)
            if decision.held:  # kept until the next frame says whether the stream jumped
                self._held = _Pending(stamp, image, None, self._now())
                return False
            self._latest_image_ns = stamp
            if not decision.take:
                return False
            self._enqueue(_Pending(stamp, image, decision.reset, self._now()))
            return True

    def _now(self) -> float:
        return self._wall() if self._wall is not None else 0.0

    def _enqueue(self, frame: _Pending) -> None:
        """A frame the sampler took joins the encoder's queue (called with the lock held)."""
        if frame.reset is not None:
            self.log.info(f"camera stream restarts at {_fmt_stamp(frame.stamp_ns)} "
                          f"({frame.reset}): the window starts again")
        self.counts["frames taken"] += 1
        self._pending.append(frame)
        if len(self._pending) > self.config.max_pending_frames:
            self._drop_pending("inference behind")
        self._work.notify_all()

    def _drop_frame(self, reason: str, stamp: int) -> None:
        """Count and warn (throttled) about a frame refused for its stamp; the window goes on."""
        self.counts[f"dropped: {reason}"] += 1
        self._warn(f"frame: {reason}",
                   f"dropped the camera frame stamped {_fmt_stamp(stamp)}: {reason}; the window "
                   f"in progress is kept ({self.counts[f'dropped: {reason}']} so far)")

    def reject_frame(self, reason: str, detail: str = "") -> None:
        """Count (and log, throttled) a frame the caller could not turn into an image."""
        with self._lock:
            self.counts["frames received"] += 1
            self.counts[f"dropped: {reason}"] += 1
            n = self.counts[f"dropped: {reason}"]
        self._warn(f"frame: {reason}", f"dropped a camera frame: {detail or reason} ({n} so far)")

    # -- processing -----------------------------------------------------------------------------

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def wait_for_work(self, timeout: float) -> bool:
        """Block until a frame can be processed (True) or ``timeout`` seconds passed (False)."""
        with self._work:
            return self._work.wait_for(self._has_ready, timeout)

    def wake(self) -> None:
        with self._work:
            self._work.notify_all()

    def process(self) -> list[StoredInfo]:
        """Encode one batch of ready frames; returns the segments stored on the way."""
        with self._process_lock:
            with self._lock:
                batch = self._take_ready()
                self._in_flight = len(batch)
            try:
                return self._process(batch)
            finally:
                with self._lock:
                    self._in_flight = 0

    def _process(self, batch: list[tuple[_Pending, np.ndarray, str]]) -> list[StoredInfo]:
        """Decode, encode and push a batch taken off the queue (in order)."""
        if not batch:
            return []
        images, kept = [], []
        for (frame, row, frame_id), encode in zip(batch, self._to_encode(batch), strict=True):
            if not encode:  # encode_every: only its pose joins the window, never decoded
                kept.append((frame, row, frame_id, False))
                continue
            try:
                img = frame.image() if callable(frame.image) else frame.image
                images.append(check_rgb(img))
                kept.append((frame, row, frame_id, True))
            except Exception as exc:  # a bad frame must not stop ingest
                self._carry(frame.reset)
                self._count_drop("bad image", f"frame at {_fmt_stamp(frame.stamp_ns)}: {exc}")
        if not kept:
            return []
        feats = np.zeros((0, 0), dtype=np.float32)
        if images:
            t0 = time.perf_counter()
            try:
                feats = np.asarray(self.engine.encode_frames(images, color="rgb"),
                                   dtype=np.float32)
            except Exception as exc:
                for frame, _, _, _ in kept:
                    self._carry(frame.reset)
                with self._lock:
                    self.counts["dropped: encoding failed"] += len(kept)
                self.log.error(f"encoding {len(kept)} frames failed: {type(exc).__name__}: {exc}")
                return []
            with self._lock:
                self.latency.add(time.perf_counter() - t0, len(images))
                self.counts["frames encoded"] += len(images)
        if len(kept) > len(images):
            with self._lock:
                self.counts["frames not encoded (encode_every)"] += len(kept) - len(images)
        stored = []
        next_feat = iter(feats)
        for frame, row, frame_id, encoded in kept:
            feat = next(next_feat) if encoded else None
            with self._lock:  # the window's counters are read by stats()
                ready = self._push(frame, row, frame_id, feat)
            if ready is not None:
                info = self._store(ready, frame_id)
                if info is not None:
                    stored.append(info)
        return stored

    def _to_encode(self, batch: list[tuple[_Pending, np.ndarray, str]]) -> list[bool]:
        """Which frames of the batch to encode: every ``encode_every``-th, and always the first
        of a window (after a reset or into an empty window)."""
        k = self.config.encode_every
        if k == 1:
            return [True] * len(batch)
        out = []
        empty = len(self.window) == 0
        for frame, _, _ in batch:
            encode = empty or frame.reset is not None or self._since_encoded >= k - 1
            self._since_encoded = 0 if encode else self._since_encoded + 1
            empty = False
            out.append(encode)
        return out

    def flush(self) -> list[StoredInfo]:
        """End of stream: decide every waiting frame now and process them all."""
        with self._lock:
            self._flushing = True
        stored = []
        try:
            while self.pending():
                stored += self.process()
        finally:
            with self._lock:
                self._flushing = False
        return stored

    def end_stream(self) -> None:
        """Forget the stream (e.g. the node was deactivated): the next frame starts afresh.
        Waiting frames are dropped; call ``flush()`` first to keep them."""
        with self._process_lock, self._lock:
            self._pending.clear()
            self._held = None
            self._carry_reset = None
            self._latest_image_ns = None
            self.sampler.reset()
            self.window.reset("stream ended")
            self.odometry.clear()
            self._window_frame_id = None
            self._since_encoded = 0

    def _has_ready(self) -> bool:
        return bool(self._pending) and self._decidable(self._pending[0])

    def _decidable(self, frame: _Pending) -> bool:
        newest = self.odometry.newest_ns
        latest = self._latest_image_ns
        return (
            self._flushing
            or (newest is not None and newest >= frame.stamp_ns)
            or latest is None
            or latest < frame.stamp_ns  # the camera went back in time: nothing more will come
            or (latest - frame.stamp_ns > self._wait_ns and self._waited(frame))
        )

    def _waited(self, frame: _Pending) -> bool:
        """Whether the frame waited odometry_wait_s of wall time too (always true offline).
        A stalled reader's odometry is repaired by DDS a moment after the camera frames that
        overtook it: camera time alone would give up on it too early."""
        if self._wall is None:
            return True
        return self._wall() - frame.arrived > self._wait_ns * 1e-9

    def _take_ready(self) -> list[tuple[_Pending, np.ndarray, str]]:
        """Pop the decidable head of the queue (up to one batch) with each frame's pose."""
        batch: list[tuple[_Pending, np.ndarray, str]] = []
        while (
            self._pending
            and len(batch) < self.config.encode_batch_size
            and self._decidable(self._pending[0])
        ):
            frame = self._pending.popleft()
            if self._carry_reset is not None and frame.reset is None:
                frame.reset, self._carry_reset = self._carry_reset, None
            look = self.odometry.pose_at(frame.stamp_ns, self.config.max_pose_gap_s)
            if look.row is None:
                reason = f"pose {look.reason}"
                self.counts[f"dropped: {reason}"] += 1
                self._carry_reset = frame.reset or self._carry_reset
                gap = f" (nearest odometry {look.gap_s:.2f} s away)" if math.isfinite(
                    look.gap_s) else ""
                self._warn(f"pose: {look.reason}",
                           f"dropped the frame at {_fmt_stamp(frame.stamp_ns)}: {reason}{gap}; "
                           f"max_pose_gap_s={self.config.max_pose_gap_s} "
                           f"({self.counts[f'dropped: {reason}']} so far)")
                continue
            batch.append((frame, look.row, look.frame_id))
        return batch

    def _drop_pending(self, reason: str) -> None:
        frame = self._pending.popleft()
        self._carry_reset = frame.reset or self._carry_reset
        self.counts[f"dropped: {reason}"] += 1
        self._warn(f"queue: {reason}",
                   f"dropped the frame at {_fmt_stamp(frame.stamp_ns)}: {reason} (more than "
                   f"max_pending_frames={self.config.max_pending_frames} waiting; "
                   f"{self.counts[f'dropped: {reason}']} so far)")

    def _carry(self, reset: str | None) -> None:
        if reset is not None:
            with self._lock:
                self._carry_reset = self._carry_reset or reset

    def _push(
        self, frame: _Pending, row: np.ndarray, frame_id: str, feat: np.ndarray | None
    ) -> WindowReady | None:
        if frame.reset is not None:
            self.window.reset(frame.reset)
        elif self._window_frame_id is not None and frame_id != self._window_frame_id:
            self._warn("window frame", f"odometry frame changed from {self._window_frame_id!r} "
                       f"to {frame_id!r}: the window starts again")
            self.window.reset("odometry frame changed")
        self._window_frame_id = frame_id
        before = sum(v for k, v in self.window.counts.items() if k.startswith("reset"))
        ready = self.window.push(frame.stamp_ns, feat, row)
        after = sum(v for k, v in self.window.counts.items() if k.startswith("reset"))
        if after != before and frame.reset is None:
            self.log.info(f"window restarts at {_fmt_stamp(frame.stamp_ns)} (time jumped back "
                          f"or a gap over {self.config.window_span_s:.1f} s)")
        return ready

    def _store(self, ready: WindowReady, frame_id: str) -> StoredInfo | None:
        """Build the segment and store it: now, or through the writer thread when one runs
        (then None is returned and the writer logs it once committed)."""
        engine = self.engine
        poses = ready.poses
        try:
            rows = poses
            if (rows.shape[0] != engine.window
                    or self.config.sample_rate_hz != engine.window_rate_hz):
                rows = engine.resample_window(poses)  # the model's T poses at its rate
            pose_feat = np.asarray(engine.encode_pose(rows[None]), dtype=np.float32)[0]
            segment = Segment.build(engine.fusion_head, ready.start_ns, ready.end_ns, frame_id,
                                    poses, ready.video_feat, pose_feat)
        except Exception as exc:
            self._failed(1, ready.start_ns, ready.end_ns, exc)
            return None
        with self._writes_cv:
            if self._writes is not None:
                self._writes.append(segment)
                self._writes_cv.notify_all()
                return None
        stored = self._commit([segment])
        return stored[0] if stored else None

    def _commit(self, segments: list[Segment]) -> list[StoredInfo]:
        """Store segments in one transaction (one disk sync), evict, count and log them."""
        try:
            ids = self.store.add_many(segments)
            evicted: list[int] = []
            if self.config.max_segments:
                evicted = self.store.evict_oldest(self.config.max_segments)
        except Exception as exc:  # keep ingesting: the next window may store fine
            self._failed(len(segments), segments[0].start_ns, segments[-1].end_ns, exc)
            return []
        if self.storage_error is not None:
            self.log.info(f"storing works again ({self.counts['segments failed']} segments "
                          "failed while it did not)")
            self.storage_error = None
        infos = [StoredInfo(i, s.start_ns, s.end_ns) for i, s in zip(ids, segments, strict=True)]
        infos[-1] = StoredInfo(ids[-1], segments[-1].start_ns, segments[-1].end_ns,
                               tuple(evicted))
        with self._lock:
            self.counts["segments stored"] += len(ids)
            self.counts["segments evicted"] += len(evicted)
            self.last_segment = infos[-1]
        # Logged after the commit: a segment named here survives a crash.
        for info in infos:
            self.log.info(f"stored segment {info.id} [{info.start_ns}, {info.end_ns}] ns "
                          f"({len(self.store)} in memory)")
        if evicted:
            self.log.info(f"evicted segments {', '.join(map(str, evicted))} "
                          f"(max_segments={self.config.max_segments})")
        for info, segment in zip(infos, segments, strict=True):
            self._announce(info.id, segment)
        return infos

    def _failed(self, n: int, start_ns: int, end_ns: int, exc: Exception) -> None:
        with self._lock:
            self.counts["segments failed"] += n
            if isinstance(exc, StorageError):
                self.counts[f"segments failed: {exc.kind}"] += n
                self.storage_error = str(exc)
            failed = self.counts["segments failed"]
        what = "the segment" if n == 1 else f"{n} segments"
        self.log.error(f"could not store {what} [{_fmt_stamp(start_ns)}, {_fmt_stamp(end_ns)}]: "
                       f"{exc} ({failed} failed so far)")

    # -- the writer thread (live ingest): the disk never holds up the encoder -----------------

    def start_writer(self) -> None:
        """Store segments from a thread of their own: a slow disk sync (seconds on a busy
        disk) then delays only the writes, which it groups into fewer transactions."""
        with self._writes_cv:
            if self._writer is not None:
                return
            self._writes = deque()
            self._writer = threading.Thread(target=self._write_loop, name="spartan-writer",
                                            daemon=True)
            self._writer.start()

    def stop_writer(self, timeout: float = 60.0) -> None:
        """Write what is queued, then stop the writer; later segments are stored directly."""
        with self._writes_cv:
            writer, self._writer = self._writer, None
            self._writes_cv.notify_all()
        if writer is not None:
            writer.join(timeout)

    def _write_loop(self) -> None:
        while True:
            with self._writes_cv:
                self._writes_cv.wait_for(lambda: bool(self._writes) or self._writer is None)
                queue = self._writes
                if queue is None:
                    return
                batch = [queue.popleft() for _ in range(min(len(queue), 64))]
                if not batch and self._writer is None:
                    self._writes = None
                    return
                self._writing = len(batch)
            try:
                if batch:
                    self._commit(batch)
            finally:
                with self._writes_cv:
                    self._writing = 0
                    self._writes_cv.notify_all()

    def _unwritten(self) -> int:
        with self._writes_cv:
            return len(self._writes or ()) + self._writing

    def _announce(self, seg_id: int, segment: Segment) -> None:
        """Hand a stored segment to ``on_stored``; a failing listener never stops ingest."""
        listener = self.on_stored
        if listener is None:
            return
        try:
            listener(Match(
                id=seg_id, rank=0, score=0.0, start_ns=segment.start_ns, end_ns=segment.end_ns,
                frame_id=segment.frame_id, poses=segment.poses,
                stamps_ns=pose_stamps(segment.poses, segment.start_ns, segment.end_ns),
                distance=segment.path_length, vehicle_id=self.store.vehicle_id))
        except Exception as exc:
            self._warn("on_stored", f"announcing segment {seg_id} failed: "
                                    f"{type(exc).__name__}: {exc}")

    # -- queries --------------------------------------------------------------------------------

    def query(self, query: Query) -> QueryResult:
        """Best segments for ``query``; QueryError (message for the caller) when it cannot be
        answered."""
        validate_query(query)
        memory = self._memory_for(query.scope)
        if memory is self.store and len(self.store) == 0:
            raise QueryError("memory is empty")
        k = query.top_k or self.config.default_top_k
        filters: dict[str, Any] = {
            "since_ns": query.since_ns or None,
            "until_ns": query.until_ns or None,
            "near": query.near if query.radius > 0 else None,
            "radius": query.radius if query.radius > 0 else None,
            "min_score": query.min_score or None,
            "vehicle_id": query.vehicle_id or None,
        }
        if memory is self.store:  # this vehicle's memory, even in a store shared with others
            own = self.store.vehicle_id
            if query.vehicle_id and query.vehicle_id != own:
                raise QueryError(f"this vehicle's memory holds vehicle {own!r} only: ask with "
                                 f"scope fleet for {query.vehicle_id!r}")
            filters["vehicle_id"] = own
        engine = self.engine
        notes: list[str] = []
        if query.trajectory is None:
            t = np.asarray(engine.encode_text([query.text]), dtype=np.float32)[0]
            result = memory.search(k, t, **filters)
        else:
            traj = self._timed(np.asarray(query.trajectory, dtype=np.float64),
                               query.trajectory_speed, notes)
            try:
                rows = engine.resample_window(traj)
                q = np.asarray(engine.encode_query([query.text], rows[None]),
                               dtype=np.float32)[0]
            except ValueError as exc:  # e.g. a window too long for the float16 pose encoder
                raise QueryError(f"trajectory: {exc}") from exc
            result = memory.search(k, query_embedding=q, **filters)
        matches = [Match(
            id=int(seg.id or 0), rank=rank, score=f.score, start_ns=seg.start_ns,
            end_ns=seg.end_ns, frame_id=seg.frame_id, poses=seg.poses,
            stamps_ns=pose_stamps(seg.poses, seg.start_ns, seg.end_ns),
            distance=seg.path_length, vehicle_id=seg.vehicle_id)
            for rank, f in enumerate(result.found) for seg in [f.segment]]
        return QueryResult(matches, result.candidates, tuple(notes))

    def _memory_for(self, scope: str) -> Searchable:
        if scope == "fleet":
            if self.fleet is None:
                raise QueryError("no fleet store: set the node parameter fleet_uri to ask the "
                                 "fleet")
            return self.fleet
        return self.store

    def _timed(self, traj: np.ndarray, speed: float, notes: list[str]) -> np.ndarray:
        """The trajectory with usable stamps: its own, or (all equal) timed along its length at
        ``speed`` m/s (0 = ``config.trajectory_speed``), noted for the caller."""
        if not untimed(traj):
            return traj
        speed = speed or self.config.trajectory_speed
        try:
            timed = time_along_path(traj, speed)
        except ValueError as exc:
            raise QueryError(f"trajectory: {exc}") from exc
        seconds = float(timed[-1, 0])
        span = (self.engine.window - 1) / self.engine.window_rate_hz
        part = (f"; the model's {span:.1f} s window takes its middle" if seconds > span else "")
        notes.append(f"trajectory without stamps timed along its {path_length(timed):.1f} m at "
                     f"{speed:g} m/s ({seconds:.1f} s{part})")
        return timed

    # -- state ----------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """A snapshot for diagnostics."""
        with self._lock:
            counts = Counter(self.counts)
            counts.update({f"sampler {k}": v for k, v in self.sampler.counts.items()
                           if k.startswith("reset")})
            counts.update({f"window {k}": v for k, v in self.window.counts.items()
                           if k.startswith("reset")})
            return {
                "counts": dict(counts),
                "pending": len(self._pending) + self._in_flight + self._unwritten(),
                "latency_ms": self.latency.mean_ms,
                "last_latency_ms": self.latency.last_ms,
                "segments": len(self.store),
                "last_segment": self.last_segment,
                "odometry_frame": self.odometry.frame_id,
                "warnings": self._recent_warnings(),
                "memory_problems": list(self.store.problems),
                "storage_error": self.storage_error,
            }

    def _recent_warnings(self) -> list[str]:
        """Conditions diagnostics show as WARN while they are recent."""
        if self._frame_warning is None:
            return []
        text, when = self._frame_warning
        return [text] if time.monotonic() - when < self.config.warn_hold_s else []

    def _odometry_resets(self) -> int:
        return sum(v for k, v in self.odometry.counts.items() if k.startswith("reset"))

    def _count_drop(self, reason: str, detail: str) -> None:
        with self._lock:
            self.counts[f"dropped: {reason}"] += 1
            n = self.counts[f"dropped: {reason}"]
        self._warn(reason, f"dropped the {detail} ({n} so far)")

    def _warn(self, key: str, msg: str) -> None:
        if self._throttle.ready(key):
            self.log.warning(msg)


def pose_stamps(poses: np.ndarray, start_ns: int, end_ns: int) -> np.ndarray:
    """Integer stamps of the pose rows: exact at both ends, the rows' own offsets between."""
    t = np.asarray(poses, dtype=np.float64)[:, 0]
    stamps = start_ns + np.round((t - t[0]) * 1e9).astype(np.int64)
    stamps[0], stamps[-1] = start_ns, end_ns
    return stamps


class IngestWorker:
    """A thread that runs ``service.process()`` whenever frames are ready to encode, and the
    service's writer thread that stores the segments."""

    def __init__(self, service: MemoryService, poll_s: float = 0.5) -> None:
        self.service = service
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self.service.start_writer()
        self._thread = threading.Thread(target=self._run, name="spartan-encoder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.service.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.service.stop_writer()  # what is queued is written first

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.service.wait_for_work(self.poll_s) or self._stop.is_set():
                continue
            try:
                self.service.process()
            except Exception as exc:  # log and keep going: one bad batch must not stop ingest
                self.service.log.error(f"encoding failed: {type(exc).__name__}: {exc}")
