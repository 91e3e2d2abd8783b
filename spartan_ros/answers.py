"""Query answers as plain dicts and as the table `spartan_query` and `spartan-fleet query` print,
and the trajectory file both read."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np


def match_dict(m: Any) -> dict:
    """A ``memory.service.Match`` in the shape of ``query_client.response_to_dict``."""
    x, y, z = (float(v) for v in m.poses[0, 1:4])
    return {
        "id": int(m.id), "rank": int(m.rank), "score": float(m.score),
        "start_ns": int(m.start_ns), "end_ns": int(m.end_ns),
        "frame_count": int(m.frame_count), "frame_id": m.frame_id,
        "start_position": [x, y, z], "distance": float(m.distance),
        "path": [[float(v) for v in row[1:4]] for row in m.poses],
        "vehicle_id": m.vehicle_id,
    }


def format_answer(answer: dict, text: str) -> str:
    if not answer["success"]:
        return f"query {text!r} failed: {answer['message']}"
    lines = [f"query {text!r}: {len(answer['segments'])} segments "
             f"(of {answer['candidates']} candidates)"]
    for s in answer["segments"]:
        x, y, z = s["start_position"]
        vehicle = f" vehicle={s['vehicle_id']}" if s.get("vehicle_id") else ""
        lines.append(f"  #{s['rank'] + 1}{vehicle} id={s['id']} score={s['score']:.3f} "
                     f"t=[{s['start_ns'] * 1e-9:.2f}, {s['end_ns'] * 1e-9:.2f}] s "
                     f"start=({x:.1f}, {y:.1f}, {z:.1f}) in {s['frame_id'] or '?'}")
    return "\n".join(lines)


def read_tum(path: str) -> np.ndarray:
    """A TUM trajectory file -> [N, 8] rows; argparse error naming the line when malformed."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [(i, ln.split()) for i, ln in enumerate(f, 1)
                     if ln.strip() and not ln.lstrip().startswith("#")]
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc}") from exc
    rows = []
    for i, fields in lines:
        try:
            if len(fields) != 8:
                raise ValueError(f"{len(fields)} fields")
            rows.append([float(v) for v in fields])
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"{path} line {i}: expected 't x y z qx qy qz qw' ({exc})") from exc
    return np.array(rows, dtype=np.float64).reshape(-1, 8)
