"""``spartan-bag eval``: replay a rosbag2 through the node's ingest offline, then query every
annotated caption and measure what comes back.

Ingest: the bag is read with ``rosbags`` (no ROS) and its messages go, in log-time order, into
the same ``MemoryService`` the node runs (sampler, odometry interpolation, sliding window,
engine, segment store). Images are converted with the node's own functions
(``spartan_ros.ingest.images``), stamps are the header stamps, as in the node's callbacks. Frames
are encoded ``batch_size`` at a time as soon as that many wait, then ``flush()`` ends the
stream. Nothing depends on the wall clock or on threads, so two runs store the same segments and
write the same ``results.json`` (timings go to ``timings.json``).

Queries: each annotated window of ``<bag>/captions.json`` of the chosen split asks the memory for
its caption, exactly as a ``~/query`` request without a trajectory: every stored segment is scored
with its own recorded motion. The memory returns its best ``depth = max(top_k, 10)`` segments.

Correct retrieval (the overlap rule): a window of frames stamped ``s_0 .. s_{T-1}`` covers the
half-open time span ``[s_0, s_{T-1} + P)``, where ``P`` is the sampling period (1 / the model's
window rate, 0.1 s): each frame owns one period. A retrieved segment is correct when

    |span(annotated) ∩ span(retrieved)| / |span(annotated)| >= min_overlap  (default 0.5),

i.e. when it holds at least half of the annotated frames (with frames on the same 10 Hz grid the
fraction is exactly shared frames / T). Spans live on the bag's single time line, so segments of
other sequences never overlap. The rank of a query is the position (1-based) of its first correct
segment among the ``depth`` returned, or ``depth + 1`` when none is; R@k, median and mean rank are
computed from these ranks (``evaluate.retrieval.summarize``). ``chance_R@1`` is the mean share
of stored segments that would count as correct, what a random ranker's R@1 would be.

Free text (``evaluate.questions``): when the bag's captions.json carries the generator's facts
(bags of spartan-synth sets do), questions made of facts ("the gas station where we turned
left") are asked the same way; a returned segment is correct when its frames carry every fact
the question names. The built-in list is ``questions.DEFAULT_QUESTIONS``; ``questions`` replaces
it (``--questions FILE``). Results under ``free_text``: per question the rank and how many
stored segments would answer, and hits over the questions some segment answers.

Trajectories, as ``spartan-eval`` measures them (``evaluate.trajectory``): the ground truth is the
odometry of the bag interpolated at the annotated frame stamps (positions linearly, orientations
with slerp, the interpolation the memory uses), the estimate the poses stored with the top-1
segment; both become the reference's relative windows (``relative_window(rows, "reference")``)
and are compared with evo (APE translation RMSE, RPE rotation RMSE in degrees, no alignment); a
correct top-1 counts 0.

Output in ``out``: ``results.json``, ``timings.json``, ``report.html``, ``recall.png``,
``trajectories.png`` and one ``example_<i>.png`` per example query (x-y path of the whole drive
with the annotated window and the retrieved segments, and frames of each).
"""

from __future__ import annotations

import functools
import html
import json
import os
import textwrap
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image as PILImage
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import Connection
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from spartan_ros.bag.play import BagError
from spartan_ros.ingest.images import ImageError, decode_compressed, image_view, to_rgb
from spartan_ros.ingest.messages import odometry_fields, stamp_to_ns
from spartan_ros.memory.service import Match, MemoryService, ServiceConfig
from spartan_ros.memory.store import MemoryFileError, SegmentStore
from spartan_ros.poses import interpolate_pose, relative_window
from spartan_ros.query import Query
from spartan_train.bag.write import COMPRESSED_IMAGE, IMAGE, ODOMETRY, read_captions
from spartan_train.evaluate import questions as questions_mod
from spartan_train.evaluate import report, retrieval, trajectory

if TYPE_CHECKING:  # onnxruntime is imported only when a model is loaded
    from spartan_ros.runtime.engine import Engine

SPLITS = ("val", "train", "all")
KS = retrieval.KS  # R@1, R@5, R@10
THUMB_FRAMES = 6  # frames per strip in the example figures
THUMB_HEIGHT = report.THUMB_HEIGHT
STRIPS = 3  # retrieved segments shown as frame strips per example (after the annotated one)
DRIVE_GAP_NS = 1_000_000_000  # odometry silent this long splits the drive into pieces (plots)
OVERLAP_RULE = (
    "a window of frames s_0..s_{T-1} spans [s_0, s_{T-1} + P) with P the sampling period; "
    "a retrieved segment is correct when |annotated ∩ retrieved| / |annotated| >= min_overlap; "
    "rank = position of the first correct segment among the depth returned, depth + 1 if none"
)


@dataclass
class BagEvalConfig:
    bag: Path
    model: Path  # exported model directory (spartan-export)
    split: str = "val"  # val | train | all
    stride_frames: int = 6  # a stored segment every this many sampled frames (node default)
    top_k: int = 5  # results kept per query in results.json / the report
    out: Path = Path("bag_eval")
    memory: Path | None = None  # SQLite memory file to create; None = RAM
    image_topic: str | None = None  # None: the one captions.json names
    odom_topic: str | None = None
    min_overlap: float = 0.5
    examples: int = 4
    providers: tuple[str, ...] = ("cpu",)
    batch_size: int = 8  # frames encoded per inference call
    encode_every: int = 1  # encode every k-th sampled frame (the node's encode_every)
    progress: bool = True
    # Free-text questions scored against the drive's facts (captions.json "facts"); None: the
    # built-in list when the bag has facts, none otherwise. A list given here needs the facts.
    questions: tuple[questions_mod.FreeQuestion, ...] | None = None

    @property
    def depth(self) -> int:
        """Segments asked for per query: enough for R@10 and for top_k."""
        return max(self.top_k, max(KS))


