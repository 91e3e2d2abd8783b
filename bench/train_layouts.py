"""How should one training use the 2 cores: torchrun with 2 processes of 1 thread, or one
process of 2 threads? Trains the same short run (same global batch, same steps) under each
layout, alternating them ``--repeats`` times, and prints the steady-state speed of each:

    python -m bench.train_layouts --data runs/layout-data --steps 40 --out runs/layouts

The speed is steps per second between the ``--skip``-th and the last step of log.csv (start-up,
frame caching and the first steps left out). On a machine other people are using, alternate
repeats keep the comparison side by side; the JSON keeps every run.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from bench.learning import LAYOUTS, launcher, run, wait


def train(data: Path, out: Path, layout: str, steps: int, batch: int, frames: int) -> None:
    prefix, threads = launcher(layout)
    per_proc = batch // 2 if layout == "torchrun" else batch
    cmd = prefix + ["--data", str(data), "--val-list", "none", "--init", "tiny",
                    "--mode", "corrected", "--out", str(out), "--overwrite",
                    "--max-steps", str(steps), "--schedule-steps", str(steps), "--warmup", "5",
                    "--epochs", "1000", "--batch-size", str(per_proc), "--frames", str(frames),
                    "--threads", str(threads), "--no-progress",
                    "--cache-dir", str(out.parent / "cache")]
    out.parent.mkdir(parents=True, exist_ok=True)
    wait(run(cmd, out.parent / f"{out.name}.log"), f"spartan-train ({layout})")


def steps_per_s(log_csv: Path, skip: int) -> float:
    with log_csv.open() as f:
        rows = [(int(r["step"]), float(r["seconds"])) for r in csv.DictReader(f)]
    rows = [r for r in rows if r[0] >= skip]
    if len(rows) < 2:
        raise SystemExit(f"bench.train_layouts: too few steps logged in {log_csv}")
    (s0, t0), (s1, t1) = rows[0], rows[-1]
    return (s1 - s0) / (t1 - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a generated training set")
    ap.add_argument("--out", type=Path, default=Path("runs/layouts"))
    ap.add_argument("--layouts", nargs="+", choices=LAYOUTS[:2], default=list(LAYOUTS[:2]))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--skip", type=int, default=10, help="steps left out of the speed")
    ap.add_argument("--batch-size", type=int, default=32, help="global batch")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    speeds: dict[str, list[float]] = {name: [] for name in args.layouts}
    for r in range(args.repeats):
        for name in args.layouts:
            out = args.out / f"{name}-{r}"
            train(args.data, out, name, args.steps, args.batch_size, args.frames)
            speeds[name].append(steps_per_s(out / "log.csv", args.skip))
    lines = ["| layout | steps/s (each repeat) | mean | clips/s |", "|---|---|---|---|"]
    for name, v in speeds.items():
        mean = sum(v) / len(v)
        lines.append(f"| {name} | {', '.join(f'{x:.3f}' for x in v)} | {mean:.3f} | "
                     f"{mean * args.batch_size:.1f} |")
    best = max(speeds, key=lambda n: sum(speeds[n]) / len(speeds[n]))
    text = "\n".join(lines) + f"\n\nfaster: {best}"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "layouts.json").write_text(json.dumps(
        {"speeds_steps_per_s": speeds, "faster": best, "settings": {
            k: str(v) for k, v in vars(args).items()}, "wall_s": time.monotonic() - t0},
        indent=2) + "\n")
    (args.out / "layouts.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
