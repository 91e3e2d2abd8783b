"""``spartan-synth``: write a synthetic driving set in the DrivingScenePTX layout.

    python -m spartan_train.data.synth.generate --out DIR --seed 0 --sequences 40 --frames 400

Everything follows from ``--seed`` (same seed and options -> byte-identical files, whatever
``--workers``). Sequences come in *families* of up to four that start at the same place of the
same town under the same weather: three take a different way at the first intersection (left,
straight, right, so their first frames look alike while they move differently) and a fourth, the
*twin*, repeats the first one's drive exactly in another town under other weather (moves alike,
looks different). ``meta/windows.jsonl`` records both kinds of group for evaluation.

The split into ``config/train.txt`` / ``config/val.txt`` is by sequence, whole families at a time
where the requested fraction allows, so validation holds complete look-alike families.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from spartan_train.data.layout import FPS, WINDOW, format_list_line
from spartan_train.data.synth import captions, trajectory, world
from spartan_train.data.synth.facts import frame_record, window_facts
from spartan_train.data.synth.render import Camera, Renderer, make_weather

FORMAT_VERSION = 1
# the share of the image something must cover to count as "in view"
MIN_FRAC = {
    "building": 0.01,
    "tree": 0.004,
    "car": 0.002,
    "gas station": 0.003,
    "traffic light": 0.0006,
    "street lamp": 0.0008,
}
WEATHER_P = {"clear": 0.3, "overcast": 0.15, "dusk": 0.15, "night": 0.15, "fog": 0.1, "rain": 0.15}
IN_VIEW_KEPT = 12  # the largest things in view a frame's record keeps (the facts see these)
LOOK_DIST = 2.5  # metres: first frames this close (same town and weather) look alike
LOOK_YAW = 12.0  # degrees


@dataclass
class GenConfig:
    out: str
    seed: int = 0
    sequences: int = 8
    frames: int = 400
    width: int = 160
    height: int = 120
    val_fraction: float = 0.2
    window: int = WINDOW
    stride: int = 0  # 0: random 1..12 like the reference list generator
    supersample: int = 1
    grid_size: int = 6
    workers: int = 1
    png_compression: int = 3
    # Captions name a gas station whenever the window has one in view (as the free-text facts
    # count it), not only when the first frame shows it: training data; the protocol's selection
    # and test drives keep the default.
    name_landmarks: bool = False
    gas_stations: int = world.GAS_STATIONS  # per town; more gives training more of them to see

    def check(self) -> None:
        if self.sequences < 1:
            raise ValueError("--sequences must be >= 1")
        if self.frames < self.window:
            raise ValueError(f"--frames must be >= the window ({self.window})")
        if self.width < 16 or self.height < 12:
            raise ValueError("--width/--height must be at least 16x12")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("--val-fraction must be in [0, 1)")
        if self.stride < 0:
            raise ValueError("--stride must be >= 0")
        if self.grid_size < 4:
            raise ValueError("--grid-size must be >= 4 (families start at an interior node)")
        if self.gas_stations < 0:
            raise ValueError("--gas-stations must be >= 0")
        if not 0 <= self.png_compression <= 9:
            raise ValueError("--png-compression must be 0..9")


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """An independent generator per purpose and index, derived from the master seed."""
    return np.random.default_rng([seed, *stream])


# streams
GRID, TOWN, FAMILY, OWN, WEATHER, CAPTION, NOISE, SPLIT, LIGHTS = range(9)


@dataclass
class SeqPlan:
    index: int
    name: str
    family: int
    role: str  # "variant" or "twin"
    source: int  # the sequence whose drive this one repeats (itself for variants)
    town: int
    weather: str
    weather_stream: int
    route: trajectory.RoutePlan
    starts: list[int] = field(default_factory=list)


def make_plans(cfg: GenConfig) -> tuple[world.Grid, list[SeqPlan], int]:
    grid = world.make_grid(_rng(cfg.seed, GRID), cfg.grid_size, cfg.grid_size)
    n_fam = math.ceil(cfg.sequences / 4)
    n_towns = max(2, math.ceil(n_fam / 2))
    names = sorted(WEATHER_P)
    p = np.array([WEATHER_P[k] for k in names])
    plans: list[SeqPlan] = []
    for f in range(n_fam):
        rng = _rng(cfg.seed, FAMILY, f)
        town = f % n_towns
        weather = names[int(rng.choice(len(names), p=p))]
        others = [w for w in names if w != weather]
        twin_weather = others[int(rng.integers(len(others)))]
        turns = list(rng.permutation(trajectory.TURNS))
        i = int(rng.integers(1, cfg.grid_size - 1))
        j = int(rng.integers(1, cfg.grid_size - 1))
        d = [(1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0)][int(rng.integers(4))]
        prev = (i - int(d[0]), j - int(d[1]))
        seg = float(np.abs(grid.node(i, j) - grid.node(*prev)).sum())
        start_dist = float(rng.uniform(32.0, min(55.0, seg - world.STOP_LINE - 4.0)))
        lane = int(rng.integers(2))
        v0 = 0.0 if rng.random() < 0.2 else float(rng.uniform(6.0, 10.0))
        starts = _window_starts(rng, cfg)
        roles = ["variant", "variant", "twin", "variant"]
        base = len(plans)
        for k, role in enumerate(roles):
            index = base + k
            if index >= cfg.sequences:
                break
            turn = turns[{0: 0, 1: 1, 2: 0, 3: 2}[k]]
            route = trajectory.RoutePlan((i, j), d, start_dist, lane, turn, v0)
            plans.append(
                SeqPlan(
                    index=index,
                    name=f"synth_{index:03d}",
                    family=f,
                    role=role,
                    source=base if role == "twin" else index,
                    town=(town + 1) % n_towns if role == "twin" else town,
                    weather=twin_weather if role == "twin" else weather,
                    weather_stream=1 if role == "twin" else 0,
                    route=route,
                    starts=list(starts),
                )
            )
    return grid, plans, n_towns


def _window_starts(rng: np.random.Generator, cfg: GenConfig) -> list[int]:
    starts = []
    s = 0
    while s + cfg.window <= cfg.frames:
        starts.append(s)
        s += cfg.stride if cfg.stride > 0 else int(rng.integers(1, 13))
    return starts


def assign_splits(cfg: GenConfig, plans: list[SeqPlan]) -> dict[int, str]:
    """Sequence -> "train" / "val": whole families first, in a seeded random order."""
    n = len(plans)
    target = int(round(cfg.val_fraction * n))
    if cfg.val_fraction > 0 and n >= 2:
        target = min(max(target, 1), n - 1)
    families: dict[int, list[int]] = {}
    for p in plans:
        families.setdefault(p.family, []).append(p.index)
    order = _rng(cfg.seed, SPLIT).permutation(sorted(families)).tolist()
    split = {p.index: "train" for p in plans}
    taken = 0
    for f in order:
        members = families[f]
        if taken >= target:
            break
        if taken + len(members) > target and taken > 0:
            continue  # try a smaller family that fits
        for m in members[: target - taken]:
            split[m] = "val"
        taken += min(len(members), target - taken)
    return split


# ---------------------------------------------------------------------------------------------
# one sequence (runs in a worker process)

_TOWNS: dict[tuple, world.Town] = {}


def _town(cfg: GenConfig, grid: world.Grid, t: int) -> world.Town:
    # Keyed by everything the town is built from: one process may generate several datasets.
    key = (cfg.seed, t, tuple(grid.xs.tolist()), tuple(grid.ys.tolist()), cfg.gas_stations)
    if key not in _TOWNS:
        _TOWNS.clear()  # keep one town in memory: sequences are processed grouped by town
        _TOWNS[key] = world.build_town(t, grid, _rng(cfg.seed, TOWN, t), cfg.gas_stations)
    return _TOWNS[key]


_COLUMNS: dict[tuple[int, ...], np.ndarray] = {}


def _view(town: world.Town, ids: np.ndarray, x: float, y: float) -> list[captions.Seen]:
    """What covers the image: one entry per building / thing, largest first."""
    flat = ids.ravel()
    n = len(town.o_kind) + 1
    counts = np.bincount(flat, minlength=n)[1:]
    column = _COLUMNS.get(ids.shape)
    if column is None:
        column = _COLUMNS[ids.shape] = np.tile(
            np.arange(ids.shape[1], dtype=np.float64), ids.shape[0]
        )
    cols = np.bincount(flat, weights=column, minlength=n)[1:]
    total = float(ids.size)
    seen: dict[int, list[Any]] = {}
    for o in np.flatnonzero(counts).tolist():
        g = int(town.o_group[o])
        lo, hi = town.o_min[o], town.o_max[o]
        dist = math.hypot(max(lo[0] - x, x - hi[0], 0.0), max(lo[1] - y, y - hi[1], 0.0))
        entry = seen.setdefault(g, [o, 0.0, 0.0, dist])
        entry[1] += counts[o]
        entry[2] += cols[o]
        entry[3] = min(entry[3], dist)
    out = []
    width = ids.shape[1]
    for g, (o, cnt, colsum, dist) in seen.items():
        kind = town.o_kind[o]
        frac = cnt / total
        if frac < MIN_FRAC.get(kind, 0.005):
            continue
        u = colsum / cnt / width
        side = "left" if u < 0.38 else "right" if u > 0.62 else "center"
        out.append(
            captions.Seen(
                kind, town.o_desc[o], town.o_colour[o], side, round(frac, 4), round(dist, 1), g
            )
        )
    out.sort(key=lambda s: (-s.frac, s.key))
    return out


@dataclass
class SeqResult:
    index: int
    yaw: np.ndarray
    speed: np.ndarray
    x: np.ndarray
    y: np.ndarray
    labels: list[str]
    light: list[str | None]
    lane: np.ndarray
    node_ahead: list[float | None]
    views: list[list[captions.Seen]]
    style: str
    season: str


def _drive_for(cfg: GenConfig, grid: world.Grid, plan: SeqPlan, plans: list[SeqPlan]):
    src = plans[plan.source]
    schedule = trajectory.make_schedule(grid, _rng(cfg.seed, LIGHTS, plan.family))
    min_length = cfg.frames / FPS * trajectory.V_MAX + 40.0
    path = trajectory.build_path(
        grid,
        src.route,
        _rng(cfg.seed, FAMILY, plan.family, 1),
        _rng(cfg.seed, OWN, src.index),
        min_length,
    )
    return path, schedule, trajectory.drive(path, schedule, cfg.frames, src.route.v0)


def generate_sequence(args: tuple[GenConfig, world.Grid, SeqPlan, list[SeqPlan]]) -> SeqResult:
    cfg, grid, plan, plans = args
    cv2.setNumThreads(1)  # one core per worker; also keeps timings honest
    town = _town(cfg, grid, plan.town)
    path, schedule, dr = _drive_for(cfg, grid, plan, plans)
    weather = make_weather(plan.weather, _rng(cfg.seed, WEATHER, plan.family, plan.weather_stream))
    camera = Camera(cfg.width, cfg.height, cam_height=trajectory.CAM_HEIGHT)
    noise_seed = int(_rng(cfg.seed, NOISE, plan.index).integers(2**31))
    renderer = Renderer(town, weather, camera, cfg.supersample, seed=noise_seed)
    out = Path(cfg.out)
    img_dir = out / "images" / plan.name
    img_dir.mkdir(parents=True, exist_ok=True)
    views = []
    turns_s = np.array([s for s, _ in path.turns] + [np.inf])
    node_ahead: list[float | None] = []
    params = [cv2.IMWRITE_PNG_COMPRESSION, cfg.png_compression]
    for i in range(cfg.frames):
        states = [schedule.state((li, lj), axis, float(dr.t[i])) for li, lj, axis in town.lights]
        rgb, ids = renderer.render(float(dr.x[i]), float(dr.y[i]), float(dr.yaw[i]), states)
        ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise RuntimeError(f"PNG encoding failed for {plan.name} frame {i}")
        (img_dir / f"{i:06d}.png").write_bytes(png.tobytes())
        views.append(_view(town, ids, float(dr.x[i]), float(dr.y[i])))
        nxt = float(turns_s[np.searchsorted(turns_s, dr.s[i], side="right")])
        node_ahead.append(round(nxt - float(dr.s[i]), 1) if np.isfinite(nxt) else None)
    (out / "poses").mkdir(parents=True, exist_ok=True)
    np.save(out / "poses" / f"{plan.name}_poses.npy", dr.poses())
    return SeqResult(
        plan.index,
        dr.yaw,
        dr.speed,
        dr.x,
        dr.y,
        dr.label,
        dr.light,
        dr.lane,
        node_ahead,
        views,
        town.style,
        town.season,
    )


# ---------------------------------------------------------------------------------------------
# windows, captions, groups


def window_motion(r: SeqResult, start: int, window: int) -> captions.Motion:
    sl = slice(start, start + window)
    yaw, speed = r.yaw[sl], r.speed[sl]
    labels = r.labels[sl]
    steps = np.hypot(np.diff(r.x[sl]), np.diff(r.y[sl]))
    return captions.Motion(
        maneuver=captions.classify(yaw, speed, labels),
        v0=float(speed[0]),
        v1=float(speed[-1]),
        vmean=float(speed.mean()),
        distance=float(steps.sum()),
        yaw_change=float(np.degrees(yaw[-1] - yaw[0])),
        stopped_s=float((speed < 0.3).sum() / FPS),
        light=r.light[start],
        lane0=int(r.lane[start]),
        lane1=int(r.lane[start + window - 1]),
    )


def _later(r: SeqResult, start: int, window: int) -> list[captions.Seen]:
    best: dict[int, captions.Seen] = {}
    for k in (window // 3, 2 * window // 3, window - 1):
        for s in r.views[start + k]:
            if s.key not in best or s.frac > best[s.key].frac:
                best[s.key] = s
    return sorted(best.values(), key=lambda s: (-s.frac, s.key))


def _largest_gas_view(r: SeqResult, start: int, window: int) -> captions.Seen:
    """The window's largest view of a gas station (the window must have one in view)."""
    gas = [s for i in range(start, start + window) for s in r.views[i][:IN_VIEW_KEPT]
           if s.kind == "gas station"]
    return max(gas, key=lambda s: s.frac)


