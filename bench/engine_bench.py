"""``make bench``: the runtime's speed, memory and accuracy figures, side by side in one run.

    python -m bench.engine_bench [--quick] [--sections image,encodes,query,bytes,e2e]
                                 [--models tiny,B/16] [--threads N] [--out DIR]
                                 [--checkpoint CKPT --data ROOT [--list config/val.txt]]

Sections (each a function below, each row with its goal beside the figure):

- ``image``: image-tower frames/s, PyTorch eager vs ONNX Runtime float32 vs the dynamic-int8
  graph, batch 1 and 8, and against the machine's compute floor (the tower's FLOPs per image,
  counted from the config, over the GFLOP/s of a large float32 matmul measured in this run);
  int8 cosine to float32; with ``--checkpoint/--data``, t2v R@1 on the validation list with the
  float32 and the int8 image tower.
- ``encodes``: image encodes per stored segment, incremental (SlidingWindow, each frame once) vs
  re-encoding every window as the reference evaluation does.
- ``query``: text-query latency p50/p99 over 10³..10⁶ stored segments (E = 512): the exact fast
  scorer vs naive per-segment fusion, vs the time to stream the scoring data once from memory,
  and float16 storage (speed, recall@10 against float32).
- ``bytes``: bytes per stored segment for scoring (float32, float16) and on disk (SQLite).
- ``e2e``: frames/s MemoryService sustains on a synthetic 10 Hz stream (preprocessing, image
  tower, window, pose branch, SQLite store).
- ``realtime``: per precision and ``encode_every`` k (1, 2, 4): the highest camera sample rate the
  service keeps (taken frames/s it sustains, frames fed as fast as it goes), then a wall-clock
  check: a 10 Hz stream into the service with its encoder thread and the node's queue bound,
  counting frames dropped because inference fell behind; and what k does to a window's feature
  (cosine between the mean of all its frames and the mean of every k-th, on a rendered drive).
- ``quant``: the image tower as float32, dynamic int8 (the exporter's, per-call activation
  ranges) and static int8 (QDQ, per-channel weights, activation ranges calibrated once), batch 1
  and 8, with cosine to float32; and ONNX Runtime's raw GEMM throughput in float32 and int8 at
  the size of the tower's MLP, which bounds what any int8 graph can gain on this CPU.

Models are random-weight ``tiny`` / ``B/16`` built and exported (with the int8 image graph) in a
temporary directory: speed does not depend on the weights. A trained ``--checkpoint`` is used
where weights matter (R@1 and int8 cosine on real validation frames).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import logging
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from spartan_train.data import DrivingDataset
from spartan_train.evaluate.retrieval import PAPER_GALLERY, paper_protocol
from spartan_train.export import export_model
from spartan_train.export.onnx_export import min_cosine, sample_images
from spartan_train.model import SpartanModel, build_model, load_checkpoint, save_checkpoint

from bench.inputs import (
    drive_rows,
    synthetic_frames,
    time_calls,
    time_interleaved,
    vit_flops,
)
from bench.report import (
    Row,
    at_least,
    at_most,
    available_memory,
    build_document,
    comma_list,
    machine_info,
    markdown_table,
    write_outputs,
)
from spartan_ros.ingest import SlidingWindow
from spartan_ros.memory import Segment, SegmentStore
from spartan_ros.memory.service import MemoryService, ServiceConfig
from spartan_ros.runtime.engine import Engine
from spartan_ros.runtime.scoring import (
    FusionHead,
    ScoreIndex,
    naive_scores,
    random_head,
    segment_terms_batch,
    top_k,
)
from spartan_ros.tokenizer import tokenize

SECTIONS = ("image", "encodes", "query", "bytes", "e2e", "realtime", "quant")
Log = Callable[[str], None]

# Goals of issue 5, point 5.
FLOOR_FRACTION_GOAL = 0.8  # float32 ORT frames/s >= 0.8 of the compute floor
INT8_SPEEDUP_GOAL = 1.5  # int8 >= 1.5x float32 ORT
INT8_COSINE_GOAL = 0.99
R1_DROP_GOAL = 2.0  # points
NAIVE_SPEEDUP_GOAL = 100.0
MEMORY_FLOOR_GOAL = 2.0  # fast p50 <= 2x streaming the data once
FP16_RECALL_GOAL = 0.99
BYTES_GOAL = 4.5 * 1024  # per segment at E = 512, float32
E2E_RATE_GOAL = 10.0  # frames/s: the camera sample rate (ServiceConfig.sample_rate_hz)
ENCODE_EVERY = (1, 2, 4)  # realtime: the encode_every values compared
PRECISIONS = ("float32", "float16", "int8")
ENCODE_EVERY_COSINE_GOAL = 0.99  # window feature with every k-th frame vs all frames
ENCODE_TIME_TOLERANCE = 0.15  # time ratio within 15 % of the encode-count ratio

QUERY_TEXT = "the gas station where we turned left"
INDEX_CHUNK = 65536  # segments generated per step when filling a large index


@dataclass
class Settings:
    """Sizes and budgets of one run; ``quick_settings()`` gives the smoke-test sizes."""

    quick: bool = False
    sections: tuple[str, ...] = SECTIONS
    models: tuple[str, ...] = ("tiny", "B/16")
    batches: tuple[int, ...] = (1, 8)
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    seed: int = 0
    # image
    min_time_s: float = 2.0
    min_runs: int = 5
    matmul_size: int = 2048
    matmul_repeats: int = 5
    cosine_images: int = 16
    # encodes
    stream_frames: int = 240
    stream_model: str = "tiny"
    window: int = 24
    stride: int = 6
    frame_size: tuple[int, int] = (480, 640)  # camera frames (H, W): preprocessing is timed too
    # query
    embed_dim: int = 512
    query_sizes: tuple[int, ...] = (10**3, 10**4, 10**5, 10**6)
    naive_max: int = 10**5
    query_time_s: float = 4.0
    query_min_runs: int = 20
    naive_min_runs: int = 5
    recall_queries: int = 10
    top_k: int = 10
    # bytes
    sqlite_segments: int = 300
    # e2e
    e2e_frames: dict[str, int] = field(default_factory=lambda: {"tiny": 480, "B/16": 96})
    # realtime
    realtime_models: tuple[str, ...] = ("B/16",)
    realtime_frames: int = 48  # taken frames per sustained-rate run
    realtime_seconds: float = 10.0  # wall-clock 10 Hz check
    drive_frames: int = 72  # rendered drive for the window cosine
    # R@1 (needs a trained model and data)
    checkpoint: str | None = None
    data: str | None = None
    list_file: str = "config/val.txt"
    frame_stride: int = 1
    max_clips: int = 0

    @classmethod
    def quick_settings(cls, **changes: Any) -> Settings:
        small = cls(
            quick=True, models=("tiny",), min_time_s=0.1, min_runs=3, matmul_size=512,
            matmul_repeats=3, cosine_images=4, stream_frames=72, frame_size=(120, 160),
            query_sizes=(10**3, 10**4), naive_max=10**4, query_time_s=0.1, query_min_runs=3,
            naive_min_runs=2, recall_queries=3, sqlite_segments=20, e2e_frames={"tiny": 48},
            realtime_models=("tiny",), realtime_frames=24, realtime_seconds=2.0,
            drive_frames=36,
        )  # fmt: skip
        return replace(small, **changes)

    def e2e_frames_for(self, name: str) -> int:
        return self.e2e_frames.get(name, min(self.e2e_frames.values(), default=48))


# --------------------------------------------------------------------------- models


@dataclass
class Bundle:
    name: str
    model: SpartanModel
    model_dir: Path
    engines: dict[str, Engine] = field(default_factory=dict)


class ModelZoo:
    """Random-weight models by shape name, each exported once (float32 + int8 image graph)."""

    def __init__(self, root: Path, settings: Settings, log: Log) -> None:
        self.root = root
        self.settings = settings
        self.log = log
        self._bundles: dict[str, Bundle] = {}

    def bundle(self, name: str) -> Bundle:
        if name not in self._bundles:
            t0 = time.perf_counter()
            torch.manual_seed(self.settings.seed)
            model = build_model(name).eval()
            safe = name.replace("/", "_")
            ckpt = save_checkpoint(model, self.root / f"{safe}-ckpt")
            out = self.root / f"{safe}-onnx"
            self.log(f"exporting a random-weight {name} model (float32 + float16 + int8)")
            export_model(ckpt, out, fp16=True, int8=True, model=model, name=f"bench-{safe}",
                         log=lambda line: self.log("    " + line.strip()))  # fmt: skip
            self.log(f"{name} ready in {time.perf_counter() - t0:.1f} s")
            self._bundles[name] = Bundle(name, model, out)
        return self._bundles[name]

    def engine(self, name: str, precision: str = "float32") -> Engine:
        b = self.bundle(name)
        if precision not in b.engines:
            b.engines[precision] = Engine(b.model_dir, providers=("cpu",), precision=precision,
                                          batch_size=24, threads=self.settings.threads)  # fmt: skip
        return b.engines[precision]


# --------------------------------------------------------------------------- image tower


def measure_gflops(size: int, repeats: int, threads: int) -> dict[str, float]:
    """Peak float32 GFLOP/s of a size x size matmul: best run, best of numpy and torch. numpy's
    BLAS picks its own thread count (all CPUs), so with fewer ``threads`` only torch counts."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    flops = 2.0 * size**3
    out = {"size": float(size)}
    with torch.inference_mode():
        for lib, fn in (("numpy", lambda: a @ b), ("torch", lambda: ta @ tb)):
            t = time_calls(fn, min_time=0.0, min_runs=repeats)
            out[f"{lib}_gflops"] = flops / t.best / 1e9
    best = max(out["numpy_gflops"], out["torch_gflops"])
    out["gflops"] = best if threads >= (os.cpu_count() or 1) else out["torch_gflops"]
    return out


