"""Replays in a row: is anything lost in transport, run after run?

The demo's drive is played into a fresh node (its own memory, its own ROS domain) ``--runs``
times at each rate, one run after another, the way `make demo` plays it (`spartan-bag play`
with /clock, the node on sim time with config/spartan.yaml). Per run: segments stored against
the windows the drive has, images the player sent against frames the node received, and the
node's drop warnings. Prints a table and writes replays.json:

    python -m bench.replays --runs 10 --rates 1,2

Run it while nothing else runs on the machine: it measures whether the replay path loses
anything, and a loaded machine is the very thing that makes it lose.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import spartan_train.demo as demo
from spartan_train.bag.write import read_captions
from spartan_train.processes import SegmentWatch, ros_env
from tqdm import tqdm

from bench.report import comma_list

STOPPED = re.compile(r"ingest stopped: (\d+) frames received, (\d+) taken, (\d+) dropped")


def one_run(cfg: demo.DemoConfig, model_dir: Path, bag: Path, rate: float,
            index: int) -> dict[str, Any]:  # fmt: skip
    """One fresh node, one replay at ``rate``; what arrived and what was stored."""
    captions = read_captions(bag)
    expected = demo.expected_segments(captions, demo.node_parameters(cfg))
    run_cfg = dataclasses.replace(cfg, rate=rate, work=cfg.work / f"rate{rate:g}-run{index}")
    (run_cfg.work / "logs").mkdir(parents=True, exist_ok=True)
    env = ros_env()
    node = demo.start_node(run_cfg, env, model_dir, run_cfg.work / "memory.db", captions)
    segments = SegmentWatch(env, run_cfg.work / "logs" / "segments.log", demo.SEGMENTS)
    try:
        demo.wait_for("active node", lambda: demo.node_active(node), [node], cfg.start_timeout_s)
        summary = demo.replay(run_cfg, env, bag, node, segments, expected)
        stored, _ = demo.wait_ingested(run_cfg, node, segments, expected)
    finally:
        node.stop()
        segments.stop()
    log = node.output()
    received = taken = dropped = -1
    if found := STOPPED.findall(log):
        received, taken, dropped = (int(v) for v in found[-1])
    sent = summary["counts"].get(captions["image_topic"], 0)
    return {"rate": rate, "run": index, "expected": expected, "stored": stored,
            "images_sent": sent, "frames_received": received, "frames_taken": taken,
            "frames_dropped": dropped, "drop_warnings": demo.drop_warnings(log)[:3],
            "log": str(node.log_path)}


def table(runs: list[dict[str, Any]]) -> str:
    lines = ["| rate | runs | runs storing every segment | segments stored (worst run) "
             "| images lost in transport (all runs) | frames dropped (all runs) |",
             "|---|---|---|---|---|---|"]
    for rate in sorted({r["rate"] for r in runs}):
        mine = [r for r in runs if r["rate"] == rate]
        full = sum(r["stored"] == r["expected"] for r in mine)
        worst = min(mine, key=lambda r: r["stored"] - r["expected"])
        lost = sum(r["images_sent"] - r["frames_received"] for r in mine)
        dropped = sum(r["frames_dropped"] for r in mine)
        lines.append(f"| {rate:g} | {len(mine)} | {full} of {len(mine)} | "
                     f"{worst['stored']} of {worst['expected']} | {lost} | {dropped} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=10, help="replays per rate")
    p.add_argument("--rates", type=comma_list(cast=float), default="1,2",
                   help="playback rates, comma separated")
    p.add_argument("--sequences", type=int, default=demo.DemoConfig.sequences)
    p.add_argument("--frames", type=int, default=demo.DemoConfig.frames)
    p.add_argument("--work", type=Path, default=Path("runs/replays"))
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    a = p.parse_args(argv)
    rates = list(a.rates)
    if a.runs < 1 or not rates or min(rates) <= 0:
        p.error("--runs must be >= 1 and every rate > 0")
    cfg = demo.DemoConfig(work=a.work, sequences=a.sequences, frames=a.frames)
    cfg.check()
    cfg.work.mkdir(parents=True, exist_ok=True)
    model_dir = demo.export_model(cfg)
    _, bag = demo.make_drive(cfg)
    runs = []
    t0 = time.monotonic()
    with tqdm(total=a.runs * len(rates), desc="replays", unit="run", file=sys.stderr) as bar:
        for rate in rates:
            for i in range(1, a.runs + 1):
                runs.append(one_run(cfg, model_dir, bag, rate, i))
                r = runs[-1]
                bar.set_postfix_str(f"rate {rate:g}: {r['stored']}/{r['expected']}")
                bar.update()
    text = table(runs)
    print(text)
    load = os.getloadavg()
    a.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "bag": str(bag), "sequences": a.sequences, "frames": a.frames, "runs": runs,
        "every_segment_every_run": all(r["stored"] == r["expected"] for r in runs),
        "wall_s": round(time.monotonic() - t0, 1), "load_average": [round(v, 2) for v in load],
        "table": text}
    (a.out / "replays.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {a.out / 'replays.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