# ----------------------------------------------------------------------------- the overlap rule


def overlap_fractions(
    start_ns: int, end_ns: int, starts_ns: Any, ends_ns: Any, period_ns: int
) -> np.ndarray:
    """Share of the annotated span ``[start_ns, end_ns + P)`` covered by each retrieved span
    ``[starts_ns[i], ends_ns[i] + P)`` (float64 in [0, 1]); see the module docstring."""
    if period_ns <= 0:
        raise ValueError(f"period must be > 0 ns, got {period_ns}")
    if end_ns < start_ns:
        raise ValueError(f"annotated span ends ({end_ns}) before it starts ({start_ns})")
    lo = np.maximum(np.asarray(starts_ns, dtype=np.int64), start_ns)
    hi = np.minimum(np.asarray(ends_ns, dtype=np.int64), end_ns) + period_ns
    inter = np.clip(hi - lo, 0, None).astype(np.float64)
    return np.asarray(inter / float(end_ns - start_ns + period_ns), dtype=np.float64)


def overlap_fraction(
    annotated: tuple[int, int], retrieved: tuple[int, int], period_ns: int
) -> float:
    """``overlap_fractions`` for one retrieved span ``(start_ns, end_ns)``."""
    return float(overlap_fractions(*annotated, [retrieved[0]], [retrieved[1]], period_ns)[0])


def first_correct_rank(overlaps: Any, min_overlap: float, depth: int) -> int:
    """1-based position of the first overlap >= ``min_overlap``; ``depth + 1`` when none is."""
    hits = np.flatnonzero(np.asarray(overlaps, dtype=np.float64) >= min_overlap)
    return int(hits[0]) + 1 if hits.size and hits[0] < depth else depth + 1


# ----------------------------------------------------------------------------- reading the bag


def open_bag(bag: Path) -> AnyReader:
    """An open reader of the rosbag2 folder ``bag`` (BagError naming the folder if not)."""
    if not Path(bag).is_dir():
        what = "is not a directory" if Path(bag).exists() else "does not exist"
        raise BagError(f"bag {bag} {what} (give a rosbag2 folder)")
    try:
        reader = AnyReader([Path(bag)], default_typestore=get_typestore(Stores.ROS2_KILTED))
        reader.open()
    except (AnyReaderError, OSError, ValueError) as e:
        raise BagError(f"cannot open the bag {bag}: {e}") from None
    return reader


def topic_connections(
    reader: AnyReader, bag: Path, topic: str, types: tuple[str, ...], what: str
) -> list[Connection]:
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        have = ", ".join(sorted({f"{c.topic} ({c.msgtype})" for c in reader.connections}))
        raise BagError(f"bag {bag} has no {what} topic {topic!r} (it has: {have or 'nothing'}); "
                       f"choose one with --{what}-topic")
    bad = sorted({c.msgtype for c in conns if c.msgtype not in types})
    if bad:
        raise BagError(f"bag {bag}: {what} topic {topic!r} carries {', '.join(bad)}, expected "
                       f"{' or '.join(types)}")
    return conns


@dataclass
class Drive:
    """What the evaluation keeps of the bag besides the memory: odometry and image stamps."""

    odom_ns: np.ndarray  # int64 [M], sorted, unique
    odom_rows: np.ndarray  # float64 [M, 8]: t (s since odom_ns[0]), x, y, z, qx, qy, qz, qw
    image_ns: np.ndarray  # int64 [N] header stamps of the image messages, in bag order
    messages: dict[str, int] = field(default_factory=dict)  # read per topic

    def pieces(self) -> list[np.ndarray]:
        """x, y of the drive ``[m, 2]`` split where odometry stops for over a second."""
        if len(self.odom_ns) == 0:
            return []
        cuts = np.flatnonzero(np.diff(self.odom_ns) > DRIVE_GAP_NS) + 1
        return np.split(self.odom_rows[:, 1:3], cuts)


def _drive(odom_ns: list[int], odom: list[tuple[float, ...]], image_ns: list[int],
           messages: dict[str, int]) -> Drive:
    ns = np.asarray(odom_ns, dtype=np.int64)
    arr = np.zeros((len(ns), 8), dtype=np.float64)
    if len(ns):
        arr[:, 1:] = np.asarray(odom, dtype=np.float64)
    order = np.argsort(ns, kind="stable")
    ns, arr = ns[order], arr[order]
    # Equal stamps: the later message wins, as in the memory's odometry buffer.
    keep = np.append(ns[1:] != ns[:-1], True) if len(ns) else np.zeros(0, bool)
    ns, arr = ns[keep], arr[keep]
    norms = np.linalg.norm(arr[:, 4:8], axis=1)
    ok = np.isfinite(arr).all(axis=1) & (norms > 1e-9)  # what the memory rejects too
    ns, arr = ns[ok], arr[ok]
    arr[:, 4:8] /= np.linalg.norm(arr[:, 4:8], axis=1, keepdims=True)
    if len(ns):
        arr[:, 0] = (ns - ns[0]) * 1e-9
    return Drive(ns, arr, np.asarray(image_ns, dtype=np.int64), messages)


