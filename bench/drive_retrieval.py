"""Drive-retrieval benchmark: how well does a checkpoint do the node's job on drives it never saw?

The node keeps one drive's segments and ranks them for a caption, each scored with its own
recorded motion. That is harder than the paper's protocol (galleries of clips from many drives,
where town and weather alone tell most clips apart): every candidate shares the drive's town,
weather and light. This benchmark exports each checkpoint, generates a few unseen drives (seeds
the training set does not use), writes them as rosbags and runs `spartan-bag eval` (the node's
ingest, windowing and scoring, offline) on every annotated caption. It prints one table with the
checkpoints side by side and writes drive_retrieval.json:

    python -m bench.drive_retrieval assets/models/tiny-synth runs/ft/best --out runs/drives

The drives come from the evaluation protocol (``spartan_train.protocol``): ``--set test`` (the
default, the figures to report) or ``--set selection`` (the drives every choice is made on).
``--spread`` also runs the test set's twin (same size, other seeds) and prints how far R@5 moves
between the two: the test set is big enough when that stays under 2 points. Free-text questions
(``evaluate.questions``, scored by the drives' recorded facts) are pooled over the drives too. A
last table sets the pooled figures against the committed model's goals (``GOALS``) and says by
how many points each is met or missed.

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
from spartan_train.protocol import DRIVES, SPREAD_DRIVES, DriveSpec

from bench.report import earlier_results

KS = (1, 5, 10)
SETS = {**DRIVES, "spread": SPREAD_DRIVES}
# What the committed model should reach on the test drives: (pooled key, measure, goal).
GOALS = (("R@1", "within-drive R@1", 0.50), ("R@5", "within-drive R@5", 0.85),
         ("free_R@1", "free text answered at rank 1", 0.70))


def chance_at(queries: list[dict[str, Any]], segments: int, k: int) -> float:
    """Expected R@k of a uniformly random ranking of ``segments`` segments."""
    n = segments
    hits = [1.0 - comb(n - q["correct_segments"], k) / comb(n, k) if n >= k else 1.0
            for q in queries]
    return float(np.mean(hits)) if hits else float("nan")


def _reused(out: Path, model: Path, split: str) -> dict[str, Any] | None:
    """An earlier run's results.json in ``out`` for the same exported model and split."""
    try:
        want = json.loads((model / "model.json").read_text())["model_hash"]
    except (OSError, ValueError, KeyError):
        return None
    return earlier_results(out, lambda r: (r["meta"]["model_hash"] == want
                                           and r["meta"]["split"] == split))


def evaluate_checkpoint(ckpt: Path, work: Path, drives: tuple[DriveSpec, ...],
                        split: str, reuse: bool = False,
                        encode_every: int = 1, out_dir: Path | None = None) -> dict[str, Any]:
    """Pooled and per-drive figures of one checkpoint. The drives are generated (once) under
    ``work``; the export and the per-drive reports go under ``out_dir`` (default ``work``)."""
    from spartan_train.bag.evaluate import BagEvalConfig, evaluate_bag
    from spartan_train.demo import DemoConfig, export_model, make_drive

    out_dir = work if out_dir is None else out_dir
    name = ckpt.name if ckpt.name not in ("best", "last") else f"{ckpt.parent.name}-{ckpt.name}"
    model = export_model(DemoConfig(checkpoint=ckpt, work=out_dir / "models" / name))
    if encode_every != 1:
        name += f" k={encode_every}"
    per_drive = {}
    free = {"asked": 0, "answerable": 0, "hits@1": 0, "hits@5": 0}
    by_question: dict[str, dict[str, int]] = {}
    for spec in drives:
        seed, sequences, frames = spec.seed, spec.sequences, spec.frames
        _, bag = make_drive(DemoConfig(checkpoint=ckpt, work=work, seed=seed,
                                       sequences=sequences, frames=frames))
        t0 = time.monotonic()
        out = out_dir / "eval" / name.replace(" ", "_") / f"seed{seed}"
        results = _reused(out, model, split) if reuse else None
        if results is None:
            results, _, _ = evaluate_bag(BagEvalConfig(
                bag=bag, model=model, split=split, out=out, progress=False, examples=4,
                encode_every=encode_every))
        r = results["retrieval"]
        queries = results["queries"]
        row: dict[str, Any] = {f"R@{k}": float(r[f"R@{k}"]) for k in KS}
        row.update({f"chance@{k}": chance_at(queries, int(r["segments"]), k) for k in KS})
        row.update(queries=len(queries), segments=int(r["segments"]),
                   seconds=round(time.monotonic() - t0, 1))
        if "free_text" in results:
            f = results["free_text"]["summary"]
            row["free_text"] = {k: f[k] for k in free}
            for k in free:
                free[k] += int(f[k])
            add_questions(by_question, results["free_text"]["questions"])
        per_drive[spec.label] = row
        print(f"  {name} seed {seed}: R@5 {row['R@5']:.3f} (chance {row['chance@5']:.3f}), "
              f"{row['queries']} queries over {row['segments']} segments", file=sys.stderr)
    weights = np.array([d["queries"] for d in per_drive.values()], dtype=float)
    pooled = {key: float(np.average([d[key] for d in per_drive.values()], weights=weights))
              for key in [f"R@{k}" for k in KS] + [f"chance@{k}" for k in KS]}
    pooled["queries"] = float(weights.sum())
    if free["answerable"]:
        pooled["free_R@1"] = free["hits@1"] / free["answerable"]
        pooled["free_R@5"] = free["hits@5"] / free["answerable"]
    return {"checkpoint": str(ckpt), "name": name, "encode_every": encode_every,
            "drives": per_drive, "pooled": pooled,
            "free_text": free, "questions": by_question}