def time_image_tower(s: Settings, zoo: ModelZoo, name: str, log: Log) -> dict[str, Any]:
    """Timings of one model's image tower (PyTorch eager, ORT float32, ORT int8 in turns) per
    batch size, and the int8 graph's cosine to float32."""
    b = zoo.bundle(name)
    cfg = b.model.config
    e32, e8 = zoo.engine(name, "float32"), zoo.engine(name, "int8")
    info: dict[str, Any] = {"gflop_per_image": vit_flops(cfg) / 1e9}
    for batch in s.batches:
        log(f"{name} batch {batch}: PyTorch eager, ORT float32, ORT int8")
        pixels = sample_images(batch, cfg.image_resolution, seed=s.seed + batch)
        x = torch.from_numpy(pixels)
        with torch.inference_mode():
            timed = time_interleaved({
                "torch": partial(b.model.encode_image, x),
                "ort_fp32": partial(e32.run_image, pixels),
                "ort_int8": partial(e8.run_image, pixels),
            }, min_time=s.min_time_s, min_runs=s.min_runs)  # fmt: skip
        info[f"batch{batch}"] = {
            "fps": {k: batch / t.p50 for k, t in timed.items()},
            **{k: t.summary() for k, t in timed.items()},
        }
    pixels = sample_images(s.cosine_images, cfg.image_resolution, seed=s.seed + 99)
    info["int8_min_cosine"] = min_cosine(e8.run_image(pixels), e32.run_image(pixels))
    return info


def bench_image(s: Settings, zoo: ModelZoo, log: Log) -> tuple[list[Row], dict[str, Any]]:
    sec = "image tower"
    for name in s.models:  # export first: the matmul peak is then measured right before timing
        zoo.bundle(name)
    # The peak is a capability: measured before and after the towers, the best run counts.
    log(f"matmul {s.matmul_size}x{s.matmul_size} float32 GFLOP/s")
    before = measure_gflops(s.matmul_size, s.matmul_repeats, s.threads)
    models = {name: time_image_tower(s, zoo, name, log) for name in s.models}
    after = measure_gflops(s.matmul_size, s.matmul_repeats, s.threads)
    mm = max(before, after, key=lambda m: m["gflops"])
    raw: dict[str, Any] = {"matmul": mm, "matmul_runs": [before, after], "models": models}
    rows = [Row(sec, f"float32 matmul {s.matmul_size}² peak (best of numpy/torch)",
                mm["gflops"], "GFLOP/s",
                note=f"numpy {mm['numpy_gflops']:.0f}, torch {mm['torch_gflops']:.0f}")]
    for name, info in models.items():
        floor_fps = mm["gflops"] / info["gflop_per_image"]
        info["floor_fps"] = floor_fps
        rows.append(Row(sec, f"{name}: compute floor", floor_fps, "frames/s",
                        note=f"{info['gflop_per_image']:.3g} GFLOP/image"))
        for batch in s.batches:
            fps = info[f"batch{batch}"]["fps"]
            frac = fps["ort_fp32"] / floor_fps
            speedup = fps["ort_int8"] / fps["ort_fp32"]
            info[f"batch{batch}"].update(floor_fraction=frac, int8_speedup=speedup)
            label = f"{name}, batch {batch}"
            rows += [
                Row(sec, f"{label}: PyTorch eager float32", fps["torch"], "frames/s"),
                Row(sec, f"{label}: ONNX Runtime float32", fps["ort_fp32"], "frames/s",
                    note=f"{fps['ort_fp32'] / fps['torch']:.2f}x PyTorch"),
                Row(sec, f"{label}: ORT float32 / compute floor", frac, "",
                    f"≥ {FLOOR_FRACTION_GOAL}", at_least(frac, FLOOR_FRACTION_GOAL)),
                Row(sec, f"{label}: ORT int8 (dynamic)", fps["ort_int8"], "frames/s"),
                Row(sec, f"{label}: int8 / float32 speed", speedup, "x",
                    f"≥ {INT8_SPEEDUP_GOAL}x", at_least(speedup, INT8_SPEEDUP_GOAL)),
            ]  # fmt: skip
        cos = info["int8_min_cosine"]
        rows.append(Row(sec, f"{name}: int8 cosine to float32 (min, {s.cosine_images} images)",
                        cos, "", f"≥ {INT8_COSINE_GOAL}", at_least(cos, INT8_COSINE_GOAL),
                        note="random weights"))  # fmt: skip
    recall_rows, raw["recall"] = bench_recall(s, zoo.root, log)
    return rows + recall_rows, raw


