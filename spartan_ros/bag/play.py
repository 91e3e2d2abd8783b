"""Replay a rosbag2 into the live ROS graph with rclpy, without ``ros2 bag``.

Messages are published as the raw CDR bytes stored in the bag (``publisher.publish(bytes)``), so
nothing is deserialised: the bag's type names only select the rclpy message class of each
publisher. Timing follows the bag's log times scaled by ``rate``, against the monotonic wall clock.

QoS: by default every topic is published **reliable**, keep-last ``depth`` (100), volatile. A
reliable publisher matches both reliable and best-effort subscribers (the node subscribes to
images with the sensor-data profile, which is best effort), while a best-effort publisher would
not match a reliable subscriber. ``qos="sensor"`` publishes best effort instead (the sensor-data
profile with the same depth), as a real camera driver would.

Reliable keep-last delivers everything only while an unread sample is still in the publisher's
history, and a reliable writer repairs a sample the reader missed (a reader that matched the
player a moment after the player matched it, a sample dropped under load) only at its next
heartbeat: every 3 s with Fast DDS's defaults. The player therefore (1) heartbeats every 100 ms
through the package's Fast DDS profile (``spartan_ros/dds/fastdds.xml``, which `spartan-bag
play` uses unless the user configures Fast DDS), and (2) keeps at least ``HISTORY_S`` seconds of
each topic at the playback rate (at most ``MAX_HISTORY_BYTES`` of it), with ``depth`` as the
floor. Without them, a node that
matched the player's 100 Hz odometry 1.3 s late during a replay at rate 2 lost its first 1.7 s
of odometry for good (the repair came after the 100-sample history had moved on).

With ``restamp`` (looping only), every pass is shifted in time by one bag period (its span
plus one interval of its least frequent topic): the header stamp inside the CDR bytes (the
first field of std_msgs/Header-led types such as Image, CompressedImage and Odometry) is
rewritten in a copy of the bytes, so a short bag loops into one continuous stream, as a
vehicle's camera would give. Topics whose first stamp does not equal their log time are played
unchanged (their layout is not known).

``/clock`` (``rosgraph_msgs/msg/Clock``, reliable, depth 1, compatible with the best-effort
clock subscription of nodes using ``use_sim_time``) is published at ``clock_hz`` with the current
bag time, and once more right before any message whose stamp is ahead of the last clock sent, so
a node on sim time never receives a message from its own future.

Before playing, the player waits up to ``wait_timeout_s`` until every played topic has at least
``wait_for_subscribers`` matched subscriptions, so the first messages are not lost to discovery;
on timeout it warns and plays anyway. SIGINT / SIGTERM stop playback cleanly (summary printed).

rclpy is imported only inside :func:`play_bag`: the rest of ``spartan_ros.bag`` works without ROS.
"""

from __future__ import annotations

import importlib
import math
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rosbags.rosbag2 import Reader
from rosbags.rosbag2.errors import ReaderError

from spartan_ros.stop_signals import StopSignals

QOS_CHOICES = ("reliable", "sensor")
CLOCK_TOPIC = "/clock"
# After subscribers match: time for them to match our writers too (see _wait_for_subscribers).
DISCOVERY_SETTLE_S = 1.0
# Each topic's publisher history covers this much wall time of playback (repairs, slow readers)...
HISTORY_S = 5.0
# ...within this many bytes per topic (a 1080p rgb8 camera is 6 MB a frame).
MAX_HISTORY_BYTES = 256 * 2**20


class BagError(ValueError):
    """The bag cannot be opened or does not hold what was asked for; the message says which."""


@dataclass
class PlayConfig:
    bag: Path
    rate: float = 1.0  # playback speed factor
    clock_hz: float = 0.0  # > 0: publish /clock at this rate
    loop: bool = False
    restamp: bool = False  # with loop: shift each pass's header stamps, one continuous stream
    start_offset_s: float = 0.0  # skip the first seconds of the bag
    topics: list[str] | None = None  # None: all topics of the bag
    qos: str = "reliable"  # reliable | sensor
    depth: int = 100  # publisher history (see the module docstring)
    wait_for_subscribers: int = 1  # per played topic; 0 disables waiting
    wait_timeout_s: float = 5.0
    ack_timeout_s: float = 5.0  # at the end: wait this long for reliable readers to acknowledge
    node_name: str = "spartan_bag_player"
    ros_args: list[str] = field(default_factory=list)  # passed to rclpy.init (after --ros-args)


