"""Path-picks benchmark: does a planner's path pick the right one of two look-alike drives?

A family of generated drives starts at one place of one town in one weather; its members part at
the first intersection (one turns left, one goes straight, one turns right), so their first frames
look alike while they move differently. A planner asks the memory with a text and the path it
means (positions and headings, no stamps). This benchmark stores every drive of a protocol drive
set in one memory (``MemoryService`` with the exported checkpoint, no ROS) and, for every two
members of a family that part and every window start from the window that holds the parting on,
asks with a text that fits both drives and each drive's own recorded path. A *pick* is that
drive's segment at that start ranking above the other drive's segment at the same start:

    python -m bench.path_picks assets/models/tiny-synth runs/ft/best --set selection --out DIR

``--set selection`` holds the drives models are chosen on, ``--set test`` the ones to report
(``spartan_train.protocol.PATH_PICK_DRIVES``). "approach/turn" counts windows that start while the
two drives are still together (their first frames look alike), "after" the windows that start
once they have parted. "text alone" asks the same text without a path (each segment scored with
its own recorded motion): one of the two segments ranks first whichever drive is meant, so it
picks exactly half: the line to beat. "both ways" counts the window starts where each drive's
path picks its own drive, which the text alone never does.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from spartan_train.protocol import PATH_PICK_DRIVES, DriveSpec

from spartan_ros.memory.service import MemoryService, ServiceConfig
from spartan_ros.memory.store import Segment, SegmentStore
from spartan_ros.query import Query, QueryError

PART_M = 2.0  # drives more than this far apart (about half a lane) have taken different ways
FIRST_STAMP_NS = 1_700_000_000_000_000_000
SEQUENCE_GAP_NS = 100_000_000_000  # each sequence 100 s after the one before: its own time span
QUICK_DRIVE = (4, 80)  # --quick: one family (4 sequences) of 80 frames of the set's first seed
# approach/turn: windows that start while the two drives are still together (their first frames
# look alike); after: windows that start at or after the frame where they part
PHASES = ("approach/turn", "after")


@dataclass(frozen=True)
class Pair:
    """Two drives of one family, town and weather (of the drive set ``seed``) that part at frame
    ``parting``."""

    seed: int
    family: int
    a: str
    b: str
    parting: int
    text: str


@dataclass
class Memory:
    """One drive set's sequences stored in one memory: ``places[segment id]`` is its (sequence,
    start frame), ``ids`` the other way round."""

    service: MemoryService
    store: SegmentStore
    places: dict[int, tuple[str, int]]
    ids: dict[tuple[str, int], int] = field(init=False)

    def __post_init__(self) -> None:
        self.ids = {place: seg_id for seg_id, place in self.places.items()}


# -- the drives -----------------------------------------------------------------------------------

def make_drives(spec: DriveSpec, work: Path) -> Path:
    """The drive set's dataset root under ``work``, generated (one process) unless already there."""
    from spartan_train.data.synth.generate import GenConfig, ensure_dataset

    root = work / "drives" / f"seed{spec.seed}-{spec.sequences}x{spec.frames}"
    t0 = time.monotonic()
    if ensure_dataset(GenConfig(out=str(root), seed=spec.seed, sequences=spec.sequences,
                                frames=spec.frames), progress=False) is not None:
        print(f"  generated {spec.label} in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return root


def family_text(meta: dict[str, Any]) -> str:
    """A text that fits every frame of a family: the town's look and the weather, in the
    generator's own first wording. It names nothing the two drives do not share (no turn, no
    thing in view), so it cannot tell them apart and any pick comes from the path."""
    from spartan_train.data.synth.captions import SCENE, WEATHER_PHRASE

    return f"{SCENE[meta['town_style']][0]} {WEATHER_PHRASE[meta['weather']][0]}"


def parting_frame(a: np.ndarray, b: np.ndarray) -> int | None:
    """First frame where two drives' positions are more than PART_M apart; None if never."""
    apart = np.linalg.norm(a[:, 1:3] - b[:, 1:3], axis=1) > PART_M
    return int(np.argmax(apart)) if apart.any() else None


def lookalike_pairs(root: Path, seed: int) -> tuple[list[Pair], list[tuple[str, str]]]:
    """Pairs of same-family, same-town, same-weather drives that part, and those that never
    part within the recorded frames (e.g. both wait at a red light to the end)."""
    seqs = json.loads((root / "meta" / "dataset.json").read_text())["sequences"]
    meta = {s: json.loads((root / "meta" / f"{s}.json").read_text()) for s in seqs}
    poses = {s: np.load(root / "poses" / f"{s}_poses.npy") for s in seqs}
    pairs, together = [], []
    for a, b in itertools.combinations(seqs, 2):
        key = ("family", "town", "weather")
        if any(meta[a][k] != meta[b][k] for k in key):
            continue
        parting = parting_frame(poses[a], poses[b])
        if parting is None:
            together.append((a, b))
        else:
            pairs.append(Pair(seed, meta[a]["family"], a, b, parting, family_text(meta[a])))
    return pairs, together


# -- the memory -----------------------------------------------------------------------------------

def store_drives(engine: Any, root: Path) -> Memory:
    """Every sequence of ``root`` ingested by a MemoryService, each in its own time span."""
    from PIL import Image

    store = SegmentStore(None, engine.model_hash, engine.embed_dim, head=engine.fusion_head)
    # The clock jumps between sequences on purpose: the service's warnings about it are no news.
    quiet = logging.getLogger("bench.path_picks.memory")
    quiet.setLevel(logging.ERROR)
    svc = MemoryService(engine, store, ServiceConfig(), log=quiet)
    frame_ns = int(1e9 / svc.config.sample_rate_hz)
    seqs = json.loads((root / "meta" / "dataset.json").read_text())["sequences"]
    places: dict[int, tuple[str, int]] = {}
    for k, seq in enumerate(seqs):
        start = FIRST_STAMP_NS + k * SEQUENCE_GAP_NS
        poses = np.load(root / "poses" / f"{seq}_poses.npy")
        # A jump of the clock is believed from its second sample on: the first pose goes twice,
        # so the first frame has its own pose rather than the next one's.
        svc.add_odometry(start, poses[0, 1:4], poses[0, 4:8], "map")
        for i, row in enumerate(poses):
            stamp = start + i * frame_ns
            svc.add_odometry(stamp, row[1:4], row[4:8], "map")
            with Image.open(root / "images" / seq / f"{i:06d}.png") as image:
                svc.add_frame(stamp, np.asarray(image.convert("RGB")))
            svc.process()
        svc.flush()
        new = [seg_id for seg_id in store.all_ids() if seg_id not in places]
        for seg in store.get_many(new):
            places[int(seg.id or 0)] = (seq, (seg.start_ns - start) // frame_ns)
    return Memory(svc, store, places)


def planner_path(seg: Segment) -> tuple[np.ndarray, float]:
    """The segment's recorded path as a planner sends it (positions and headings, every stamp
    zero) and the speed to time it at (the segment's mean speed)."""
    path = seg.poses.copy()
    path[:, 0] = 0.0
    return path, seg.path_length / ((seg.end_ns - seg.start_ns) * 1e-9)


def ranks(memory: Memory, query: Query) -> dict[tuple[str, int], int]:
    """Rank of every stored segment for ``query`` (0 = best), by (sequence, start frame)."""
    top = Query(query.text, top_k=len(memory.store), trajectory=query.trajectory,
                trajectory_speed=query.trajectory_speed)
    found = {}
    for rank, match in enumerate(memory.service.query(top).matches):
        found[memory.places[match.id]] = rank
    return found


# -- the comparisons ------------------------------------------------------------------------------

def window_starts(memory: Memory, pair: Pair, window: int) -> Iterator[int]:
    """Starts where both drives have a segment that holds the parting frame or comes after it:
    a window that ends before the drives part holds the same drive twice."""
    for seq, start in sorted(memory.ids):
        if seq == pair.a and (pair.b, start) in memory.ids and start + window > pair.parting:
            yield start


def compare_pair(memory: Memory, pair: Pair, window: int) -> list[dict[str, Any]]:
    """One row per window start and direction (each drive's path against the other drive)."""
    by_text = ranks(memory, Query(pair.text))
    rows = []
    for start in window_starts(memory, pair, window):
        for drive, other in ((pair.a, pair.b), (pair.b, pair.a)):
            seg = memory.store.get(memory.ids[(drive, start)])
            assert seg is not None
            path, speed = planner_path(seg)
            row = {"seed": pair.seed, "drive": drive, "other": other, "start": start,
                   "parting": pair.parting, "phase": PHASES[start >= pair.parting],
                   "text_pick": by_text[(drive, start)] < by_text[(other, start)]}
            try:
                got = ranks(memory, Query(pair.text, trajectory=path, trajectory_speed=speed))
            except QueryError as exc:  # standing still the whole window: there is no path
                row.update(path_pick=None, skipped=str(exc))
            else:
                row.update(path_pick=got[(drive, start)] < got[(other, start)],
                           rank=got[(drive, start)], other_rank=got[(other, start)])
            rows.append(row)
    return rows


def tally(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Picks / comparisons, all and per phase; "both_ways" over window starts (pairs of rows)."""
    out = {}
    for phase in ("all", *PHASES):
        sel = [r for r in rows if r["path_pick"] is not None
               and phase in ("all", r["phase"])]
        starts: dict[tuple[Any, ...], list[bool]] = {}
        for r in sel:
            key = (r["seed"], *sorted((r["drive"], r["other"])), r["start"])
            starts.setdefault(key, []).append(bool(r["path_pick"]))
        asked_both = [v for v in starts.values() if len(v) == 2]
        out[phase] = {"comparisons": len(sel),
                      "path_picks": sum(bool(r["path_pick"]) for r in sel),
                      "text_picks": sum(bool(r["text_pick"]) for r in sel),
                      "window_starts": len(asked_both),
                      "both_ways": sum(all(v) for v in asked_both)}
    out["all"]["skipped"] = sum(r["path_pick"] is None for r in rows)
    return out


# -- one checkpoint, the table, the command -------------------------------------------------------

def checkpoint_name(ckpt: Path) -> str:
    """A short name for the table: runs/x/best -> x-best."""
    return ckpt.name if ckpt.name not in ("best", "last") else f"{ckpt.parent.name}-{ckpt.name}"


def evaluate_checkpoint(ckpt: Path, drives: tuple[DriveSpec, ...], out: Path,
                        threads: int = 1) -> dict[str, Any]:
    """Every comparison of the drive set for one checkpoint, counted per drive and pooled."""
    from spartan_train.demo import DemoConfig, export_model

    from spartan_ros.runtime.engine import Engine

    name = checkpoint_name(ckpt)
    model = export_model(DemoConfig(checkpoint=ckpt, work=out / "models" / name))
    engine = Engine(model, providers=("cpu",), threads=threads, text_threads=threads,
                    spinning=False)
    window = ServiceConfig().window_frames
    per_drive, rows = {}, []
    for spec in drives:
        t0 = time.monotonic()
        root = make_drives(spec, out)
        pairs, together = lookalike_pairs(root, spec.seed)
        memory = store_drives(engine, root)
        drive_rows = [row for pair in pairs for row in compare_pair(memory, pair, window)]
        counts = tally(drive_rows)
        per_drive[spec.label] = {
            "counts": counts, "segments": len(memory.store),
            "pairs": [{"a": p.a, "b": p.b, "family": p.family, "parting": p.parting,
                       "text": p.text} for p in pairs],
            "never_part": [list(p) for p in together],
            "seconds": round(time.monotonic() - t0, 1)}
        rows += drive_rows
        c = counts["all"]
        print(f"  {name} {spec.label}: path picks {c['path_picks']} of {c['comparisons']}, "
              f"{len(pairs)} pairs, {per_drive[spec.label]['seconds']:.0f} s", file=sys.stderr)
    return {"checkpoint": str(ckpt), "name": name, "model_hash": engine.model_hash,
            "drives": per_drive, "pooled": tally(rows), "rows": rows}


def share(picks: int, of: int) -> str:
    return f"{picks} of {of} ({picks / of:.1%})" if of else "- of 0"


def table(results: list[dict[str, Any]]) -> str:
    """Checkpoints side by side: path picks, the text alone, both ways; pooled, per phase and per
    drive."""
    lines = ["| window starts | measure | " + " | ".join(r["name"] for r in results) + " |",
             "|---|---|" + "---|" * len(results)]

    def add(label: str, counts: list[dict[str, int]]) -> None:
        lines.append(f"| {label} | path picks | "
                     + " | ".join(share(c["path_picks"], c["comparisons"]) for c in counts) + " |")
        lines.append(f"| {label} | text alone | "
                     + " | ".join(share(c["text_picks"], c["comparisons"]) for c in counts) + " |")
        lines.append(f"| {label} | both ways | "
                     + " | ".join(share(c["both_ways"], c["window_starts"]) for c in counts) + " |")

    for phase in ("all", *PHASES):
        add(phase, [r["pooled"][phase] for r in results])
    for drive in results[0]["drives"]:
        add(drive, [r["drives"][drive]["counts"]["all"] for r in results])
    return "\n".join(lines)


def describe(drives: tuple[DriveSpec, ...], result: dict[str, Any]) -> str:
    """The lines above the table: which drives, how many pairs and comparisons."""
    pairs = sum(len(d["pairs"]) for d in result["drives"].values())
    together = sum(len(d["never_part"]) for d in result["drives"].values())
    pooled = result["pooled"]
    skipped = (f"; {pooled['all']['skipped']} asked without a path (standing still the whole "
               "window) are left out" if pooled["all"]["skipped"] else "")
    return (", ".join(d.label for d in drives) + f": {pairs} pairs of look-alike drives that "
            f"part ({together} more never part within the frames), "
            f"{pooled['all']['comparisons']} comparisons over {pooled['all']['window_starts']} "
            f"window starts{skipped}. A pick: the drive whose path was asked ranks above the "
            "other drive at the same window start.")


def write_outputs(out: Path, doc: dict[str, Any], text: str,
                  results: list[dict[str, Any]]) -> None:
    """path_picks.json (the counts), path_picks.md (the table) and comparisons.jsonl (one line
    per comparison: a test set has about a thousand per checkpoint)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "path_picks.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "path_picks.md").write_text(text + "\n")
    with (out / "comparisons.jsonl").open("w") as f:
        for result in results:
            for row in result["rows"]:
                f.write(json.dumps({"checkpoint": result["name"], **row}) + "\n")
    print(f"\nwrote {out / 'path_picks.json'}, {out / 'path_picks.md'} and "
          f"{out / 'comparisons.jsonl'}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.path_picks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", type=Path, help="checkpoints to compare")
    ap.add_argument("--set", dest="drive_set", choices=sorted(PATH_PICK_DRIVES), default="test",
                    help="protocol drives: selection (choose on these) or test (report these)")
    ap.add_argument("--out", type=Path, default=Path("runs/path_picks"),
                    help="drives (generated once), exports, path_picks.json/.md and "
                    "comparisons.jsonl")
    ap.add_argument("--quick", action="store_true",
                    help="one family of the set's first seed: {} sequences x {} frames"
                    .format(*QUICK_DRIVE))
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime and torch threads")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error(f"--threads must be at least 1, got {args.threads}")
    drives = PATH_PICK_DRIVES[args.drive_set]
    if args.quick:
        drives = (DriveSpec(drives[0].seed, *QUICK_DRIVE),)
    import torch

    torch.set_num_threads(args.threads)  # the export; the benchmark keeps to --threads cores
    t0 = time.monotonic()
    results = [evaluate_checkpoint(c, drives, args.out, args.threads) for c in args.checkpoints]
    text = (f"{args.drive_set} drives (spartan_train.protocol.PATH_PICK_DRIVES): "
            + describe(drives, results[0]) + "\n\n" + table(results))
    print(text)
    from bench.report import machine_info

    doc = {"set": args.drive_set, "quick": args.quick, "part_m": PART_M,
           "drives": [d.__dict__ for d in drives],
           "results": [{k: v for k, v in r.items() if k != "rows"} for r in results],
           "machine": machine_info(args.threads), "wall_s": round(time.monotonic() - t0, 1)}
    write_outputs(args.out, doc, text, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
