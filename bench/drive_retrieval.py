"""Drive-retrieval benchmark: how well does a checkpoint do the node's job on drives it never saw?

The node keeps one drive's segments and ranks them for a caption, each scored with its own
recorded motion. That is harder than the paper's protocol (galleries of clips from many drives,
where town and weather alone tell most clips apart): every candidate shares the drive's town,
weather and light. This benchmark exports each checkpoint, generates a few unseen drives (seeds
the training set does not use), writes them as rosbags and runs `spartan-bag eval` (the node's
ingest, windowing and scoring, offline) on every annotated caption. It prints one table with the
checkpoints side by side and writes drive_retrieval.json:

    python -m bench.drive_retrieval assets/models/tiny-synth runs/ft/best --out runs/drives

"chance" is the R@k a random ranking would get: per query, 1 - C(N - c, k) / C(N, k) with N
segments in the memory and c of them correct, averaged.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from math import comb
from pathlib import Path
from typing import Any

import numpy as np

# (seed, sequences, frames per sequence): seed 11 is the end-to-end test's drive, 7 the demo's.
DRIVES = ((11, 2, 200), (7, 4, 300), (21, 3, 300))
KS = (1, 5, 10)


def chance_at(queries: list[dict[str, Any]], segments: int, k: int) -> float:
    """Expected R@k of a uniformly random ranking of ``segments`` segments."""
    n = segments
    hits = [1.0 - comb(n - q["correct_segments"], k) / comb(n, k) if n >= k else 1.0
            for q in queries]
    return float(np.mean(hits)) if hits else float("nan")


def evaluate_checkpoint(ckpt: Path, work: Path, drives: tuple[tuple[int, int, int], ...],
                        split: str, encode_every: int = 1) -> dict[str, Any]:
    from spartan_train.bag.evaluate import BagEvalConfig, evaluate_bag
    from spartan_train.demo import DemoConfig, export_model, make_drive

    name = ckpt.name if ckpt.name not in ("best", "last") else f"{ckpt.parent.name}-{ckpt.name}"
    model = export_model(DemoConfig(checkpoint=ckpt, work=work / "models" / name))
    if encode_every != 1:
        name += f" k={encode_every}"
    per_drive = {}
    for seed, sequences, frames in drives:
        _, bag = make_drive(DemoConfig(checkpoint=ckpt, work=work, seed=seed,
                                       sequences=sequences, frames=frames))
        t0 = time.monotonic()
        results, _, _ = evaluate_bag(BagEvalConfig(
            bag=bag, model=model, split=split,
            out=work / "eval" / name.replace(" ", "_") / f"seed{seed}",
            progress=False, examples=4, encode_every=encode_every))
        r = results["retrieval"]
        queries = results["queries"]
        row = {f"R@{k}": float(r[f"R@{k}"]) for k in KS}
        row.update({f"chance@{k}": chance_at(queries, int(r["segments"]), k) for k in KS})
        row.update(queries=len(queries), segments=int(r["segments"]),
                   seconds=round(time.monotonic() - t0, 1))
        per_drive[f"seed {seed} ({sequences}x{frames})"] = row
        print(f"  {name} seed {seed}: R@5 {row['R@5']:.3f} (chance {row['chance@5']:.3f}), "
              f"{row['queries']} queries over {row['segments']} segments", file=sys.stderr)
    weights = np.array([d["queries"] for d in per_drive.values()], dtype=float)
    pooled = {key: float(np.average([d[key] for d in per_drive.values()], weights=weights))
              for key in [f"R@{k}" for k in KS] + [f"chance@{k}" for k in KS]}
    return {"checkpoint": str(ckpt), "name": name, "encode_every": encode_every,
            "drives": per_drive, "pooled": pooled}


def table(results: list[dict[str, Any]]) -> str:
    names = [r["name"] for r in results]
    lines = ["| drive | measure | " + " | ".join(names) + " | chance |",
             "|---|---|" + "---|" * (len(names) + 1)]
    drives = list(results[0]["drives"]) + ["all (pooled)"]
    for drive in drives:
        for k in KS:
            cells = [(r["drives"][drive] if drive in r["drives"] else r["pooled"])[f"R@{k}"]
                     for r in results]
            first = results[0]["drives"].get(drive, results[0]["pooled"])
            lines.append(f"| {drive} | R@{k} | " + " | ".join(f"{c:.3f}" for c in cells)
                         + f" | {first[f'chance@{k}']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.drive_retrieval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", type=Path, help="checkpoints to compare")
    ap.add_argument("--out", type=Path, default=Path("runs/drive_retrieval"))
    ap.add_argument("--split", choices=("val", "train", "all"), default="all",
                    help="annotated windows to ask (all: every window of the unseen drives)")
    ap.add_argument("--quick", action="store_true", help="only the end-to-end test's drive")
    ap.add_argument("--encode-every", default="1", metavar="K[,K...]",
                    help="also evaluate with the node encoding every K-th frame, e.g. 1,2,4")
    args = ap.parse_args(argv)
    drives = DRIVES[:1] if args.quick else DRIVES
    try:
        ks = [int(k) for k in args.encode_every.split(",")]
    except ValueError:
        ap.error(f"--encode-every must be integers like 1,2,4, got {args.encode_every!r}")
    t0 = time.monotonic()
    results = [evaluate_checkpoint(c, args.out, drives, args.split, k)
               for c in args.checkpoints for k in ks]
    text = table(results)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"results": results, "split": args.split, "drives": drives,
           "wall_s": round(time.monotonic() - t0, 1)}
    (args.out / "drive_retrieval.json").write_text(json.dumps(doc, indent=2) + "\n")
    (args.out / "drive_retrieval.md").write_text(text + "\n")
    print(f"\nwrote {args.out / 'drive_retrieval.json'} and {args.out / 'drive_retrieval.md'} "
          f"(per-query reports with pictures under {args.out / 'eval'})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
