"""/diagnostics for the node, and the watch that notices when an input topic falls silent."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue


@dataclass
class InputWatch:
    """Arrival times (monotonic seconds) of one input topic."""

    what: str  # "image", "odometry"
    topic: str
    type_name: str  # "sensor_msgs/Image"
    qos: str  # how the node subscribes, for the warning
    started: float  # when watching began (activation)
    last: float | None = None
    count: int = 0

    def seen(self, now: float) -> None:
        self.last = now
        self.count += 1

    def silent_for(self, now: float) -> float:
        return now - (self.last if self.last is not None else self.started)

    def problem(self, now: float, timeout_s: float, publishers: int) -> str | None:
        """A sentence naming the topic and its QoS when it has been silent too long."""
        silent = self.silent_for(now)
        if silent < timeout_s:
            return None
        ever = "nothing received yet" if self.last is None else f"{self.count} received so far"
        who = ("no publisher" if publishers == 0 else
               f"{publishers} publisher{'s' if publishers > 1 else ''}: check its QoS is "
               "compatible and its stamps are sensible")
        return (f"no {self.what} on {self.topic} ({self.type_name}) for {silent:.1f} s "
                f"(subscribed with QoS {self.qos}; {who}; {ever})")


class CallbackTimes:
    """Durations of the last ``keep`` calls of a subscription callback (bounded memory)."""

    def __init__(self, keep: int = 2000) -> None:
        self._times: deque[float] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._times.append(seconds)

    def percentiles_ms(self) -> dict[str, float]:
        """{"image callback ms (p50)": .., "(p99)": ..} of the kept calls; empty before any."""
        with self._lock:
            times = np.fromiter(self._times, dtype=np.float64)
        if times.size == 0:
            return {}
        p50, p99 = np.percentile(times, [50, 99]) * 1000.0
        return {"image callback ms (p50)": float(p50), "image callback ms (p99)": float(p99)}


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, float):
        value = f"{value:.3f}"
    return KeyValue(key=key, value=str(value))


def diagnostic_array(
    stamp,
    node_name: str,
    stats: dict[str, Any] | None,
    problems: list[str],
    info: dict[str, Any],
    timing: dict[str, float] | None = None,
) -> DiagnosticArray:
    """Two statuses: ingest (frames, drops and why, latency, provider) and memory (size, last
    segment). ``stats`` is ``MemoryService.stats()`` (None when no model is loaded)."""
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    ingest = DiagnosticStatus(name=f"{node_name}: ingest", hardware_id="spartan")
    memory = DiagnosticStatus(name=f"{node_name}: memory", hardware_id="spartan")
    for key in ("state", "model", "precision", "provider"):
        if key in info:
            ingest.values.append(_kv(key, info[key]))
    if stats is None:
        ingest.level = DiagnosticStatus.WARN
        ingest.message = "no model loaded: ingest is off"
        memory.level, memory.message = DiagnosticStatus.WARN, "no memory open"
    else:
        _fill_ingest(ingest, stats, problems, timing or {})
        _fill_memory(memory, stats, info)
    msg.status = [ingest, memory]
    return msg


def _fill_ingest(ingest: DiagnosticStatus, stats: dict[str, Any], problems: list[str],
                 timing: dict[str, float]) -> None:  # fmt: skip
    counts = stats["counts"]
    for key in sorted(counts):
        ingest.values.append(_kv(key, counts[key]))
    ingest.values += [
        _kv("frames pending", stats["pending"]),
        _kv("inference ms per frame (mean)", float(stats["latency_ms"])),
        _kv("inference ms per frame (last)", float(stats["last_latency_ms"])),
    ]
    ingest.values += [_kv(key, value) for key, value in timing.items()]
    dropped = sum(v for k, v in counts.items() if k.startswith("dropped"))
    problems = problems + list(stats.get("warnings", []))
    if problems:
        ingest.level = DiagnosticStatus.WARN
        ingest.message = "; ".join(problems)
    else:
        ingest.level = DiagnosticStatus.OK
        ingest.message = (f"{counts.get('frames taken', 0)} frames taken, {dropped} dropped, "
                          f"{counts.get('segments stored', 0)} segments stored")


def _fill_memory(memory: DiagnosticStatus, stats: dict[str, Any], info: dict[str, Any]) -> None:
    counts = stats["counts"]
    last = stats["last_segment"]
    memory.level = DiagnosticStatus.OK
    memory.message = f"{stats['segments']} segments"
    memory.values += [
        _kv("segments", stats["segments"]),
        _kv("memory path", info.get("memory_path") or "(RAM only)"),
        _kv("last segment id", last.id if last else "none"),
        _kv("last segment end stamp", f"{last.end_ns * 1e-9:.3f}" if last else "none"),
        _kv("odometry frame", stats["odometry_frame"] or "none"),
    ]
    memory.values += [_kv(k, v) for k, v in info.get("fleet", {}).items()]
    if counts.get("segments failed"):
        memory.level = DiagnosticStatus.ERROR
        memory.message += f", {counts['segments failed']} failed to store"
    # Damage found at open (corrupt rows, segments lost with the -wal) and the last write error
    # (disk full, read-only) stay visible here, not only in a log line scrolled away.
    for problem in [*stats.get("memory_problems", []), stats.get("storage_error")]:
        if problem:
            memory.level = DiagnosticStatus.ERROR
            memory.message += f"; {problem}"