@dataclass
class PlaySummary:
    bag: str
    counts: dict[str, int] = field(default_factory=dict)  # messages published per topic
    clock: int = 0  # /clock messages published
    loops: int = 0  # completed passes over the bag
    wall_s: float = 0.0  # first to last publish of bag messages
    bag_span_s: float = 0.0  # bag time covered by one pass (from the start offset on)
    rate: float = 1.0
    interrupted: bool = False
    matched: dict[str, int] = field(default_factory=dict)  # subscriptions seen before playing
    waited_s: float = 0.0
    skipped: dict[str, str] = field(default_factory=dict)  # topic -> why it was not played
    history: dict[str, int] = field(default_factory=dict)  # topic -> publisher history depth

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "bag": self.bag,
            "counts": self.counts,
            "total": self.total,
            "clock": self.clock,
            "loops": self.loops,
            "wall_s": round(self.wall_s, 4),
            "bag_span_s": round(self.bag_span_s, 4),
            "rate": self.rate,
            "interrupted": self.interrupted,
            "matched": self.matched,
            "waited_s": round(self.waited_s, 3),
            "skipped": self.skipped,
            "history": self.history,
        }

    def table(self) -> str:
        lines = [f"played {self.bag}: {self.total} messages in {self.wall_s:.2f} s "
                 f"(rate {self.rate:g}, {self.loops} full pass(es)"
                 f"{', interrupted' if self.interrupted else ''})"]  # fmt: skip
        width = max([len(t) for t in self.counts] + [len(CLOCK_TOPIC)])
        for topic, n in sorted(self.counts.items()):
            lines.append(f"  {topic:<{width}}  {n:>8d}")
        if self.clock:
            lines.append(f"  {CLOCK_TOPIC:<{width}}  {self.clock:>8d}")
        for topic, why in sorted(self.skipped.items()):
            lines.append(f"  {topic:<{width}}  skipped: {why}")
        return "\n".join(lines)


def check_config(cfg: PlayConfig) -> None:
    if not (cfg.rate > 0 and math.isfinite(cfg.rate)):
        raise ValueError(f"rate must be a positive number, got {cfg.rate}")
    if not (cfg.clock_hz >= 0 and math.isfinite(cfg.clock_hz)):
        raise ValueError(f"clock rate must be >= 0 Hz, got {cfg.clock_hz}")
    if not (cfg.start_offset_s >= 0 and math.isfinite(cfg.start_offset_s)):
        raise ValueError(f"start offset must be >= 0 s, got {cfg.start_offset_s}")
    if cfg.qos not in QOS_CHOICES:
        raise ValueError(f"qos must be one of {QOS_CHOICES}, got {cfg.qos!r}")
    if cfg.restamp and not cfg.loop:
        raise ValueError("restamp shifts the stamps of repeated passes: it needs loop")
    if cfg.depth < 1:
        raise ValueError(f"depth must be >= 1, got {cfg.depth}")
    if cfg.wait_for_subscribers < 0:
        raise ValueError(f"wait-for-subscribers must be >= 0, got {cfg.wait_for_subscribers}")
    if not (cfg.wait_timeout_s >= 0 and math.isfinite(cfg.wait_timeout_s)):
        raise ValueError(f"wait timeout must be >= 0 s, got {cfg.wait_timeout_s}")


def open_bag(path: str | Path) -> Reader:
    """An opened rosbags Reader; BagError naming the path if it is not a readable rosbag2."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    try:
        reader = Reader(path)
        reader.open()
    except ReaderError as e:
        raise BagError(f"cannot open bag {path}: {e}") from None
    return reader


def message_class(msgtype: str) -> Any:
    """The rclpy message class of ``pkg/msg/Name``; ImportError/AttributeError if not installed."""
    parts = msgtype.split("/")
    if len(parts) == 3:
        pkg, kind, name = parts
    elif len(parts) == 2:
        (pkg, name), kind = parts, "msg"
    else:
        raise ImportError(f"not a ROS message type name: {msgtype!r}")
    module = importlib.import_module(f"{pkg}.{kind}")
    return getattr(module, name)


def select_connections(reader: Reader, topics: list[str] | None) -> list[Any]:
    available = sorted({c.topic for c in reader.connections})
    if topics is None:
        return list(reader.connections)
    unknown = [t for t in topics if t not in available]
    if unknown:
        raise BagError(f"topic(s) {unknown} not in bag {reader.path}; it has {available}")
    return [c for c in reader.connections if c.topic in topics]


def play_bag(cfg: PlayConfig, log: Callable[[str], None] | None = None) -> PlaySummary:
    """Publish the bag's messages into the ROS graph; returns what was published."""
    check_config(cfg)
    say = log or (lambda text: print(text, file=sys.stderr, flush=True))
    reader = open_bag(cfg.bag)
    try:
        connections = select_connections(reader, cfg.topics)
        _play_range(cfg, reader)  # a bad offset fails before ROS starts
        with StopSignals() as stop:
            return _play(cfg, reader, connections, stop, say)
    finally:
        reader.close()


