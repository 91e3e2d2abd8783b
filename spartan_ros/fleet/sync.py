"""Copy a vehicle's SQLite memory into the fleet collection.

The file is read through a read-only connection in id order, a batch at a time, and written with
upserts keyed by vehicle and segment id: a second run, or a run resumed after a kill, sends only
the segments the fleet does not hold yet and never adds one twice.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spartan_ros.memory.milvus_store import Connection, MilvusSegmentStore, segment_record
from spartan_ros.memory.store import MemoryFileError, Segment
from spartan_ros.runtime.scoring import SegmentTerms, unit_rows

_F32, _F64 = np.dtype("<f4"), np.dtype("<f8")
# Columns a mirrored segment needs, in the order of ``segment_from_row``.
ROW_COLUMNS = "start_ns, end_ns, frame_id, poses, video_feat, pose_feat, terms, beta, gamma"


def open_readonly(path: str | os.PathLike[str]) -> sqlite3.Connection:
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isfile(path):
        raise MemoryFileError(f"{path}: no such memory file")
    try:
        return sqlite3.connect(Path(path).as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise MemoryFileError(f"{path}: cannot open: {exc}") from exc


def memory_meta(conn: sqlite3.Connection) -> tuple[str, int]:
    """(model hash, embed dim) recorded in a memory file."""
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        return str(meta["model_hash"]), int(meta["embed_dim"])
    except (sqlite3.Error, KeyError, ValueError) as exc:
        raise MemoryFileError(f"not a spartan_ros memory file: {exc}") from exc


def segment_from_row(seg_id: int, row: tuple, embed_dim: int) -> Segment:
    """A Segment from the ``ROW_COLUMNS`` of a segments (or outbox) row."""
    start_ns, end_ns, frame_id, poses, video, pose, terms, beta, gamma = row
    video_feat = np.frombuffer(video, dtype=_F32).astype(np.float32)
    return Segment(
        id=int(seg_id), start_ns=int(start_ns), end_ns=int(end_ns), frame_id=str(frame_id),
        poses=np.frombuffer(poses, dtype=_F64).reshape(-1, 8).astype(np.float64),
        video_feat=video_feat, pose_feat=np.frombuffer(pose, dtype=_F32).astype(np.float32),
        # The same arithmetic as the SQLite store's index, so both score identically.
        terms=SegmentTerms(ag=np.frombuffer(terms, dtype=_F32).astype(np.float32),
                           beta=float(beta), gamma=float(gamma),
                           video_unit=unit_rows(video_feat.astype(np.float64)).astype(np.float32)),
    )


def iter_batches(conn: sqlite3.Connection, table: str, id_column: str, embed_dim: int,
                 batch_size: int, after_id: int = 0) -> Iterator[list[Segment]]:
    """Segments of ``table`` in id order, ``batch_size`` at a time."""
    last = after_id
    while True:
        rows = conn.execute(f"SELECT {id_column}, {ROW_COLUMNS} FROM {table} "
                            f"WHERE {id_column} > ? ORDER BY {id_column} LIMIT ?",
                            (last, batch_size)).fetchall()
        if not rows:
            return
        yield [segment_from_row(r[0], r[1:], embed_dim) for r in rows]
        last = int(rows[-1][0])


@dataclass
class PushReport:
    total: int  # segments in the file
    already: int  # found in the fleet before this run
    sent: int  # written by this run
    collection: str


def push(memory_path: str | os.PathLike[str], conn: Connection, vehicle_id: str, *,
         batch_size: int = 256, progress: bool = True,
         on_batch: Callable[[int], Any] | None = None) -> PushReport:
    """Copy every segment of ``memory_path`` the fleet does not hold yet; see the module doc."""
    if not vehicle_id:
        raise ValueError("a vehicle id is needed: segments are keyed by vehicle and id")
    db = open_readonly(memory_path)
    try:
        model_hash, embed_dim = memory_meta(db)
        total = int(db.execute("SELECT COUNT(*) FROM segments").fetchone()[0])
        with MilvusSegmentStore(conn, model_hash, embed_dim, vehicle_id=vehicle_id) as fleet:
            present = set(fleet.all_ids())
            sent = 0
            from tqdm import tqdm

            with tqdm(total=total, initial=0, unit="seg", disable=not progress,
                      desc=f"push {vehicle_id}") as bar:
                for batch in iter_batches(db, "segments", "id", embed_dim, batch_size):
                    todo = [s for s in batch if s.id not in present]
                    fleet.upsert([segment_record(s, vehicle_id, int(s.id or 0)) for s in todo])
                    sent += len(todo)
                    bar.update(len(batch))
                    if on_batch is not None:
                        on_batch(sent)
            if sent:
                fleet.flush()
            return PushReport(total, len(present), sent, fleet.collection)
    finally:
        db.close()
