"""The end-to-end demo behind ``make demo``: a drive the model never saw goes through the real node
and the real service, and a planner's questions come back as places on the map.

    python -m spartan_train.demo [--checkpoint DIR] [--work runs/demo] [--rate 4] [--fresh]

Steps (everything but the memory is cached under ``--work``, so a second run only replays):

1. export the checkpoint to ``<work>/models/<name>/`` (skipped when its model.json names the same
   source checkpoint sha256);
2. generate a spartan-synth drive with a seed the model was not trained on and write it to a
   rosbag2 (``<work>/drive-.../{data,bag}``; the bag's captions.json is the ground truth);
3. start ``spartan_node`` as its own process with the launch parameters (config/spartan.yaml plus
   model, a fresh memory file, sim time and the bag's topics), in its own ROS_DOMAIN_ID with
   localhost-only discovery;
4. replay the bag into it (``spartan-bag play --clock --rate R``);
5. wait until every frame is encoded: the node publishes each segment on ``~/segments`` after
   its commit, and a listener process counts them;
6. ask annotated captions of the bag (validation windows) and free text through ``~/query`` with
   the command-line client (one process per question), print each answer and whether the
   annotated span came back in the top 5 (the overlap rule of ``spartan-bag eval``), and for
   free text whether the answer holds what the question names (the drive's facts,
   ``evaluate.questions``);
7. draw ``<work>/demo.png``: the drive's paths with the retrieved segments, and the first frame
   of each query's best segment;
8. stop the processes (their process groups) and say where everything is.

Only subprocesses talk ROS here: this module itself imports no rclpy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from spartan_train.evaluate.questions import (
    DriveFacts,
    FreeQuestion,
    load_questions,
    make_question,
)
from spartan_train.processes import Process, SegmentWatch, ros_env
from spartan_train.protocol import DEMO_DRIVE, TRAINING_SEEDS, seed_set

REPO = Path(__file__).resolve().parents[2]  # the repository (this file: training/spartan_train/)
# the trained `tiny` (protocol.TRAINING_SEEDS)
DEFAULT_CHECKPOINT = REPO / "assets" / "models" / "tiny-synth"
DEFAULT_WORK = Path("runs/demo")
SERVICE = "/spartan/query"
SEGMENTS = "/spartan/segments"
FREE_TEXT = ("the gas station where we turned left", "stopping at a red light at night")
TOP_K = 5
MIN_OVERLAP = 0.5  # spartan-bag eval's rule: the segment holds half of the annotated frames


class DemoError(RuntimeError):
    """A step could not be done; the message says which and why."""


@dataclass
class DemoConfig:
    checkpoint: Path = DEFAULT_CHECKPOINT
    work: Path = DEFAULT_WORK
    rate: float = 2.0  # bag playback speed: 4 loses frames when the 2 cores are busy
    seed: int = DEMO_DRIVE.seed  # a selection seed (protocol): never trained on
    sequences: int = 4
    frames: int = 300  # per sequence, 10 Hz
    width: int = 160
    height: int = 120
    queries: int = 5  # annotated captions to ask; 0 = every validation window
    free_text: tuple[str, ...] = FREE_TEXT
    questions_file: Path | None = None  # a user's free-text list (replaces free_text)
    top_k: int = TOP_K
    jobs: int = 2  # client processes asking at the same time
    drawn: int = 10  # questions in the picture (all free text, annotated ones spread out)
    fresh: bool = False  # drop the cached model export and drive first
    domain_id: int | None = None  # None: a random ROS_DOMAIN_ID in 1..100
    settle_s: float = 6.0  # after playback: no new segment for this long means ingest is over
    start_timeout_s: float = 60.0  # node start-up (model load, memory open)
    timeout_s: float = 600.0  # ingest after playback
    params_file: Path = field(default_factory=lambda: _params_file())

    def check(self) -> None:
        if not (self.rate > 0):
            raise DemoError(f"--rate must be > 0, got {self.rate}")
        if self.sequences < 1 or self.frames < 24:
            raise DemoError("--sequences must be >= 1 and --frames >= 24 (one window)")
        if self.queries < 0 or self.top_k < 1 or self.jobs < 1:
            raise DemoError("--queries must be >= 0, --top-k and --jobs >= 1")

    @property
    def drive_dir(self) -> Path:
        name = f"drive-seed{self.seed}-{self.sequences}x{self.frames}-{self.width}x{self.height}"
        return self.work / name


def _params_file() -> Path:
    """config/spartan.yaml of the checkout, else of the installed package's share folder."""
    for path in (REPO / "config" / "spartan.yaml",
                 Path(sys.prefix) / "share" / "spartan_ros" / "config" / "spartan.yaml"):
        if path.is_file():
            return path
    return REPO / "config" / "spartan.yaml"  # check() of the node reports it missing