def _play(cfg: PlayConfig, reader: Reader, connections: list[Any], stop: StopSignals,
          say: Callable[[str], None]) -> PlaySummary:  # fmt: skip
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    summary = PlaySummary(bag=str(cfg.bag), rate=cfg.rate)
    summary.history = history_depths(cfg, reader, connections)
    context = rclpy.Context()
    # StopSignals decides when to stop; rclpy must not shut the context first.
    rclpy.init(args=["--ros-args", *cfg.ros_args] if cfg.ros_args else [], context=context,
               signal_handler_options=SignalHandlerOptions.NO)  # fmt: skip
    node = None
    try:
        node = rclpy.create_node(cfg.node_name, context=context)
        publishers, played = _create_publishers(node, cfg.qos, connections, summary)
        for topic, why in summary.skipped.items():
            say(f"warning: not playing {topic}: {why}")
        if not played:
            raise BagError(f"nothing to play in {cfg.bag}")
        summary.counts = {t: 0 for t in publishers}
        clock = _ClockPublisher(node, cfg.clock_hz, summary)
        _wait_for_subscribers(cfg, publishers, summary, stop, say)

        start_ns, end_ns = _play_range(cfg, reader)
        summary.bag_span_s = (end_ns - start_ns) * 1e-9
        if not stop.requested:
            say(f"playing {cfg.bag}: {len(publishers)} topic(s), {summary.bag_span_s:.2f} s of bag "
                f"at rate {cfg.rate:g}{' with /clock' if clock.enabled else ''}"
                f"{' (looping)' if cfg.loop else ''}")  # fmt: skip
        player = _Passes(cfg, reader, played, publishers, clock, summary, stop, say)
        player.run(start_ns, end_ns)
        summary.interrupted = stop.requested
        if player.first_wall is not None and player.last_wall is not None:
            summary.wall_s = player.last_wall - player.first_wall
        if cfg.qos == "reliable" and player.first_wall is not None:
            budget = min(cfg.ack_timeout_s, 1.0) if stop.requested else cfg.ack_timeout_s
            _wait_for_acks(publishers, budget)
        return summary
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.shutdown(context=context)


def _create_publishers(node: Any, qos_choice: str, connections: list[Any],
                       summary: PlaySummary) -> tuple[dict[str, Any], list[Any]]:  # fmt: skip
    """One publisher per topic whose message type is installed and unique in the bag: (topic ->
    publisher, connections to play). Topics left out are named in ``summary.skipped``."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    reliability = (
        ReliabilityPolicy.RELIABLE if qos_choice == "reliable" else ReliabilityPolicy.BEST_EFFORT
    )
    publishers: dict[str, Any] = {}
    types: dict[str, str] = {}
    played: list[Any] = []
    for conn in connections:
        if conn.topic in summary.skipped:
            continue
        if conn.topic in types:  # a second connection of a topic: same type, or neither plays
            if types[conn.topic] != conn.msgtype:
                summary.skipped[conn.topic] = f"several types ({types[conn.topic]}, ...)"
                node.destroy_publisher(publishers.pop(conn.topic))
                played = [c for c in played if c.topic != conn.topic]
                continue
            played.append(conn)
            continue
        try:
            cls = message_class(conn.msgtype)
        except (ImportError, AttributeError) as e:
            summary.skipped[conn.topic] = f"message type {conn.msgtype} not installed ({e})"
            continue
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=summary.history[conn.topic],
                         reliability=reliability, durability=DurabilityPolicy.VOLATILE)
        publishers[conn.topic] = node.create_publisher(cls, conn.topic, qos)
        types[conn.topic] = conn.msgtype
        played.append(conn)
    return publishers, played


class _ClockPublisher:
    """/clock with the bag time (``clock_hz`` > 0), never going back within a pass."""

    def __init__(self, node: Any, clock_hz: float, summary: PlaySummary) -> None:
        self.summary = summary
        self.period_s = 1.0 / clock_hz if clock_hz > 0 else math.inf
        self.last_ns = -1
        self._pub = self._cls = None
        if clock_hz > 0:
            from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
            from rosgraph_msgs.msg import Clock

            self._cls = Clock
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)  # fmt: skip
            self._pub = node.create_publisher(Clock, CLOCK_TOPIC, qos)

    @property
    def enabled(self) -> bool:
        return self._pub is not None

    def restart(self) -> None:
        """A new pass over the bag starts the clock again from the bag's start."""
        self.last_ns = -1

    def send(self, ns: int) -> None:
        if self._pub is None or self._cls is None or ns <= self.last_ns:
            return
        msg = self._cls()
        msg.clock.sec, msg.clock.nanosec = divmod(int(ns), 1_000_000_000)
        self._pub.publish(msg)
        self.summary.clock += 1
        self.last_ns = ns


