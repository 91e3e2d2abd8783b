"""Export benchmark: the dynamo exporter (torch.export + onnxscript) against the deprecated
TorchScript one, on the same checkpoints, in one run.

    python -m bench.export_bench --out bench/results [--models tiny B/16] [--repeats 1]

Each export is a fresh ``spartan-export`` process, as a user runs it (so the dynamo exporter's
one-off start-up, importing onnxscript and building its op registry, is counted), with the same
checks as always (float32 parity to 1e-4). The two routes alternate, so a busy machine slows
both alike. Prints a markdown table and writes ``export.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

EXPORTERS = ("torchscript", "dynamo")
GRAPHS = ("image", "text", "pose_fusion")


def make_checkpoint(name: str, work: Path) -> Path:
    """A random-weight checkpoint of a named configuration (export time does not depend on the
    values of the weights)."""
    import torch
    from spartan_train.model import build_model, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(build_model(name), work / f"ckpt-{name.replace('/', '')}")


def export_once(ckpt: Path, out: Path, exporter: str, reduced: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "spartan_train.export", str(ckpt), str(out), "--overwrite",
           "--exporter", exporter] + (["--fp16", "--int8"] if reduced else [])
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"bench.export_bench: {' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    meta = json.loads((out / "model.json").read_text())
    f32 = [c for c in meta["checks"] if c["precision"] == "float32"]
    return {
        "exporter": exporter,
        "process_s": round(wall, 2),
        "export_s": meta["export_seconds"],
        "graph_s": {c["graph"]: c["seconds"] for c in f32},
        "max_abs_float32": max(c["max_abs"] for c in f32),
        "min_cosine": {c["precision"]: min(x["min_cosine"] for x in meta["checks"]
                                           if x["precision"] == c["precision"])
                       for c in meta["checks"]},
        "float32_mb": round(sum(meta["graphs"]["float32"][g]["bytes"] for g in GRAPHS) / 1e6, 1),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | exporter | spartan-export process (s) | export + checks (s) | "
             "image / text / pose_fusion (s) | float32 max abs diff | float32 graphs (MB) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        graphs = " / ".join(f"{r['graph_s'].get(g, 0):.1f}" for g in GRAPHS)
        lines.append(f"| {r['model']} | {r['exporter']} | {r['process_s']:.1f} | "
                     f"{r['export_s']:.1f} | {graphs} | {r['max_abs_float32']:.2g} | "
                     f"{r['float32_mb']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["tiny"], help="configurations, e.g. tiny B/16")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--reduced", action="store_true", help="also write the fp16 and int8 graphs")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    args = p.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        work = Path(tmp)
        for name in args.models:
            ckpt = make_checkpoint(name, work)
            for rep in range(args.repeats):
                order = EXPORTERS if rep % 2 == 0 else EXPORTERS[::-1]
                for exporter in order:
                    print(f"{name}: {exporter} export ({rep + 1}/{args.repeats}) ...", flush=True)
                    row = export_once(ckpt, work / f"out-{exporter}", exporter, args.reduced)
                    rows.append({"model": name, "repeat": rep, **row})
    rows.sort(key=lambda r: (args.models.index(r["model"]), r["exporter"], r["repeat"]))
    print(table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "export.json"
    path.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