def add_questions(tally: dict[str, dict[str, int]], questions: list[dict[str, Any]]) -> None:
    """Count, per free-text question, the drives that can answer it and its hits there."""
    for q in questions:
        row = tally.setdefault(q["text"], {"answerable": 0, "hits@1": 0, "hits@5": 0})
        if q.get("answering_segments"):
            row["answerable"] += 1
            row["hits@1"] += int(q["rank"] <= 1)
            row["hits@5"] += int(q["rank"] <= 5)


def questions_table(result: dict[str, Any], drives: int) -> str:
    """Per free-text question: on how many drives it is answerable, and how often answered."""
    lines = [f"{result['name']}: free-text questions over {drives} drive"
             f"{'' if drives == 1 else 's'}",
             "| question | answerable on (drives) | answered at rank 1 | in the top 5 |",
             "|---|---|---|---|"]
    for text, row in result["questions"].items():
        lines.append(f"| {text} | {row['answerable']} | {row['hits@1']} | {row['hits@5']} |")
    f = result["free_text"]
    if f["answerable"]:
        lines.append(f"| all | {f['answerable']} | {f['hits@1']} "
                     f"({f['hits@1'] / f['answerable']:.0%}) | {f['hits@5']} "
                     f"({f['hits@5'] / f['answerable']:.0%}) |")
    return "\n".join(lines)


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
    free = [r["free_text"] for r in results]
    if any(f["answerable"] for f in free):
        lines.append("| free text (pooled) | answered at rank 1 | " + " | ".join(
            f"{f['hits@1']} of {f['answerable']}" for f in free) + " | |")
        lines.append("| free text (pooled) | in the top 5 | " + " | ".join(
            f"{f['hits@5']} of {f['answerable']}" for f in free) + " | |")
    return "\n".join(lines)