class _Passes:
    """The timed playback: one pass over the bag, or passes until stopped (``loop``)."""

    def __init__(self, cfg: PlayConfig, reader: Reader, played: list[Any],
                 publishers: dict[str, Any], clock: _ClockPublisher, summary: PlaySummary,
                 stop: StopSignals, say: Callable[[str], None]) -> None:  # fmt: skip
        self.cfg, self.reader, self.played = cfg, reader, played
        self.publishers, self.clock, self.summary = publishers, clock, summary
        self.stop, self.say = stop, say
        self.first_wall: float | None = None  # first and last publish of a bag message
        self.last_wall: float | None = None

    def run(self, start_ns: int, end_ns: int) -> None:
        cfg = self.cfg
        period_ns = _loop_period_ns(self.played, start_ns, end_ns)
        restampable = _restampable(self.reader, self.played, start_ns) if cfg.restamp else set()
        shift = 0  # ns added to every stamp of this pass (restamp)
        wall0 = time.monotonic()
        while not self.stop.requested:
            if not cfg.restamp or self.summary.loops == 0:
                wall0 = time.monotonic()
            if not cfg.restamp:
                self.clock.restart()
            if not self._one_pass(start_ns, wall0, shift, restampable):
                break  # stopped
            self.summary.loops += 1
            if cfg.loop and not cfg.restamp:
                self.say(f"pass {self.summary.loops} done")
            if cfg.restamp:
                shift += period_ns
                # the next pass starts one period after this one did, not when it ended
                wall0 += period_ns * 1e-9 / cfg.rate
            if not cfg.loop:
                break

    def _one_pass(self, start_ns: int, wall0: float, shift: int, restampable: set[str]) -> bool:
        """Publish every message at its time; False when stopped before the end."""
        next_tick = time.monotonic()
        self.clock.send(start_ns + shift)
        for conn, stamp, raw in self.reader.messages(connections=self.played, start=start_ns):
            next_tick = self._wait_for(stamp, next_tick, start_ns, wall0, shift)
            if self.stop.requested:
                return False
            self.clock.send(stamp + shift)
            restamp = shift and conn.topic in restampable
            self.publishers[conn.topic].publish(shifted(raw, shift) if restamp else bytes(raw))
            self.summary.counts[conn.topic] += 1
            self.last_wall = time.monotonic()
            if self.first_wall is None:
                self.first_wall = self.last_wall
        return True

    def _wait_for(self, stamp: int, next_tick: float, start_ns: int, wall0: float,
                  shift: int) -> float:  # fmt: skip
        """Sleep until the wall time of the message stamped ``stamp`` (the pass started at
        ``wall0``), ticking /clock on the way; returns the next tick. The clock never runs past
        the message about to be published."""
        target = wall0 + (stamp - start_ns) * 1e-9 / self.cfg.rate
        while not self.stop.requested:
            now = time.monotonic()
            if now >= next_tick:
                bag_now = start_ns + int((now - wall0) * self.cfg.rate * 1e9)
                self.clock.send(min(bag_now, stamp) + shift)
                next_tick = now + self.clock.period_s
            if now >= target:
                break
            time.sleep(min(target - now, next_tick - now, 0.05))
        return next_tick


def _wait_for_acks(publishers: dict[str, Any], budget_s: float) -> None:
    """Let reliable readers fetch what they have not acknowledged before the writers vanish."""
    from rclpy.duration import Duration

    deadline = time.monotonic() + budget_s
    for pub in publishers.values():
        left = max(0.0, deadline - time.monotonic())
        pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9)))


_CDR_LE = b"\x00\x01\x00\x00"
_STAMP = struct.Struct("<iI")  # builtin_interfaces/Time right after the 4-byte CDR header