def build_windows(
    cfg: GenConfig, plans: list[SeqPlan], results: dict[int, SeqResult], split: dict[int, str]
) -> list[dict[str, Any]]:
    records = []
    look_reps: dict[tuple[int, str], list[tuple[float, float, float, str]]] = {}
    n_look = 0
    for plan in plans:
        r = results[plan.index]
        for start in plan.starts:
            m = window_motion(r, start, cfg.window)
            first = r.views[start]
            scene = captions.Scene(r.style, r.season, plan.weather, r.node_ahead[start])
            facts = window_facts(
                [frame_record(_frame_meta(r, i)) for i in range(start, start + cfg.window)],
                plan.weather)
            named = cfg.name_landmarks and "gas_station" in facts
            text = captions.write_caption(
                _rng(cfg.seed, CAPTION, plan.index, start),
                scene,
                first,
                _later(r, start, cfg.window),
                m,
                landmark=_largest_gas_view(r, start, cfg.window) if named else None,
            )
            # look-alike: same town, same weather, first frames close in position and heading
            key = (plan.town, plan.weather)
            x, y, yaw = float(r.x[start]), float(r.y[start]), float(np.degrees(r.yaw[start]))
            group = None
            for rx, ry, ryaw, gid in look_reps.get(key, []):
                dyaw = (yaw - ryaw + 180.0) % 360.0 - 180.0
                if math.hypot(x - rx, y - ry) < LOOK_DIST and abs(dyaw) < LOOK_YAW:
                    group = gid
                    break
            if group is None:
                group = f"L{n_look:05d}"
                n_look += 1
                look_reps.setdefault(key, []).append((x, y, yaw, group))
            speed_bin = min(int(m.vmean * 3.6 // 10), 5)
            tags = sorted({s.kind for s in first} | {plan.weather, r.style, r.season})
            records.append(
                {
                    "seq": plan.name,
                    "start": start,
                    "split": split[plan.index],
                    "maneuver": m.maneuver,
                    "tags": tags,
                    "look_group": group,
                    "motion_group": f"{m.maneuver}/v{speed_bin}",
                    "family": plan.family,
                    "role": plan.role,
                    "town": plan.town,
                    "weather": plan.weather,
                    "speed_mps": round(m.vmean, 2),
                    "distance_m": round(m.distance, 2),
                    "yaw_change_deg": round(m.yaw_change, 1),
                    "caption": text,
                    "facts": sorted(facts),
                }
            )
    return records


# ---------------------------------------------------------------------------------------------


def _frame_meta(r: SeqResult, i: int) -> dict[str, Any]:
    yaw_rate = 0.0
    if i + 1 < len(r.yaw):
        yaw_rate = float((r.yaw[i + 1] - r.yaw[i]) * FPS)
    return {
        "i": i,
        "t": round(i / FPS, 1),
        "maneuver": r.labels[i],
        "speed": round(float(r.speed[i]), 2),
        "yaw_rate": round(yaw_rate, 3),
        "lane": "left" if r.lane[i] == 0 else "right",
        "light": r.light[i],
        "node_ahead_m": r.node_ahead[i],
        "in_view": [[s.kind, s.desc, s.side, s.frac, s.dist] for s in r.views[i][:IN_VIEW_KEPT]],
    }


ADDED_OPTIONS = ("name_landmarks", "gas_stations")  # options later than the first datasets


def _config_record(cfg: GenConfig) -> dict[str, Any]:
    """What made the dataset; options left at their default are omitted when older datasets
    did not have them, so a set generated before an option existed reads the same."""
    record = {k: v for k, v in asdict(cfg).items() if k not in ("out", "workers")}
    defaults = {f.name: f.default for f in fields(GenConfig)}
    for name in ADDED_OPTIONS:
        if record[name] == defaults[name]:
            del record[name]
    return record


def write_dataset(cfg: GenConfig, progress: bool = True) -> dict[str, Any]:
    """Generate everything under ``cfg.out``; returns a small summary."""
    cfg.check()
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output directory {out} is not empty")
    grid, plans, n_towns = make_plans(cfg)
    split = assign_splits(cfg, plans)
    order = sorted(plans, key=lambda p: (p.town, p.index))  # reuse each town while it is built
    jobs = [(cfg, grid, p, plans) for p in order]
    results: dict[int, SeqResult] = {}
    bar = tqdm(
        total=cfg.sequences * cfg.frames, unit="frame", disable=not progress, desc="spartan-synth"
    )
    if cfg.workers > 1:
        # Not fork: a caller that has started threads (torch, ONNX Runtime) can leave a lock held
        # in the forked child, which then never finishes. A fork server starts clean.
        ctx = multiprocessing.get_context(
            "forkserver" if sys.platform.startswith("linux") else "spawn")
        with ctx.Pool(cfg.workers) as pool:
            for res in pool.imap(generate_sequence, jobs):
                results[res.index] = res
                bar.update(cfg.frames)
    else:
        for job in jobs:
            res = generate_sequence(job)
            results[res.index] = res
            bar.update(cfg.frames)
    bar.close()

    records = build_windows(cfg, plans, results, split)
    (out / "config").mkdir(parents=True, exist_ok=True)
    (out / "meta").mkdir(parents=True, exist_ok=True)
    for part in ("train", "val"):
        lines = [
            format_list_line(r["seq"], r["start"], r["caption"])
            for r in records
            if r["split"] == part
        ]
        perm = _rng(cfg.seed, SPLIT, 1 if part == "train" else 2).permutation(len(lines))
        (out / "config" / f"{part}.txt").write_text("".join(lines[k] for k in perm), "utf-8")
    with (out / "meta" / "windows.jsonl").open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
    for plan in plans:
        r = results[plan.index]
        meta = {
            "seq": plan.name,
            "family": plan.family,
            "role": plan.role,
            "source": plans[plan.source].name,
            "town": plan.town,
            "town_style": r.style,
            "season": r.season,
            "weather": plan.weather,
            "split": split[plan.index],
            "first_turn": plan.route.first_turn,
            "fps": FPS,
            "frames": [_frame_meta(r, i) for i in range(cfg.frames)],
        }
        (out / "meta" / f"{plan.name}.json").write_text(json.dumps(meta, sort_keys=True), "utf-8")
    cam = Camera(cfg.width, cfg.height, cam_height=trajectory.CAM_HEIGHT)
    summary = {
        "format_version": FORMAT_VERSION,
        "config": _config_record(cfg),
        "towns": n_towns,
        "sequences": [p.name for p in plans],
        "windows": {
            "train": sum(r["split"] == "train" for r in records),
            "val": sum(r["split"] == "val" for r in records),
        },
        "camera": {
            "width": cfg.width,
            "height": cfg.height,
            "fx": cam.fx,
            "fy": cam.fx,
            "cx": cfg.width / 2,
            "cy": cfg.height / 2,
            "hfov_deg": cam.hfov_deg,
            "height_m": trajectory.CAM_HEIGHT,
        },
        "poses": "TUM rows [t, x, y, z, qx, qy, qz, qw], t in s at 10 Hz; world x east, y north, "
        "z up; camera body x forward (heading), y left, z up; quaternion scalar-last",
        "limits": {
            "v_max": trajectory.V_MAX,
            "a_max": trajectory.A_MAX,
            "b_max": trajectory.B_MAX,
            "yaw_rate_max": trajectory.YAW_RATE_MAX,
        },
    }
    (out / "meta" / "dataset.json").write_text(
        json.dumps(summary, indent=1, sort_keys=True), "utf-8"
    )
    return summary


def ensure_dataset(cfg: GenConfig, progress: bool = True) -> dict[str, Any] | None:
    """Generate ``cfg.out`` unless a complete set is there already (its ``meta/dataset.json`` is
    written last). The set is written to ``<out>.partial`` and renamed, so ``cfg.out`` is either
    complete or absent; one cut short is generated again. The summary, or None if kept."""
    out = Path(cfg.out)
    if (out / "meta" / "dataset.json").is_file():
        return None
    partial = out.with_name(out.name + ".partial")  # the generator wants an empty folder
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    summary = write_dataset(replace(cfg, out=str(partial)), progress=progress)
    partial.rename(out)
    return summary


def parse_args(argv: Sequence[str] | None = None) -> tuple[GenConfig, bool]:
    ap = argparse.ArgumentParser(prog="spartan-synth", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory (must be empty or absent)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sequences", type=int, default=8)
    ap.add_argument("--frames", type=int, default=400, help="frames per sequence (10 Hz)")
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--val-fraction", type=float, default=0.2, help="share of sequences in val")
    ap.add_argument("--window", type=int, default=WINDOW)
    ap.add_argument(
        "--stride",
        type=int,
        default=0,
        help="window start step; 0 = random 1..12 as the reference lists",
    )
    ap.add_argument("--supersample", type=int, default=1, help="render at k x size, then shrink")
    ap.add_argument("--grid-size", type=int, default=6, help="intersections per town side")
    ap.add_argument("--workers", type=int, default=1, help="processes (output does not change)")
    ap.add_argument("--png-compression", type=int, default=3)
    ap.add_argument("--name-landmarks", action="store_true",
                    help="captions name a gas station whenever the window has one in view, not "
                    "only when its first frame shows it (for training sets)")
    ap.add_argument("--gas-stations", type=int, default=world.GAS_STATIONS,
                    help="gas stations per town (more for training sets that should learn them)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ns = ap.parse_args(argv)
    cfg = GenConfig(
        out=ns.out,
        seed=ns.seed,
        sequences=ns.sequences,
        frames=ns.frames,
        width=ns.width,
        height=ns.height,
        val_fraction=ns.val_fraction,
        window=ns.window,
        stride=ns.stride,
        supersample=ns.supersample,
        grid_size=ns.grid_size,
        workers=ns.workers,
        png_compression=ns.png_compression,
        name_landmarks=ns.name_landmarks,
        gas_stations=ns.gas_stations,
    )
    return cfg, ns.quiet


def main(argv: Sequence[str] | None = None) -> int:
    cfg, quiet = parse_args(argv)
    try:
        summary = write_dataset(cfg, progress=not quiet)
    except (ValueError, FileExistsError) as e:
        print(f"spartan-synth: error: {e}", file=sys.stderr)
        return 2
    w = summary["windows"]
    print(
        f"wrote {len(summary['sequences'])} sequences, {w['train']} train and {w['val']} val "
        f"windows to {os.path.abspath(cfg.out)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
