"""``spartan-eval``: encode a validation list with a checkpoint and measure it as the paper does.

    spartan-eval --checkpoint CKPT --data ROOT [--list config/val.txt] [--no-pose | --ablation]
                 [--gallery 100] [--out DIR] [--batch-size N] [--device cpu|cuda]
                 [--max-clips N] [--frame-stride K]

Videos: every clip's frames are preprocessed exactly as in training and encoded with
``encode_video`` (mean of the per-frame features), ``--batch-size`` clips at a time.

Queries: ``encode_text(tokens, poses)`` in chunks of ``--gallery`` consecutive clips, i.e. exactly
the reference's test batches. In reference mode the pose encoder attends across the batch (Q1)
and normalises the FFT features over it (Q2), so a query's embedding depends on the other 99 in
its gallery; encoding in the paper's batches is what makes our numbers comparable to the paper's.
In corrected mode the chunking changes nothing.

No-pose ablation (``--no-pose``; ``--ablation`` evaluates both from one pass over the videos):
every query gets the trainer's constant window (``spartan_train.train.data.still_poses``: a vehicle
standing still at the origin, identity orientation, in the model's pose convention). A constant
input carries no information about the clip. It is not all zeros because in reference mode an
all-zero batch makes the FFT normalisation divide 0 by a zero std (Q2) and every embedding NaN.

Trajectory errors use the reference's relative windows (``relative_window(rows, "reference")``
on the raw rows of ``<root>/poses``), which is what the paper's test.py wrote out and
parse_results*.py compared, whatever pose convention the model itself uses.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from spartan_ros.poses import relative_window
from spartan_ros.preprocess import preprocess_batch
from spartan_ros.tokenizer import tokenize
from spartan_train.data import DatasetError, DrivingDataset, windows_meta_by_name
from spartan_train.evaluate.report import write_report
from spartan_train.evaluate.retrieval import PAPER_GALLERY
from spartan_train.evaluate.summary import (
    MOTION_SEPARATED_GROUPS,
    evaluate_embeddings,
    same_motion_ceiling,
)
from spartan_train.model import CheckpointError, SpartanModel, load_checkpoint, sha256
from spartan_train.train.data import still_poses

THUMB_FRAMES = 6  # frames per thumbnail strip in the report


@dataclass
class EvalConfig:
    checkpoint: str
    data: str
    list_file: str = "config/val.txt"  # relative paths are looked up under the data root too
    variants: tuple[str, ...] = ("pose",)  # "pose" and/or "no_pose"
    gallery: int = PAPER_GALLERY
    out: str = "eval"
    batch_size: int = 8
    device: str = "cpu"
    max_clips: int = 0  # 0 = all
    frame_stride: int = 1  # encode every k-th frame of a clip (1 = all, as the paper)
    examples: int = 4
    progress: bool = True


# ----------------------------------------------------------------------------- encoding


def _load_clip(ds: DrivingDataset, index: int, resolution: int, fit: str) -> np.ndarray:
    return preprocess_batch(ds.load_frames(index), resolution, fit=fit)  # [K, 3, R, R]


@torch.no_grad()
def encode_videos(
    model: SpartanModel, ds: DrivingDataset, n: int, batch_size: int, progress: bool = True
) -> np.ndarray:
    """Video embeddings ``[n, E]`` (unnormalised) of the first ``n`` clips."""
    device = next(model.parameters()).device
    r, fit = model.image_resolution, model.config.image_fit
    out = np.empty((n, model.embed_dim), dtype=np.float32)
    batches = [range(lo, min(n, lo + batch_size)) for lo in range(0, n, batch_size)]

    def load(b: range) -> np.ndarray:
        return np.stack([_load_clip(ds, i, r, fit) for i in b])

    # Decode + resize the next batch in a thread (Pillow releases the GIL) while torch encodes
    # this one; only one batch ahead, so memory stays bounded at B/16 sizes.
    with ThreadPoolExecutor(max_workers=1) as pool, tqdm(
        total=n, unit="clip", desc="videos", disable=not progress
    ) as bar:
        pending = pool.submit(load, batches[0])
        for k, idx in enumerate(batches):
            clips = pending.result()
            if k + 1 < len(batches):
                pending = pool.submit(load, batches[k + 1])
            x = torch.from_numpy(clips).to(device)
            out[idx.start : idx.stop] = model.encode_video(x).float().cpu().numpy()
            bar.update(len(idx))
    return out


@torch.no_grad()
def encode_queries(
    model: SpartanModel,
    captions: Sequence[str],
    poses: np.ndarray,
    chunk: int,
    variants: Sequence[str] = ("pose",),
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Query embeddings ``[n, E]`` per variant, encoded in consecutive chunks of ``chunk`` (the
    paper's batches, Q1). The text tower runs once per chunk for all variants."""
    device = next(model.parameters()).device
    n = len(captions)
    if poses.shape[0] != n:
        raise ValueError(f"{n} captions but {poses.shape[0]} pose windows")
    out = {v: np.empty((n, model.embed_dim), dtype=np.float32) for v in variants}
    blank = torch.from_numpy(still_poses(1, poses.shape[1], model.config.pose_convention))
    with tqdm(total=n, unit="query", desc="queries", disable=not progress) as bar:
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            tokens = torch.from_numpy(tokenize(list(captions[lo:hi]), model.context_length))
            t = model.encode_text_features(tokens.to(device))
            for v in variants:
                if v == "pose":
                    p = torch.from_numpy(np.ascontiguousarray(poses[lo:hi], dtype=np.float32))
                elif v == "no_pose":
                    p = blank.expand(hi - lo, -1, -1).contiguous()
                else:
                    raise ValueError(f"unknown variant {v!r}; expected 'pose' or 'no_pose'")
                q = model.fuse(t, model.encode_pose(p.to(device)))
                out[v][lo:hi] = q.float().cpu().numpy()
            bar.update(hi - lo)
    return out


