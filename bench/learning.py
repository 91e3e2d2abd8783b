"""Learning benchmark: does SPARTAN learn on generated drives, and does the pose input help?

Generates a synthetic set, trains the `tiny` configuration from scratch twice on this CPU — with
pose, and the no-pose ablation (a constant pose window everywhere) — for the same time budget,
evaluates both with spartan-eval and prints one table (and writes learning.json):

    python -m bench.learning --minutes 20 --out runs/learning

The two trainings run side by side, one CPU thread each, so both get the same compute.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

GOALS = {"R@1": 0.60, "R@5": 0.90, "look_alike_gap": 0.15}


def run(cmd: list[str], log: Path | None = None) -> subprocess.Popen:
    print("$ " + " ".join(cmd), flush=True)
    out = open(log, "w") if log else None  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if out else None)


def wait(proc: subprocess.Popen, what: str) -> None:
    if proc.wait() != 0:
        sys.exit(f"bench.learning: {what} failed (exit {proc.returncode}); see its log")


def generate(data: Path, sequences: int, frames: int, seed: int) -> None:
    if (data / "meta" / "dataset.json").exists():
        print(f"using the generated set in {data}")
        return
    wait(run([sys.executable, "-m", "spartan_train.data.synth.generate", "--out", str(data),
              "--seed", str(seed), "--sequences", str(sequences), "--frames", str(frames),
              "--workers", "2"]), "spartan-synth")


def train_cmd(data: Path, out: Path, minutes: float, no_pose: bool, args) -> list[str]:
    cmd = [sys.executable, "-m", "spartan_train.train.trainer", "--data", str(data),
           "--init", "tiny", "--mode", "corrected", "--pose-convention", "heading",
           "--out", str(out), "--overwrite", "--max-minutes", str(minutes),
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--frames", str(args.frames), "--threads", "1", "--no-progress",
           "--warmup", str(args.warmup), "--schedule-steps", str(args.schedule_steps),
           "--cache-dir", str(out.parent / "cache")]
    if args.lr is not None:
        cmd += ["--lr", str(args.lr)]
    return cmd + (["--no-pose"] if no_pose else [])


def evaluate(ckpt: Path, data: Path, out: Path, no_pose: bool) -> dict:
    cmd = [sys.executable, "-m", "spartan_train.evaluate.run", "--checkpoint", str(ckpt),
           "--data", str(data), "--out", str(out), "--no-progress"]
    wait(run(cmd + (["--no-pose"] if no_pose else [])), "spartan-eval")
    variants = json.loads((out / "results.json").read_text())["variants"]
    return variants["no_pose" if no_pose else "pose"]


def figures(v: dict) -> dict:
    t2v = v["paper"]["t2v"]["averaged"]
    look = v.get("groups", {}).get("look_group", {}).get("t2v", {})
    traj = v.get("trajectory", {}).get("paper", {})
    return {
        "R@1": t2v["R@1"]["mean"], "R@5": t2v["R@5"]["mean"], "R@10": t2v["R@10"]["mean"],
        "median_rank": t2v["median_rank"]["mean"], "n": v["n"],
        "look_alike_R@1": look.get("R@1"),
        "ape_m": traj.get("ape_mean_m"), "ape_pct_path": traj.get("ape_pct_path"),
        "rpe_deg": traj.get("rpe_mean_deg"),
    }


def table(pose: dict, nopose: dict, minutes: float) -> str:
    gap = (pose["look_alike_R@1"] or 0.0) - (nopose["look_alike_R@1"] or 0.0)

    def ok(met: bool) -> str:
        return "yes" if met else "no"

    rows = [
        "| measure | with pose | no-pose ablation | goal | met? |",
        "|---|---|---|---|---|",
        f"| val R@1, text+pose -> video, galleries of 100 | {pose['R@1']:.3f} | "
        f"{nopose['R@1']:.3f} | >= {GOALS['R@1']} | {ok(pose['R@1'] >= GOALS['R@1'])} |",
        f"| val R@5, galleries of 100 | {pose['R@5']:.3f} | {nopose['R@5']:.3f} | "
        f">= {GOALS['R@5']} | {ok(pose['R@5'] >= GOALS['R@5'])} |",
        f"| val R@10 / median rank | {pose['R@10']:.3f} / {pose['median_rank']:.1f} | "
        f"{nopose['R@10']:.3f} / {nopose['median_rank']:.1f} | | |",
        f"| R@1 within look-alike groups (same place, other motion) | "
        f"{pose['look_alike_R@1']:.3f} | {nopose['look_alike_R@1']:.3f} | pose ahead by >= "
        f"{GOALS['look_alike_gap']:.2f} | {ok(gap >= GOALS['look_alike_gap'])} ({gap:+.3f}) |",
        f"| APE of top-1 (m, % of path) | {pose['ape_m']:.2f} m, {pose['ape_pct_path']:.0f}% | "
        f"{nopose['ape_m']:.2f} m, {nopose['ape_pct_path']:.0f}% | | |",
        f"| RPE of top-1 (deg) | {pose['rpe_deg']:.2f} | {nopose['rpe_deg']:.2f} | | |",
    ]
    head = (f"tiny model from scratch, {minutes:g} min of one CPU core per model, "
            f"{pose['n']} val clips")
    return head + "\n\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/learning")
    ap.add_argument("--data", default=None, help="generated set (default OUT/data)")
    ap.add_argument("--minutes", type=float, default=20.0, help="training budget per model")
    ap.add_argument("--sequences", type=int, default=40)
    ap.add_argument("--frames", type=int, default=4, help="frames per clip in training")
    ap.add_argument("--warmup", type=int, default=50, help="warm-up steps")
    ap.add_argument("--schedule-steps", type=int, default=650,
                    help="cosine schedule length: about the steps one core makes in the budget")
    ap.add_argument("--seq-frames", type=int, default=400, help="frames per generated drive")
    ap.add_argument("--epochs", type=int, default=1000, help="upper bound; time budget rules")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    generate(data, args.sequences, args.seq_frames, args.seed)
    runs = {"pose": out / "pose", "no_pose": out / "no_pose"}
    procs = [run(train_cmd(data, runs[name], args.minutes, name == "no_pose", args),
                 out / f"train_{name}.log") for name in runs]
    for p, name in zip(procs, runs, strict=True):
        wait(p, f"spartan-train ({name})")
    pose = figures(evaluate(runs["pose"] / "last", data, runs["pose"] / "eval", False))
    nopose = figures(evaluate(runs["no_pose"] / "last", data, runs["no_pose"] / "eval", True))
    text = table(pose, nopose, args.minutes)
    print("\n" + text)
    result = {"pose": pose, "no_pose": nopose, "goals": GOALS, "minutes": args.minutes,
              "wall_s": time.monotonic() - t0, "settings": vars(args)}
    (out / "learning.json").write_text(json.dumps(result, indent=2))
    (out / "learning.md").write_text(text + "\n")
    print(f"\nwrote {out / 'learning.json'} and {out / 'learning.md'} "
          f"({(time.monotonic() - t0) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