def bench_recall(s: Settings, root: Path, log: Log) -> tuple[list[Row], dict[str, Any]]:
    """t2v R@1 (the paper's protocol) on the validation list with the float32 and the int8 image
    tower of a trained checkpoint; queries (text + pose) are the same float32 graphs for both."""
    sec = "image tower"
    goal = f"drop ≤ {R1_DROP_GOAL:g} points"
    if not (s.checkpoint and s.data):
        return [Row(sec, "int8 vs float32 t2v R@1 (val set)", "skipped (no trained model)",
                    goal=goal)], {"skipped": "no --checkpoint/--data"}  # fmt: skip
    log(f"R@1: exporting {s.checkpoint} with the int8 image graph")
    model = load_checkpoint(s.checkpoint)
    out = root / "checkpoint-onnx"
    export_model(s.checkpoint, out, int8=True, model=model, name="bench-checkpoint",
                 log=lambda line: log("    " + line.strip()))  # fmt: skip
    e32 = Engine(out, providers=("cpu",), batch_size=24, threads=s.threads)
    e8 = Engine(out, providers=("cpu",), precision="int8", batch_size=24, threads=s.threads)
    cfg = model.config
    del model
    list_file = Path(s.list_file)
    if not list_file.is_absolute() and (Path(s.data) / list_file).exists():
        list_file = Path(s.data) / list_file
    ds = DrivingDataset(s.data, list_file, window=cfg.num_frames,
                        pose_convention=cfg.pose_convention,
                        frame_stride=s.frame_stride)  # fmt: skip
    n = len(ds) if s.max_clips == 0 else min(s.max_clips, len(ds))
    if n < 2:
        raise ValueError(f"{ds.list_file}: need at least 2 clips for R@1, got {n}")
    log(f"R@1: encoding {n} clips x {len(ds.frame_offsets)} frames with float32 and int8")
    v32 = np.empty((n, e32.embed_dim), dtype=np.float32)
    v8 = np.empty_like(v32)
    worst_cos = 1.0
    t0 = time.perf_counter()
    for i in range(n):
        pixels = e32.preprocess(ds.load_frames(i))
        f32, f8 = e32.run_image(pixels), e8.run_image(pixels)
        worst_cos = min(worst_cos, min_cosine(f8, f32))
        v32[i] = f32.mean(axis=0, dtype=np.float64)
        v8[i] = f8.mean(axis=0, dtype=np.float64)
        if (i + 1) % 200 == 0:
            log(f"R@1: {i + 1}/{n} clips ({time.perf_counter() - t0:.0f} s)")
    # Queries in the paper's consecutive galleries: in reference mode the pose branch attends
    # across the batch, so the batches must be the evaluation's.
    queries = np.empty_like(v32)
    captions = [e.caption for e in ds.entries[:n]]
    for lo in range(0, n, PAPER_GALLERY):
        hi = min(n, lo + PAPER_GALLERY)
        t = e32.run_text(tokenize(captions[lo:hi], context_length=e32.context_length))
        poses = np.stack([ds.load_poses(i) for i in range(lo, hi)])
        queries[lo:hi] = e32.run_pose_fusion(t, poses)[0]
    r1 = {}
    for key, videos in (("float32", v32), ("int8", v8)):
        figures = paper_protocol(queries, videos, PAPER_GALLERY)[0]
        r1[key] = 100.0 * figures["t2v"]["averaged"]["R@1"]["mean"]
    drop = r1["float32"] - r1["int8"]
    note = f"{n} clips, galleries of {PAPER_GALLERY}"
    rows = [
        Row(sec, "t2v R@1, float32 image tower (val set)", r1["float32"], "%", note=note),
        Row(sec, "t2v R@1, int8 image tower (val set)", r1["int8"], "%", note=note),
        Row(sec, "int8 vs float32 t2v R@1 drop (val set)", drop, "points", goal,
            at_most(drop, R1_DROP_GOAL)),
        Row(sec, "int8 cosine to float32 (min over val frames)", worst_cos, "",
            f"≥ {INT8_COSINE_GOAL}", at_least(worst_cos, INT8_COSINE_GOAL),
            note="checkpoint weights"),
    ]  # fmt: skip
    raw = {"checkpoint": s.checkpoint, "data": s.data, "list": str(ds.list_file), "clips": n,
           "frames_per_clip": int(len(ds.frame_offsets)), "r1": r1, "drop_points": drop,
           "int8_min_cosine": worst_cos, "seconds": time.perf_counter() - t0}  # fmt: skip
    return rows, raw


# --------------------------------------------------------------------------- encodes