# ----------------------------------------------------------------------------- data


def trajectory_rows(ds: DrivingDataset, n: int) -> np.ndarray:
    """The reference's relative windows ``[n, T, 8]`` (what the paper's trajectory metrics saw)."""
    rows = np.empty((n, ds.window, 8), dtype=np.float64)
    for i in range(n):
        e = ds.entries[i]
        raw = ds.pose_table(e.seq)[e.start : e.start + ds.window]
        rows[i] = relative_window(raw, "reference")
    return rows


def group_ceilings(ds: DrivingDataset, n: int,
                   groups: dict[str, np.ndarray]) -> dict[str, float | None]:
    """``same_motion_ceiling`` of each motion-separated group the set has (generated sets), from
    the clips' positions over their windows as recorded (the set's one frame)."""
    names = [name for name in MOTION_SEPARATED_GROUPS if name in groups]
    if not names:
        return {}
    positions = np.stack([ds.pose_table(e.seq)[e.start : e.start + ds.window, 1:4]
                          for e in ds.entries[:n]])
    return {name: same_motion_ceiling(groups[name], positions) for name in names}


def load_groups(root: str | Path, ds: DrivingDataset, n: int) -> dict[str, np.ndarray]:
    """Group ids per clip from a synthetic set's ``meta/windows.jsonl``: every field named
    ``*_group`` (``look_group``: first frames look alike; ``motion_group``: same manoeuvre and
    speed), its values (strings or integers) numbered 0, 1, ... in order of first appearance;
    -1 for a clip without a record. Empty for real sets (no meta folder)."""
    try:
        by_name = windows_meta_by_name(root)
    except DatasetError:
        return {}
    keys = sorted({k for r in by_name.values() for k in r if k.endswith("_group")})
    groups = {}
    for key in keys:
        ids = np.full(n, -1, dtype=np.int64)
        numbers: dict[str, int] = {}
        for i in range(n):
            value = by_name.get(ds.entries[i].name, {}).get(key)
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                ids[i] = numbers.setdefault(str(value), len(numbers))
        if (ids >= 0).sum() >= 2:
            groups[key] = ids
    return groups


