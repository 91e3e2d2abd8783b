"""Result rows, the markdown table and the JSON file of a benchmark run."""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SCHEMA = "spartan_ros.bench/1"
ROW_KEYS = ("section", "measure", "value", "unit", "goal", "met", "note")


@dataclass
class Row:
    """One line of the table. ``value`` is a number, or a string when there is no figure
    (e.g. "skipped (no trained model)"); ``met`` is None when the row has no goal."""

    section: str
    measure: str
    value: float | str | None
    unit: str = ""
    goal: str = ""
    met: bool | None = None
    note: str = ""


def comma_list(choices: Sequence[str] | None = None,
               cast: Callable[[str], Any] = str) -> Callable[[str], tuple]:
    """An argparse ``type`` for a comma-separated option: its items, each one of ``choices``
    (when given), converted by ``cast``; an empty or unknown item is a usage error."""

    def parse(text: str) -> tuple:
        items = [x.strip() for x in text.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError("an empty list")
        bad = [x for x in items if choices is not None and x not in choices]
        if bad:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(bad)}; choose from {', '.join(choices or ())}")
        try:
            return tuple(cast(x) for x in items)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse


def at_least(value: float, bar: float) -> bool:
    return bool(math.isfinite(value) and value >= bar)


def at_most(value: float, bar: float) -> bool:
    return bool(math.isfinite(value) and value <= bar)


def format_value(value: float | str | None, unit: str = "") -> str:
    """Three significant figures or so, thousands separated; strings pass through."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    v = float(value)
    if not math.isfinite(v):
        text = str(v)
    elif v == int(v) and abs(v) < 1e15:
        text = f"{int(v):,}"
    elif abs(v) >= 1000:
        text = f"{v:,.0f}"
    elif abs(v) >= 100:
        text = f"{v:.0f}"
    elif abs(v) >= 10:
        text = f"{v:.1f}"
    else:
        text = f"{v:.3g}"
    return f"{text} {unit}".strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[Row]) -> str:
    lines = ["| section | measure | value | goal | met? |", "|---|---|---|---|---|"]
    for r in rows:
        met = "-" if r.met is None else ("yes" if r.met else "**no**")
        measure = r.measure + (f" ({r.note})" if r.note else "")
        cells = (r.section, measure, format_value(r.value, r.unit), r.goal or "-", met)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def machine_info(threads: int) -> dict[str, Any]:
    """What the figures were measured on (CPU model, cores, library versions)."""
    import numpy as np
    import onnxruntime as ort

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = str(torch.__version__)
    mem = available_memory()
    if mem is not None:
        info["mem_available_gb"] = round(mem / 1e9, 1)
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def available_memory() -> int | None:
    """MemAvailable in bytes (Linux), None when unknown."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def build_document(
    rows: list[Row],
    raw: dict[str, Any],
    settings: dict[str, Any],
    machine: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "machine": machine,
        "settings": settings,
        "rows": [asdict(r) for r in rows],
        "sections": raw,
    }


def _jsonable(obj: Any) -> Any:
    """NaN / inf become None (strict JSON), tuples and Paths plain values."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _jsonable(obj.item())
    return obj


def markdown_document(doc: dict[str, Any], rows: list[Row]) -> str:
    m = doc["machine"]
    head = [
        "# spartan_ros benchmark",
        "",
        f"{doc['created_utc']}, {m.get('cpu', '?')}, {m.get('cpu_count')} CPUs, "
        f"{m.get('threads')} threads; onnxruntime {m.get('onnxruntime')}, "
        f"torch {m.get('torch', '-')}, numpy {m.get('numpy')}; "
        f"{'quick' if doc['settings'].get('quick') else 'full'} run, {doc['seconds']:.0f} s.",
        "",
        "",
    ]
    return "\n".join(head) + markdown_table(rows) + "\n"


def earlier_results(out: Path, same: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """``out/results.json`` of an earlier run, when ``same(results)`` says it measured the same
    model on the same data; None when it is missing, unreadable or of something else."""
    try:
        results: dict[str, Any] = json.loads((out / "results.json").read_text())
        if not same(results):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    print(f"reusing the results in {out}")
    return results


def write_outputs(out: Path, doc: dict[str, Any], rows: list[Row]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "bench.json", out / "bench.md"
    json_path.write_text(json.dumps(_jsonable(doc), indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown_document(doc, rows), encoding="utf-8")
    return json_path, md_path