def bench_encodes(s: Settings, zoo: ModelZoo, log: Log) -> tuple[list[Row], dict[str, Any]]:
    """Encodes per stored segment: each frame once through SlidingWindow vs every window's
    frames re-encoded (the reference evaluation encodes each clip's frames afresh)."""
    sec = "encodes"
    engine = zoo.engine(s.stream_model, "float32")
    n, T, stride = s.stream_frames, s.window, s.stride
    pool = synthetic_frames(16, *s.frame_size, seed=s.seed)
    frames = [pool[i % len(pool)] for i in range(n)]
    rows_abs = drive_rows(n, seed=s.seed)
    stamps = np.round(rows_abs[:, 0] * 1e9).astype(np.int64)
    engine.encode_frames(frames[:8])  # warm-up

    log(f"incremental: {n} frames through SlidingWindow({T}, {stride}) with {s.stream_model}")
    window = SlidingWindow(T, stride)
    emitted: list[tuple[int, np.ndarray]] = []  # (index of the window's last frame, video feature)
    encodes_incr = 0
    t0 = time.perf_counter()
    for lo in range(0, n, 8):  # ServiceConfig.encode_batch_size
        batch = frames[lo : lo + 8]
        feats = engine.encode_frames(batch)
        encodes_incr += len(batch)
        for k, feat in enumerate(feats):
            i = lo + k
            ready = window.push(int(stamps[i]), feat, rows_abs[i])
            if ready is not None:
                emitted.append((i, ready.video_feat))
    t_incr = time.perf_counter() - t0
    windows = len(emitted)
    if windows < 2:
        raise ValueError(f"{n} frames give {windows} windows; need >= {T + stride} frames")

    log(f"re-encoding: {windows} windows x {T} frames")
    encodes_re = 0
    worst = 0.0
    t0 = time.perf_counter()
    for last, video in emitted:
        clip = frames[last - T + 1 : last + 1]
        feats = engine.encode_frames(clip)
        encodes_re += len(clip)
        worst = max(worst, float(np.abs(feats.mean(axis=0, dtype=np.float64) - video).max()))
    t_re = time.perf_counter() - t0

    per_seg_incr = encodes_incr / windows
    per_seg_re = encodes_re / windows
    # After the first fill every stored segment costs the frames pushed since the previous one.
    steady_incr = (emitted[-1][0] - emitted[0][0]) / (windows - 1)
    steady_ratio = per_seg_re / steady_incr
    count_ratio = per_seg_re / per_seg_incr
    time_ratio = t_re / t_incr
    goal_ratio = T / stride
    rows = [
        Row(sec, "image encodes per segment, re-encoding every window", per_seg_re, "",
            note="as the reference evaluation"),
        Row(sec, "image encodes per segment, incremental (steady state)", steady_incr, ""),
        Row(sec, "encode reduction, steady state", steady_ratio, "x",
            f"= window/stride = {goal_ratio:g}x",
            at_least(steady_ratio, goal_ratio * (1 - 1e-9))),
        Row(sec, f"encode reduction over a {n}-frame stream", count_ratio, "x",
            note=f"incl. the first fill; tends to {goal_ratio:g} as the stream grows"),
        Row(sec, f"encode time reduction over the {n}-frame stream", time_ratio, "x",
            f"≈ count ratio {count_ratio:.2f} (±{ENCODE_TIME_TOLERANCE:.0%})",
            abs(time_ratio / count_ratio - 1) <= ENCODE_TIME_TOLERANCE,
            note=f"{s.stream_model}, {s.frame_size[1]}x{s.frame_size[0]} frames incl. "
                 "preprocessing"),
    ]  # fmt: skip
    raw = {"model": s.stream_model, "frames": n, "window": T, "stride": stride,
           "windows": windows, "encodes_incremental": encodes_incr, "encodes_reencode": encodes_re,
           "steady_per_segment": steady_incr, "seconds_incremental": t_incr,
           "seconds_reencode": t_re, "max_abs_video_feature_difference": worst}  # fmt: skip
    return rows, raw


# --------------------------------------------------------------------------- query latency


def _exp10(n: int) -> str:
    k = math.log10(n)
    return f"10^{k:.0f}" if k == int(k) else f"{n:,}"