def ingest_bag(
    reader: AnyReader,
    service: MemoryService,
    image_conns: list[Connection],
    odom_conns: list[Connection],
    batch_size: int,
    progress: bool = True,
) -> Drive:
    """Feed every image and odometry message to ``service`` in log-time order, then flush."""
    odom_ids = {c.id for c in odom_conns}
    conns = image_conns + odom_conns
    odom_ns: list[int] = []
    odom: list[tuple[float, ...]] = []
    image_ns: list[int] = []
    messages: Counter[str] = Counter()
    total = sum(c.msgcount for c in conns)
    with tqdm(total=total, unit="msg", desc="ingest", disable=not progress) as bar:
        for conn, _log_ns, raw in reader.messages(connections=conns):
            bar.update(1)
            messages[conn.topic] += 1
            msg: Any = reader.deserialize(raw, conn.msgtype)
            stamp = stamp_to_ns(msg.header.stamp)
            if conn.id in odom_ids:
                fields = odometry_fields(msg)
                service.add_odometry(*fields)
                odom_ns.append(stamp)
                odom.append(fields[1] + fields[2])
                continue
            image_ns.append(stamp)
            if conn.msgtype == IMAGE:
                try:
                    pixels, encoding = image_view(msg)  # checks the header, as the node does
                except ImageError as exc:
                    service.reject_frame("malformed image", str(exc))
                    continue
                frame: Any = functools.partial(to_rgb, pixels, encoding)
            else:
                frame = functools.partial(decode_compressed, msg.data)
            service.add_frame(stamp, frame)
            # Encode in full batches as soon as they are ready (the node's worker would too).
            while service.pending() >= batch_size and service.wait_for_work(0):
                service.process()
    service.flush()
    return _drive(odom_ns, odom, image_ns, dict(sorted(messages.items())))


def window_rows(drive: Drive, frame_ns: np.ndarray, max_gap_ns: int) -> np.ndarray | None:
    """Absolute TUM rows ``[T, 8]`` of the odometry at the frame stamps (t = stamp in s); a stamp
    up to ``max_gap_ns`` outside the odometry holds the end sample; None beyond that."""
    ns = drive.odom_ns
    if len(ns) == 0:
        return None
    frame_ns = np.asarray(frame_ns, dtype=np.int64)
    if frame_ns.min() < ns[0] - max_gap_ns or frame_ns.max() > ns[-1] + max_gap_ns:
        return None
    t = (np.clip(frame_ns, ns[0], ns[-1]) - ns[0]) * 1e-9
    rows = interpolate_pose(t, drive.odom_rows).reshape(-1, 8)
    rows[:, 0] = frame_ns * 1e-9
    return rows


# ----------------------------------------------------------------------------- captions


