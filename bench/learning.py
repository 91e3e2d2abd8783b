"""Learning benchmark: does SPARTAN learn on generated drives, and does the pose input help?

Follows the evaluation protocol (``spartan_train.protocol``, docs/evaluation.md): generates the
training set (``PAPER_TRAINING``), trains the `tiny` configuration from scratch for each variant
for the same time budget, and evaluates every variant with spartan-eval (the paper's protocol,
galleries of 100, every window of the set) on the test set (``PAPER_TEST``, the default: the
figures to report) or the selection set (``--report-set selection``: what choices are made on).
Prints one table (and writes learning.json / learning.md):

    python -m bench.learning --minutes 20 --out runs/learning

Variants: ``pose`` (the pose convention of ``--pose-convention``), ``no_pose`` (the ablation: a
constant pose window everywhere), ``pose_reference`` / ``pose_heading`` (a named convention, to
measure conventions side by side: ``--variants pose_reference pose_heading``).

``--drives selection test`` also runs the node's task (``bench.drive_retrieval``: every window of a
drive asked against that drive's memory) for every pose variant on the protocol's drives.

Cores: ``--layout torchrun`` (the default, measured faster here: docs/evaluation.md) trains each
variant with 2 processes of 1 thread under torchrun, ``threads`` with one process of 2 threads,
``side-by-side`` runs the variants at once with one thread each (the old way: one core each).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from spartan_train.protocol import DRIVES, PAPER_SELECTION, PAPER_TEST, PAPER_TRAINING, DriveSpec
from spartan_train.train.data import FRAME_SAMPLINGS

from bench.report import earlier_results
from spartan_ros.preprocess import FITS

GOALS = {"R@1": 0.60, "R@5": 0.90, "look_alike_gap": 0.15}
LAYOUTS = ("torchrun", "threads", "side-by-side")
# variant -> (pose convention, None = --pose-convention; no-pose ablation?)
VARIANTS = {"pose": (None, False), "no_pose": (None, True),
            "pose_reference": ("reference", False), "pose_heading": ("heading", False)}
REPORT_SETS = {"test": PAPER_TEST, "selection": PAPER_SELECTION}


def run(cmd: list[str], log: Path | None = None) -> subprocess.Popen:
    print("$ " + " ".join(cmd), flush=True)
    out = open(log, "w") if log else None  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if out else None)


def wait(proc: subprocess.Popen, what: str) -> None:
    if proc.wait() != 0:
        sys.exit(f"bench.learning: {what} failed (exit {proc.returncode}); see its log")


def generate(data: Path, spec: DriveSpec) -> None:
    """``spec`` generated into ``data`` on both cores, unless a complete set is there already."""
    from spartan_train.data.synth.generate import GenConfig, ensure_dataset

    cfg = GenConfig(out=str(data), seed=spec.seed, sequences=spec.sequences, frames=spec.frames,
                    workers=2)
    if ensure_dataset(cfg) is None:
        print(f"using the generated set in {data}")


def data_spec(data: Path) -> DriveSpec:
    """The generated set in ``data`` as seed, sequences and frames (from its dataset.json)."""
    config = json.loads((data / "meta" / "dataset.json").read_text("utf-8"))["config"]
    return DriveSpec(int(config["seed"]), int(config["sequences"]), int(config["frames"]))


def every_window_list(data: Path) -> Path:
    """``<data>/config/all.txt``: the train and val lists of a set only evaluated on."""
    out = data / "config" / "all.txt"
    if not out.exists():
        text = "".join((data / "config" / f"{p}.txt").read_text("utf-8") for p in ("train", "val"))
        out.write_text(text, "utf-8")
    return out


def launcher(layout: str, procs_ok: bool = True) -> tuple[list[str], int]:
    """(command prefix, threads per process) of a training under ``layout``."""
    if layout == "torchrun" and procs_ok:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2", "-m", "spartan_train.train.trainer"], 1
    if layout == "threads":
        return [sys.executable, "-m", "spartan_train.train.trainer"], 2
    return [sys.executable, "-m", "spartan_train.train.trainer"], 1


def schedule_flags(args: argparse.Namespace) -> list[str]:
    """The cosine's length: ``--schedule-steps`` when given, else the budget's (the steps of
    ``--steps``, or the minutes of ``--minutes`` on the trainer's clock, so the cosine ends with
    the budget however fast the machine runs)."""
    if args.schedule_steps:
        return ["--schedule-steps", str(args.schedule_steps)]
    if args.steps:
        return ["--schedule-steps", str(args.steps)]
    return ["--schedule", "clock"]


def train_cmd(data: Path, out: Path, variant: str, args) -> list[str]:
    convention, no_pose = VARIANTS[variant]
    prefix, threads = launcher(args.layout)
    # Under torchrun the batch is per process: keep the global batch the same.
    batch = args.batch_size // 2 if args.layout == "torchrun" else args.batch_size
    cmd = prefix + ["--data", str(data), "--val-list", "none",
                    "--init", "tiny", "--mode", "corrected",
                    "--pose-convention", convention or args.pose_convention,
                    "--out", str(out), "--overwrite",
                    *(["--max-steps", str(args.steps)] if args.steps
                      else ["--max-minutes", str(args.minutes)]),
                    "--epochs", str(args.epochs), "--batch-size", str(batch),
                    "--frames", str(args.frames), "--frame-sampling", args.frame_sampling,
                    "--threads", str(threads), "--no-progress",
                    "--warmup", str(args.warmup), *schedule_flags(args),
                    "--cache-dir", str(out.parent / "cache"), "--seed", str(args.seed)]
    given = (("--lr", args.lr), ("--wd", args.wd), ("--logit-scale", args.logit_scale),
             ("--caption-drop", args.caption_drop), ("--shift", args.shift),
             ("--word-loss", args.word_loss))
    for flag, value in given:  # the trainer's own defaults unless given
        if value is not None:
            cmd += [flag, str(value)]
    if args.word_sides:
        cmd += ["--word-sides"]
    if args.own_motion:
        cmd += ["--own-motion", str(args.own_motion)]
    if args.pose_weight is not None:
        cmd += ["--pose-weight", str(args.pose_weight)]
    if args.drive_group > 1:
        cmd += ["--drive-group", str(args.drive_group)]
    if args.look_alike > 1:
        cmd += ["--look-alike", str(args.look_alike)]
    sizes = (("--image-resolution", args.image_resolution), ("--patch-size", args.patch_size),
             ("--image-fit", args.image_fit), ("--width", args.width), ("--layers", args.layers))
    for flag, value in sizes:  # the fresh model's shape: tiny's own unless given
        if value:
            cmd += [flag, str(value)]
    return cmd + (["--no-pose"] if no_pose else [])


def evaluate(ckpt: Path, data: Path, out: Path, no_pose: bool, reuse: bool = False) -> dict:
    """spartan-eval's figures of ``ckpt`` on every window of ``data`` (with ``reuse``, an
    earlier results.json of the same checkpoint and data is read instead)."""
    variant = "no_pose" if no_pose else "pose"
    if not (reuse and _evaluated(ckpt, data, out, variant)):
        cmd = [sys.executable, "-m", "spartan_train.evaluate.run", "--checkpoint", str(ckpt),
               "--data", str(data), "--list", str(every_window_list(data)), "--out", str(out),
               "--no-progress"]
        wait(run(cmd + (["--no-pose"] if no_pose else [])), "spartan-eval")
    results = json.loads((out / "results.json").read_text())
    # the set's own ceilings (the same for every model) travel with the model's figures
    return results["variants"][variant] | {
        "ceilings": results["meta"].get("same_motion_ceiling_R@1", {})}


def _evaluated(ckpt: Path, data: Path, out: Path, variant: str) -> bool:
    from spartan_train.model.checkpoint import sha256

    # The checkpoint is hashed only when an earlier results.json is there to compare with.
    return earlier_results(out, lambda r: (
        variant in r["variants"] and Path(r["meta"]["data"]).resolve() == data.resolve()
        and r["meta"]["checkpoint_sha256"] == sha256(ckpt))) is not None


def figures(v: dict) -> dict:
    t2v = v["paper"]["t2v"]["averaged"]
    look = v.get("groups", {}).get("look_group", {}).get("t2v", {})
    traj = v.get("trajectory", {}).get("paper", {})
    return {
        "R@1": t2v["R@1"]["mean"], "R@5": t2v["R@5"]["mean"], "R@10": t2v["R@10"]["mean"],
        "median_rank": t2v["median_rank"]["mean"], "n": v["n"],
        "look_alike_R@1": look.get("R@1"),
        "look_alike_ceiling": v.get("ceilings", {}).get("look_group"),
        "ape_m": traj.get("ape_mean_m"), "ape_pct_path": traj.get("ape_pct_path"),
        "rpe_deg": traj.get("rpe_mean_deg"),
    }


def pose_variant(rows: dict[str, dict], convention: str = "heading") -> str:
    """The variant the goals are read from: ``pose``, else the one of the default convention,
    else the first."""
    for name in ("pose", f"pose_{convention}"):
        if name in rows:
            return name
    return next(iter(rows))


def table(rows: dict[str, dict], budget: str, layout: str, report_set: str,
          spec: DriveSpec, convention: str = "heading",
          training: DriveSpec = PAPER_TRAINING) -> str:
    names = list(rows)
    pose_name = pose_variant(rows, convention)
    pose = rows[pose_name]

    def cells(key: str, fmt: str = "{:.3f}") -> str:
        return " | ".join("" if rows[n].get(key) is None else fmt.format(rows[n][key])
                          for n in names)

    def ok(met: bool) -> str:
        return "yes" if met else "no"

    lines = [
        "| measure | " + " | ".join(names) + " | goal | met? |",
        "|---|" + "---|" * (len(names) + 2),
        f"| R@1, text+pose -> video, galleries of 100 | {cells('R@1')} | >= {GOALS['R@1']} | "
        f"{ok(pose['R@1'] >= GOALS['R@1'])} ({pose['R@1'] - GOALS['R@1']:+.3f}) |",
        f"| R@5 | {cells('R@5')} | >= {GOALS['R@5']} | "
        f"{ok(pose['R@5'] >= GOALS['R@5'])} ({pose['R@5'] - GOALS['R@5']:+.3f}) |",
        f"| R@10 | {cells('R@10')} | | |",
        f"| median rank | {cells('median_rank', '{:.1f}')} | | |",
        f"| R@1 within look-alike groups (same place, other motion) | {cells('look_alike_R@1')} "
        "| " + _gap_cells(rows, pose_name),
        "| the most any model can get there (clips that move the same are a draw) "
        f"| {cells('look_alike_ceiling')} | | |",
        f"| APE of top-1 (m) | {cells('ape_m', '{:.2f}')} | | |",
        f"| RPE of top-1 (deg) | {cells('rpe_deg', '{:.2f}')} | | |",
        f"| training steps | {cells('steps', '{:d}')} | | |",
    ]
    head = (f"tiny model from scratch, {budget} per model ({layout}), trained on "
            f"{training.label}; {report_set} set {spec.label}, {pose['n']} clips; "
            f"goals read from {pose_name}")
    return head + "\n\n" + "\n".join(lines)


def _gap_cells(rows: dict[str, dict], pose_name: str = "pose") -> str:
    if pose_name not in rows or "no_pose" not in rows or pose_name == "no_pose":
        return " | |"
    gap = ((rows[pose_name]["look_alike_R@1"] or 0.0)
           - (rows["no_pose"]["look_alike_R@1"] or 0.0))
    met = gap >= GOALS["look_alike_gap"]
    return (f"pose ahead of no_pose by >= {GOALS['look_alike_gap']:.2f} | "
            f"{'yes' if met else 'no'} ({gap:+.3f}) |")


def within_drive(runs: dict[str, Path], drives: tuple[DriveSpec, ...], work: Path,
                 out: Path) -> dict[str, dict]:
    """bench.drive_retrieval on every pose variant's last checkpoint: the drives are kept in
    ``work``, the reports go to ``out``. The node always fuses the drive's own motion, so the
    no-pose ablation has no within-drive figure."""
    from bench.drive_retrieval import evaluate_checkpoint

    rows = {}
    for name, run_dir in runs.items():
        if VARIANTS[name][1]:
            continue
        r = evaluate_checkpoint(run_dir / "last", work, drives, "all", reuse=True, out_dir=out)
        rows[name] = {**r["pooled"], "free_text": r["free_text"]}
    return rows


def drives_table(rows: dict[str, dict], drive_set: str) -> str:
    """Within-drive figures of each pose variant, side by side."""
    names = list(rows)
    specs = DRIVES[drive_set]

    def cells(key: str) -> str:
        return " | ".join(f"{rows[n][key]:.3f}" for n in names)

    def free(n: str) -> str:
        f = rows[n]["free_text"]
        return f"{f['hits@1']} of {f['answerable']}" if f["answerable"] else "none answerable"

    first = rows[names[0]]
    lines = [f"within-drive retrieval (the node's task) on the {drive_set} drives: "
             f"{len(specs)} drives, {int(first['queries'])} queries", "",
             "| measure | " + " | ".join(names) + " | random ranking |",
             "|---|" + "---|" * (len(names) + 1)]
    lines += [f"| R@{k} | {cells(f'R@{k}')} | {first[f'chance@{k}']:.3f} |" for k in (1, 5, 10)]
    lines.append("| free text answered at rank 1 | " + " | ".join(free(n) for n in names)
                 + " | |")
    return "\n".join(lines)


def steps_of(ckpt: Path) -> int | None:
    try:
        return int(json.loads((ckpt / "train_meta.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/learning")
    ap.add_argument("--data", default=None, help="training set (default OUT/data)")
    ap.add_argument("--minutes", type=float, default=20.0, help="training budget per model")
    ap.add_argument("--steps", type=int, default=None,
                    help="budget in steps instead of minutes (fair on a machine others load)")
    ap.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["pose", "no_pose"])
    ap.add_argument("--report-set", nargs="+", choices=sorted(REPORT_SETS), default=["test"],
                    help="evaluate on the test set (report), the selection set (choose), or "
                         "both (each its own table)")
    ap.add_argument("--reuse", action="store_true",
                    help="keep a variant already trained in OUT, and its evaluations of the same "
                         "checkpoint and data")
    ap.add_argument("--layout", choices=LAYOUTS, default="torchrun",
                    help="how each training uses the 2 cores")
    ap.add_argument("--pose-convention", choices=("heading", "reference"), default="heading")
    ap.add_argument("--frames", type=int, default=2,
                    help="frames per clip in training (2: 1.2 to 2 times the steps of 4 in "
                         "the budget, by the machine's load; 4 measured no better)")
    ap.add_argument("--frame-sampling", choices=FRAME_SAMPLINGS, default="segments",
                    help="how training draws a clip's frames (spartan-train --frame-sampling; "
                         "segments: they always span the clip; random: the reference's any K)")
    ap.add_argument("--warmup", type=int, default=50, help="warm-up steps")
    ap.add_argument("--schedule-steps", type=int, default=None,
                    help="cosine schedule length in steps (default: it ends with the budget, "
                         "the minutes of --minutes or the steps of --steps)")
    ap.add_argument("--epochs", type=int, default=1000, help="upper bound; time budget rules")
    ap.add_argument("--batch-size", type=int, default=32, help="global batch")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--wd", type=float, default=None,
                    help="AdamW weight decay (default: the trainer's)")
    ap.add_argument("--logit-scale", type=float, default=None,
                    help="initial logit_scale (default: the trainer's, ln 100 as the reference)")
    ap.add_argument("--caption-drop", type=float, default=None, metavar="P",
                    help="drop each caption sentence but the first with probability P in "
                         "training (default: the trainer's, none)")
    ap.add_argument("--shift", type=int, default=None, metavar="PX",
                    help="move training frames by up to PX pixels (default: the trainer's, none)")
    ap.add_argument("--word-loss", type=float, default=None, metavar="W",
                    help="weight of the caption-word term (default: the trainer's, off)")
    ap.add_argument("--word-sides", action="store_true",
                    help="with --word-loss: words carry the side their sentence names")
    ap.add_argument("--own-motion", type=float, default=0.0, help="weight of the own-motion term")
    ap.add_argument("--pose-weight", type=float, default=None,
                    help="weight of each pose term (default: the trainer's, SPARTAN's 0.01)")
    ap.add_argument("--drive-group", type=int, default=1, help="windows per drive in a batch")
    ap.add_argument("--look-alike", type=int, default=2,
                    help="look-alike windows of different drives grouped in a batch (1: random "
                         "batches, as the reference)")
    ap.add_argument("--image-resolution", type=int, default=None, metavar="PX",
                    help="input side in pixels (default: tiny's 64)")
    ap.add_argument("--patch-size", type=int, default=None, metavar="PX",
                    help="vision patch side (default: tiny's 8; 12 at 96 px keeps the 8x8 grid)")
    ap.add_argument("--image-fit", choices=FITS, default="squash",
                    help="how frames become square (default: squash, the whole frame, chosen on "
                         "the selection set; crop is the reference's centre square)")
    ap.add_argument("--width", type=int, default=None, metavar="W",
                    help="width of both towers (default: tiny's 128; a multiple of 64)")
    ap.add_argument("--layers", type=int, default=None, metavar="N",
                    help="layers of both towers (default: tiny's 4)")
    ap.add_argument("--seed", type=int, default=0, help="training seed (not the data's)")
    ap.add_argument("--drives", nargs="+", choices=sorted(DRIVES), default=[],
                    help="also run the node's task (bench.drive_retrieval: every window of a "
                         "drive against that drive's memory) on these protocol drives")
    ap.add_argument("--drives-work", default="runs/drive_retrieval",
                    help="where the protocol drives are generated once and kept (shared with "
                         "make bench-drives)")
    return ap


def train(data: Path, out: Path, runs: dict[str, Path], args: argparse.Namespace) -> None:
    """Train each variant of ``runs`` for the budget (one after another, or side by side)."""
    first = next(iter(runs))
    # Decode the frames into the shared cache first, so no variant spends its budget on it.
    cache = train_cmd(data, out / "cache-fill", first, args)
    cache = [sys.executable, "-m", "spartan_train.train.trainer"] + cache[cache.index("--data"):]
    wait(run(cache + ["--cache-only"], out / "cache-fill.log"), "spartan-train --cache-only")
    if args.layout == "side-by-side":
        procs = [run(train_cmd(data, runs[n], n, args), out / f"train_{n}.log") for n in runs]
        for p, name in zip(procs, runs, strict=True):
            wait(p, f"spartan-train ({name})")
        return
    for name in runs:
        wait(run(train_cmd(data, runs[name], name, args), out / f"train_{name}.log"),
             f"spartan-train ({name})")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    held = {name: out.parent / f"synth-{name}-s{REPORT_SETS[name].seed}"
            for name in args.report_set}
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    generate(data, PAPER_TRAINING)
    trained_on = data_spec(data)  # --data may name another set than the protocol's
    for name, path in held.items():
        generate(path, REPORT_SETS[name])
    runs = {name: out / name for name in args.variants}
    todo = [n for n in runs
            if not (args.reuse and (runs[n] / "last" / "model.safetensors").exists())]
    for name in set(runs) - set(todo):
        print(f"reusing the trained {name} in {runs[name]}")
    if todo:
        train(data, out, {n: runs[n] for n in todo}, args)
    budget = f"{args.steps} steps" if args.steps else f"{args.minutes:g} min"
    sets, texts = {}, []
    for set_name, path in held.items():
        rows = {}
        for name in runs:
            no_pose = VARIANTS[name][1]
            row = figures(evaluate(runs[name] / "last", path, runs[name] / f"eval-{set_name}",
                                   no_pose, args.reuse))
            row["steps"] = steps_of(runs[name] / "last")
            rows[name] = row
        texts.append(table(rows, budget, args.layout, set_name, REPORT_SETS[set_name],
                           args.pose_convention, trained_on))
        sets[set_name] = {"variants": rows, "report_data": REPORT_SETS[set_name].__dict__}
    drive_rows = {}
    for drive_set in args.drives:
        drive_rows[drive_set] = within_drive(runs, DRIVES[drive_set], Path(args.drives_work),
                                             out / f"drives-{drive_set}")
        if drive_rows[drive_set]:
            texts.append(drives_table(drive_rows[drive_set], drive_set))
    text = "\n\n".join(texts)
    print("\n" + text)
    first = sets[args.report_set[0]]
    result = {"variants": first["variants"], "goals": GOALS, "minutes": args.minutes,
              "report_set": args.report_set[0], "report_data": first["report_data"],
              "sets": sets, "within_drive": drive_rows, "training_data": trained_on.__dict__,
              "wall_s": time.monotonic() - t0, "settings": vars(args),
              "schedule": " ".join(schedule_flags(args))}
    (out / "learning.json").write_text(json.dumps(result, indent=2))
    (out / "learning.md").write_text(text + "\n")
    print(f"\nwrote {out / 'learning.json'} and {out / 'learning.md'} "
          f"({(time.monotonic() - t0) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
