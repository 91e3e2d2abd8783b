"""Adversarial inputs for the node's ROS-free path, generated with hypothesis.

Strategies build real ROS messages (sensor_msgs Image and CompressedImage, nav_msgs Odometry,
spartan_interfaces QuerySegments requests) from their field types: extreme and non-finite
numbers, huge sizes with little data, thin strips, odd strings and encodings, stamps anywhere
in their range. ``Harness`` feeds them exactly as the node's callbacks do (``image_view`` /
``decode_compressed`` / ``odometry_fields`` / ``query_from_request`` into a ``MemoryService``)
while a clean drive goes on between the cases, and checks each case: no exception escapes, every
refused input is counted under a reason, and every segment announced as stored is in the
SQLite file (``PRAGMA integrity_check`` ok) when it is opened again.

``test/test_fuzz_inputs.py`` runs a fixed, derandomised number of cases per class;
``run_class`` is the entry point for a longer run in a benchmark (``SPARTAN_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import functools
import io
import math
import os
import struct
import tracemalloc
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from spartan_ros.ingest.images import ImageError, decode_compressed, image_view, to_rgb
from spartan_ros.ingest.messages import odometry_fields, stamp_to_ns
from spartan_ros.memory.service import MemoryService, StoredInfo
from spartan_ros.query import QueryError

CLASSES = ("image", "compressed", "odometry", "query")
DEFAULT_EXAMPLES = 30  # per class, in the test suite
START_NS = 1_700_000_000_000_000_000
INT32 = (-(2**31), 2**31 - 1)
UINT32 = (0, 2**32 - 1)
ODOM_FRAME = "odom"


def examples_from_env(default: int = DEFAULT_EXAMPLES) -> int:
    """Cases per class: ``SPARTAN_FUZZ_EXAMPLES`` when set (a longer run), else ``default``."""
    return int(os.environ.get("SPARTAN_FUZZ_EXAMPLES", default))


# -- field strategies -----------------------------------------------------------------------

def floats() -> st.SearchStrategy[float]:
    """Any float64, weighted towards the ones that break maths (overflow, underflow, NaN)."""
    special = [0.0, -0.0, 1.0, -1.0, 1e-308, 5e-324, 1e30, -1e30, 1e200, -1e200, 1e308,
               -1e308, 65504.0, 65520.0, math.inf, -math.inf, math.nan]
    return st.one_of(st.sampled_from(special), st.floats(-100.0, 100.0), st.floats())


def odd_strings(max_size: int = 64) -> st.SearchStrategy[str]:
    special = ["", " ", "\t\n", "odom", "map", "\u200b", "\U0001f697" * 5, "a" * 300, "..",
               "/odom", "<|endoftext|>", "&amp;" * 10, "\x7f\x01"]
    text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]),
                   max_size=max_size)
    return st.one_of(st.sampled_from(special), text)


def stamps_ns() -> st.SearchStrategy[int | None]:
    """None: the harness stamps the message near the drive's clock (offset drawn separately);
    an int: an absolute stamp from the whole range of builtin_interfaces/Time."""
    sec = st.one_of(st.sampled_from([0, -1, 1, INT32[0], INT32[1]]), st.integers(*INT32))
    nanosec = st.one_of(st.sampled_from([0, 999_999_999, 10**9, UINT32[1]]),
                        st.integers(*UINT32))
    absolute = st.tuples(sec, nanosec).map(lambda t: t[0] * 1_000_000_000 + t[1])
    return st.one_of(st.none(), st.none(), st.none(), absolute)


def set_stamp(msg: Any, ns: int) -> None:
    """Header stamp from nanoseconds; sec and nanosec clipped into their field types."""
    sec, nanosec = divmod(ns, 1_000_000_000)
    msg.header.stamp.sec = int(min(max(sec, INT32[0]), INT32[1]))
    msg.header.stamp.nanosec = int(nanosec)


@dataclass
class Case:
    """One generated message; ``stamp_ns`` None means: stamp it at the drive's clock plus
    ``offset_ns`` (so it lands among the good frames)."""

    kind: str
    msg: Any
    stamp_ns: int | None = None
    offset_ns: int = 0


_OFFSETS = st.integers(-300_000_000, 300_000_000)
ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1", "8UC1", "8UC3",
             "8UC4", "yuv422", "uyvy", "yuv422_yuy2", "yuyv", "bayer_rggb8", "bayer_bggr8",
             "bayer_gbrg8", "bayer_grbg8", "nv21", "32FC1", "RGB8", ""]
_BYTES_PER_PIXEL = {"rgb8": 3, "bgr8": 3, "8UC3": 3, "rgba8": 4, "bgra8": 4, "8UC4": 4,
                    "mono16": 2, "16UC1": 2, "yuv422": 2, "uyvy": 2, "yuv422_yuy2": 2,
                    "yuyv": 2}


@st.composite
def image_cases(draw) -> Case:
    from sensor_msgs.msg import Image

    # (hypothesis starts from the simplest choices: 0 here means a valid encoding and data)
    encoding = draw(st.sampled_from(ENCODINGS)) if draw(st.integers(0, 9)) < 9 else draw(
        odd_strings(16))
    shape = draw(st.sampled_from(["small"] * 5 + ["thin", "huge header", "random"]))
    if shape == "small":
        height, width = draw(st.integers(1, 48)), draw(st.integers(1, 64))
    elif shape == "thin":  # valid strips: cost R x R at most, or refused by their ratio
        height, width = draw(st.integers(1, 3)), draw(st.integers(1000, 40_000))
        if draw(st.booleans()):
            height, width = width, height
    elif shape == "huge header":
        height, width = draw(st.integers(*UINT32)), draw(st.integers(*UINT32))
    else:
        height, width = draw(st.integers(0, 300)), draw(st.integers(0, 300))
    row = width * _BYTES_PER_PIXEL.get(encoding, 1)
    step = draw(st.sampled_from([row, row, row, row + 3, None])) or draw(st.integers(*UINT32))
    fill = draw(st.integers(0, 255))
    size = step * height
    if size > 2_000_000 or draw(st.integers(0, 9)) == 9:  # little data for a big header
        data = draw(st.binary(max_size=256))
    else:
        data = bytes([fill]) * size
    msg = Image(height=height, width=width, encoding=encoding, step=step,
                is_bigendian=draw(st.integers(0, 1)), data=data)
    msg.header.frame_id = draw(odd_strings(16))
    return Case("image", msg, draw(stamps_ns()), draw(_OFFSETS))


def png_header(width: int, height: int, payload: bytes) -> bytes:
    """A PNG stream whose header claims ``width`` x ``height`` whatever its pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(payload))
            + chunk(b"IEND", b""))