# ----------------------------------------------------------------------------- pipeline


def evaluate(cfg: EvalConfig) -> tuple[dict[str, Any], dict[str, Path]]:
    """Run the whole evaluation; returns (results dict, written file paths)."""
    if cfg.gallery < 1 or cfg.batch_size < 1 or cfg.max_clips < 0 or cfg.frame_stride < 1:
        raise ValueError("gallery, batch size and frame stride must be >= 1, max clips >= 0")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    model = load_checkpoint(cfg.checkpoint, cfg.device)
    timings["load_model_s"] = time.perf_counter() - t0
    list_file = Path(cfg.list_file)
    if not list_file.is_absolute() and (Path(cfg.data) / list_file).exists():
        list_file = Path(cfg.data) / list_file  # the root's list first, not one in the cwd
    ds = DrivingDataset(
        cfg.data, list_file, window=model.num_frames,
        pose_convention=model.config.pose_convention, frame_stride=cfg.frame_stride,
    )
    n = len(ds) if cfg.max_clips == 0 else min(cfg.max_clips, len(ds))
    if n < 2:
        raise ValueError(f"need at least 2 clips to evaluate retrieval, {ds.list_file} has {n}")

    t0 = time.perf_counter()
    videos = encode_videos(model, ds, n, cfg.batch_size, cfg.progress)
    timings["encode_videos_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    captions = [e.caption for e in ds.entries[:n]]
    poses = np.stack([ds.load_poses(i) for i in range(n)])
    queries = encode_queries(model, captions, poses, cfg.gallery, cfg.variants, cfg.progress)
    timings["encode_queries_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rows = trajectory_rows(ds, n)
    groups = load_groups(cfg.data, ds, n)
    variants = {
        v: evaluate_embeddings(q, videos, rows, groups, cfg.gallery) for v, q in queries.items()
    }
    ceilings = group_ceilings(ds, n, groups)
    timings["metrics_s"] = time.perf_counter() - t0

    meta = {
        "checkpoint": str(cfg.checkpoint),
        "checkpoint_sha256": sha256(cfg.checkpoint),
        "model": model.config.to_dict(),
        "pose_branch_trained": model.pose_branch_trained,
        "data": str(cfg.data),
        "list_file": str(ds.list_file),
        "n_clips": n,
        "frames_per_clip": int(len(ds.frame_offsets)),
        "settings": {k: v for k, v in asdict(cfg).items() if k not in ("checkpoint", "data")},
        "groups": {k: int((v >= 0).sum()) for k, v in groups.items()},
        "same_motion_ceiling_R@1": ceilings,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "timings": timings,
    }
    clips = [
        {"index": i, "name": e.name, "caption": e.caption} for i, e in enumerate(ds.entries[:n])
    ]
    results = {"meta": meta, "clips": clips, "variants": variants}

    offsets = [int(x) for x in np.linspace(0, ds.window - 1, THUMB_FRAMES).round()]

    def frames_for(index: int) -> np.ndarray:
        return ds.load_frames(index, offsets)

    paths = write_report(cfg.out, results, frames_for, rows, cfg.examples)
    return results, paths


def summary_lines(results: dict[str, Any]) -> list[str]:
    """A short plain-text table of the headline figures."""
    lines = [
        f"{'variant':<9} {'protocol':<24} {'R@1':>13} {'R@5':>13} {'R@10':>13} {'medR':>6}",
    ]
    for name, v in results["variants"].items():
        a = v["paper"]["t2v"]["averaged"]
        cells = [f"{a[k]['mean']:.3f}±{a[k]['std']:.3f}" for k in ("R@1", "R@5", "R@10")]
        lines.append(f"{name:<9} {'t2v galleries of ' + str(v['paper']['gallery_size']):<24} "
                     f"{cells[0]:>13} {cells[1]:>13} {cells[2]:>13} "
                     f"{a['median_rank']['mean']:>6.1f}")
        a = v["paper"]["v2t"]["averaged"]
        cells = [f"{a[k]['mean']:.3f}±{a[k]['std']:.3f}" for k in ("R@1", "R@5", "R@10")]
        lines.append(f"{name:<9} {'v2t galleries':<24} {cells[0]:>13} {cells[1]:>13} "
                     f"{cells[2]:>13} {a['median_rank']['mean']:>6.1f}")
        s = v["pooled"]["t2v"]
        lines.append(f"{name:<9} {'t2v whole set (' + str(v['pooled']['gallery_size']) + ')':<24} "
                     f"{s['R@1']:>13.3f} {s['R@5']:>13.3f} {s['R@10']:>13.3f} "
                     f"{s['median_rank']:>6.1f}")
        for g, fig in v.get("groups", {}).items():
            s = fig["t2v"]
            lines.append(f"{name:<9} {'t2v within ' + g:<24} {s['R@1']:>13.3f} {s['R@5']:>13.3f} "
                         f"{s['R@10']:>13.3f} {s['median_rank']:>6.1f}   "
                         f"(chance R@1 {fig['chance_R@1']:.2f})")
        lines.append(f"{name:<9} {'in-training top-1':<24} {v['in_training_top1']:>13.3f}")
        if "trajectory" in v:
            t = v["trajectory"]["paper"]
            lines.append(
                f"{name:<9} trajectories: APE {t['ape_mean_m']:.3f} m "
                f"({t['ape_pct_path']:.1f}% of path), RPE {t['rpe_mean_deg']:.3f} deg "
                f"({t['rpe_deg_per_m']:.3f} deg/m); paper: ape mean(m) "
                f"{t['paper_ape_mean_m']:.3f}, mean(%) {t['paper_ape_mean_pct']:.3f}, "
                f"rpe mean(m) {t['paper_rpe_mean_m']:.3f}"
            )
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spartan-eval",
        description="Text+pose -> video retrieval and trajectory evaluation (the SPARTAN paper's "
        "protocol, plus whole-set and look-alike figures); writes results.json and report.html.",
    )
    p.add_argument("--checkpoint", required=True, help="model checkpoint (any supported format)")
    p.add_argument("--data", required=True, help="dataset root (images/, poses/, config/)")
    p.add_argument("--list", dest="list_file", default="config/val.txt",
                   help="list file, absolute or relative to the root (default: config/val.txt)")
    ablation = p.add_mutually_exclusive_group()
    ablation.add_argument("--no-pose", action="store_true",
                          help="evaluate only the no-pose ablation (constant pose window)")
    ablation.add_argument("--ablation", action="store_true",
                          help="evaluate with pose and the no-pose ablation side by side")
    p.add_argument("--gallery", type=int, default=PAPER_GALLERY,
                   help="gallery size of the paper protocol (default 100)")
    p.add_argument("--out", default="eval", help="output directory (default ./eval)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per video batch")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--max-clips", type=int, default=0, help="evaluate only the first N clips")
    p.add_argument("--frame-stride", type=int, default=1,
                   help="encode every k-th frame of a clip (1 = all 24, as the paper)")
    p.add_argument("--examples", type=int, default=4, help="example queries in the report")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    variants = ("no_pose",) if args.no_pose else ("pose", "no_pose") if args.ablation else ("pose",)
    cfg = EvalConfig(
        checkpoint=args.checkpoint, data=args.data, list_file=args.list_file, variants=variants,
        gallery=args.gallery, out=args.out, batch_size=args.batch_size, device=args.device,
        max_clips=args.max_clips, frame_stride=args.frame_stride, examples=args.examples,
        progress=not args.no_progress,
    )
    try:
        results, paths = evaluate(cfg)
    except (CheckpointError, DatasetError, ValueError, FileNotFoundError) as e:
        print(f"spartan-eval: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(results)))
    print(f"wrote {paths['results']} and {paths['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