def shifted(raw: bytes | bytearray | memoryview, shift_ns: int) -> bytes:
    """A copy of a little-endian CDR message whose header stamp is ``shift_ns`` later."""
    view = memoryview(raw)
    sec, nanosec = _STAMP.unpack_from(view, 4)
    stamp = _STAMP.pack(*divmod(sec * 1_000_000_000 + nanosec + shift_ns, 1_000_000_000))
    # one copy, straight into the result (a bytearray then bytes was two: 16 ms at 1080p rgb8)
    return b"".join((view[:4], stamp, view[12:]))


def _restampable(reader: Reader, connections: list[Any], start_ns: int) -> set[str]:
    """Topics whose first message holds its log time as the stamp right after the CDR header."""
    ok: set[str] = set()
    seen: set[str] = set()
    for conn, stamp, raw in reader.messages(connections=connections, start=start_ns):
        if conn.topic in seen:
            if len(seen) == len({c.topic for c in connections}):
                break
            continue
        seen.add(conn.topic)
        if bytes(raw[:4]) == _CDR_LE and len(raw) >= 12:
            sec, nanosec = _STAMP.unpack_from(raw, 4)
            if sec * 1_000_000_000 + nanosec == stamp:
                ok.add(conn.topic)
    return ok


def _loop_period_ns(connections: list[Any], start_ns: int, end_ns: int) -> int:
    """One pass of a looped bag: its span plus one interval of its least frequent topic."""
    counts: dict[str, int] = {}
    for conn in connections:
        counts[conn.topic] = counts.get(conn.topic, 0) + int(conn.msgcount)
    span = end_ns - start_ns
    fewest = min(counts.values(), default=1)
    return span + (span // (fewest - 1) if fewest > 1 else 1_000_000_000)


def _play_range(cfg: PlayConfig, reader: Reader) -> tuple[int, int]:
    """First and last bag time (ns, inclusive) to play."""
    if reader.message_count == 0:
        raise BagError(f"bag {cfg.bag} has no messages")
    start_ns = reader.start_time + int(round(cfg.start_offset_s * 1e9))
    end_ns = reader.end_time - 1  # rosbags' end_time is one past the last message
    if start_ns > end_ns:
        raise BagError(
            f"start offset {cfg.start_offset_s} s is past the end of {cfg.bag} "
            f"({(end_ns - reader.start_time) * 1e-9:.3f} s long)"
        )
    return start_ns, end_ns


def history_depths(cfg: PlayConfig, reader: Reader, connections: list[Any]) -> dict[str, int]:
    """Publisher history per topic: ``HISTORY_S`` of wall time at the topic's rate in the bag
    and the playback rate, within ``MAX_HISTORY_BYTES`` (sized by its first message), never
    below ``cfg.depth``."""
    span_s = max((reader.end_time - reader.start_time) * 1e-9, 1e-3)
    counts: dict[str, int] = {}
    for conn in connections:
        counts[conn.topic] = counts.get(conn.topic, 0) + conn.msgcount
    depths = {}
    for topic, count in counts.items():
        wanted = math.ceil(count / span_s * cfg.rate * HISTORY_S)
        first = next(reader.messages(connections=[c for c in connections if c.topic == topic]),
                     None)
        size = max(len(first[2]), 1) if first is not None else 1
        depths[topic] = max(cfg.depth, min(wanted, MAX_HISTORY_BYTES // size))
    return depths


def _wait_for_subscribers(cfg: PlayConfig, publishers: dict[str, Any], summary: PlaySummary,
                          stop: StopSignals, say: Callable[[str], None]) -> None:  # fmt: skip
    """Poll matched subscription counts until each topic has enough, or time runs out."""
    need = cfg.wait_for_subscribers
    t0 = time.monotonic()

    def counts() -> dict[str, int]:
        return {t: p.get_subscription_count() for t, p in publishers.items()}

    matched = counts()
    if need > 0:
        missing = [t for t, n in matched.items() if n < need]
        if missing:
            say(f"waiting up to {cfg.wait_timeout_s:g} s for {need} subscriber(s) on {missing}")
        deadline = t0 + cfg.wait_timeout_s
        while missing and not stop.requested and time.monotonic() < deadline:
            time.sleep(0.02)
            matched = counts()
            missing = [t for t, n in matched.items() if n < need]
        if missing and not stop.requested:
            say(f"warning: after {cfg.wait_timeout_s:g} s still fewer than {need} subscriber(s) "
                f"on {missing}; playing anyway")  # fmt: skip
        elif not stop.requested:
            # Our writers see a reader before that reader has matched them; best-effort samples
            # sent in between are dropped, so let discovery finish on the other side too.
            time.sleep(DISCOVERY_SETTLE_S)
    summary.matched = matched
    summary.waited_s = time.monotonic() - t0