@st.composite
def compressed_cases(draw) -> Case:
    from PIL import Image as PILImage
    from sensor_msgs.msg import CompressedImage

    kind = draw(st.sampled_from(["png", "jpeg", "png header", "truncated", "garbage"]))
    if kind in ("png", "jpeg", "truncated"):
        width = draw(st.one_of(st.integers(1, 64), st.integers(1000, 60_000)))
        height = draw(st.integers(1, 48)) if width < 1000 else draw(st.integers(1, 2))
        if draw(st.booleans()):
            width, height = height, width
        mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "I;16", "1"]))
        if kind == "jpeg" and mode not in ("RGB", "L"):
            mode = "RGB"
        buf = io.BytesIO()
        PILImage.new(mode, (width, height), draw(st.integers(0, 255))).save(
            buf, format="JPEG" if kind == "jpeg" else "PNG")
        data = buf.getvalue()
        if kind == "truncated":
            data = data[: draw(st.integers(0, len(data)))]
    elif kind == "png header":
        data = png_header(draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1)),
                          draw(st.binary(max_size=64)))
    else:
        data = draw(st.binary(max_size=2048))
    msg = CompressedImage(format=draw(st.one_of(st.sampled_from(["png", "jpeg", ""]),
                                                odd_strings(16))), data=data)
    return Case("compressed", msg, draw(stamps_ns()), draw(_OFFSETS))


