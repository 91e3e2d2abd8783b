"""Take camera frames at the model's rate, from message stamps only (never the wall clock)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace

TIME_JUMPED_BACK = "time jumped back"
GAP = "gap"
RATE = "rate"
DUPLICATE = "duplicate stamp"
STAMP_JUMP = "stamp jump not confirmed"


@dataclass(frozen=True)
class SampleDecision:
    take: bool
    # Set when this frame starts a new continuous sequence (time jumped back, or a gap):
    # windows built so far must be dropped. The frame itself is taken.
    reset: str | None = None
    # Why the frame was not taken (RATE: between two sample times; DUPLICATE).
    dropped: str | None = None
    # This frame's stamp jumped away from the stream: it waits for the next frame to tell
    # whether the stream restarted there (keep it until then) or it was a bad stamp.
    held: bool = False
    # The frame held before this one: taken now, ahead of this one, with this reset reason
    # (the stream restarted at it) ...
    release: str | None = None
    # ... or dropped (STAMP_JUMP): this frame follows the old stream.
    discard: bool = False


class FrameSampler:
    """Deterministic down-sampling of a camera stream to ``rate_hz``.

    Sample times lie on a grid of period 1/rate anchored at the first frame. A frame is taken
    when it is the first at or after the next grid time (minus a tenth of a period for stamp
    jitter), so a 30 Hz camera gives exactly every third frame and a 15 Hz one alternates 67 and
    133 ms (10 Hz on average, windows keep their 2.4 s span). If a whole grid time passed with no
    frame (dropped frames), the grid re-anchors at the late frame, so frames are never taken in a
    catch-up burst. A camera slower than the rate has every frame taken.

    A stamp going backwards or a gap longer than ``max_gap_s`` is a jump. One frame with a bad
    stamp (0, a wrapped clock, a stray publisher) must not cost the clip in progress, so the
    first frame of a jump is held; if the next frame follows it, the stream really restarted
    there (a bag loop, a paused camera): the held frame is taken, restarts the grid and is
    reported as a reset. If the next frame follows the old stream instead, the held frame is
    dropped (``STAMP_JUMP``) and nothing is reset.
    """

    def __init__(self, rate_hz: float = 10.0, max_gap_s: float = 0.5) -> None:
        if not (math.isfinite(rate_hz) and rate_hz > 0):
            raise ValueError(f"rate_hz must be a positive number, got {rate_hz}")
        if not (math.isfinite(max_gap_s) and max_gap_s > 0):
            raise ValueError(f"max_gap_s must be a positive number, got {max_gap_s}")
        self.period_ns = int(round(1e9 / rate_hz))
        self.tolerance_ns = self.period_ns // 10
        self.max_gap_ns = int(max_gap_s * 1e9)
        self.counts: Counter[str] = Counter()
        self._last: int | None = None  # stamp of the last frame offered
        self._jumped: int | None = None  # stamp of a frame dropped as a jump, not yet followed
        self._next = 0  # next grid time

    def reset(self) -> None:
        """Forget the stream: the next frame is taken and anchors a new grid."""
        self._last = self._jumped = None

    def _take(self, stamp: int, reset: str | None) -> SampleDecision:
        late = stamp + self.tolerance_ns - self._next
        if reset is not None or self._last is None or late >= self.period_ns:
            self._next = stamp + self.period_ns  # (re)anchor the grid at this frame
        else:
            self._next += self.period_ns
        self._last = stamp
        self.counts["taken"] += 1
        if reset is not None:
            self.counts[f"reset: {reset}"] += 1
        return SampleDecision(True, reset=reset)

    def _follows(self, last: int, stamp: int) -> bool:
        return last < stamp <= last + self.max_gap_ns

    def offer(self, stamp_ns: int) -> SampleDecision:
        """Decide for the frame stamped ``stamp_ns`` (header stamp, nanoseconds)."""
        stamp = int(stamp_ns)
        if self._last is None:
            return self._take(stamp, None)
        jumped, self._jumped = self._jumped, None
        if (jumped is not None and self._follows(jumped, stamp)
                and not self._follows(self._last, stamp)):  # the stream restarted
            release = self._take(jumped, TIME_JUMPED_BACK if jumped < self._last else GAP).reset
            return replace(self._decide(stamp), release=release)
        if jumped is not None:  # the held frame was alone: a bad stamp
            self.counts[f"dropped: {STAMP_JUMP}"] += 1
        decision = self._decide(stamp)
        return replace(decision, discard=jumped is not None)

    def _decide(self, stamp: int) -> SampleDecision:
        """Decide for a frame after the last one offered (no held frame pending)."""
        assert self._last is not None
        if stamp == self._last:
            self.counts[f"dropped: {DUPLICATE}"] += 1
            return SampleDecision(False, dropped=DUPLICATE)
        if not self._follows(self._last, stamp):
            self._jumped = stamp
            return SampleDecision(False, held=True)
        if stamp >= self._next - self.tolerance_ns:
            return self._take(stamp, None)
        self._last = stamp
        self.counts[f"dropped: {RATE}"] += 1
        return SampleDecision(False, dropped=RATE)