def select_windows(doc: dict[str, Any], split: str, where: Path) -> list[dict[str, Any]]:
    """The annotated windows of ``split`` with their frame stamps ``frame_ns`` (checked)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    window = doc.get("window")
    if not isinstance(window, int) or window < 2:
        raise ValueError(f"{where}: 'window' must be an integer >= 2, got {window!r}")
    frames = {}
    for s in doc["sequences"]:
        if not isinstance(s, dict) or "seq" not in s or not isinstance(s.get("frame_ns"), list):
            raise ValueError(f"{where}: every entry of 'sequences' needs 'seq' and 'frame_ns'")
        frames[s["seq"]] = np.asarray(s["frame_ns"], dtype=np.int64)
    chosen = []
    for i, w in enumerate(doc["windows"]):
        missing = [k for k in ("seq", "start", "name", "start_ns", "end_ns", "caption", "split")
                   if k not in w]
        if missing:
            raise ValueError(f"{where}: window {i} lacks {', '.join(missing)}")
        if split != "all" and w["split"] != split:
            continue
        if not str(w["caption"]).strip():
            raise ValueError(f"{where}: window {w['name']} has an empty caption")
        seq_frames = frames.get(w["seq"])
        start = int(w["start"])
        if seq_frames is None or start < 0 or start + window > len(seq_frames):
            raise ValueError(f"{where}: window {w['name']} needs frames {start}..."
                             f"{start + window - 1} of {w['seq']}, which 'sequences' lacks")
        frame_ns = seq_frames[start : start + window]
        if int(frame_ns[0]) != int(w["start_ns"]) or int(frame_ns[-1]) != int(w["end_ns"]):
            raise ValueError(f"{where}: window {w['name']}: start_ns/end_ns do not match the "
                             f"stamps of its frames in 'sequences'")
        chosen.append({**w, "frame_ns": frame_ns})
    if not chosen:
        have = sorted({str(w.get("split")) for w in doc["windows"]})
        raise ValueError(f"{where} has no {split!r} window (splits present: "
                         f"{', '.join(have) or 'none'}); choose another --split")
    return chosen


# ----------------------------------------------------------------------------- evaluation


def check_config(cfg: BagEvalConfig) -> None:
    if cfg.split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {cfg.split!r}")
    for name in ("stride_frames", "top_k", "batch_size", "encode_every"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name.replace('_', ' ')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.examples < 0:
        raise ValueError(f"examples must be >= 0, got {cfg.examples}")
    if not (0.0 < cfg.min_overlap <= 1.0):
        raise ValueError(f"min overlap must be in (0, 1], got {cfg.min_overlap}")
    if cfg.memory is not None and Path(cfg.memory).exists() and os.path.getsize(cfg.memory) > 0:
        raise ValueError(f"memory file {cfg.memory} exists already; the evaluation builds a "
                         "fresh memory: remove it or choose another --memory")


def load_engine(cfg: BagEvalConfig) -> Any:
    model_dir = Path(cfg.model)
    if not model_dir.is_dir():
        what = "is not a directory" if model_dir.exists() else "does not exist"
        raise ValueError(f"model directory {model_dir} {what}: export one with "
                         "`spartan-export CHECKPOINT OUT_DIR`")
    from spartan_ros.runtime.engine import Engine  # onnxruntime: only when it is needed

    return Engine(model_dir, providers=cfg.providers)


def _match_record(m: Match, overlap: float, min_overlap: float) -> dict[str, Any]:
    return {"id": int(m.id), "start_ns": int(m.start_ns), "end_ns": int(m.end_ns),
            "score": round(float(m.score), 6), "overlap": round(overlap, 6),
            "correct": bool(overlap >= min_overlap)}


@dataclass
class _Evidence:
    """What the report draws beyond results.json (kept in RAM, not written)."""

    drive: Drive
    frame_ns: list[np.ndarray]  # per query, the annotated frame stamps
    gt_rows: list[np.ndarray | None]  # per query, absolute
    top_poses: list[list[np.ndarray]]  # per query, absolute poses of the first STRIPS matches
    top_stamps: list[list[np.ndarray]]
    top_all: list[list[np.ndarray]]  # per query, poses of all top_k matches (path plot)


def evaluate_bag(cfg: BagEvalConfig) -> tuple[dict[str, Any], dict[str, Path], dict[str, float]]:
    """Run the whole evaluation; returns (results, written paths, timings)."""
    check_config(cfg)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    bag = Path(cfg.bag)
    doc = read_captions(bag)
    where = bag / "captions.json"
    windows = select_windows(doc, cfg.split, where)
    topics = (cfg.image_topic or str(doc.get("image_topic") or "/camera/image_raw"),
              cfg.odom_topic or str(doc.get("odom_topic") or "/odom"))  # fmt: skip

    t0 = time.perf_counter()
    engine = load_engine(cfg)
    timings["load_model_s"] = time.perf_counter() - t0
    if int(doc["window"]) != engine.window:
        raise ValueError(f"{where}: windows have {doc['window']} frames, the model "
                         f"{cfg.model} takes {engine.window}")
    service_cfg = _service_config(cfg, engine)
    period_ns = int(round(1e9 / service_cfg.sample_rate_hz))

    reader = open_bag(bag)
    try:
        image_conns = topic_connections(reader, bag, topics[0], (IMAGE, COMPRESSED_IMAGE),
                                        "image")
        odom_conns = topic_connections(reader, bag, topics[1], (ODOMETRY,), "odom")
        results, evidence, ingest = _ingest_and_ask(cfg, engine, service_cfg, reader, doc,
                                                    (image_conns, odom_conns), windows, timings)
        results["meta"] = _meta(cfg, engine, service_cfg, reader, topics, period_ns)
        results["ingest"] = ingest
        results = {k: results[k] for k in ("meta", "ingest", "retrieval", "by_split",
                                           "trajectory", "free_text", "queries") if k in results}
        t0 = time.perf_counter()
        thumbs = _read_thumbnails(reader, image_conns, results, evidence, cfg)
    finally:
        reader.close()
    paths = write_bag_report(cfg.out, results, evidence, thumbs, cfg.examples)
    timings["report_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    frames = int(results["ingest"]["counts"].get("frames encoded", 0))
    timings["frames_encoded"] = frames
    timings["ingest_frames_per_s"] = frames / timings["ingest_s"] if timings["ingest_s"] else 0.0
    paths["timings"] = report.write_json(Path(cfg.out) / "timings.json", timings)
    return results, paths, timings


def _service_config(cfg: BagEvalConfig, engine: Engine) -> ServiceConfig:
    return ServiceConfig(
        sample_rate_hz=engine.window_rate_hz,
        window_frames=engine.window,
        stride_frames=cfg.stride_frames,
        encode_batch_size=cfg.batch_size,
        encode_every=cfg.encode_every,
        # Offline nothing falls behind: never drop a frame for queue length.
        max_pending_frames=max(256, 4 * cfg.batch_size),
        default_top_k=cfg.depth,
    )


def _ingest_and_ask(cfg: BagEvalConfig, engine: Engine, service_cfg: ServiceConfig,
                    reader: Any, doc: dict[str, Any], conns: tuple[list[Any], list[Any]],
                    windows: list[dict[str, Any]], timings: dict[str, float],
                    ) -> tuple[dict[str, Any], Any, dict[str, Any]]:  # fmt: skip
    """The bag through the node's MemoryService into a store, then the questions; returns
    (results, evidence for the report, what ingest counted)."""
    try:
        store = SegmentStore(None if cfg.memory is None else str(cfg.memory),
                             engine.model_hash, engine.embed_dim, head=engine.fusion_head)
    except MemoryFileError as e:
        raise ValueError(str(e)) from None
    try:
        service = MemoryService(engine, store, service_cfg)
        t0 = time.perf_counter()
        drive = ingest_bag(reader, service, conns[0], conns[1], cfg.batch_size, cfg.progress)
        timings["ingest_s"] = time.perf_counter() - t0
        stats = service.stats()
        if len(store) == 0:
            raise BagError(f"no segment was stored from {cfg.bag}: "
                           f"{json.dumps(dict(sorted(stats['counts'].items())))}")
        t0 = time.perf_counter()
        period_ns = int(round(1e9 / service_cfg.sample_rate_hz))
        results, evidence = _run_queries(cfg, service, windows, drive, period_ns)
        timings["queries_s"] = time.perf_counter() - t0
        free = _free_text(cfg, doc, service)
        if free is not None:
            results["free_text"] = free
    finally:
        store.close()
    ingest = {"messages": drive.messages, "counts": dict(sorted(stats["counts"].items())),
              "segments": int(stats["segments"])}
    return results, evidence, ingest


def _meta(cfg: BagEvalConfig, engine: Engine, service_cfg: ServiceConfig, reader: Any,
          topics: tuple[str, str], period_ns: int) -> dict[str, Any]:  # fmt: skip
    """What was evaluated, with which model and settings (the report's "meta")."""
    return {
        "bag": str(cfg.bag),
        "model_dir": str(cfg.model),
        "model_name": engine.name,
        "model_hash": engine.model_hash,
        "mode": engine.mode,
        "pose_convention": engine.pose_convention,
        "split": cfg.split,
        "image_topic": topics[0],
        "odom_topic": topics[1],
        "bag_start_ns": int(reader.start_time),
        "bag_end_ns": int(reader.end_time),
        "memory": "RAM" if cfg.memory is None else str(cfg.memory),
        "settings": {
            "sample_rate_hz": service_cfg.sample_rate_hz,
            "window_frames": service_cfg.window_frames,
            "stride_frames": service_cfg.stride_frames,
            "encode_batch_size": service_cfg.encode_batch_size,
            "max_pose_gap_s": service_cfg.max_pose_gap_s,
            "top_k": cfg.top_k,
            "depth": cfg.depth,
            "min_overlap": cfg.min_overlap,
            "frame_period_ns": period_ns,
        },
        "overlap_rule": OVERLAP_RULE,
    }


def _free_text(cfg: BagEvalConfig, doc: dict[str, Any], service: MemoryService
               ) -> dict[str, Any] | None:
    """Free-text questions asked like captions, scored by the facts of what comes back
    (``evaluate.questions``); None when the bag has no facts and no list was given."""
    asked = cfg.questions
    if asked is None:
        if not doc.get("facts"):
            return None
        asked = tuple(questions_mod.default_questions())
    facts = questions_mod.DriveFacts(doc)  # ValueError if a given list has no ground truth
    segments = service.store.get_many(service.store.all_ids())
    stored = [facts.of_span(s.start_ns, s.end_ns) for s in segments]
    scored = []
    for q in asked:
        matches = service.query(Query(text=q.text, top_k=cfg.depth)).matches
        returned = [facts.of_span(m.start_ns, m.end_ns) for m in matches]
        row = questions_mod.score_question(q, returned, stored, cfg.depth)
        row["top"] = [{"start_ns": int(m.start_ns), "end_ns": int(m.end_ns),
                       "score": float(m.score)} for m in matches[: cfg.top_k]]
        scored.append(row)
    return {"summary": questions_mod.summarize(scored, KS), "depth": cfg.depth,
            "questions": scored}


def _run_queries(
    cfg: BagEvalConfig,
    service: MemoryService,
    windows: list[dict[str, Any]],
    drive: Drive,
    period_ns: int,
) -> tuple[dict[str, Any], _Evidence]:
    segments = service.store.get_many(service.store.all_ids())
    seg_start = np.array([s.start_ns for s in segments], dtype=np.int64)
    seg_end = np.array([s.end_ns for s in segments], dtype=np.int64)
    max_gap_ns = int(service.config.max_pose_gap_s * 1e9)
    depth = cfg.depth
    queries: list[dict[str, Any]] = []
    evidence = _Evidence(drive, [], [], [], [], [])
    errors: list[trajectory.QueryError | None] = []
    for i, w in enumerate(tqdm(windows, unit="query", desc="queries", disable=not cfg.progress)):
        span = (int(w["start_ns"]), int(w["end_ns"]))
        result = service.query(Query(text=str(w["caption"]), top_k=depth))
        matches = result.matches
        overlaps = overlap_fractions(*span, [m.start_ns for m in matches],
                                     [m.end_ns for m in matches], period_ns)
        rank = first_correct_rank(overlaps, cfg.min_overlap, depth)
        available = int((overlap_fractions(*span, seg_start, seg_end, period_ns)
                         >= cfg.min_overlap).sum())
        gt = window_rows(drive, w["frame_ns"], max_gap_ns)
        err = None
        if gt is not None and matches:
            err = trajectory.query_error(relative_window(gt, "reference"),
                                         relative_window(matches[0].poses, "reference"),
                                         correct=rank == 1)
        errors.append(err)
        queries.append({
            "index": i,
            "name": w["name"],
            "seq": w["seq"],
            "start": int(w["start"]),
            "split": w["split"],
            "caption": w["caption"],
            "start_ns": span[0],
            "end_ns": span[1],
            "rank": rank,
            "correct_segments": available,
            "top": [_match_record(m, float(o), cfg.min_overlap)
                    for m, o in zip(matches[: cfg.top_k], overlaps, strict=False)],
            "trajectory": None if err is None else asdict(err),
        })  # fmt: skip
        evidence.frame_ns.append(np.asarray(w["frame_ns"], dtype=np.int64))
        evidence.gt_rows.append(gt)
        evidence.top_poses.append([m.poses for m in matches[:STRIPS]])
        evidence.top_stamps.append([m.stamps_ns for m in matches[:STRIPS]])
        evidence.top_all.append([m.poses for m in matches[: cfg.top_k]])

    n_segments = len(segments)

    def summary(picked: list[int]) -> dict[str, Any]:
        ranks = np.array([queries[q]["rank"] for q in picked])
        out: dict[str, Any] = retrieval.summarize(ranks, KS)
        out["depth"] = depth
        out["not_found"] = int((ranks > depth).sum())
        out["answerable"] = int(sum(queries[q]["correct_segments"] > 0 for q in picked))
        out["chance_R@1"] = float(np.mean([queries[q]["correct_segments"] / n_segments
                                           for q in picked]))
        out["segments"] = n_segments
        return out

    results: dict[str, Any] = {"retrieval": summary(list(range(len(queries))))}
    splits = sorted({q["split"] for q in queries})
    if cfg.split == "all" and len(splits) > 1:
        results["by_split"] = {
            s: summary([q["index"] for q in queries if q["split"] == s]) for s in splits
        }
    measured = [e for e in errors if e is not None]
    results["trajectory"] = trajectory.aggregate(measured) if measured else None
    if results["trajectory"] is not None:
        results["trajectory"]["n_without_ground_truth"] = len(errors) - len(measured)
    results["queries"] = queries
    return results, evidence


# ----------------------------------------------------------------------------- report


def pick_examples(ranks: list[int], n: int) -> list[int]:
    """A deterministic mix of wrong and right queries (``report.pick_examples``'s choice)."""
    if n <= 0 or not ranks:
        return []
    return report.pick_examples({"per_query": {"paper_t2v": {"rank": ranks}}}, n)


def _nearest(sorted_ns: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Index into ``sorted_ns`` of the nearest stamp to each wanted one."""
    i = np.clip(np.searchsorted(sorted_ns, wanted), 1, max(1, len(sorted_ns) - 1))
    left = sorted_ns[np.maximum(i - 1, 0)]
    right = sorted_ns[np.minimum(i, len(sorted_ns) - 1)]
    return np.where(np.abs(wanted - left) <= np.abs(right - wanted), i - 1, i).clip(
        0, len(sorted_ns) - 1)


def _spread(stamps: np.ndarray) -> np.ndarray:
    idx = np.linspace(0, len(stamps) - 1, THUMB_FRAMES).round().astype(int)
    return np.asarray(stamps, dtype=np.int64)[idx]


def _read_thumbnails(
    reader: AnyReader,
    image_conns: list[Connection],
    results: dict[str, Any],
    evidence: _Evidence,
    cfg: BagEvalConfig,
) -> dict[int, np.ndarray]:
    """Small RGB frames (by image message ordinal) for the example queries: a second pass over
    the image topic decoding only the frames nearest to the stamps the figures show."""
    queries = results["queries"]
    examples = pick_examples([q["rank"] for q in queries], cfg.examples)
    image_ns = evidence.drive.image_ns
    if not examples or len(image_ns) == 0:
        return {}
    order = np.argsort(image_ns, kind="stable")
    wanted: set[int] = set()
    for q in examples:
        spans = [evidence.frame_ns[q], *evidence.top_stamps[q]]
        for stamps in spans:
            idx = _nearest(image_ns[order], _spread(stamps))
            wanted.update(int(order[j]) for j in idx)
    thumbs: dict[int, np.ndarray] = {}
    ordinal = -1
    for conn, _log_ns, raw in reader.messages(connections=image_conns):
        ordinal += 1
        if ordinal not in wanted:
            continue
        msg: Any = reader.deserialize(raw, conn.msgtype)
        try:
            if conn.msgtype == IMAGE:
                rgb = to_rgb(*image_view(msg))
            else:
                rgb = decode_compressed(msg.data)
        except ImageError:
            continue
        width = max(1, round(rgb.shape[1] * THUMB_HEIGHT / rgb.shape[0]))
        small = PILImage.fromarray(rgb).resize((width, THUMB_HEIGHT),
                                               PILImage.Resampling.BILINEAR)
        thumbs[ordinal] = np.asarray(small)
        if len(thumbs) == len(wanted):
            break
    return thumbs


def _strip(stamps: np.ndarray, drive: Drive, thumbs: dict[int, np.ndarray]) -> np.ndarray | None:
    if len(drive.image_ns) == 0:
        return None
    order = np.argsort(drive.image_ns, kind="stable")
    frames = [thumbs.get(int(order[j])) for j in _nearest(drive.image_ns[order],
                                                          _spread(stamps))]
    present = [f for f in frames if f is not None]
    if not present:
        return None
    h, w = present[0].shape[:2]
    filled = [f if f is not None and f.shape[:2] == (h, w) else np.full((h, w, 3), 200, np.uint8)
              for f in frames]  # a frame that could not be read shows grey
    return report.thumbnail_strip(np.stack(filled))


def plot_example(
    path: Path,
    query: dict[str, Any],
    q: int,
    evidence: _Evidence,
    thumbs: dict[int, np.ndarray],
    bag_start_ns: int,
) -> Path:
    """The whole drive from above with the annotated window and the retrieved segments
    highlighted (left), frames of the annotated window and the first retrieved segments (right).
    """
    plt = report.plt
    drive = evidence.drive

    def secs(ns: int) -> str:
        return f"{(ns - bag_start_ns) * 1e-9:.1f}"

    rows: list[tuple[str, str, np.ndarray | None]] = [(
        f"annotated  t {secs(query['start_ns'])}–{secs(query['end_ns'])} s", "black",
        _strip(evidence.frame_ns[q], drive, thumbs))]
    for r, (m, stamps) in enumerate(zip(query["top"], evidence.top_stamps[q], strict=False)):
        mark = "✓" if m["correct"] else "✗"
        rows.append((f"#{r + 1} {mark} cos {m['score']:.3f}\nt {secs(m['start_ns'])}–"
                     f"{secs(m['end_ns'])} s, overlap {m['overlap']:.2f}",
                     "tab:green" if m["correct"] else "tab:red",
                     _strip(stamps, drive, thumbs)))
    fig = plt.figure(figsize=(13.0, 1.0 + 1.25 * max(4, len(rows))))
    wrapped = textwrap.wrap(query["caption"], 150)[:3]
    depth = len(query["top"])
    rank = f"rank {query['rank']}" if query["rank"] <= depth else f"not in the top {depth}"
    fig.suptitle(f"{query['name']} ({query['split']}): {rank}\n" + "\n".join(wrapped),
                 fontsize=8, x=0.01, ha="left")
    grid = fig.add_gridspec(len(rows), 2, width_ratios=(1.0, 1.6), left=0.05, right=0.99,
                            top=0.86, bottom=0.1, wspace=0.25)
    ax = fig.add_subplot(grid[:, 0])
    for k, piece in enumerate(drive.pieces()):
        ax.plot(piece[:, 0], piece[:, 1], "-", color="0.75", lw=1,
                label="whole drive" if k == 0 else None)
    gt = evidence.gt_rows[q]
    if gt is not None:  # wide and pale, under the retrieved segments that may overlap it
        ax.plot(gt[:, 1], gt[:, 2], "-", color="tab:blue", lw=8, alpha=0.35,
                solid_capstyle="butt", label="annotated window")
        ax.plot(gt[0, 1], gt[0, 2], "o", color="tab:blue", mfc="none", ms=10, mew=2)
    for r in range(len(query["top"]) - 1, -1, -1):  # rank 1 drawn last, on top
        poses = evidence.top_all[q][r]
        m = query["top"][r]
        colour = "tab:green" if m["correct"] else "tab:red"
        ax.plot(poses[:, 1], poses[:, 2], "-", color=colour, lw=4 if r == 0 else 2,
                alpha=1.0 if r == 0 else 0.6)
        mid = poses[len(poses) // 2]
        ax.annotate(f"#{r + 1}", (mid[1], mid[2]), fontsize=8, color=colour,
                    xytext=(4, 4), textcoords="offset points")
    ax.plot([], [], "-", color="tab:green", lw=3, label="retrieved, correct")
    ax.plot([], [], "-", color="tab:red", lw=3, label="retrieved, wrong")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x (m, odometry frame)")
    ax.set_ylabel("y (m)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    for i, (label, colour, strip) in enumerate(rows):
        sub = fig.add_subplot(grid[i, 1])
        if strip is not None:
            sub.imshow(strip)
        sub.set_xticks([])
        sub.set_yticks([])
        for spine in sub.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(1 if i == 0 else 3)
        sub.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center", color=colour)
    return report.save_figure(fig, path)


def plot_recall(results: dict[str, Any], path: Path) -> Path:
    series: dict[str, tuple[list[float], list[float]]] = {}
    groups = {"all annotated": results["retrieval"]} if "by_split" in results else {
        results["meta"]["split"]: results["retrieval"]}
    groups.update(results.get("by_split", {}))
    for name, s in groups.items():
        series[f"{name} ({s['n']} queries)"] = ([s[f"R@{k}"] for k in KS], [0.0] * len(KS))
    fig, ax = report.plt.subplots(figsize=(5.5, 4.3))
    s = results["retrieval"]
    report.recall_panel(ax, f"caption → segment over {s['segments']} stored segments\n"
                         f"chance R@1 {s['chance_R@1']:.3f}", series)
    ax.set_ylabel("recall")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return report.save_figure(fig, path)


def _trajectory_figure(results: dict[str, Any], evidence: _Evidence, examples: list[int],
                       path: Path) -> Path | None:
    """Ground truth vs top-1 relative windows (``report.plot_trajectories``), wrong ones first."""
    queries = results["queries"]
    ok = [q for q in range(len(queries)) if queries[q]["trajectory"] is not None]
    wrong = [q for q in ok if not queries[q]["trajectory"]["correct"]]
    picked = [q for q in examples if q in ok]
    picked += [q for q in wrong if q not in picked][: max(0, 6 - len(picked))]
    picked += [q for q in ok if q not in picked][: max(0, 6 - len(picked))]
    picked = picked[:6]
    if not picked:
        return None
    # plot_trajectories indexes one array: rows[q] = ground truth, rows[n + q] = retrieved.
    n = len(queries)
    rows = np.zeros((2 * n, len(evidence.frame_ns[picked[0]]), 8))
    pairs = []
    for q in picked:
        gt = evidence.gt_rows[q]
        assert gt is not None  # queries with a trajectory have their ground truth
        rows[q] = relative_window(gt, "reference")
        rows[n + q] = relative_window(evidence.top_poses[q][0], "reference")
        pairs.append((q, q if queries[q]["trajectory"]["correct"] else n + q))
    names = [q["name"] for q in queries] + [""] * n
    return report.plot_trajectories(path, rows, pairs,
                                    [queries[q]["trajectory"] for q in picked], names)


def _table(rows: list[tuple[str, Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        return html.escape("–" if v is None else str(v))

    return "<table>" + "".join(f"<tr><td>{html.escape(k)}</td><td>{fmt(v)}</td></tr>"
                               for k, v in rows) + "</table>"


def write_bag_report(
    out_dir: Path,
    results: dict[str, Any],
    evidence: _Evidence,
    thumbs: dict[int, np.ndarray],
    n_examples: int = 4,
) -> dict[str, Path]:
    """``results.json``, ``recall.png``, ``trajectories.png``, ``example_*.png``, ``report.html``
    in ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"results": report.write_json(out / "results.json", results)}
    paths["recall"] = plot_recall(results, out / "recall.png")
    queries = results["queries"]
    examples = pick_examples([q["rank"] for q in queries], n_examples)
    traj = _trajectory_figure(results, evidence, examples, out / "trajectories.png")
    if traj is not None:
        paths["trajectories"] = traj
    start = int(results["meta"]["bag_start_ns"])
    example_html = []
    for q in examples:
        p = plot_example(out / f"example_{q:05d}.png", queries[q], q, evidence, thumbs, start)
        paths[f"example_{q}"] = p
        example_html.append(
            f"<h3>{html.escape(queries[q]['name'])} ({html.escape(queries[q]['split'])}): rank "
            f"{queries[q]['rank']}</h3><p class='caption'>{html.escape(queries[q]['caption'])}"
            f"</p><img src='{p.name}'>")

    meta = results["meta"]
    s = results["retrieval"]
    retrieval_rows = [("queries", s["n"]), ("stored segments", s["segments"]),
                      ("answerable (a correct segment exists)", s["answerable"])]
    retrieval_rows += [(f"R@{k}", s[f"R@{k}"]) for k in KS]
    retrieval_rows += [("median rank", s["median_rank"]), ("mean rank", s["mean_rank"]),
                       (f"not in the top {s['depth']}", s["not_found"]),
                       ("chance R@1", s["chance_R@1"])]
    for name, b in results.get("by_split", {}).items():
        retrieval_rows += [(f"{name}: R@{k}", b[f"R@{k}"]) for k in KS]
        retrieval_rows.append((f"{name}: median rank", b["median_rank"]))
    t = results.get("trajectory") or {}
    traj_rows = [(label, t.get(key)) for key, label in report.TRAJ_ROWS]
    ingest = results["ingest"]
    ingest_rows = [(f"messages {k}", v) for k, v in ingest["messages"].items()]
    ingest_rows += list(ingest["counts"].items())
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8">
<title>SPARTAN bag evaluation</title><style>{report.CSS}</style></head><body>
<h1>SPARTAN bag evaluation: {html.escape(meta['bag'])}</h1>
{_table([(k, json.dumps(v) if isinstance(v, dict) else v) for k, v in meta.items()])}
<h2>Ingest</h2>
<p class="note">The bag replayed offline through the node's memory service (same sampler,
odometry interpolation, sliding window and store), in log-time order.</p>
{_table(ingest_rows)}
<h2>Retrieval</h2>
<p class="note">Each annotated caption of split '{html.escape(meta['split'])}' queries the memory
(each segment scored with its own recorded motion). Correct: {html.escape(OVERLAP_RULE)}
(min_overlap = {meta['settings']['min_overlap']}).</p>
{_table(retrieval_rows)}
<img src="recall.png">
<h2>Trajectory error of the top-1 retrieval</h2>
<p class="note">Ground truth: the bag's odometry at the annotated frame stamps; estimate: the
poses stored with the top-1 segment; both as the reference's relative windows, evo APE
(translation RMSE) and RPE (rotation, degrees) without alignment; a correct top-1 counts 0.</p>
{_table(traj_rows) if t else '<p>No trajectory figures.</p>'}
{"<img src='trajectories.png'>" if traj is not None else ''}
{_free_text_html(results.get("free_text"))}
<h2>Example queries</h2>
{''.join(example_html) or '<p>No examples.</p>'}
</body></html>
"""
    paths["html"] = out / "report.html"
    paths["html"].write_text(page, encoding="utf-8")
    return paths


def _free_text_html(free: dict[str, Any] | None) -> str:
    if not free:
        return ""
    s = free["summary"]
    rows = [(f"{q['text']} [{' & '.join(q['facts'])}]",
             "unanswerable here" if q["answering_segments"] == 0 else
             f"rank {q['rank']} ({q['answering_segments']} of {q['stored_segments']} answer)")
            for q in free["questions"]]
    rows += [("answerable questions", f"{s['answerable']} of {s['asked']}")]
    rows += [(f"R@{k}", s[f"R@{k}"]) for k in KS] + [("chance R@1", s["chance_R@1"])]
    return ("<h2>Free-text questions</h2><p class='note'>Scored by the drive's recorded facts: a "
            "returned segment answers when its frames carry every fact the question names "
            f"(rank {free['depth'] + 1}: none of the {free['depth']} returned).</p>"
            + _table(rows))


def summary_lines(results: dict[str, Any], timings: dict[str, float] | None = None) -> list[str]:
    s = results["retrieval"]
    lines = [f"{s['n']} queries ({results['meta']['split']}) over {s['segments']} segments: "
             f"R@1 {s['R@1']:.3f}  R@5 {s['R@5']:.3f}  R@10 {s['R@10']:.3f}  "
             f"median rank {s['median_rank']:.1f}  (chance R@1 {s['chance_R@1']:.3f})"]
    for name, b in results.get("by_split", {}).items():
        lines.append(f"  {name:<6} {b['n']:>4} queries: R@1 {b['R@1']:.3f}  R@5 {b['R@5']:.3f}  "
                     f"R@10 {b['R@10']:.3f}  median rank {b['median_rank']:.1f}")
    t = results.get("trajectory")
    if t:
        lines.append(f"top-1 trajectories: APE {t['ape_mean_m']:.3f} m, RPE "
                     f"{t['rpe_mean_deg']:.3f} deg (mean over {t['n_queries']} queries, "
                     f"{t['n_wrong']} wrong)")
    free = results.get("free_text")
    if free:
        f = free["summary"]
        lines.append(f"free text: {f['answerable']} of {f['asked']} questions answerable on this "
                     f"drive; top-1 answers {f['hits@1']}, top-5 {f['hits@5']} "
                     f"(R@1 {f['R@1']:.3f}, R@5 {f['R@5']:.3f}, chance R@1 "
                     f"{f['chance_R@1']:.3f})")
        for q in free["questions"]:
            where = ("unanswerable here" if q["answering_segments"] == 0
                     else f"rank {q['rank']}" if q["rank"] <= free["depth"]
                     else f"not in the top {free['depth']}")
            lines.append(f"  {q['text']!r} [{' & '.join(q['facts'])}]: {where} "
                         f"({q['answering_segments']} of {q['stored_segments']} segments answer)")
    if timings:
        lines.append(f"ingest {timings['ingest_s']:.1f} s ({timings['ingest_frames_per_s']:.1f} "
                     f"frames/s), queries {timings['queries_s']:.1f} s, report "
                     f"{timings['report_s']:.1f} s, total {timings['total_s']:.1f} s")
    return lines
