"""Durable segment memory: one SQLite file (or RAM) plus the in-RAM scoring index.

Each ``add()`` is one transaction in WAL mode: when it returns, the segment survives a crash
of the process; with ``synchronous="full"`` (the default) also a power cut, while ``"normal"``
may lose the last commits to a power cut (never to a crash) and writes faster. The scoring
index (``runtime.scoring.ScoreIndex``) is rebuilt from the file at open and updated only after
a commit, under the store's lock, so query threads never see a half-written segment.

Stored terms depend on the model that computed the features, so the file records the model's
hash and refuses to open with another model (``ModelMismatchError``). The hash already differs
per precision (it covers the graphs loaded, and each graph file carries its precision), and the
file also records the precision by name, so the refusal says which precisions were mixed. Any
file that is not a valid memory file is reported and left untouched: every check runs on a
read-only connection before the file is opened for writing. Damage inside a valid file (a
corrupt row, a lost ``-wal``) and storage failures (disk full, read-only) are detected and
named (``spartan_ros.memory.integrity``); ``problems`` lists what was found at open.
"""

from __future__ import annotations

import datetime
import math
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from spartan_ros.memory.integrity import (
    Sidecar,
    is_storage_failure,
    row_checksum,
    storage_error,
)
from spartan_ros.runtime.lru import LruCache
from spartan_ros.runtime.scoring import (
    FusionHead,
    ScoreIndex,
    SegmentTerms,
    TermArrays,
    segment_terms,
    unit_rows,
)

if TYPE_CHECKING:
    from spartan_ros.memory.backend import SearchResult

