"""``make bench-ingest``: a recorded camera replayed into the live node over DDS, as on a vehicle.

    python -m bench.ingest [--seconds 60] [--cases 640x480,1280x720,1920x1080,jpeg]
                           [--rate 1] [--out bench/results] [--work runs/bench_ingest]

Per case, a short rosbag2 is written with ``spartan-bag write`` (a synthetic drive, the camera at
30 Hz upscaled to the case's size, odometry at 100 Hz) and played by ``spartan-bag play`` in its
own process, looping with the stamps shifted so the node sees one continuous drive, best effort
like a camera driver, publishing the stored CDR bytes. The node (``spartan_node``, random-weight
``tiny`` model) runs in another process. After ``--seconds`` the player stops, the node finishes
what it has queued, and its /diagnostics give the counts. ``--rate 2`` plays the 30 Hz camera at
60 Hz (the memory test of a fast 1080p stream).

Columns: needed = frames the node should take at sample_rate_hz from what was published (the
node's own FrameSampler run over the published stamps); taken = the node's ``frames taken``
against that; received = images that reached the node's callback against those published;
drops by reason (DDS = published but never received); the node's CPU use (of one core) and peak
RSS over the run; image callback p50/p99; segments stored against those the needed frames give.
The player runs on the same 2 cores and its CPU use is in the JSON.

Each case runs twice by default (``--dds-profile none,package``): the player and the node with
Fast DDS's built-in transports (the 512 KB shared-memory segment), then with the package's
profile (``spartan_ros/dds/fastdds.xml``, what ``spartan-bag play`` and the launch file use).
``--witness`` adds a second DDS reader in this process that counts what DDS delivers and what
it reports lost, so a loss is placed: in the transport (lost at both readers) or in the node
(delivered to the witness, not to the node's callback). The JSON carries every count, the
player's summary, the machine (CPU, load at start and end of each case, nice, socket buffer
limits) and the ROS stack's versions.

``--compare REF`` also runs the node of git revision REF (its ``spartan_ros`` extracted under the
work directory), each case with both nodes back to back, so a change is measured against what
it replaced under the same machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from spartan_train.processes import Process, ros_env

from bench.report import comma_list
from spartan_ros.ingest import FrameSampler

IMAGE_TOPIC = "/camera/image_raw"
ODOM_TOPIC = "/odom"
CAMERA_HZ = 30.0
ODOM_HZ = 100.0
SAMPLE_HZ = 10.0
WINDOW, STRIDE = 24, 6
# `spartan-bag` as the installed script runs it (``-m spartan_ros.bag.cli`` would load the
# module twice, and its plugins would not recognise their base class)
SPARTAN_BAG = [sys.executable, "-c", "import sys; from spartan_ros.bag.cli import main; "
               "sys.exit(main())"]
NODE = [sys.executable, "-c", "import os, sys; sys.path.insert(0, os.environ.get("
        "'SPARTAN_BENCH_NODE_TREE', '')); from spartan_ros.node.spartan_node import main; "
        "sys.exit(main())"]
# by default the player publishes as a typical camera driver: best effort, a short history
PLAYER_QOS, PLAYER_DEPTH = "sensor", 5
BAG_FRAMES = 24  # data frames (10 Hz) in the looped bag: 2.3 s, 70 camera images
# name -> (width, height, transport)
CASES: dict[str, tuple[int, int, str]] = {
    "640x480": (640, 480, "raw"),
    "1280x720": (1280, 720, "raw"),
    "1920x1080": (1920, 1080, "raw"),
    "jpeg": (1920, 1080, "compressed"),
}


@dataclass
class CaseResult:
    case: str
    node: str  # "this tree" or the compared git revision
    seconds: float
    rate: float
    published: int = 0
    received: int = 0
    needed: int = 0
    taken: int = 0
    encoded: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    segments: int = 0
    segments_expected: int = 0
    node_cpu: float = 0.0  # share of one core
    player_cpu: float = 0.0
    peak_rss_mb: float = 0.0
    rss_first_mb: float = 0.0  # after the first tenth of the run
    rss_last_mb: float = 0.0
    rss_curve_mb: list[float] = field(default_factory=list)  # one sample every ~2 s
    callback_p50_ms: float = float("nan")
    callback_p99_ms: float = float("nan")
    inference_ms: float = float("nan")
    load: str = ""  # load average (1 min) when the case started
    load_end: str = ""
    dds_profile: str = "package"  # the player's and node's Fast DDS profile: package | none
    fastdds_profiles_file: str = ""  # FASTDDS_DEFAULT_PROFILES_FILE given to both processes
    witness_received: int | None = None  # images a second DDS reader got (--witness)
    witness_lost: int | None = None  # samples that reader's DDS reported lost
    player: dict[str, Any] = field(default_factory=dict)  # the player's own summary

    @property
    def taken_pct(self) -> float:
        return 100.0 * min(self.taken, self.needed) / max(self.needed, 1)

    @property
    def received_pct(self) -> float:
        return 100.0 * self.received / max(self.published, 1)


# -- inputs ------------------------------------------------------------------------------------

def make_inputs(work: Path, cases: list[str]) -> tuple[Path, dict[str, Path]]:
    """The tiny model and one bag per case under ``work`` (reused when present)."""
    from spartan_train.bag.write import WriteConfig, write_bag
    from spartan_train.data.synth.generate import main as synth_main

    data = work / "drive"
    if not (data / "config").is_dir():
        rc = synth_main(["--out", str(data), "--sequences", "1", "--frames", str(BAG_FRAMES),
                         "--width", "160", "--height", "120", "--val-fraction", "0", "--quiet"])
        if rc != 0:
            raise SystemExit("spartan-synth failed")
    seq = sorted(p.name for p in (data / "images").iterdir())[0]
    bags = {}
    for case in cases:
        width, height, transport = CASES[case]
        bag = work / f"bag_{case}"
        if not (bag / "metadata.yaml").exists():
            write_bag(WriteConfig(
                data=data, seqs=[seq], out=bag, image_topic=IMAGE_TOPIC, odom_topic=ODOM_TOPIC,
                odom_rate=ODOM_HZ, frame_rate=CAMERA_HZ, size=(width, height),
                compressed="jpeg" if transport == "compressed" else None,
                raw=transport == "raw", progress=False))
        bags[case] = bag
    return tiny_model(work / "model"), bags


def tiny_model(base: Path) -> Path:
    out = base / "tiny"
    if (out / "model.json").exists():
        return out
    import torch
    from spartan_train.export.onnx_export import export_model
    from spartan_train.model import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model("tiny")
    checkpoint = save_checkpoint(model, base / "checkpoint")
    export_model(checkpoint, out, model=model, log=lambda _line: None)
    return out


def image_stamps(bag: Path, topic: str) -> tuple[np.ndarray, int]:
    """Image stamps of one pass of the bag and the loop period (as the player computes it)."""
    from spartan_ros.bag.play import _loop_period_ns, open_bag

    reader = open_bag(bag)
    try:
        conns = [c for c in reader.connections if c.topic == topic]
        stamps = np.array([t for _, t, _ in reader.messages(connections=conns)], dtype=np.int64)
        period = _loop_period_ns(list(reader.connections), reader.start_time, reader.end_time - 1)
    finally:
        reader.close()
    return stamps, period


def needed_frames(stamps: np.ndarray, period: int, published: int) -> int:
    """Frames the node's sampler takes from the first ``published`` looped images."""
    sampler = FrameSampler(SAMPLE_HZ, max_gap_s=WINDOW / SAMPLE_HZ)
    taken = 0
    for i in range(published):
        passes, k = divmod(i, len(stamps))
        taken += sampler.offer(int(stamps[k]) + passes * period).take
    return taken