def say(text: str) -> None:
    print(text, flush=True)


def step(n: int, text: str) -> float:
    say(f"\n[demo {n}/8] {text}")
    return time.monotonic()


# ------------------------------------------------------------------------------- 1. the model


def export_model(cfg: DemoConfig) -> Path:
    """``<work>/models/<checkpoint name>``, exported unless it already holds this checkpoint."""
    from spartan_train.model.checkpoint import sha256  # torch: only this step needs it

    ckpt = Path(cfg.checkpoint)
    if not ckpt.exists():
        raise DemoError(f"checkpoint {ckpt} does not exist; pass --checkpoint DIR (a directory "
                        "with model.safetensors + config.json, or a checkpoint file)")
    out = cfg.work / "models" / (ckpt.stem if ckpt.is_file() else ckpt.name)
    want = sha256(ckpt)
    try:
        have = json.loads((out / "model.json").read_text())["source"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        have = None
    if have == want:
        say(f"   {out} already holds {ckpt} (sha256 {want[:12]}…): kept")
        return out
    from spartan_train.export.onnx_export import ExportError
    from spartan_train.export.onnx_export import export_model as export

    try:
        export(ckpt, out, overwrite=True, log=lambda line: say(f"   {line}"))
    except ExportError as e:
        raise DemoError(f"cannot export {ckpt}: {e}") from None
    return out


# ------------------------------------------------------------------------------- 2. the drive


def make_drive(cfg: DemoConfig) -> tuple[Path, Path]:
    """(dataset root, bag) of the demo drive, generated and written unless already there."""
    from spartan_train.bag.write import CAPTIONS_FILE, WriteConfig, write_bag
    from spartan_train.data.synth.generate import GenConfig, ensure_dataset

    root, bag = cfg.drive_dir / "data", cfg.drive_dir / "bag"
    progress = sys.stderr.isatty()
    t0 = time.monotonic()
    summary = ensure_dataset(GenConfig(
        out=str(root), seed=cfg.seed, sequences=cfg.sequences, frames=cfg.frames,
        width=cfg.width, height=cfg.height, workers=min(2, os.cpu_count() or 1)), progress)
    if summary is None:
        say(f"   {root}: generated before, kept")
    else:
        say(f"   generated {len(summary['sequences'])} sequences x {cfg.frames} frames "
            f"({cfg.width}x{cfg.height}, seed {cfg.seed}) in {time.monotonic() - t0:.0f} s")
    if (bag / CAPTIONS_FILE).is_file():  # written after the messages
        say(f"   {bag}: written before, kept")
    else:
        t0 = time.monotonic()
        shutil.rmtree(bag, ignore_errors=True)  # a bag cut short by a kill
        seqs = sorted(p.name for p in (root / "images").iterdir() if p.is_dir())
        write_bag(WriteConfig(data=root, seqs=seqs, out=bag, storage="sqlite3",
                              progress=progress))
        say(f"   wrote {bag} (sqlite3) in {time.monotonic() - t0:.0f} s")
    return root, bag


# ------------------------------------------------------------------------------- processes


def wait_for(what: str, ready: Callable[[], bool], procs: Sequence[Process], timeout: float,
             poll: float = 0.2) -> None:
    """Poll ``ready`` until true; DemoError (with the logs' tails) on timeout or a dead process."""
    deadline = time.monotonic() + timeout
    while not ready():
        for p in procs:
            if not p.alive():
                raise DemoError(f"{p.name} exited ({p.popen.returncode}) while waiting for "
                                f"{what}; {p.log_path}:\n{p.tail()}")
        if time.monotonic() > deadline:
            tails = "\n".join(f"{p.log_path}:\n{p.tail()}" for p in procs)
            raise DemoError(f"no {what} after {timeout:.0f} s\n{tails}")
        time.sleep(poll)


def node_active(node: Process) -> bool:
    """True once the node serves queries; DemoError when it says it cannot get there."""
    text = node.output()
    for line in text.splitlines():
        if "cannot configure" in line or "cannot activate" in line:
            raise DemoError(f"the node did not start: {line.split(']: ', 1)[-1]}; {node.log_path}")
    return f"serving {SERVICE}" in text


def expected_segments(captions: dict[str, Any], params: dict[str, Any]) -> int:
    """Segments a node that keeps up stores: each sequence fills its own windows (the gap
    between sequences empties the window), one every ``stride_frames`` after the first."""
    window, stride = int(params["window_frames"]), int(params["stride_frames"])
    return sum(max(0, (int(s["frames"]) - window) // stride + 1) for s in captions["sequences"])


def node_parameters(cfg: DemoConfig) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(cfg.params_file.read_text())
        return dict(doc["/**"]["ros__parameters"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise DemoError(f"cannot read the node parameters {cfg.params_file}: {e}") from None


def start_node(cfg: DemoConfig, env: dict[str, str], model_dir: Path, memory: Path,
               captions: dict[str, Any]) -> Process:
    """spartan_node as `ros2 launch` would start it: the params file, then overrides."""
    for suffix in ("", "-wal", "-shm"):  # a fresh memory: this replay must not add to the last
        Path(f"{memory}{suffix}").unlink(missing_ok=True)
    overrides = {"model_dir": model_dir.resolve(), "memory_path": memory.resolve(),
                 "use_sim_time": "true", "image_topic": captions["image_topic"],
                 "odom_topic": captions["odom_topic"]}
    args = [sys.executable, "-m", "spartan_ros.node.spartan_node", "--ros-args",
            "--params-file", str(cfg.params_file)]
    for name, value in overrides.items():
        args += ["-p", f"{name}:={value}"]
    return Process(args, env, cfg.work / "logs" / "node.log", name="spartan_node")


def replay(cfg: DemoConfig, env: dict[str, str], bag: Path, node: Process,
           segments: SegmentWatch, expected: int) -> dict[str, Any]:
    """Play the bag into the node; returns the player's summary. Prints progress meanwhile."""
    args = [sys.executable, "-m", "spartan_ros.bag", "play", str(bag), "--clock",
            "--rate", f"{cfg.rate:g}", "--wait-for-subscribers", "1", "--wait-timeout", "30",
            "--json"]
    player = Process(args, env, cfg.work / "logs" / "play.log", name="spartan-bag play")
    try:
        last = time.monotonic()
        while player.alive():
            if not node.alive():
                raise DemoError(f"the node exited ({node.popen.returncode}) during playback; "
                                f"{node.log_path}:\n{node.tail()}")
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                say(f"   ... {len(segments.segments())} / {expected} segments stored")
            time.sleep(0.2)
    finally:
        code = player.stop()
    if code != 0:
        raise DemoError(f"playback failed ({code}); {player.log_path}:\n{player.tail()}")
    lines = [ln for ln in player.output().splitlines() if ln.startswith("{")]
    if not lines:
        raise DemoError(f"no summary from the player; {player.log_path}:\n{player.tail()}")
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


def wait_ingested(cfg: DemoConfig, node: Process, segments: SegmentWatch,
                  expected: int) -> tuple[int, float]:
    """Wait until the node stored every expected segment, or stored nothing new for
    ``settle_s`` (frames were lost); returns (segments stored, seconds waited)."""
    t0 = time.monotonic()
    count, changed = len(segments.segments()), time.monotonic()

    def done() -> bool:
        nonlocal count, changed
        now = len(segments.segments())
        if now != count:
            count, changed = now, time.monotonic()
        return count >= expected or time.monotonic() - changed >= cfg.settle_s

    wait_for("end of ingest", done, [node, segments.process], cfg.timeout_s)
    return count, time.monotonic() - t0


def drop_warnings(log_text: str) -> list[str]:
    return [ln.split("]: ", 1)[-1] for ln in log_text.splitlines() if "dropped" in ln]


# ------------------------------------------------------------------------------- 6. queries


@dataclass
class Question:
    number: int  # Q<number> in the printout and the picture
    text: str
    window: dict[str, Any] | None = None  # the annotated window (captions.json) asked about
    answer: dict[str, Any] = field(default_factory=dict)
    overlaps: list[float] = field(default_factory=list)  # per returned segment, annotated only
    rank: int | None = None  # 1-based rank of the first correct segment; top_k + 1 if none
    seconds: float = 0.0
    free: FreeQuestion | None = None  # free text with facts: its ground truth
    answering: int | None = None  # windows of the drive that answer it (free text)
    returned_facts: list[list[str]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "annotated" if self.window is not None else "free text"


def pick_windows(captions: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """``n`` validation windows spread evenly over the drive (0: all), in time order; windows
    overlapping an earlier pick are skipped while others remain, so the questions differ."""
    val = sorted((w for w in captions["windows"] if w["split"] == "val"),
                 key=lambda w: w["start_ns"])
    if not val:
        raise DemoError("the bag's captions.json has no validation window to ask about")
    if n == 0 or n >= len(val):
        return val
    picked: list[dict[str, Any]] = []
    for i in np.linspace(0, len(val) - 1, n).round().astype(int):
        w = val[i]
        free = [v for v in val if not any(_overlaps(v, p) for p in picked)]
        if any(_overlaps(w, p) for p in picked) and free:
            w = min(free, key=lambda v: abs(v["start_ns"] - val[i]["start_ns"]))
        picked.append(w)
    return sorted(picked, key=lambda w: w["start_ns"])


def _overlaps(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(a["start_ns"] <= b["end_ns"] and b["start_ns"] <= a["end_ns"])


def ask(env: dict[str, str], question: Question, top_k: int, timeout: float = 60.0) -> None:
    """One `spartan_query` process per question, as a planner's shell would call it."""
    args = [sys.executable, "-m", "spartan_ros.node.query_client", question.text,
            "--service", SERVICE, "--top-k", str(top_k), "--json", "--timeout", f"{timeout:g}"]
    t0 = time.monotonic()
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout + 30,
                         start_new_session=True)
    question.seconds = time.monotonic() - t0
    if out.returncode != 0:
        raise DemoError(f"the client failed ({out.returncode}) for {question.text!r}:\n"
                        f"{out.stdout}{out.stderr}")
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise DemoError(f"no answer printed by the client for {question.text!r}:\n{out.stdout}")
    question.answer = json.loads(lines[-1])


def free_questions(cfg: DemoConfig) -> list[FreeQuestion | str]:
    """The free-text questions: a user's file, else ``--free-text`` (text without a known fact
    is asked but cannot be scored)."""
    if cfg.questions_file is not None:
        try:
            return list(load_questions(cfg.questions_file))
        except ValueError as e:
            raise DemoError(str(e)) from None
    out: list[FreeQuestion | str] = []
    for text in cfg.free_text:
        try:
            out.append(make_question(text))
        except ValueError:
            out.append(text)
    return out


def score_free(question: Question, facts: DriveFacts | None, window: int, stride: int,
               top_k: int) -> None:
    """For free text with facts: the first returned segment whose frames hold every fact."""
    q = question.free
    if q is None or facts is None or not question.answer.get("success"):
        return
    returned = [facts.of_span(s["start_ns"], s["end_ns"]) for s in question.answer["segments"]]
    question.returned_facts = [sorted(f) for f in returned]
    question.answering = sum(q.answers(f) for f in facts.grid_windows(window, stride))
    hits = [i for i, f in enumerate(returned) if q.answers(f)]
    question.rank = hits[0] + 1 if hits else top_k + 1


def score(question: Question, period_ns: int, top_k: int) -> None:
    """Overlap of each returned segment with the annotated span, and the first correct rank."""
    from spartan_train.bag.evaluate import first_correct_rank, overlap_fractions

    if question.window is None or not question.answer.get("success"):
        return
    segs = question.answer["segments"]
    w = question.window
    question.overlaps = overlap_fractions(w["start_ns"], w["end_ns"],
                                          [s["start_ns"] for s in segs],
                                          [s["end_ns"] for s in segs], period_ns).tolist()
    question.rank = first_correct_rank(question.overlaps, MIN_OVERLAP, top_k)


class Timeline:
    """Bag stamps -> (sequence, frame index) and seconds into the drive, from captions.json."""

    def __init__(self, captions: dict[str, Any]) -> None:
        self.seqs = [s["seq"] for s in captions["sequences"]]
        self.frames = [np.asarray(s["frame_ns"], dtype=np.int64) for s in captions["sequences"]]
        self.t0 = int(self.frames[0][0])

    def locate(self, stamp_ns: int) -> tuple[int, int]:
        """(sequence index, nearest frame index) of a stamp."""
        best = min(range(len(self.frames)),
                   key=lambda i: max(self.frames[i][0] - stamp_ns, stamp_ns - self.frames[i][-1],
                                     0))
        f = self.frames[best]
        return best, int(np.abs(f - stamp_ns).argmin())

    def describe(self, start_ns: int, end_ns: int) -> str:
        s, a = self.locate(start_ns)
        _, b = self.locate(end_ns)
        return (f"{(start_ns - self.t0) * 1e-9:6.1f}-{(end_ns - self.t0) * 1e-9:5.1f} s "
                f"({self.seqs[s]} frames {a}-{b})")


def first_sentence(text: str, limit: int = 110) -> str:
    head = text.split(". ")[0].rstrip(".")
    head = head if len(head) <= limit else head[: limit - 1].rstrip() + "…"
    return head + ("…" if len(head) < len(text.rstrip(".")) and not head.endswith("…") else "")


def print_answer(q: Question, timeline: Timeline, top_k: int) -> None:
    say(f"\n   Q{q.number} ({q.label}): \"{first_sentence(q.text)}\"")
    if q.window is not None:
        say(f"      annotated span  {timeline.describe(q.window['start_ns'], q.window['end_ns'])}")
    a = q.answer
    if not a.get("success"):
        say(f"      no answer: {a.get('message')}")
        return
    for j, s in enumerate(a["segments"]):
        x, y, _ = s["start_position"]
        hit = ""
        if q.window is not None:
            ov = q.overlaps[j]
            hit = f"  <- the annotated span ({ov:.0%} overlap)" if ov >= MIN_OVERLAP else ""
        say(f"      #{s['rank'] + 1} score {s['score']:.3f}  "
            f"{timeline.describe(s['start_ns'], s['end_ns'])}  "
            f"start pose ({x:6.1f}, {y:6.1f}){hit}")
    if q.window is not None:
        verdict = (f"in the top {top_k} (rank {q.rank})" if q.rank is not None and q.rank <= top_k
                   else f"NOT in the top {top_k}")
        say(f"      annotated span {verdict}; {a['candidates']} candidates, "
            f"{q.seconds:.1f} s incl. client start-up")
    elif q.free is not None and q.rank is not None:
        need = " & ".join(sorted(q.free.facts))
        verdict = ("no window of this drive answers it" if not q.answering
                   else f"first answer at rank {q.rank}" if q.rank <= top_k
                   else f"no answer in the top {top_k}")
        say(f"      needs [{need}]: {verdict} ({q.answering} windows answer); "
            f"{a['candidates']} candidates, {q.seconds:.1f} s incl. client start-up")
    else:
        say(f"      {a['candidates']} candidates, {q.seconds:.1f} s incl. client start-up")


# ------------------------------------------------------------------------------- 7. the picture


COLORS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown",
          "tab:pink", "tab:olive", "tab:cyan", "black")  # fmt: skip


def drawn(questions: list[Question], n: int) -> list[Question]:
    """At most ``n`` questions for the picture: every free-text one, annotated ones spread."""
    free = [q for q in questions if q.window is None]
    annotated = [q for q in questions if q.window is not None]
    room = max(n - len(free), 0)
    if len(annotated) > room:
        keep = sorted({int(i) for i in np.linspace(0, len(annotated) - 1, room).round()})
        annotated = [annotated[i] for i in keep] if room else []
    return annotated + free


class _Labels:
    """Query labels on one path panel, placed so that none covers another: each goes beside
    its segment (towards the middle of the panel first), else one or more lines above or below
    it with a thin leader. Sizes are estimated in data units (the panels keep x and y equal)."""

    PANEL_PT = 250.0  # about the panel's extent in points

    def __init__(self, ax: Any, path_xy: np.ndarray) -> None:
        self.ax = ax
        span = float(np.ptp(path_xy, axis=0).max()) or 1.0
        self.unit = 1.15 * span / self.PANEL_PT  # data units per point
        self.centre_x = float(path_xy[:, 0].min() + path_xy[:, 0].max()) / 2
        self.boxes: list[tuple[float, float, float, float]] = []  # x0, y0, x1, y1

    def _free(self, box: tuple[float, float, float, float]) -> bool:
        return all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1]
                   for b in self.boxes)

    def add(self, text: str, at: np.ndarray, color: str) -> None:
        from matplotlib import patheffects

        x, y = float(at[0]), float(at[1])
        w, h, gap = (7.0 * len(text) + 2) * self.unit, 11.0 * self.unit, 5.0 * self.unit
        sides = (-1, 1) if x > self.centre_x else (1, -1)
        lines = [0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5]
        candidates = [(side, k) for k in lines for side in sides]
        for side, k in candidates:
            ty = y + k * h
            x0 = x + gap if side > 0 else x - gap - w
            box = (x0, ty - h / 2, x0 + w, ty + h / 2)
            if self._free(box):
                break
        self.boxes.append(box)
        tx = x + gap if side > 0 else x - gap
        leader = {"arrowstyle": "-", "color": color, "lw": 0.6} if k else None
        self.ax.annotate(text, (x, y), xytext=(tx, ty), textcoords="data", arrowprops=leader,
                         ha="left" if side > 0 else "right", va="center", color=color,
                         fontsize=9, weight="bold", zorder=5,
                         path_effects=[patheffects.withStroke(linewidth=2.5, foreground="white")])


def draw(path: Path, root: Path, timeline: Timeline, questions: list[Question],
         top_k: int, show: int = 3) -> Path:
    """Paths of the drive (one panel per sequence) with each query's best ``show`` segments,
    and the first frame of each query's top-1 segment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from spartan_train.data.dataset import load_pose_file
    from spartan_train.data.layout import image_path, pose_path

    n_seq, n_q = len(timeline.seqs), len(questions)
    cols = min(max(n_q, 1), 5)
    thumb_rows = -(-n_q // cols)
    fig = plt.figure(figsize=(max(3.4 * cols, 3.2 * n_seq), 4.2 + 2.9 * thumb_rows),
                     layout="constrained")
    grid = fig.add_gridspec(1 + thumb_rows, cols, height_ratios=[1.5] + [1.0] * thumb_rows)
    paths = grid[0, :].subgridspec(1, n_seq)
    fig.suptitle(f"spartan_ros demo: questions to the node about a drive it has just seen "
                 f"(thick: top-1, thin: ranks 2-{show}; dashed: the annotated span)", fontsize=11)
    axes, labels = [], []
    for k, seq in enumerate(timeline.seqs):
        ax = fig.add_subplot(paths[0, k])
        xy = load_pose_file(pose_path(root, seq))[:, 1:3]
        labels.append(_Labels(ax, xy))
        ax.plot(xy[:, 0], xy[:, 1], color="0.75", lw=5, solid_capstyle="round", zorder=1)
        ax.plot(*xy[0], "k>", ms=7, zorder=2)
        ax.set_title(seq, fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
        ax.tick_params(labelsize=7)
        axes.append(ax)
    axes[0].set_ylabel("y (m, odometry frame)", fontsize=8)

    for i, q in enumerate(questions):
        color = COLORS[i % len(COLORS)]
        if q.window is not None:
            s, _ = timeline.locate(q.window["start_ns"])
            a, b = (timeline.locate(q.window[k])[1] for k in ("start_ns", "end_ns"))
            xy = load_pose_file(pose_path(root, timeline.seqs[s]))[a : b + 1, 1:3]
            axes[s].plot(xy[:, 0], xy[:, 1], "--", color=color, lw=1.2, zorder=3)
        for seg in q.answer.get("segments", [])[:show]:
            s, _ = timeline.locate(seg["start_ns"])
            xy = np.asarray(seg["path"])[:, :2]
            top = seg["rank"] == 0
            axes[s].plot(xy[:, 0], xy[:, 1], color=color, lw=3.2 if top else 1.4,
                         alpha=0.95 if top else 0.7, zorder=4 if top else 3)
            if top:
                labels[s].add(f"Q{q.number}", xy[len(xy) // 2], color)

    for i, q in enumerate(questions):
        ax = fig.add_subplot(grid[1 + i // cols, i % cols])
        ax.set_xticks([])
        ax.set_yticks([])
        color = COLORS[i % len(COLORS)]
        head = textwrap.fill(f"Q{q.number}: {first_sentence(q.text, 80)}", 44)
        segs = q.answer.get("segments", [])
        if not segs:
            ax.set_title(head, fontsize=7, color=color, loc="left")
            ax.text(0.5, 0.5, q.answer.get("message", "no answer"), ha="center", fontsize=8,
                    transform=ax.transAxes, wrap=True)
            continue
        top = segs[0]
        s, f = timeline.locate(top["start_ns"])
        ax.imshow(Image.open(image_path(root, timeline.seqs[s], f)).convert("RGB"))
        if q.window is not None:  # what was asked about, small in the corner
            sa, fa = timeline.locate(q.window["start_ns"])
            inset = ax.inset_axes((0.64, 0.6, 0.35, 0.38))
            inset.imshow(Image.open(image_path(root, timeline.seqs[sa], fa)).convert("RGB"))
            inset.set_xticks([])
            inset.set_yticks([])
            inset.set_xlabel("annotated", fontsize=6, labelpad=1, color="white",
                             backgroundcolor="0.2")
            for spine in inset.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(1.5)
        verdict = ""
        if q.window is not None:
            ok = q.rank is not None and q.rank <= top_k
            verdict = (f"annotated span at rank {q.rank}" if ok
                       else f"annotated span not in top {top_k}")
        ax.set_title(head, fontsize=7, color=color, loc="left")
        ax.set_xlabel(f"top-1: {timeline.seqs[s]} frame {f}, score {top['score']:.3f}"
                      + (f"\n{verdict}" if verdict else ""), fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------- the run


@dataclass
class DemoResult:
    questions: list[Question]
    stored: int
    expected: int
    picture: Path
    answers: Path
    timings: dict[str, float]
    top_k: int = TOP_K

    @property
    def hits(self) -> tuple[int, int]:
        """(annotated questions whose span came back in the top k, annotated questions)."""
        annotated = [q for q in self.questions if q.window is not None]
        return sum(q.rank is not None and q.rank <= self.top_k for q in annotated), len(annotated)

    @property
    def hit_rate(self) -> float:
        hits, n = self.hits
        return hits / n if n else 0.0

    @property
    def free_hits(self) -> tuple[int, int, int]:
        """(free-text questions answered at rank 1, in the top k, answerable ones)."""
        ok = [q for q in self.questions if q.free is not None and q.answering]
        return (sum(q.rank == 1 for q in ok),
                sum(q.rank is not None and q.rank <= self.top_k for q in ok), len(ok))


def _fresh(cfg: DemoConfig) -> None:
    """Drop what earlier runs cached (only the demo's own files, never the whole folder)."""
    for name in ("models", "logs"):
        shutil.rmtree(cfg.work / name, ignore_errors=True)
    for p in cfg.work.glob("drive-seed*"):
        shutil.rmtree(p, ignore_errors=True)


@dataclass
class _Drive:
    """The generated drive, as the node and the questions see it."""

    root: Path  # the generated dataset
    bag: Path
    captions: dict[str, Any]
    params: dict[str, Any]  # the node's parameters
    expected: int  # segments the node should store
    period_ns: int  # between two window starts
    timeline: Timeline


def run(cfg: DemoConfig) -> DemoResult:
    cfg.check()
    if cfg.fresh:
        _fresh(cfg)
    cfg.work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = time.monotonic()

    t0 = step(1, f"model: export {cfg.checkpoint} to ONNX")
    model_dir = export_model(cfg)
    timings["export_s"] = time.monotonic() - t0

    seeds = ", ".join(map(str, TRAINING_SEEDS))
    t0 = step(2, f"drive: {cfg.sequences} sequences x {cfg.frames} frames, seed {cfg.seed} "
                 f"(a {seed_set(cfg.seed)} seed of the evaluation protocol; the shipped model "
                 f"was trained on seeds {seeds}), into a rosbag2")
    drive = _drive(cfg, model_dir)
    timings["drive_s"] = time.monotonic() - t0

    memory = cfg.work / "memory.db"
    stored, questions, node_log = _node_session(cfg, model_dir, drive, memory, timings)

    t0 = step(7, "picture")
    picture = draw(cfg.work / "demo.png", drive.root, drive.timeline,
                   drawn(questions, cfg.drawn), cfg.top_k)  # fmt: skip
    timings["picture_s"] = time.monotonic() - t0
    timings["total_s"] = time.monotonic() - t_all

    result = DemoResult(questions, stored, drive.expected, picture, cfg.work / "answers.json",
                        timings, cfg.top_k)  # fmt: skip
    _write_answers(cfg, result, model_dir, drive.bag)
    step(8, "done")
    hits, n = result.hits
    say(f"   annotated span in the top {cfg.top_k}: {hits} of {n} ({result.hit_rate:.0%})")
    top1, topk, answerable = result.free_hits
    say(f"   free text (scored by the drive's facts): answered at rank 1 {top1} of {answerable}, "
        f"in the top {cfg.top_k} {topk} of {answerable} answerable")
    say(f"   picture   {picture}\n   answers   {result.answers}\n   memory    {memory}\n"
        f"   node log  {node_log}\n   total {timings['total_s']:.0f} s")
    return result


def _drive(cfg: DemoConfig, model_dir: Path) -> _Drive:
    from spartan_train.bag.write import read_captions

    root, bag = make_drive(cfg)
    captions = read_captions(bag)
    params = node_parameters(cfg)
    model_meta = json.loads((model_dir / "model.json").read_text())
    period_ns = int(round(1e9 / float(model_meta.get("window_rate_hz", 10.0))))
    return _Drive(root, bag, captions, params, expected_segments(captions, params), period_ns,
                  Timeline(captions))


def _node_session(cfg: DemoConfig, model_dir: Path, drive: _Drive, memory: Path,
                  timings: dict[str, float]) -> tuple[int, list[Question], Path]:  # fmt: skip
    """Steps 3 to 6: start the node, replay the drive, wait for its segments, ask the
    questions; the node is stopped whatever happens. Returns (segments stored, questions
    answered, node log)."""
    env = ros_env(cfg.domain_id)
    t0 = step(3, f"node: spartan_node (ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, localhost only, "
                 f"params {cfg.params_file.name}, sim time)")
    node = start_node(cfg, env, model_dir, memory, drive.captions)
    segments = SegmentWatch(env, cfg.work / "logs" / "segments.log", SEGMENTS)
    try:
        wait_for("active node", lambda: node_active(node), [node], cfg.start_timeout_s)
        say(f"   active in {time.monotonic() - t0:.1f} s; log {node.log_path}")
        timings["node_start_s"] = time.monotonic() - t0
        stored = _replay_and_ingest(cfg, env, drive, node, segments, timings)
        t0 = time.monotonic()
        questions = _ask_questions(cfg, env, drive)
        timings["queries_s"] = time.monotonic() - t0
    finally:
        code = node.stop()
        segments.stop()
        say(f"\n   spartan_node stopped (exit code {code})")
    return stored, questions, node.log_path


def _replay_and_ingest(cfg: DemoConfig, env: dict[str, str], drive: _Drive, node: Process,
                       segments: SegmentWatch, timings: dict[str, float]) -> int:  # fmt: skip
    """Steps 4 and 5: play the bag, then wait for the last segments; returns how many."""
    seqs = drive.captions["sequences"]
    span = (seqs[-1]["end_ns"] - seqs[0]["start_ns"]) * 1e-9
    t0 = step(4, f"replay: {drive.bag.name} ({span:.0f} s of drive) at {cfg.rate:g}x with /clock")
    summary = replay(cfg, env, drive.bag, node, segments, drive.expected)
    say(f"   played {summary['total']} messages in {summary['wall_s']:.1f} s")
    timings["play_s"] = time.monotonic() - t0

    step(5, "ingest: waiting for the node to encode and store the last frames")
    stored, waited = wait_ingested(cfg, node, segments, drive.expected)
    timings["ingest_wait_s"] = waited
    say(f"   {stored} of {drive.expected} segments stored ({waited:.1f} s after playback)")
    if stored == 0:
        raise DemoError(f"the node stored no segment; see {node.log_path}:\n{node.tail()}")
    drops = drop_warnings(node.output())
    if stored < drive.expected or drops:
        why = (f"it logged {len(drops)} drop warning(s), the first: {drops[0]}" if drops
               else "frames were lost in transport")
        say(f"   warning: the node did not get every frame ({why}); try a lower --rate")
    return stored


def _ask_questions(cfg: DemoConfig, env: dict[str, str], drive: _Drive) -> list[Question]:
    """Step 6: annotated captions and free text through the service, scored and printed."""
    windows = pick_windows(drive.captions, cfg.queries)
    questions = [Question(i, w["caption"], w) for i, w in enumerate(windows, 1)]
    free = free_questions(cfg)
    questions += [Question(len(questions) + i, f if isinstance(f, str) else f.text,
                           free=None if isinstance(f, str) else f)
                  for i, f in enumerate(free, 1)]
    facts = DriveFacts(drive.captions) if drive.captions.get("facts") else None
    if facts is None:
        say("   note: this drive has no recorded facts (written before they were kept); "
            "free text is not scored: run with --fresh")
    step(6, f"queries: {len(windows)} annotated captions of the drive (validation "
            f"windows) + {len(free)} free text, through {SERVICE}")
    window, stride = int(drive.params["window_frames"]), int(drive.params["stride_frames"])
    # A few clients at once: their start-up (rclpy, discovery) overlaps; printed in order.
    pool = ThreadPoolExecutor(max_workers=cfg.jobs)
    try:
        asked = [pool.submit(ask, env, q, cfg.top_k) for q in questions]
        for q, done in zip(questions, asked, strict=True):
            done.result()
            score(q, drive.period_ns, cfg.top_k)
            score_free(q, facts, window, stride, cfg.top_k)
            print_answer(q, drive.timeline, cfg.top_k)
    finally:
        pool.shutdown(cancel_futures=True)  # on an error or Ctrl-C: ask nothing more
    return questions


def _write_answers(cfg: DemoConfig, result: DemoResult, model_dir: Path, bag: Path) -> None:
    """answers.json: every question with its answer and how it was scored, and the timings."""
    top_k = cfg.top_k
    result.answers.write_text(json.dumps({
        "checkpoint": str(cfg.checkpoint), "model_dir": str(model_dir), "bag": str(bag),
        "segments_stored": result.stored, "segments_expected": result.expected,
        "top_k": top_k, "min_overlap": MIN_OVERLAP, "annotated_in_top_k": result.hit_rate,
        "timings": result.timings,
        "free_text_hits": dict(zip(("top1", f"top{top_k}", "answerable"), result.free_hits,
                                   strict=True)),
        "questions": [{"text": q.text, "window": q.window, "rank": q.rank,
                       "overlaps": q.overlaps, "answer": q.answer,
                       "facts": None if q.free is None else sorted(q.free.facts),
                       "answering_windows": q.answering, "returned_facts": q.returned_facts}
                      for q in result.questions],
    }, indent=1) + "\n")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    d = DemoConfig()
    p = argparse.ArgumentParser(prog="python -m spartan_train.demo",
                                description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=d.checkpoint,
                   help="trained checkpoint (default assets/models/tiny-synth)")
    p.add_argument("--work", type=Path, default=d.work, help="cache and output folder")
    p.add_argument("--rate", type=float, default=d.rate, help="bag playback speed factor")
    p.add_argument("--fresh", action="store_true", help="redo the export and the drive")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the demo drive")
    p.add_argument("--sequences", type=int, default=d.sequences)
    p.add_argument("--frames", type=int, default=d.frames, help="frames per sequence (10 Hz)")
    p.add_argument("--queries", type=int, default=d.queries,
                   help="annotated captions to ask (0: every validation window)")
    p.add_argument("--free-text", nargs="*", default=list(d.free_text), metavar="TEXT",
                   help="free-text questions")
    p.add_argument("--questions", type=Path, default=None, metavar="FILE",
                   help="free-text questions from a YAML/JSON list (text, optional facts); "
                   "replaces --free-text")
    p.add_argument("--jobs", type=int, default=d.jobs, help="client processes at a time")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default random)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = DemoConfig(checkpoint=args.checkpoint, work=args.work, rate=args.rate,
                     fresh=args.fresh, seed=args.seed, sequences=args.sequences,
                     frames=args.frames, queries=args.queries,
                     free_text=tuple(args.free_text), questions_file=args.questions,
                     jobs=args.jobs,
                     domain_id=args.domain_id)
    try:
        run(cfg)
    except DemoError as e:
        print(f"\ndemo: error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # a bad bag, dataset or checkpoint: the message names it
        print(f"\ndemo: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