def _fill(
    indexes: Sequence[ScoreIndex], n: int, seed: int, keep: bool
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Fill the indexes with the same n random segments (video and pose features N(0, 1)),
    through the real term computation; returns (v, p) when ``keep`` for the naive scorer."""
    index = indexes[0]
    e = index.embed_dim
    assert index.head is not None
    rng = np.random.default_rng(seed)
    v_all = np.empty((n, e), dtype=np.float32) if keep else None
    p_all = np.empty((n, e), dtype=np.float32) if keep else None
    for lo in range(0, n, INDEX_CHUNK):
        m = min(INDEX_CHUNK, n - lo)
        v = rng.standard_normal((m, e), dtype=np.float32)
        p = rng.standard_normal((m, e), dtype=np.float32)
        terms = segment_terms_batch(index.head, v, p, dtype=np.float32)
        ids = np.arange(lo, lo + m, dtype=np.int64)
        for idx in indexes:
            idx.extend(ids, ids, ids, terms)
        if v_all is not None and p_all is not None:
            v_all[lo : lo + m], p_all[lo : lo + m] = v, p
    return v_all, p_all


def _cycle(fn: Callable[[np.ndarray], object], items: np.ndarray) -> Callable[[], object]:
    it = itertools.cycle(list(items))
    return lambda: fn(next(it))


def naive_search(
    head: FusionHead, v: np.ndarray, p: np.ndarray, k: int, t: np.ndarray
) -> np.ndarray:
    """Top-k by the naive form: one fusion per stored segment, then the cosine."""
    return top_k(naive_scores(head, t, v, p, dtype=np.float32), k)


def floor_array(nbytes: int) -> np.ndarray:
    """``nbytes`` of memory, every page touched (uint64 words holding float32 1.0 pairs)."""
    return np.full(max(nbytes // 8, 1), 0x3F8000003F800000, dtype=np.uint64)


def floor_fns(a: np.ndarray) -> dict[str, Callable[[], object]]:
    """Two numpy reductions that read every byte of ``a`` once; the faster one is the floor."""
    return {"floor_or": partial(np.bitwise_or.reduce, a), "floor_max": a.view(np.float32).max}


def bench_query(s: Settings, zoo: ModelZoo, log: Log) -> tuple[list[Row], dict[str, Any]]:
    sec = "query"
    e, k = s.embed_dim, s.top_k
    head = random_head(e, s.seed)
    rng = np.random.default_rng(s.seed + 1)
    texts = rng.standard_normal((16, e)).astype(np.float32)
    recall_texts = rng.standard_normal((s.recall_queries, e)).astype(np.float32)
    rows: list[Row] = []
    raw: dict[str, Any] = {"embed_dim": e, "top_k": k, "sizes": {}}
    naive_per_segment: tuple[int, float, float] | None = None  # (n, p50 s, p99 s) / n
    for n in sorted(s.query_sizes):
        label = _exp10(n)
        # peak: the float32 index (terms 2E*4+8, ids and stamps 24) with either the float16
        # index or the floor array (same bytes as the float32 terms), plus the id maps
        need = n * (2 * (2 * e * 4 + 8) + 24 + 250)
        if n <= s.naive_max:
            need += 6 * n * e * 4  # v, p and the naive scorer's temporaries
        avail = available_memory()
        if avail is not None and need > 0.85 * avail:
            msg = f"skipped (needs ~{need / 1e9:.1f} GB RAM, {avail / 1e9:.1f} GB available)"
            rows.append(Row(sec, f"{label} segments", msg))
            raw["sizes"][str(n)] = {"skipped": msg}
            continue
        log(f"query: filling float32 and float16 indexes with {n:,} segments (E={e})")
        t0 = time.perf_counter()
        idx32 = ScoreIndex(e, head, dtype="float32", keep_video=False, capacity=n)
        idx16 = ScoreIndex(e, head, dtype="float16", keep_video=False, capacity=n)
        v, p = _fill([idx32, idx16], n, s.seed + n, keep=n <= s.naive_max)
        info: dict[str, Any] = {"build_s": time.perf_counter() - t0}

        log(f"query: timing {label} segments")
        # float16 scoring converts every row to float32 per query: far slower, fewer runs
        half = time_calls(_cycle(partial(idx16.search, k), texts), min_time=s.query_time_s,
                          min_runs=s.naive_min_runs)  # fmt: skip
        hits = [len(set(idx32.search(k, t).ids) & set(idx16.search(k, t).ids))
                for t in recall_texts]  # fmt: skip
        recall = float(np.mean(hits)) / k
        del idx16
        gc.collect()
        bytes32 = n * (2 * e * 4 + 8)  # the rows a text query reads: terms a|g and beta, gamma
        block = floor_array(bytes32)
        timed = time_interleaved({"fast": _cycle(partial(idx32.search, k), texts),
                                  **floor_fns(block)},
                                 min_time=s.query_time_s / 2, min_runs=s.query_min_runs)
        fast = timed["fast"]
        floor = min(timed["floor_or"], timed["floor_max"], key=lambda t: t.p50)
        del idx32, block
        gc.collect()

        if v is not None and p is not None:
            naive = time_calls(_cycle(partial(naive_search, head, v, p, k), texts),
                               min_time=s.query_time_s, min_runs=s.naive_min_runs)  # fmt: skip
            naive_p50, naive_p99 = naive.p50, naive.p99
            naive_per_segment = (n, naive.p50 / n, naive.p99 / n)
            naive_note = f"p99 {naive.p99 * 1e3:.3g} ms, {naive.runs} runs"
            info["naive"] = naive.summary()
        elif naive_per_segment is not None:
            n0, per50, per99 = naive_per_segment
            naive_p50, naive_p99 = per50 * n, per99 * n
            naive_note = f"extrapolated linearly from {_exp10(n0)}"
            info["naive"] = {"p50_s": naive_p50, "p99_s": naive_p99, "extrapolated_from": n0}
        else:
            naive_p50 = naive_p99 = math.nan
            naive_note = "not measured"
        del v, p
        gc.collect()

        speedup = naive_p50 / fast.p50
        to_floor = fast.p50 / floor.p50
        ms = 1e3
        rows += [
            Row(sec, f"{label} segments: fast exact search p50", fast.p50 * ms, "ms",
                note=f"p99 {fast.p99 * ms:.3g} ms, {fast.runs} runs"),
            Row(sec, f"{label} segments: naive fusion p50", naive_p50 * ms, "ms",
                note=naive_note),
            Row(sec, f"{label} segments: speed-up fast vs naive", speedup, "x",
                f"≥ {NAIVE_SPEEDUP_GOAL:g}x", at_least(speedup, NAIVE_SPEEDUP_GOAL)),
            Row(sec, f"{label} segments: fast p50 / memory floor", to_floor, "x",
                f"≤ {MEMORY_FLOOR_GOAL:g}x", at_most(to_floor, MEMORY_FLOOR_GOAL),
                note=f"floor {floor.p50 * ms:.3g} ms to stream {bytes32 / 1e6:.3g} MB once"),
            Row(sec, f"{label} segments: float16 storage p50", half.p50 * ms, "ms",
                note=f"p99 {half.p99 * ms:.3g} ms, {half.p50 / fast.p50:.2f}x float32"),
            Row(sec, f"{label} segments: float16 recall@{k} vs exact", recall, "",
                f"≥ {FP16_RECALL_GOAL}", at_least(recall, FP16_RECALL_GOAL),
                note=f"{len(recall_texts)} queries"),
        ]  # fmt: skip
        info.update(fast=fast.summary(), float16=half.summary(), floor=floor.summary(),
                    floor_bytes=bytes32, recall_fp16=recall, speedup=speedup,
                    floor_ratio=to_floor)  # fmt: skip
        raw["sizes"][str(n)] = info
    for name in s.models:  # the other half of a text query's latency
        engine = zoo.engine(name, "float32")
        text = time_calls(partial(engine.encode_text, [QUERY_TEXT]), min_time=s.min_time_s,
                          min_runs=s.min_runs)  # fmt: skip
        rows.append(Row(sec, f"{name}: text encoder per query (tokenize + text graph) p50",
                        text.p50 * 1e3, "ms", note=f"p99 {text.p99 * 1e3:.3g} ms"))
        raw[f"text_encoder_{name}"] = text.summary()
    return rows, raw


# --------------------------------------------------------------------------- bytes


def bench_bytes(s: Settings, zoo: ModelZoo, log: Log) -> tuple[list[Row], dict[str, Any]]:
    sec = "bytes"
    e = s.embed_dim
    goal = f"≤ {BYTES_GOAL / 1024:g} KB"
    figures = {}
    for dtype in ("float32", "float16"):
        for keep in (False, True):
            b = ScoreIndex(e, dtype=dtype, keep_video=keep).bytes_per_segment()
            figures[f"{dtype}{'+video' if keep else ''}"] = b
    rows = [
        Row(sec, f"RAM scoring data per segment, text queries, float32 (E={e})",
            figures["float32"], "B", goal, at_most(figures["float32"], BYTES_GOAL),
            note="terms a|g, β, γ, id, stamps"),
        Row(sec, "RAM per segment with v̂ for trajectory queries, float32 (the store's index)",
            figures["float32+video"], "B", goal, at_most(figures["float32+video"], BYTES_GOAL),
            note="ScoreIndex keep_video=True"),
        Row(sec, "RAM scoring data per segment, text queries, float16", figures["float16"], "B"),
        Row(sec, "RAM per segment with v̂, float16", figures["float16+video"], "B"),
        Row(sec, "int8 storage", "n/a",
            note=f"ScoreIndex offers float32/float16; int8 would be ~{2 * e + 4 + 32} B"),
    ]  # fmt: skip

    # On disk: the SQLite file after n durable adds (poses, features and terms per segment).
    n = s.sqlite_segments
    log(f"bytes: {n} segments into a SQLite memory file")
    head = random_head(e, s.seed)
    rng = np.random.default_rng(s.seed)
    with tempfile.TemporaryDirectory(prefix="spartan-bench-db-") as tmp:
        path = Path(tmp) / "memory.sqlite"
        store = SegmentStore(path, "bench", e, head=head)
        poses = drive_rows(s.window, seed=s.seed)
        for i in range(n):
            seg = Segment.build(head, 10**9 * i, 10**9 * i + 2_300_000_000, "odom", poses,
                                rng.standard_normal(e), rng.standard_normal(e))  # fmt: skip
            store.add(seg)
        store.close()  # the last connection checkpoints the WAL into the file
        disk = sum(f.stat().st_size for f in Path(tmp).iterdir())
    rows.append(Row(sec, "SQLite file per segment (durable copy, not scored)", disk / n, "B",
                    note=f"{n} segments, T={s.window} poses + video, pose features + terms"))
    return rows, {"ram_bytes_per_segment": figures, "sqlite_bytes_per_segment": disk / n,
                  "sqlite_segments": n}  # fmt: skip


# --------------------------------------------------------------------------- end to end


def run_stream(service: MemoryService, frames: list[np.ndarray], rows_abs: np.ndarray) -> float:
    """Feed odometry and camera frames at their 10 Hz stamps as fast as the service goes;
    returns the wall time until the last frame is stored."""
    batch = service.config.encode_batch_size
    t0 = time.perf_counter()
    for i, row in enumerate(rows_abs):
        stamp = int(round(row[0] * 1e9))
        service.add_odometry(stamp, row[1:4], row[4:8], "odom")
        service.add_frame(stamp, frames[i])
        if service.pending() >= batch:
            service.process()
    service.flush()
    return time.perf_counter() - t0


def stream_through_service(
    engine: Engine, frames: list[np.ndarray], rows_abs: np.ndarray, s: Settings
) -> tuple[float, dict[str, Any]]:
    """(seconds, service stats) of one stream into a fresh SQLite memory."""
    with tempfile.TemporaryDirectory(prefix="spartan-bench-e2e-") as tmp:
        store = SegmentStore(Path(tmp) / "memory.sqlite", engine.model_hash, engine.embed_dim,
                             head=engine.fusion_head)  # fmt: skip
        try:
            config = ServiceConfig(window_frames=s.window, stride_frames=s.stride)
            service = MemoryService(engine, store, config)
            seconds = run_stream(service, frames, rows_abs)
            return seconds, service.stats()
        finally:
            store.close()


def bench_e2e(s: Settings, zoo: ModelZoo, log: Log) -> tuple[list[Row], dict[str, Any]]:
    sec = "end to end"
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    pool = synthetic_frames(16, *s.frame_size, seed=s.seed + 5)
    h, w = s.frame_size
    for name in s.models:
        n = s.e2e_frames_for(name)
        frames = [pool[i % len(pool)] for i in range(n)]
        rows_abs = drive_rows(n, seed=s.seed + 1)
        raw[name] = {}
        for precision in ("float32", "int8"):
            engine = zoo.engine(name, precision)
            engine.encode_frames(frames[:8])  # warm-up
            log(f"e2e: {n} frames ({w}x{h}) through MemoryService with {name} {precision}")
            seconds, stats = stream_through_service(engine, frames, rows_abs, s)
            counts = stats["counts"]
            encoded = int(counts.get("frames encoded", 0))
            if encoded != n:
                raise RuntimeError(f"e2e {name}: {encoded} of {n} frames encoded ({counts})")
            fps = encoded / seconds
            stored = int(counts.get("segments stored", 0))
            rows.append(Row(sec, f"{name}: MemoryService frames/s, {precision} image graph", fps,
                            "frames/s", f"≥ {E2E_RATE_GOAL:g} (10 Hz sampling)",
                            at_least(fps, E2E_RATE_GOAL),
                            note=f"{w}x{h} frames, {stored} segments stored"))  # fmt: skip
            raw[name][precision] = {"frames": n, "seconds": seconds, "fps": fps,
                                    "encode_ms_per_frame": stats["latency_ms"],
                                    "counts": counts}  # fmt: skip
    return rows, raw


# --------------------------------------------------------------------------- realtime


def sustained_rate(engine: Engine, frames: list[np.ndarray], s: Settings,
                   encode_every: int) -> tuple[float, dict[str, Any]]:  # fmt: skip
    """Taken frames/s the service keeps with ``encode_every`` (fed as fast as it goes)."""
    rows_abs = drive_rows(len(frames), seed=s.seed + 1)
    with tempfile.TemporaryDirectory(prefix="spartan-bench-rt-") as tmp:
        store = SegmentStore(Path(tmp) / "memory.sqlite", engine.model_hash, engine.embed_dim,
                             head=engine.fusion_head)  # fmt: skip
        try:
            config = ServiceConfig(window_frames=s.window, stride_frames=s.stride,
                                   encode_every=encode_every)
            service = MemoryService(engine, store, config)
            seconds = run_stream(service, frames, rows_abs)
            return len(frames) / seconds, service.stats()
        finally:
            store.close()


def realtime_drops(engine: Engine, frames: list[np.ndarray], s: Settings, encode_every: int,
                   rate_hz: float) -> dict[str, Any]:  # fmt: skip
    """A wall-clock stream at ``rate_hz`` into the service with its encoder thread and the
    node's default queue bound: how many frames were dropped because inference fell behind."""
    from spartan_ros.memory.service import IngestWorker

    n = max(1, int(round(s.realtime_seconds * rate_hz)))
    rows_abs = drive_rows(n, rate_hz=rate_hz, seed=s.seed + 2)
    with tempfile.TemporaryDirectory(prefix="spartan-bench-rt-") as tmp:
        store = SegmentStore(Path(tmp) / "memory.sqlite", engine.model_hash, engine.embed_dim,
                             head=engine.fusion_head)  # fmt: skip
        service = MemoryService(engine, store, ServiceConfig(
            window_frames=s.window, stride_frames=s.stride, encode_every=encode_every,
            sample_rate_hz=rate_hz))
        worker = IngestWorker(service, poll_s=0.05)
        worker.start()
        try:
            t0 = time.perf_counter()
            for i, row in enumerate(rows_abs):
                delay = t0 + i / rate_hz - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                stamp = int(round(row[0] * 1e9))
                service.add_odometry(stamp, row[1:4], row[4:8], "odom")
                service.add_frame(stamp, frames[i % len(frames)])
            fed_s = time.perf_counter() - t0
            backlog = service.pending()
        finally:
            worker.stop()
            service.flush()
            counts = service.stats()["counts"]
            store.close()
    return {"rate_hz": rate_hz, "frames": n, "seconds": fed_s, "backlog_at_end": backlog,
            "dropped": int(counts.get("dropped: inference behind", 0)), "counts": counts}


def drive_frames(count: int, seed: int) -> list[np.ndarray]:
    """Consecutive frames of a rendered synthetic drive (neighbours look alike, as on a road)."""
    from spartan_train.data.synth.generate import main as synth_main

    with tempfile.TemporaryDirectory(prefix="spartan-bench-drive-") as tmp:
        root = Path(tmp) / "drive"
        synth_main(["--out", str(root), "--sequences", "1", "--frames", str(count), "--width",
                    "320", "--height", "240", "--val-fraction", "0", "--seed", str(seed),
                    "--quiet"])  # fmt: skip
        from PIL import Image

        files = sorted((root / "images").rglob("*.png"))
        return [np.asarray(Image.open(f).convert("RGB")) for f in files[:count]]


def window_cosines(feats: np.ndarray, window: int, stride: int, k: int) -> np.ndarray:
    """Cosine per window between the mean of all its frame features and of every k-th."""
    out = []
    for lo in range(0, len(feats) - window + 1, stride):
        full = feats[lo : lo + window].mean(axis=0, dtype=np.float64)
        sub = feats[lo : lo + window : k].mean(axis=0, dtype=np.float64)
        out.append(float(full @ sub / (np.linalg.norm(full) * np.linalg.norm(sub))))
    return np.asarray(out)


def bench_realtime(s: Settings, zoo: ModelZoo, log: Log) -> tuple[list[Row], dict[str, Any]]:
    sec = "realtime"
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    h, w = s.frame_size
    pool = synthetic_frames(8, h, w, seed=s.seed + 7)
    frames = [pool[i % len(pool)] for i in range(s.realtime_frames)]
    target = E2E_RATE_GOAL
    for name in s.realtime_models:
        raw[name] = {}
        for precision in PRECISIONS:
            try:
                engine = zoo.engine(name, precision)
            except Exception as exc:  # e.g. an export without that variant
                rows.append(Row(sec, f"{name} {precision}", f"not measured: {exc}"))
                continue
            engine.encode_frames(frames[:2])  # warm-up
            for k in ENCODE_EVERY:
                log(f"realtime: {name} {precision} encode_every={k}: sustained rate, then a "
                    f"{s.realtime_seconds:g} s wall-clock stream at {target:g} Hz")
                fps, stats = sustained_rate(engine, frames, s, k)
                check = realtime_drops(engine, frames, s, k, target)
                keeps = check["dropped"] == 0
                rows.append(Row(
                    sec, f"{name} {precision}, encode_every={k}: highest sample rate kept", fps,
                    "frames/s", f"≥ {target:g} and 0 drops at {target:g} Hz",
                    at_least(fps, target) and keeps,
                    note=f"{target:g} Hz for {check['seconds']:.0f} s: {check['dropped']} of "
                         f"{check['frames']} dropped (inference behind)"))  # fmt: skip
                raw[name][f"{precision}_k{k}"] = {
                    "sustained_fps": fps, "encode_ms_per_frame": stats["latency_ms"],
                    "realtime": check}  # fmt: skip
        # what subsampling does to a window's feature (float32, consecutive rendered frames)
        drive = drive_frames(s.drive_frames, s.seed + 3)
        feats = zoo.engine(name, "float32").encode_frames(drive)
        for k in ENCODE_EVERY[1:]:
            cos = window_cosines(feats, s.window, s.stride, k)
            rows.append(Row(sec, f"{name}: window feature, one frame in {k} vs all (cosine, "
                                 "min)", float(cos.min()), "",
                            f"≥ {ENCODE_EVERY_COSINE_GOAL}",
                            at_least(float(cos.min()), ENCODE_EVERY_COSINE_GOAL),
                            note=f"mean {cos.mean():.4f} over {cos.size} windows of a rendered "
                                 "drive; random weights"))  # fmt: skip
            raw[name][f"cosine_k{k}"] = {"min": float(cos.min()), "mean": float(cos.mean()),
                                         "windows": int(cos.size)}
    return rows, raw


# --------------------------------------------------------------------------- quant


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


def gemm_graphs(root: Path, m: int, k: int, n: int) -> dict[str, Path]:
    """One MatMul ``[m, k] x [k, n]`` (constant weights) as float32, dynamic int8 and static
    QDQ int8 graphs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from spartan_train.export.onnx_export import quantize_image_static

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32) * 0.05, "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["pixels", "w"], ["y"])], "gemm",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["m", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    paths = {"float32": root / "gemm_fp32.onnx", "int8 dynamic": root / "gemm_dyn.onnx",
             "int8 static": root / "gemm_static.onnx"}
    onnx.save(model, str(paths["float32"]))
    from spartan_train.export.onnx_export import quantize_image

    quantize_image(paths["float32"], paths["int8 dynamic"])  # the exporter's dynamic int8
    calib = rng.standard_normal((64, k)).astype(np.float32)  # rows, one per calibration run
    quantize_image_static(paths["float32"], paths["int8 static"], calib)
    return paths


def bench_quant(s: Settings, zoo: ModelZoo, log: Log) -> tuple[list[Row], dict[str, Any]]:
    from spartan_train.export.onnx_export import quantize_image_static

    sec = "quant"
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    name = s.realtime_models[0]
    b = zoo.bundle(name)
    r = b.model.config.image_resolution
    with tempfile.TemporaryDirectory(prefix="spartan-bench-quant-") as tmp:
        # raw GEMM throughput at the size of the tower's MLP (197 tokens x width -> 4 width)
        w = b.model.config.vision_width
        m = (r // b.model.config.vision_patch_size) ** 2 + 1
        gemm = gemm_graphs(Path(tmp), 8 * m, w, 4 * w)
        x = np.random.default_rng(1).standard_normal((8 * m, w)).astype(np.float32)
        sessions = {key: _session(path, s.threads) for key, path in gemm.items()}
        log(f"quant: ORT GEMM {8 * m}x{w} x {w}x{4 * w}, float32 vs int8")
        timed = time_interleaved({key: partial(sess.run, None, {"pixels": x})
                                  for key, sess in sessions.items()},
                                 min_time=s.min_time_s, min_runs=s.min_runs)  # fmt: skip
        gops = {key: 2 * 8 * m * w * 4 * w / t.p50 / 1e9 for key, t in timed.items()}
        for key, value in gops.items():
            rows.append(Row(sec, f"ORT GEMM {8 * m}x{w}x{4 * w}: {key}", value, "GOP/s",
                            note=f"{value / gops['float32']:.2f}x float32"))
        raw["gemm"] = {"m": 8 * m, "k": w, "n": 4 * w, "gops": gops}

        # the image tower: float32, dynamic int8 (exported), static QDQ int8 (built here)
        drive = drive_frames(24, s.seed + 4)
        engine = zoo.engine(name, "float32")
        calib = engine.preprocess(drive[::2])  # calibration frames; the others are the test
        static = Path(tmp) / "image.static-int8.onnx"
        log(f"quant: static QDQ int8 of the {name} image graph ({len(calib)} calibration frames)")
        t0 = time.perf_counter()
        quantize_image_static(b.model_dir / "image.onnx", static, calib)
        raw["static_quantize_s"] = time.perf_counter() - t0
        towers = {"float32": _session(b.model_dir / "image.onnx", s.threads),
                  "int8 dynamic": _session(b.model_dir / "image.int8.onnx", s.threads),
                  "int8 static": _session(static, s.threads)}
        test = engine.preprocess(drive[1::2])

        def run(key: str, pixels: np.ndarray) -> np.ndarray:
            return np.asarray(towers[key].run(["features"], {"pixels": pixels})[0])

        ref = run("float32", test)
        for batch in s.batches:
            pixels = np.ascontiguousarray(test[:batch])
            log(f"quant: {name} image tower batch {batch}: float32, int8 dynamic, int8 static")
            timed = time_interleaved({key: partial(run, key, pixels) for key in towers},
                                     min_time=s.min_time_s, min_runs=s.min_runs)  # fmt: skip
            fps = {key: batch / t.p50 for key, t in timed.items()}
            raw[f"batch{batch}"] = {"fps": fps}
            for key in ("int8 dynamic", "int8 static"):
                speed = fps[key] / fps["float32"]
                rows.append(Row(sec, f"{name} batch {batch}: {key} / float32 speed", speed, "x",
                                f"≥ {INT8_SPEEDUP_GOAL:g}", at_least(speed, INT8_SPEEDUP_GOAL),
                                note=f"{fps[key]:.3g} vs {fps['float32']:.3g} frames/s"))
        for key in ("int8 dynamic", "int8 static"):
            cos = min_cosine(run(key, test), ref)
            rows.append(Row(sec, f"{name}: {key} cosine to float32 (min, {len(test)} frames)",
                            cos, "", f"≥ {INT8_COSINE_GOAL}", at_least(cos, INT8_COSINE_GOAL),
                            note="random weights, rendered drive frames"))
            raw[f"cosine {key}"] = cos
    return rows, raw


# --------------------------------------------------------------------------- main


RUNNERS: dict[str, Callable[[Settings, ModelZoo, Log], tuple[list[Row], dict[str, Any]]]] = {
    "image": bench_image,
    "encodes": bench_encodes,
    "query": bench_query,
    "bytes": bench_bytes,
    "e2e": bench_e2e,
    "realtime": bench_realtime,
    "quant": bench_quant,
}


def parse_args(argv: Sequence[str] | None = None) -> tuple[Settings, Path | None]:
    """(settings, output directory or None)."""
    p = argparse.ArgumentParser(prog="python -m bench.engine_bench", description=__doc__.split(
        "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--quick", action="store_true",
                   help="tiny model only, small sizes, few repeats (the smoke test)")
    p.add_argument("--sections", type=comma_list(SECTIONS),
                   default=SECTIONS, help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--models", type=comma_list(), default=None,
                   help="model shapes (default tiny,B/16; --quick: tiny)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="threads for ONNX Runtime and PyTorch (default: all CPUs)")
    p.add_argument("--out", type=Path, default=None, help="write bench.json and bench.md here")
    p.add_argument("--checkpoint", default=None, help="trained checkpoint for int8 R@1")
    p.add_argument("--data", default=None, help="dataset root with the validation list")
    p.add_argument("--list", dest="list_file", default="config/val.txt",
                   help="validation list (relative: looked up under --data first)")
    p.add_argument("--frame-stride", type=int, default=1,
                   help="R@1: encode every k-th frame of a clip (1 = all, as the paper)")
    p.add_argument("--max-clips", type=int, default=0, help="R@1: first N clips (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if bool(a.checkpoint) != bool(a.data):
        p.error("--checkpoint and --data go together")
    if a.threads < 1 or a.frame_stride < 1 or a.max_clips < 0:
        p.error("--threads and --frame-stride must be >= 1, --max-clips >= 0")
    changes: dict[str, Any] = {
        "sections": a.sections, "threads": a.threads, "checkpoint": a.checkpoint,
        "data": a.data, "list_file": a.list_file, "frame_stride": a.frame_stride,
        "max_clips": a.max_clips, "seed": a.seed,
    }  # fmt: skip
    if a.models is not None:
        changes["models"] = a.models
        changes["realtime_models"] = tuple(m for m in a.models if m != "tiny") or a.models
    settings = Settings.quick_settings(**changes) if a.quick else Settings(**changes)
    return settings, a.out


def main(argv: Sequence[str] | None = None) -> int:
    s, out = parse_args(argv)
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[bench {time.perf_counter() - start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    torch.set_num_threads(s.threads)
    logging.getLogger("spartan_ros").setLevel(logging.WARNING)
    log(f"{'quick' if s.quick else 'full'} run: sections {','.join(s.sections)}, models "
        f"{','.join(s.models)}, {s.threads} threads")  # fmt: skip
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    failed = False
    with tempfile.TemporaryDirectory(prefix="spartan-bench-") as tmp:
        zoo = ModelZoo(Path(tmp), s, log)
        for name in s.sections:
            t0 = time.perf_counter()
            try:
                section_rows, raw[name] = RUNNERS[name](s, zoo, log)
            except Exception as exc:  # report and go on with the other sections
                failed = True
                log(f"section {name} failed:\n{traceback.format_exc()}")
                section_rows = [Row(name, "section failed", f"error: {type(exc).__name__}: {exc}",
                                    met=False)]  # fmt: skip
                raw[name] = {"error": f"{type(exc).__name__}: {exc}"}
            raw[name]["seconds"] = time.perf_counter() - t0
            rows += section_rows
            log(f"section {name} done in {time.perf_counter() - t0:.1f} s")
            gc.collect()
    seconds = time.perf_counter() - start
    doc = build_document(rows, raw, asdict(s), machine_info(s.threads), seconds)
    print(markdown_table(rows))
    goals = [r for r in rows if r.met is not None]
    print(f"\n{sum(bool(r.met) for r in goals)} of {len(goals)} goals met; {seconds:.0f} s")
    if out is not None:
        json_path, md_path = write_outputs(out, doc, rows)
        log(f"wrote {json_path} and {md_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