# -- measuring processes -----------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


class RssWatch(threading.Thread):
    """Samples a process's RSS every ``period`` seconds."""

    def __init__(self, pid: int, period: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.samples: list[tuple[float, float]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self._stop_event.wait(self.period):
            self.samples.append((time.monotonic() - t0, rss_mb(self.pid)))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


class Diagnostics:
    """The node's latest /diagnostics, received in this process."""

    def __init__(self, env: dict[str, str]) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray

        os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                                               "RMW_IMPLEMENTATION")})
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("bench_ingest", context=self.context)
        self.latest: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_msg, 10)
        self.witnessed: dict[str, list[int]] = {}  # topic -> [received, lost]
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def witness(self, topics: dict[str, Any]) -> None:
        """A second reader on each image topic (best effort, raw bytes, nothing done with them)
        that counts what reaches a DDS reader and what DDS reports lost (SAMPLE_LOST: a sample
        never delivered whole, e.g. a fragment that did not fit the writer's shared memory).
        Subscribed once for the whole run: a subscription with an event handler must not be
        destroyed while the executor spins."""
        from rclpy.event_handler import SubscriptionEventCallbacks
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50,
                         reliability=ReliabilityPolicy.BEST_EFFORT)
        for topic, msg_type in topics.items():
            counts = self.witnessed.setdefault(topic, [0, 0])

            def on_msg(_raw: bytes, counts: list[int] = counts) -> None:
                counts[0] += 1

            def on_lost(info: Any, counts: list[int] = counts) -> None:
                counts[1] += info.total_count_change

            self.node.create_subscription(
                msg_type, topic, on_msg, qos, raw=True,
                event_callbacks=SubscriptionEventCallbacks(message_lost=on_lost))

    def witness_counts(self, topic: str) -> tuple[int, int] | None:
        counts = self.witnessed.get(topic)
        return None if counts is None else (counts[0], counts[1])

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.2)
            except Exception:  # context shut down while spinning
                return

    def _on_msg(self, msg: Any) -> None:
        out = {}
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            out[status.name.rsplit(": ", 1)[-1]] = values
        if "ingest" in out and "frames received" in out["ingest"]:
            with self._lock:
                self.latest = out

    def ingest(self) -> dict[str, str]:
        with self._lock:
            return dict(self.latest.get("ingest", {}))

    def wait_idle(self, timeout: float) -> dict[str, str]:
        """Diagnostics once nothing waits for the encoder (or after ``timeout``)."""
        deadline = time.monotonic() + timeout
        last = self.ingest()
        while time.monotonic() < deadline:
            time.sleep(1.0)
            now = self.ingest()
            if now.get("frames pending") == "0" and now.get("frames received") == last.get(
                    "frames received"):
                return now
            last = now
        return self.ingest()

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self.thread.join(2.0)