@st.composite
def odometry_cases(draw) -> Case:
    from nav_msgs.msg import Odometry

    msg = Odometry()
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    if draw(st.booleans()):  # a plausible pose with one field broken, or all fields random
        p.x, p.y, p.z, q.w = 1.0, 2.0, 0.0, 1.0
        name = draw(st.sampled_from(["x", "y", "z", "qx", "qy", "qz", "qw"]))
        target, attr = (p, name) if len(name) == 1 else (q, name[1])
        setattr(target, attr, draw(floats()))
    else:
        p.x, p.y, p.z = draw(floats()), draw(floats()), draw(floats())
        q.x, q.y, q.z, q.w = draw(floats()), draw(floats()), draw(floats()), draw(floats())
    msg.header.frame_id = draw(st.one_of(st.just(ODOM_FRAME), st.just(ODOM_FRAME),
                                         odd_strings(16)))
    return Case("odometry", msg, draw(stamps_ns()), draw(_OFFSETS))


QUERY_FIELDS = ("text", "top_k", "since_until", "near_radius", "min_score", "trajectory")


@st.composite
def query_cases(draw) -> Case:
    """A plausible request with up to three fields drawn from their whole range (so that the
    others do not refuse it first), or every field drawn so."""
    from geometry_msgs.msg import PoseStamped
    from spartan_interfaces.srv import QuerySegments

    req = QuerySegments.Request(text="a road", top_k=5)
    broken = set(QUERY_FIELDS) if draw(st.integers(0, 4)) == 0 else set(
        draw(st.lists(st.sampled_from(QUERY_FIELDS), max_size=3, unique=True)))
    if "text" in broken:
        req.text = draw(st.one_of(odd_strings(200), st.sampled_from(
            ["x" * 70_000, "w" * 60_000, "go " * 20_000, "the gas station"])))
    if "top_k" in broken:
        req.top_k = draw(st.one_of(st.integers(-2, 10), st.integers(*INT32)))
    if "since_until" in broken:
        for stamp in (req.since, req.until):
            ns = draw(st.one_of(st.just(0), st.integers(0, 2**62), st.integers(-(2**62), 0)))
            sec, nanosec = divmod(ns, 1_000_000_000)
            stamp.sec, stamp.nanosec = int(min(max(sec, INT32[0]), INT32[1])), int(nanosec)
    if "near_radius" in broken:
        req.near.x, req.near.y, req.near.z = draw(floats()), draw(floats()), draw(floats())
        req.radius = draw(st.one_of(st.sampled_from([1e308, 1e300, 1e30, 1e9, 10.0]), floats()))
    if "min_score" in broken:
        req.min_score = draw(floats())
    if "trajectory" in broken:
        for i in range(draw(st.integers(0, 4))):
            ps = PoseStamped()
            ps.header.stamp.sec = int(draw(st.one_of(st.just(i), st.integers(*INT32))))
            p, q = ps.pose.position, ps.pose.orientation
            p.x, p.y, p.z = draw(floats()), draw(floats()), draw(floats())
            q.x, q.y, q.z, q.w = (0.0, 0.0, 0.0, 1.0) if draw(st.booleans()) else (
                draw(floats()), draw(floats()), draw(floats()), draw(floats()))
            req.trajectory.append(ps)
    return Case("query", req)


@st.composite
def thin_image_cases(draw) -> Case:
    """Strips one to three pixels thin and up to 600,000 long, raw (with all their data) or as
    a small PNG: preprocessing that scaled before cropping spent gigabytes on them."""
    from sensor_msgs.msg import CompressedImage, Image

    thin, long = draw(st.integers(1, 3)), draw(st.sampled_from(
        [1000, 20_000, 100_000, 600_000]) | st.integers(500, 600_000))
    height, width = (thin, long) if draw(st.booleans()) else (long, thin)
    if draw(st.booleans()) and thin * long <= 300_000:
        msg = Image(height=height, width=width, encoding="rgb8", step=3 * width,
                    data=bytes([draw(st.integers(0, 255))]) * (3 * width * height))
        return Case("image", msg, draw(stamps_ns()), draw(_OFFSETS))
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.new("L", (width, height), draw(st.integers(0, 255))).save(buf, format="PNG")
    return Case("compressed", CompressedImage(format="png", data=buf.getvalue()),
                draw(stamps_ns()), draw(_OFFSETS))