SCHEMA_VERSION = 1
_SQLITE_MAGIC = b"SQLite format 3\x00"
_APP = "spartan_ros segment memory"
# Explicit little-endian blobs so a memory file reads the same on any machine.
_F32, _F64 = np.dtype("<f4"), np.dtype("<f8")

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE segments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids never reused after eviction
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    frame_count INTEGER NOT NULL,
    frame_id TEXT NOT NULL,
    poses BLOB NOT NULL,       -- float64 [T, 8] absolute TUM rows in the odometry frame
    video_feat BLOB NOT NULL,  -- float32 [E], mean of the frame features (unnormalised)
    pose_feat BLOB NOT NULL,   -- float32 [E]
    terms BLOB NOT NULL,       -- float32 [2E] = [a | g] of runtime.scoring
    beta REAL NOT NULL,
    gamma REAL NOT NULL,
    cx REAL NOT NULL,          -- centroid of the path (x, y)
    cy REAL NOT NULL,
    checksum INTEGER           -- integrity.row_checksum of the row (NULL: written before them)
);
CREATE INDEX segments_start ON segments (start_ns);
"""
# Columns added after schema version 1 was released: (name, declaration), added when missing.
_ADDED_COLUMNS = (("checksum", "INTEGER"),)
SYNCHRONOUS_CHOICES = ("full", "normal")
# Rows of recently answered segments kept in RAM: planners asking again and again get the
# same few segments back, and a stored row never changes (only eviction removes it).
ROW_CACHE_SIZE = 1024


class MemoryFileError(RuntimeError):
    """The memory file cannot be used; the message names the file and what to do."""


class ModelMismatchError(MemoryFileError):
    """The memory file was written with another model (hash or embedding size differ)."""


@dataclass(eq=False)
class Segment:
    """One stored window: stamps, absolute poses, features and the derived scoring terms."""

    id: int | None  # None until stored
    start_ns: int
    end_ns: int
    frame_id: str  # odometry frame of ``poses``
    poses: np.ndarray  # [T, 8] float64 TUM rows [t, x, y, z, qx, qy, qz, qw]
    video_feat: np.ndarray  # [E] float32
    pose_feat: np.ndarray  # [E] float32
    terms: SegmentTerms
    vehicle_id: str = ""  # the vehicle that recorded it (node parameter vehicle_id)

    @classmethod
    def build(
        cls,
        head: FusionHead,
        start_ns: int,
        end_ns: int,
        frame_id: str,
        poses: npt.ArrayLike,
        video_feat: npt.ArrayLike,
        pose_feat: npt.ArrayLike,
    ) -> Segment:
        """A new (unstored) segment with its terms computed from ``head``."""
        # Terms from the float32 features that get stored, so a reload reproduces them exactly.
        video = np.asarray(video_feat, dtype=np.float32)
        pose = np.asarray(pose_feat, dtype=np.float32)
        return cls(
            id=None,
            start_ns=int(start_ns),
            end_ns=int(end_ns),
            frame_id=frame_id,
            poses=np.asarray(poses, dtype=np.float64),
            video_feat=video,
            pose_feat=pose,
            terms=segment_terms(head, video, pose),
        )

    @property
    def frame_count(self) -> int:
        return int(self.poses.shape[0])

    @property
    def path_length(self) -> float:
        """Sum of the distances between consecutive positions, metres."""
        return float(np.linalg.norm(np.diff(self.poses[:, 1:4], axis=0), axis=1).sum())

    def validate(self, embed_dim: int) -> None:
        """Raise ValueError naming the bad field."""
        poses = np.asarray(self.poses)
        if poses.ndim != 2 or poses.shape[1] != 8 or poses.shape[0] == 0:
            raise ValueError(f"segment poses must be [T, 8] with T >= 1, got {list(poses.shape)}")
        bad = np.flatnonzero(~np.isfinite(poses).all(axis=1))
        if bad.size:
            raise ValueError(f"segment pose row {int(bad[0])} is not finite")
        for name in ("video_feat", "pose_feat"):
            arr = np.asarray(getattr(self, name))
            if arr.shape != (embed_dim,):
                raise ValueError(f"segment {name} must be [{embed_dim}], got {list(arr.shape)}")
            if not np.isfinite(arr).all():
                raise ValueError(f"segment {name} has non-finite values")
        if self.terms.ag.shape != (2 * embed_dim,) or self.terms.embed_dim != embed_dim:
            raise ValueError(f"segment terms are for embed_dim {self.terms.embed_dim}")
        if not (math.isfinite(self.terms.beta) and math.isfinite(self.terms.gamma)):
            raise ValueError("segment terms beta/gamma are not finite")
        if self.end_ns < self.start_ns:
            raise ValueError(f"segment end_ns {self.end_ns} is before start_ns {self.start_ns}")
        if not isinstance(self.frame_id, str):
            raise ValueError(f"segment frame_id must be a string, got {type(self.frame_id)}")


def _blob(arr: np.ndarray, dtype: np.dtype) -> bytes:
    return np.ascontiguousarray(arr, dtype=dtype).tobytes()


def _decode(blob: bytes, dtype: np.dtype, shape: tuple[int, ...], what: str) -> np.ndarray:
    need = int(np.prod(shape)) * dtype.itemsize
    if len(blob) != need:
        raise MemoryFileError(f"{what}: blob has {len(blob)} bytes, expected {need}")
    return np.frombuffer(blob, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


class SegmentStore:
    """Segments in SQLite (``path``) or RAM (``path`` None / "" / ":memory:"), plus ``index``.

    ``model_hash`` identifies the model whose features are stored; ``head`` (optional) lets
    ``index.score(t)`` fuse text features. One writer thread and any number of query threads may
    share a store.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        model_hash: str,
        embed_dim: int,
        *,
        head: FusionHead | None = None,
        index_dtype: str = "float32",
        cell_size: float = 10.0,
        vehicle_id: str = "",
        precision: str | None = None,
        synchronous: str = "full",
    ) -> None:
        if not model_hash:
            raise ValueError("model_hash must be a non-empty string")
        if embed_dim <= 0:
            raise ValueError(f"embed_dim must be positive, got {embed_dim}")
        if synchronous not in SYNCHRONOUS_CHOICES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_CHOICES}, "
                             f"got {synchronous!r}")
        self.synchronous = synchronous
        self.problems: list[str] = []  # damage found at open, one sentence each
        self.corrupt_ids: list[int] = []  # rows skipped at open (checksum or blob mismatch)
        self._max_id = 0
        self._rows: LruCache[int, tuple] = LruCache(ROW_CACHE_SIZE)  # id -> row
        self.model_hash = str(model_hash)
        self.embed_dim = int(embed_dim)
        self.vehicle_id = str(vehicle_id)  # names this store's segments in answers
        self.precision = precision  # of the graphs that computed the features (None: unknown)
        self.in_memory = path is None or str(path) in ("", ":memory:")
        self.path = ":memory:" if path is None or self.in_memory else str(Path(path).expanduser())
        self._head = head
        self._index_dtype = index_dtype
        self._cell_size = cell_size
        self._lock = threading.RLock()
        if not self.in_memory and os.path.isdir(self.path):
            raise MemoryFileError(f"{self.path} is a directory; memory_path must name a file")
        # A missing or zero-byte file is a new memory; anything else is checked before writing.
        fresh = self.in_memory or not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        existing = None if fresh else self._open_existing()
        fresh = existing is None  # a file killed before its schema was written starts afresh
        self.index = existing if existing is not None else self._new_index()
        self._open_writer(fresh)
        self._read_conn: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        if not self.in_memory:
            self._check_sidecar()
            try:
                self._read_conn = sqlite3.connect(self.path, check_same_thread=False)
            except sqlite3.Error:
                self._read_conn = None  # reads share the writer's connection

    # -- opening ------------------------------------------------------------------------------

    def _open_writer(self, fresh: bool) -> None:
        """The writing connection, with the schema created (fresh) or brought up to date."""
        try:
            if fresh and not self.in_memory:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            if fresh:
                self._create_schema()
            else:
                self._migrate()
        except (sqlite3.Error, OSError) as exc:
            if hasattr(self, "_conn"):
                self._conn.close()
            if is_storage_failure(exc):
                raise MemoryFileError(str(storage_error(exc, self.path, "opening"))) from exc
            raise MemoryFileError(f"{self.path}: cannot open for writing: {exc}") from exc

    def _new_index(self) -> ScoreIndex:
        return ScoreIndex(
            self.embed_dim, self._head, dtype=self._index_dtype, cell_size=self._cell_size
        )

    def _create_schema(self) -> None:
        created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        meta = {
            "app": _APP,
            "schema_version": str(SCHEMA_VERSION),
            "model_hash": self.model_hash,
            "embed_dim": str(self.embed_dim),
            "created": created,
        }
        if self.precision:
            meta["precision"] = self.precision
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                self._conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def _open_existing(self) -> ScoreIndex | None:
        """Validate the file and load the index through a read-only connection; None for a
        SQLite file without any table (killed before its schema was written)."""
        try:
            with open(self.path, "rb") as f:
                magic = f.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise MemoryFileError(f"{self.path}: cannot read: {exc}") from exc
        hint = "The file was not modified; move it away or point memory_path at a new file."
        if magic != _SQLITE_MAGIC:
            raise MemoryFileError(f"{self.path} is not a SQLite database (bad header). {hint}")
        uri = Path(os.path.abspath(self.path)).as_uri() + "?mode=ro"
        try:
            ro = sqlite3.connect(uri, uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise MemoryFileError(f"{self.path}: cannot open: {exc}. {hint}") from exc
        try:
            if not ro.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                return None
            self._check_meta(ro, hint)
            return self._read_index(ro)
        except sqlite3.Error as exc:
            if is_storage_failure(exc) and "malformed" not in str(exc) and \
                    "not a database" not in str(exc):
                raise MemoryFileError(
                    f"{storage_error(exc, self.path, 'reading')}. {hint}") from exc
            raise MemoryFileError(f"{self.path} is corrupt or unreadable: {exc}. {hint}") from exc
        except MemoryFileError as exc:
            if "not modified" in str(exc):
                raise
            raise MemoryFileError(f"{exc}. {hint}") from exc
        finally:
            ro.close()

    def _check_meta(self, conn: sqlite3.Connection, hint: str) -> None:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"meta", "segments"} <= tables:
            raise MemoryFileError(
                f"{self.path} is a SQLite database but not a {_APP} file "
                f"(tables: {sorted(tables)}). {hint}"
            )
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        version = meta.get("schema_version", "?")
        if version != str(SCHEMA_VERSION):
            raise MemoryFileError(
                f"{self.path} has memory schema version {version}; this build reads version "
                f"{SCHEMA_VERSION}. {hint}"
            )
        file_hash, file_dim = meta.get("model_hash"), meta.get("embed_dim")
        file_precision = meta.get("precision")
        mixed = bool(self.precision and file_precision and file_precision != self.precision)
        if file_hash != self.model_hash or file_dim != str(self.embed_dim) or mixed:
            was = f", {file_precision}" if file_precision else ""
            now = f", {self.precision}" if self.precision else ""
            raise ModelMismatchError(
                f"{self.path} holds segments encoded by model {file_hash!r} (embed_dim {file_dim}"
                f"{was}), but the loaded model is {self.model_hash!r} (embed_dim "
                f"{self.embed_dim}{now}). "
                "Stored features only match the model that computed them: re-index the drive "
                "with the new model into a new file, or point memory_path at a new (or empty) "
                "file, or load the model that wrote this one. The file was not modified."
            )

    def _read_index(self, conn: sqlite3.Connection) -> ScoreIndex:
        e = self.embed_dim
        columns = {r[1] for r in conn.execute("PRAGMA table_info(segments)")}
        checksum = "checksum" if "checksum" in columns else "NULL"  # before checksums: migrated
        all_rows = conn.execute(
            "SELECT id, start_ns, end_ns, poses, video_feat, terms, beta, gamma, frame_count, "
            f"frame_id, pose_feat, {checksum} FROM segments ORDER BY start_ns, id"
        ).fetchall()
        self._max_id = max((int(r[0]) for r in all_rows), default=0)
        rows, paths, video_rows, ag_rows = [], [], [], []
        self.corrupt_ids = []
        for r in all_rows:
            try:
                poses, video, ag = self._verified_row(r, e)
            except MemoryFileError:
                self.corrupt_ids.append(int(r[0]))
                continue
            rows.append(r)
            paths.append(poses[:, 1:4])
            video_rows.append(video)
            ag_rows.append(ag)
        if self.corrupt_ids:
            shown = ", ".join(map(str, self.corrupt_ids[:20]))
            more = "" if len(self.corrupt_ids) <= 20 else f" and {len(self.corrupt_ids) - 20} more"
            self.problems.append(
                f"{self.path}: {len(self.corrupt_ids)} of {len(all_rows)} stored segments are "
                f"corrupt (checksum mismatch) and are skipped, never scored: ids {shown}{more}")
        n = len(rows)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n)
        starts = np.fromiter((r[1] for r in rows), dtype=np.int64, count=n)
        ends = np.fromiter((r[2] for r in rows), dtype=np.int64, count=n)
        ag_arr = np.asarray(ag_rows, dtype=np.float32).reshape(n, 2 * e)
        video_arr = np.asarray(video_rows, dtype=np.float64).reshape(n, e)
        bg = np.array([(r[6], r[7]) for r in rows], dtype=np.float32).reshape(n, 2)
        unit = unit_rows(video_arr, "video_feat").astype(np.float32) if n else \
            np.empty((0, e), dtype=np.float32)
        terms = TermArrays(ag=ag_arr, bg=bg, video_unit=unit)
        index = self._new_index()
        index.extend(ids, starts, ends, terms, paths)
        return index

    def _verified_row(self, r: tuple, e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decoded (poses, video_feat, terms) of a row; MemoryFileError if it is damaged."""
        what = f"{self.path} segment id {r[0]}"
        if r[11] is not None:
            try:
                want = row_checksum(r[1], r[2], r[8], r[9], r[3], r[4], r[10], r[5], r[6], r[7])
            except (TypeError, ValueError, UnicodeError) as exc:
                raise MemoryFileError(f"{what}: unreadable fields ({exc})") from exc
            if want != int(r[11]):
                raise MemoryFileError(f"{what}: checksum mismatch")
        poses = _decode(r[3], _F64, (len(r[3]) // 64, 8), what + " poses")
        video = _decode(r[4], _F32, (e,), what + " video_feat").astype(np.float64)
        ag = _decode(r[5], _F32, (2 * e,), what + " terms")
        if not (np.isfinite(ag).all() and np.isfinite(video).all()
                and math.isfinite(r[6]) and math.isfinite(r[7]) and np.linalg.norm(video) > 0):
            raise MemoryFileError(f"{what}: non-finite or zero features")
        return poses, video, ag

    def _migrate(self) -> None:
        """Add the columns newer than the file, and checksums to rows written before them."""
        have = {r[1] for r in self._conn.execute("PRAGMA table_info(segments)")}
        missing = [(name, decl) for name, decl in _ADDED_COLUMNS if name not in have]
        legacy = [] if missing else self._conn.execute(
            "SELECT id, start_ns, end_ns, frame_count, frame_id, poses, video_feat, pose_feat, "
            "terms, beta, gamma FROM segments WHERE checksum IS NULL").fetchall()
        if not (missing or legacy):
            return
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for name, decl in missing:
                    self._conn.execute(f"ALTER TABLE segments ADD COLUMN {name} {decl}")
                if missing:
                    legacy = self._conn.execute(
                        "SELECT id, start_ns, end_ns, frame_count, frame_id, poses, video_feat, "
                        "pose_feat, terms, beta, gamma FROM segments").fetchall()
                self._conn.executemany(
                    "UPDATE segments SET checksum = ? WHERE id = ?",
                    [(row_checksum(*r[1:]), r[0]) for r in legacy])
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def _check_sidecar(self) -> None:
        """Compare the file with the count recorded beside it; say loudly what was lost."""
        recorded = Sidecar.read(self.path)
        held = len(self.index) + len(self.corrupt_ids)
        if recorded is not None:
            lost = recorded.shortfall(self.path, held, self._max_id)
            if lost is not None:
                self.problems.append(lost)
        self._write_sidecar(held)

    def _write_sidecar(self, segments: int) -> None:
        if self.in_memory:
            return
        try:
            # No fsync: a sidecar older than the file after a power cut is harmless (it can only
            # be lower), and an fsync per segment would double the cost of each store.
            Sidecar(segments, self._max_id).write(self.path, fsync=False)
        except OSError:
            pass  # disk full / read-only: the next write tries again; the db write reports it

    def _rollback(self) -> None:
        """Roll back if a transaction is open (a failed COMMIT may have rolled back already)."""
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    # -- public API -----------------------------------------------------------------------------

    def load_index(self) -> ScoreIndex:
        """A fresh scoring index rebuilt from the file (the store keeps its own in ``index``)."""
        with self._lock:
            return self._read_index(self._conn)

    def add(self, segment: Segment) -> int:
        """Store a segment in one durable transaction, then index it; returns its id."""
        return self.add_many([segment])[0]

    def add_many(self, segments: list[Segment]) -> list[int]:
        """Store segments in one durable transaction (one disk sync for all), then index them;
        returns their ids. All or none are stored."""
        rows = []
        for segment in segments:
            segment.validate(self.embed_dim)
            poses = np.asarray(segment.poses, dtype=np.float64)
            cx, cy = (float(v) for v in poses[:, 1:3].mean(axis=0))
            values = (
                int(segment.start_ns),
                int(segment.end_ns),
                int(poses.shape[0]),
                segment.frame_id,
                _blob(poses, _F64),
                _blob(segment.video_feat, _F32),
                _blob(segment.pose_feat, _F32),
                _blob(segment.terms.ag, _F32),
                float(segment.terms.beta),
                float(segment.terms.gamma),
                cx,
                cy,
            )
            rows.append((*values, row_checksum(*values[:10])))
        with self._lock:
            ids = []
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                for row in rows:
                    cur = self._conn.execute(
                        "INSERT INTO segments (start_ns, end_ns, frame_count, frame_id, poses, "
                        "video_feat, pose_feat, terms, beta, gamma, cx, cy, checksum) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        row,
                    )
                    ids.append(int(cur.lastrowid or 0))
                self._conn.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sqlite3.Error) and is_storage_failure(exc):
                    raise storage_error(exc, self.path, "writing a segment to") from exc
                raise
            self._max_id = max([self._max_id, *ids])
            # Only now, after the commit, do the segments become visible to queries.
            for seg_id, segment in zip(ids, segments, strict=True):
                self.index.append(seg_id, segment.start_ns, segment.end_ns, segment.terms,
                                  np.asarray(segment.poses, dtype=np.float64)[:, 1:4])
            self._write_sidecar(len(self.index) + len(self.corrupt_ids))
        return ids

    def get(self, seg_id: int) -> Segment | None:
        """The stored segment with this id, or None (never stored, or evicted)."""
        found = self.get_many([seg_id])
        return found[0] if found else None

    def get_many(self, ids: list[int] | np.ndarray) -> list[Segment]:
        """Stored segments for these ids, in the given order; missing ids are skipped."""
        want = [int(i) for i in ids]
        if not want:
            return []
        e = self.embed_dim
        rows = self._read_rows(want)
        out = []
        for i in want:
            if i not in rows:
                continue
            r = rows[i]
            what = f"{self.path} segment id {i}"
            video = _decode(r[5], _F32, (e,), what + " video_feat")
            out.append(
                Segment(
                    id=i,
                    start_ns=int(r[1]),
                    end_ns=int(r[2]),
                    frame_id=str(r[3]),
                    poses=_decode(r[4], _F64, (len(r[4]) // 64, 8), what + " poses"),
                    video_feat=video,
                    pose_feat=_decode(r[6], _F32, (e,), what + " pose_feat"),
                    terms=SegmentTerms(
                        ag=_decode(r[7], _F32, (2 * e,), what + " terms"),
                        beta=float(r[8]),
                        gamma=float(r[9]),
                        video_unit=unit_rows(video.astype(np.float64)).astype(np.float32),
                    ),
                    vehicle_id=self.vehicle_id,
                )
            )
        return out

    def _read_rows(self, want: list[int]) -> dict[int, tuple]:
        """Rows by id, from the row cache or the file."""
        rows = {i: r for i in want if (r := self._rows.get(i)) is not None}
        missing = [i for i in want if i not in rows]
        if not missing:
            return rows
        fetched: dict[int, tuple] = {}
        # A file has its own read connection: in WAL mode reads never wait for a commit (whose
        # disk sync can take seconds on a busy disk); RAM has only the one connection.
        conn, lock = (self._conn, self._lock) if self._read_conn is None else (
            self._read_conn, self._read_lock)
        with lock:
            for k in range(0, len(missing), 500):  # stay below SQLite's bound-variable limit
                chunk = missing[k : k + 500]
                marks = ",".join("?" * len(chunk))
                for r in conn.execute(
                    "SELECT id, start_ns, end_ns, frame_id, poses, video_feat, pose_feat, terms, "
                    f"beta, gamma FROM segments WHERE id IN ({marks})",
                    chunk,
                ):
                    fetched[int(r[0])] = r
        for i, r in fetched.items():
            if i in self.index:  # not evicted meanwhile (eviction drops the index entry first)
                self._rows.put(i, r)
        rows.update(fetched)
        return rows

    def __len__(self) -> int:
        return len(self.index)

    def all_ids(self) -> list[int]:
        """Ids of all stored segments, ascending."""
        return sorted(self.index.ids().tolist())

    def evict_oldest(self, max_segments: int) -> list[int]:
        """Delete the segments with the oldest start stamps beyond ``max_segments``; their ids."""
        if max_segments < 0:
            raise ValueError(f"max_segments must be >= 0, got {max_segments}")
        with self._lock:
            excess = len(self.index) - max_segments
            if excess <= 0:
                return []
            # Out of the index first, so a query never returns an id whose row is gone.
            gone = self.index.remove_oldest(excess).tolist()
            for i in gone:
                self._rows.pop(i)
            # The sidecar goes down before the rows do: a crash in between leaves it below
            # the file (harmless), never above it (a false alarm at the next start).
            self._write_sidecar(len(self.index) + len(self.corrupt_ids))
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany("DELETE FROM segments WHERE id = ?", [(i,) for i in gone])
                self._conn.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sqlite3.Error) and is_storage_failure(exc):
                    raise storage_error(exc, self.path, "evicting segments from") from exc
                raise
            return gone

    def describe(self) -> str:
        return "RAM only" if self.in_memory else self.path

    def search(
        self,
        k: int,
        t: np.ndarray | None = None,
        *,
        query_embedding: np.ndarray | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        near: npt.ArrayLike | None = None,
        radius: float | None = None,
        min_score: float | None = None,
        vehicle_id: str | None = None,
    ) -> SearchResult:
        """Top-k stored segments (``backend.MemoryBackend.search``), scored by the index."""
        from spartan_ros.memory.backend import Found, SearchResult

        if vehicle_id is not None and vehicle_id != self.vehicle_id:
            return SearchResult([], 0)  # this file holds one vehicle's segments
        hits = self.index.search(k, t, query_embedding=query_embedding, since_ns=since_ns,
                                 until_ns=until_ns, near=near, radius=radius,
                                 min_score=min_score)
        segments = {s.id: s for s in self.get_many(hits.ids)}
        found = [Found(segments[i], float(s))
                 for i, s in zip(hits.ids.tolist(), hits.scores.tolist(), strict=True)
                 if i in segments]  # a segment evicted between scoring and reading is skipped
        return SearchResult(found, hits.candidates)

    def meta(self) -> dict[str, str]:
        with self._lock:
            return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` result ("ok" when healthy)."""
        with self._lock:
            return "; ".join(r[0] for r in self._conn.execute("PRAGMA integrity_check"))

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._conn.close()
            if self._read_conn is not None:
                self._read_conn.close()

    def __enter__(self) -> SegmentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