def node_args(model: Path, transport: str, extra: dict[str, str]) -> list[str]:
    params = {"model_dir": str(model), "memory_path": "''", "execution_providers": "[cpu]",
              "image_topic": IMAGE_TOPIC, "odom_topic": ODOM_TOPIC, "image_transport": transport,
              "input_timeout_s": "600.0", "sample_rate_hz": str(SAMPLE_HZ),
              "window_frames": str(WINDOW), "stride_frames": str(STRIDE), **extra}
    args = [*NODE, "--ros-args"]
    for name, value in params.items():
        args += ["-p", f"{name}:={value}"]
    return args


def ref_tree(work: Path, ref: str) -> Path:
    """``spartan_ros`` of git revision ``ref``, extracted once under ``work``."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    sha = subprocess.run(["git", "rev-parse", "--short", ref], cwd=repo, check=True,
                         capture_output=True, text=True).stdout.strip()
    out = work / f"ref_{sha}"
    if not (out / "spartan_ros").is_dir():
        out.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha, "spartan_ros"], cwd=repo, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def profile_env(env: dict[str, str], profile: str) -> dict[str, str]:
    """``env`` with the Fast DDS profile of the run: the package's (what ``spartan-bag play``
    and the launch file use) or none (an empty variable: Fast DDS's built-in defaults)."""
    from spartan_ros import dds

    return {**env, dds.PROFILE_VARIABLE: str(dds.PROFILE) if profile == "package" else ""}


def run_case(case: str, model: Path, bag: Path, env: dict[str, str], diag: Diagnostics,
             seconds: float, rate: float, logs: Path, node_params: dict[str, str],
             node_tree: Path | None = None, node_name: str = "this tree",
             profile: str = "package", player_qos: tuple[str, int] = (PLAYER_QOS, PLAYER_DEPTH)
             ) -> CaseResult:
    width, height, transport = CASES[case]
    topic = IMAGE_TOPIC if transport == "raw" else IMAGE_TOPIC + "/compressed"
    env = profile_env(env, profile)
    result = CaseResult(case, node_name, seconds, rate,
                        load=Path("/proc/loadavg").read_text().split()[0], dds_profile=profile,
                        fastdds_profiles_file=env["FASTDDS_DEFAULT_PROFILES_FILE"])
    witness0 = diag.witness_counts(topic)
    node_env = dict(env)
    if node_tree is not None:  # its spartan_ros before this tree's
        node_env["SPARTAN_BENCH_NODE_TREE"] = str(node_tree)
    tag = (case if node_tree is None else f"{case}_{node_tree.name}") + f"_{profile}"
    node = Process(node_args(model, transport, node_params), node_env, logs / f"node_{tag}.log")
    player = None
    try:
        node.wait_for_output("active:", timeout=120)
        rss = RssWatch(node.popen.pid)
        rss.start()
        player = Process([*SPARTAN_BAG, "play", str(bag), "--loop", "--restamp", "--qos",
                          player_qos[0], "--depth", str(player_qos[1]), "--rate", str(rate),
                          "--topics", topic, ODOM_TOPIC, "--json"],
                         env, logs / f"player_{tag}.log")
        player.wait_for_output("playing ", timeout=60)
        node_cpu0, player_cpu0, t0 = cpu_seconds(node.popen.pid), cpu_seconds(
            player.popen.pid), time.monotonic()
        deadline = t0 + seconds
        while time.monotonic() < deadline and player.alive():
            time.sleep(0.2)
        wall = time.monotonic() - t0
        result.node_cpu = (cpu_seconds(node.popen.pid) - node_cpu0) / wall
        result.player_cpu = (cpu_seconds(player.popen.pid) - player_cpu0) / wall
        player.signal(signal.SIGINT)
        player.popen.wait(30)
        summary = [json.loads(line) for line in player.output().splitlines()
                   if line.startswith("{")]
        if not summary:
            raise RuntimeError(f"the player printed no summary:\n{player.tail()}")
        result.published = int(summary[-1]["counts"][topic])
        result.player = summary[-1]
        ingest = diag.wait_idle(timeout=60)
        rss.stop()
        witness1 = diag.witness_counts(topic)
        if witness0 is not None and witness1 is not None:
            result.witness_received = witness1[0] - witness0[0]
            result.witness_lost = witness1[1] - witness0[1]
        result.load_end = Path("/proc/loadavg").read_text().split()[0]
    finally:
        if player is not None:
            player.stop()
        node.stop()
    stamps, period = image_stamps(bag, topic)
    result.needed = needed_frames(stamps, period, result.published)
    counts = {k: int(v) for k, v in ingest.items() if v.isdigit()}
    result.received = counts.get("frames received", 0)
    result.taken = counts.get("frames taken", 0)
    result.encoded = counts.get("frames encoded", 0)
    result.segments = counts.get("segments stored", 0)
    result.segments_expected = max(0, (result.needed - WINDOW) // STRIDE + 1)
    result.drops = {k.split(": ", 1)[1]: v for k, v in counts.items() if k.startswith("dropped")}
    lost = result.published - result.received
    if lost:
        result.drops["lost in DDS"] = lost
    result.callback_p50_ms = float(ingest.get("image callback ms (p50)", "nan"))
    result.callback_p99_ms = float(ingest.get("image callback ms (p99)", "nan"))
    result.inference_ms = float(ingest.get("inference ms per frame (mean)", "nan"))
    samples = [mb for _, mb in rss.samples]
    if samples:
        result.peak_rss_mb = max(samples)
        result.rss_first_mb = samples[len(samples) // 10]
        result.rss_last_mb = samples[-1]
        result.rss_curve_mb = [round(mb, 1) for mb in samples[::8]]
    return result


# -- the executor's cost per image, before and after the raw subscription -------------------------

def _deserialized_view(raw: bytes, cls: Any) -> Any:
    from rclpy.serialization import deserialize_message

    from spartan_ros.ingest.images import image_view

    return image_view(deserialize_message(raw, cls))


def _raw_view(raw: bytes) -> Any:
    from spartan_ros.ingest.cdr import image_fields
    from spartan_ros.ingest.images import image_view

    return image_view(image_fields(raw))


def _raw_rgb(raw: bytes) -> np.ndarray:
    from spartan_ros.ingest.images import to_rgb

    return to_rgb(*_raw_view(raw))


def _raw_jpeg(raw: bytes) -> np.ndarray:
    from spartan_ros.ingest.cdr import compressed_fields
    from spartan_ros.ingest.images import decode_compressed

    return decode_compressed(compressed_fields(raw).data)


def handoff_costs(bags: dict[str, Path], min_time: float = 1.0) -> list[dict[str, Any]]:
    """Per case, the time the image callback path costs the executor per message: rclpy
    deserialising it into a message object (what a typed subscription does for every image) vs
    reading the stamp and fields from the serialized bytes (the node's raw subscription); and
    the decode of a taken frame (converting the view, or decoding the JPEG), paid 10 times a
    second in the encoder thread. Timed in turns, so machine load hits both alike."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CompressedImage, Image

    from bench.inputs import time_interleaved
    from spartan_ros.bag.play import open_bag
    from spartan_ros.ingest.cdr import compressed_fields

    rows = []
    for case, bag in bags.items():
        transport = CASES[case][2]
        topic = IMAGE_TOPIC if transport == "raw" else IMAGE_TOPIC + "/compressed"
        reader = open_bag(bag)
        try:
            conns = [c for c in reader.connections if c.topic == topic]
            raw = bytes(next(iter(reader.messages(connections=conns)))[2])
        finally:
            reader.close()
        fns: dict[str, Callable[[], object]]
        if transport == "raw":
            fns = {"deserialize": partial(_deserialized_view, raw, Image),
                   "raw view": partial(_raw_view, raw),
                   "decode taken": partial(_raw_rgb, raw)}
        else:
            fns = {"deserialize": partial(deserialize_message, raw, CompressedImage),
                   "raw view": partial(compressed_fields, raw),
                   "decode taken": partial(_raw_jpeg, raw)}
        timed = time_interleaved(fns, min_time=min_time, min_runs=5)
        rows.append({"case": case, "bytes": len(raw),
                     **{f"{k}_ms": 1000 * t.p50 for k, t in timed.items()}})
    return rows


def handoff_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| camera | message | executor per image: deserialize (before) | raw view (now) | "
             "at 30 Hz, before → now | decode of a taken frame (worker, 10 Hz) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        width, height, transport = CASES[r["case"]]
        name = f"{width}x{height} {'rgb8' if transport == 'raw' else 'JPEG'}"
        lines.append(
            f"| {name} | {r['bytes'] / 1e6:.2f} MB | {r['deserialize_ms']:.3f} ms | "
            f"{r['raw view_ms']:.3f} ms | {30 * r['deserialize_ms'] / 10:.1f} % → "
            f"{30 * r['raw view_ms'] / 10:.2f} % of a core | {r['decode taken_ms']:.2f} ms |")
    return "\n".join(lines)


# -- report --------------------------------------------------------------------------------------

PROFILE_LABELS = {"none": "Fast DDS defaults", "package": "package profile"}


def case_name(r: CaseResult, compare: bool, profiles: bool) -> str:
    width, height, transport = CASES[r.case]
    name = f"{width}x{height} {'rgb8' if transport == 'raw' else 'JPEG'}"
    labels = ([r.node] if compare else []) + ([PROFILE_LABELS[r.dds_profile]] if profiles else [])
    return name + (f" ({', '.join(labels)})" if labels else "")


def table(results: list[CaseResult]) -> str:
    compare = len({r.node for r in results}) > 1
    profiles = len({r.dds_profile for r in results}) > 1
    lines = ["| camera | needed frames taken | frames received | drops by reason | node CPU | "
             "callback p50 / p99 | segments stored / expected | peak RSS |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        fps = CAMERA_HZ * r.rate
        drops = ", ".join(f"{k} {v}" for k, v in sorted(r.drops.items())) or "none"
        lines.append(
            f"| {case_name(r, compare, profiles)}, {fps:g} Hz | "
            f"{r.taken_pct:.1f} % ({r.taken} of {r.needed}) | "
            f"{r.received_pct:.1f} % ({r.received} of {r.published}) | {drops} | "
            f"{100 * r.node_cpu:.0f} % | {r.callback_p50_ms:.2f} / {r.callback_p99_ms:.2f} ms | "
            f"{r.segments} / {r.segments_expected} | {r.peak_rss_mb:.0f} MB |")
    return "\n".join(lines)


def where_lost_table(results: list[CaseResult]) -> str:
    """Per case, the images counted at each step: published by the player, delivered to a
    second DDS reader and reported lost by its DDS (--witness), handed to the node's callback."""
    compare = len({r.node for r in results}) > 1
    lines = ["| camera | published (player) | a second DDS reader: received / reported lost | "
             "node's image callback |", "|---|---|---|---|"]
    for r in results:
        witness = ("-" if r.witness_received is None
                   else f"{r.witness_received} / {r.witness_lost}")
        lines.append(f"| {case_name(r, compare, True)} | {r.published} | {witness} | "
                     f"{r.received} |")
    return "\n".join(lines)


def run_info(args: argparse.Namespace) -> dict[str, Any]:
    """What a re-run needs to compare against: the machine, its load, the ROS stack."""
    import platform
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    def sysctl(name: str) -> str:
        try:
            return Path("/proc/sys", *name.split(".")).read_text().strip()
        except OSError:
            return ""

    versions = {}
    for dist in ("ros-rclpy", "ros-rmw-fastrtps-cpp", "ros-fastdds", "onnxruntime", "numpy"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            pass
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), "")
    repo = Path(__file__).resolve().parents[1]
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                         text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=repo, capture_output=True, text=True).stdout.strip())
    return {"argv": sys.argv[1:], "seconds": args.seconds, "rate": args.rate,
            "git": rev + ("+changes" if dirty else ""),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cpu": cpu, "cpus": os.cpu_count(), "nice": os.nice(0),
            "python": platform.python_version(),
            "rmw": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp"), "versions": versions,
            "sysctl": {k: sysctl(k) for k in ("net.core.rmem_max", "net.core.wmem_max",
                                              "net.core.rmem_default")},
            "camera_hz": CAMERA_HZ, "odom_hz": ODOM_HZ, "sample_hz": SAMPLE_HZ,
            "window": WINDOW, "stride": STRIDE,
            "player": {"qos": args.player_qos, "depth": args.player_depth}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.ingest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="playing time per case")
    ap.add_argument("--cases", type=comma_list(list(CASES)), default=",".join(CASES),
                    help=f"comma-separated, of: {', '.join(CASES)}")
    ap.add_argument("--rate", type=float, default=1.0, help="player speed (2: a 60 Hz camera)")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--work", type=Path, default=Path("runs/bench_ingest"),
                    help="model and bags (kept for the next run)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                    help="extra node parameter (repeatable)")
    ap.add_argument("--tag", default="", help="name of this run in the JSON file name")
    ap.add_argument("--compare", default=None, metavar="REF",
                    help="also run the node of this git revision, case by case")
    ap.add_argument("--dds-profile", type=comma_list(list(PROFILE_LABELS)), default="none,package",
                    help="Fast DDS profile(s) of the player and node, each case with each in "
                    "turn: none (Fast DDS's defaults), package (spartan_ros/dds/fastdds.xml)")
    ap.add_argument("--player-qos", choices=("sensor", "reliable"), default=PLAYER_QOS,
                    help="the player's reliability: sensor (best effort, as most camera "
                    "drivers) or reliable")
    ap.add_argument("--player-depth", type=int, default=PLAYER_DEPTH,
                    help="the player's history depth")
    ap.add_argument("--witness", action="store_true",
                    help="count at a second DDS reader too (what DDS delivers and reports lost)")
    args = ap.parse_args(argv)
    cases = args.cases
    extra = dict(p.split(":=", 1) for p in args.param)
    profiles = args.dds_profile

    args.work.mkdir(parents=True, exist_ok=True)
    print("preparing the model and bags ...", file=sys.stderr, flush=True)
    model, bags = make_inputs(args.work, cases)
    ref = ref_tree(args.work, args.compare) if args.compare else None
    print("timing the image callback's hand-off per message ...", file=sys.stderr, flush=True)
    costs = handoff_costs(bags, min_time=min(1.0, args.seconds / 10))
    env = ros_env()
    info = run_info(args)
    info["load_at_start"] = Path("/proc/loadavg").read_text().split()[:3]
    diag = Diagnostics(env)
    if args.witness:
        from sensor_msgs.msg import CompressedImage, Image

        diag.witness({IMAGE_TOPIC: Image, IMAGE_TOPIC + "/compressed": CompressedImage})
    results = []
    try:
        for case in cases:
            runs: list[tuple[Path | None, str, str]] = [
                (tree, name, profile) for profile in profiles
                for tree, name in ([(ref, f"at {ref.name[4:]}")] if ref is not None else [])
                + [(None, "this tree")]]
            for tree, name, profile in runs:
                print(f"{case} ({name}, {PROFILE_LABELS[profile]}): playing {args.seconds:g} s "
                      "...", file=sys.stderr, flush=True)
                results.append(run_case(case, model, bags[case], env, diag, args.seconds,
                                        args.rate, args.work / "logs", extra, tree, name,
                                        profile, (args.player_qos, args.player_depth)))
                print(table(results[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    finally:
        diag.close()
    tables = {"ingest": table(results), "where_lost": where_lost_table(results),
              "handoff": handoff_table(costs)}
    print(tables["ingest"])
    print()
    print(tables["where_lost"])
    print()
    print(tables["handoff"])
    info["load_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    doc = {"cases": [{**asdict(r), "taken_pct": r.taken_pct, "received_pct": r.received_pct}
                     for r in results],
           "handoff": costs, "params": extra, "run": info, "tables": tables,
           "cpus": os.cpu_count(), "load_at_end": info["load_at_end"]}
    print(json.dumps(doc))
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"ingest{'_' + args.tag if args.tag else ''}.json"
    (args.out / name).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