@st.composite
def huge_text_cases(draw) -> Case:
    """Query texts of up to a megabyte: one endless word, many words, random characters
    (byte-pair encoding is superlinear in a word's length)."""
    from spartan_interfaces.srv import QuerySegments

    size = draw(st.sampled_from([4_000, 8_000, 70_000, 1_000_000]) | st.integers(300, 200_000))
    form = draw(st.sampled_from(["one word", "words", "random", "emoji"]))
    if form == "one word":
        text = (draw(st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=16))
                * size)[:size]
    elif form == "words":
        text = ("the gas station " * (size // 16 + 1))[:size]
    elif form == "random":
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        text = "".join(chr(c) for c in rng.integers(33, 0x2FFF, min(size, 50_000)))
    else:
        text = "\U0001f697" * (size // 4)
    return Case("query", QuerySegments.Request(text=text, top_k=5))


# class name -> strategy; the first four are the message types, the rest sharper cases of them
STRATEGIES: dict[str, Callable[[], st.SearchStrategy[Case]]] = {
    "image": image_cases, "compressed": compressed_cases, "odometry": odometry_cases,
    "query": query_cases, "thin image": thin_image_cases, "huge text": huge_text_cases,
}


# -- feeding, as the node's callbacks do ------------------------------------------------------

def good_frame(index: int, width: int = 64, height: int = 48) -> np.ndarray:
    img = np.zeros((height, width, 3), dtype=np.uint8)
    img[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    img[..., 1] = (index * 7) % 256
    return img


@dataclass
class Tally:
    """What happened to the cases of one class."""

    tried: int = 0
    survived: int = 0  # no exception escaped
    accepted: int = 0  # used (frame encoded, sample stored, query answered)
    clear_error: int = 0  # refused with a reason
    unexplained: int = 0  # neither used nor refused with a reason (a bug)
    failures: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"tried": self.tried, "survived": self.survived, "accepted": self.accepted,
                "clear_error": self.clear_error, "unexplained": self.unexplained,
                "failures": self.failures[:5], "reasons": dict(self.reasons.most_common(12))}


class Harness:
    """A MemoryService fed a clean drive (odometry 50 Hz, camera 10 Hz) with fuzz cases in
    between, exactly through the calls the node's callbacks make."""

    def __init__(self, memory: MemoryService) -> None:
        self.memory = memory
        self.clock_ns = START_NS
        self.frames = 0
        self.stored: list[StoredInfo] = []
        self.tallies: dict[str, Tally] = {name: Tally() for name in STRATEGIES}

    # the drive
    def drive(self, frames: int = 1) -> None:
        from nav_msgs.msg import Odometry

        for _ in range(frames):
            for k in range(5):  # odometry runs 100 ms ahead of the camera
                msg = Odometry()
                set_stamp(msg, self.clock_ns + 100_000_000 + k * 20_000_000)
                t = (self.clock_ns - START_NS) * 1e-9 + 0.1 + k * 0.02
                msg.pose.pose.position.x, msg.pose.pose.position.y = 5.0 * t, 1.0 * t
                msg.pose.pose.orientation.w = 1.0
                msg.header.frame_id = ODOM_FRAME
                self.memory.add_odometry(*odometry_fields(msg))
            self.memory.add_frame(self.clock_ns, good_frame(self.frames))
            self.frames += 1
            self.clock_ns += 100_000_000
            self.stored += self.memory.flush()

    # the node's callbacks, without ROS
    def on_image(self, msg: Any) -> None:  # SpartanNode._on_image
        try:
            pixels, encoding = image_view(msg)
        except ImageError as exc:
            self.memory.reject_frame("malformed image", f"{exc}")
            return
        self.memory.add_frame(stamp_to_ns(msg.header.stamp),
                              functools.partial(to_rgb, pixels, encoding))

    def on_compressed(self, msg: Any) -> None:  # SpartanNode._on_compressed
        self.memory.add_frame(stamp_to_ns(msg.header.stamp),
                              functools.partial(decode_compressed, msg.data))

    def on_odometry(self, msg: Any) -> str | None:  # SpartanNode._on_odometry
        return self.memory.add_odometry(*odometry_fields(msg))

    def on_query(self, request: Any) -> tuple[bool, str]:  # SpartanNode._on_query
        from spartan_ros.node.conversions import query_from_request

        try:
            query = query_from_request(request)
            if query.top_k == 0:
                query.top_k = self.memory.config.default_top_k
            result = self.memory.query(query)
        except QueryError as exc:
            return False, str(exc)
        return True, f"{len(result.matches)} of {result.candidates} candidates"

    # one case
    def _counts(self) -> Counter[str]:
        c = Counter(self.memory.stats()["counts"])
        c.update({f"sampler {k}": v for k, v in self.memory.sampler.counts.items()})
        return c

    def run(self, case: Case) -> str:
        """Feed one case; returns its outcome ('accepted' or the reason it was refused).
        Exceptions propagate: the caller records them as failures."""
        if case.kind != "query":
            set_stamp(case.msg, case.stamp_ns if case.stamp_ns is not None
                      else self.clock_ns + case.offset_ns)
        before = self._counts()
        if case.kind == "query":
            ok, message = self.on_query(case.msg)
            if not ok and not message.strip():
                raise AssertionError("a refused query without a message")
            outcome = "accepted" if ok else f"refused: {message[:60]}"
        else:
            if case.kind == "odometry":
                self.on_odometry(case.msg)
            elif case.kind == "image":
                self.on_image(case.msg)
            else:
                self.on_compressed(case.msg)
            self.stored += self.memory.flush()
            outcome = self._explain(self._counts() - before, case.kind)
        self.drive(1)
        if outcome == "unexplained":  # a frame whose stamp jumped waits for the next frame
            outcome = self._explain(self._counts() - before, case.kind, refused_only=True)
        return outcome

    @staticmethod
    def _explain(diff: Counter[str], kind: str, refused_only: bool = False) -> str:
        """The reason the case was refused, 'accepted', or 'unexplained'."""
        if refused_only:
            diff = Counter({k: v for k, v in diff.items()
                            if ("dropped" in k or "rejected" in k) and not k.endswith(": rate")})
        used = ("odometry accepted",) if kind == "odometry" else (
            "frames encoded", "sampler dropped: rate")
        if kind == "odometry":
            refused = [k for k in diff if k.startswith("odometry rejected")]
            if not refused and diff.get("odometry received"):
                return "accepted"
        else:
            refused = [k for k in diff if k.startswith(("dropped", "sampler dropped"))
                       and k != "sampler dropped: rate"]
            if not refused and any(diff.get(k) for k in used):
                return "accepted"
        return refused[0] if refused else "unexplained"


def run_cases(harness: Harness, kind: str, examples: int, *, seed: int | None = None,
              raise_failures: bool = True) -> Tally:
    """``examples`` cases of one class through ``harness``. Derandomised unless ``seed`` is
    given. With ``raise_failures`` an escaped exception fails at once (hypothesis shrinks it);
    without, it is counted (the benchmark's tally)."""
    tally = harness.tallies[kind]

    @settings(max_examples=examples, derandomize=seed is None, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate, Phase.shrink] if raise_failures
              else [Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(STRATEGIES[kind]())
    def one(case: Case) -> None:
        tally.tried += 1
        try:
            outcome = harness.run(case)
        except Exception as exc:
            tally.failures.append(f"{type(exc).__name__}: {exc}"[:300])
            if raise_failures:
                raise
            return
        tally.survived += 1
        tally.reasons[outcome] += 1
        if outcome == "accepted":
            tally.accepted += 1
        elif outcome == "unexplained":
            tally.unexplained += 1
            if raise_failures:
                raise AssertionError(f"{kind} case neither used nor refused with a reason")
        else:
            tally.clear_error += 1

    if seed is not None:
        one = hypothesis_seed(seed)(one)
    one()
    return tally


def run_class(memory: MemoryService, kind: str, examples: int | None = None,
              seed: int | None = None) -> dict[str, Any]:
    """For a benchmark: ``examples`` cases of ``kind`` (default ``examples_from_env()``) on a
    fresh harness, never raising; returns the tally with the traced memory peak (MB)."""
    harness = Harness(memory)
    harness.drive(30)
    tracemalloc.start()
    try:
        tally = run_cases(harness, kind, examples or examples_from_env(), seed=seed,
                          raise_failures=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return {**tally.as_dict(), "traced_peak_mb": peak / 2**20,
            "segments_announced": [s.id for s in harness.stored]}