def goal_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal with the checkpoint's pooled figure, whether it is met and by how many points it
    is over (+) or short (-); a figure the drives cannot give (no free text) is None."""
    rows = []
    for key, measure, goal in GOALS:
        value = result["pooled"].get(key)
        rows.append({"measure": measure, "goal": goal, "value": value,
                     "met": None if value is None else value >= goal,
                     "points": None if value is None else round((value - goal) * 100, 1)})
    return rows


def goals_table(goals: dict[str, list[dict[str, Any]]], drive_set: str) -> str:
    """``goal_rows`` of every checkpoint (by name) side by side; only the test drives count."""
    caveat = "" if drive_set == "test" else " (only the test drives' figures count)"
    lines = [f"goals on the {drive_set} drives{caveat}",
             "| measure | goal | " + " | ".join(goals) + " |",
             "|---|---|" + "---|" * len(goals)]
    for rows in zip(*goals.values(), strict=True):  # one goal, every checkpoint
        cells = ["-" if row["value"] is None else
                 f"{row['value']:.3f}: {'met' if row['met'] else 'missed'} "
                 f"({row['points']:+.1f} points)" for row in rows]
        lines.append(f"| {rows[0]['measure']} | >= {rows[0]['goal']:.2f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def spread_line(a: dict[str, Any], b: dict[str, Any]) -> str:
    """How far pooled R@k moves between the test set and its twin of the same size."""
    cells = [f"R@{k} {a['pooled'][f'R@{k}']:.3f} vs {b['pooled'][f'R@{k}']:.3f} "
             f"(|diff| {abs(a['pooled'][f'R@{k}'] - b['pooled'][f'R@{k}']) * 100:.1f} points)"
             for k in KS]
    return f"{a['name']}: test set vs its twin: " + "; ".join(cells)


def pooled_at(rows: list[dict[str, Any]], key: str) -> float:
    w = np.array([r["queries"] for r in rows], dtype=float)
    return float(np.average([r[key] for r in rows], weights=w))


def spread_by_size(a: dict[str, Any], b: dict[str, Any], key: str = "R@5") -> list[dict]:
    """|pooled ``key`` of the first k drives of a - of b| for every k: how big a test set must be
    for its figure to move less than 2 points when the seeds change."""
    ra, rb = list(a["drives"].values()), list(b["drives"].values())
    out = []
    for k in range(1, min(len(ra), len(rb)) + 1):
        x, y = pooled_at(ra[:k], key), pooled_at(rb[:k], key)
        out.append({"drives": k, "a": x, "b": y, "abs_diff_points": abs(x - y) * 100})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.drive_retrieval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", type=Path, help="checkpoints to compare")
    ap.add_argument("--out", type=Path, default=Path("runs/drive_retrieval"))
    ap.add_argument("--split", choices=("val", "train", "all"), default="all",
                    help="annotated windows to ask (all: every window of the unseen drives)")
    ap.add_argument("--set", dest="drive_set", choices=sorted(SETS), default="test",
                    help="protocol drives to run: test (report these), selection (choose on "
                    "these), spread (the test set's twin)")
    ap.add_argument("--spread", action="store_true",
                    help="also run the test set's twin and print how far R@k moves between them")
    ap.add_argument("--quick", action="store_true", help="only the set's first drive")
    ap.add_argument("--reuse", action="store_true",
                    help="keep a drive's earlier results.json under --out when it is for the same "
                    "exported model and split (resume an interrupted run)")
    ap.add_argument("--encode-every", default="1", metavar="K[,K...]",
                    help="also evaluate with the node encoding every K-th frame, e.g. 1,2,4")
    args = ap.parse_args(argv)
    drives = SETS[args.drive_set][:1] if args.quick else SETS[args.drive_set]
    try:
        ks = [int(k) for k in args.encode_every.split(",")]
    except ValueError:
        ap.error(f"--encode-every must be integers like 1,2,4, got {args.encode_every!r}")
    t0 = time.monotonic()
    results = [evaluate_checkpoint(c, args.out, drives, args.split, args.reuse, k)
               for c in args.checkpoints for k in ks]
    text = (f"{args.drive_set} drives (spartan_train.protocol): "
            + ", ".join(d.label for d in drives) + "\n\n" + table(results))
    text += "".join("\n\n" + questions_table(r, len(drives)) for r in results
                    if r["free_text"]["answerable"])
    goals = {r["name"]: goal_rows(r) for r in results}
    text += "\n\n" + goals_table(goals, args.drive_set)
    twins = []
    if args.spread:
        twin = SPREAD_DRIVES[:len(drives)]
        twins = [evaluate_checkpoint(c, args.out, twin, args.split, args.reuse, k)
                 for c in args.checkpoints for k in ks]
        text += "\n\n" + "\n".join(spread_line(a, b) for a, b in zip(results, twins,
                                                                        strict=True))
        for a, b in zip(results, twins, strict=True):
            text += f"\n\n{a['name']}: |R@5 difference| between the first k drives of each:\n"
            text += "\n".join(f"  k={r['drives']:>2}: {r['a']:.3f} vs {r['b']:.3f} -> "
                              f"{r['abs_diff_points']:.1f} points" for r in spread_by_size(a, b))
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"results": results, "set": args.drive_set, "twins": twins, "split": args.split,
           "goals": goals,
           "drives": [d.__dict__ for d in drives],
           "wall_s": round(time.monotonic() - t0, 1)}
    (args.out / "drive_retrieval.json").write_text(json.dumps(doc, indent=2) + "\n")
    (args.out / "drive_retrieval.md").write_text(text + "\n")
    print(f"\nwrote {args.out / 'drive_retrieval.json'} and {args.out / 'drive_retrieval.md'} "
          f"(per-query reports with pictures under {args.out / 'eval'})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
