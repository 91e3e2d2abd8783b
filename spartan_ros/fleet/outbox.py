"""The node's durable outbox of segments to mirror to the fleet store, and the sender thread.

A SQLite trigger copies every segment row into ``fleet_outbox`` inside the same transaction that
stores it: a segment the node stored is queued for the fleet, even if the process dies right
after, and storing never talks to the network. The sender reads the outbox in id order, upserts a
batch into the fleet collection (keyed by vehicle and segment id, so sending twice after a crash
overwrites instead of duplicating), and only then deletes the batch from the outbox. When the
fleet store is unreachable it keeps the segments queued and retries with a growing pause.
Eviction (``max_segments``) does not touch the outbox: evicted but unsent segments are still sent.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from spartan_ros.fleet.sync import ROW_COLUMNS, iter_batches, memory_meta
from spartan_ros.memory.milvus_store import (
    Connection,
    FleetUnavailable,
    MilvusSegmentStore,
    segment_record,
)

_OUTBOX_SQL = (
    """CREATE TABLE IF NOT EXISTS fleet_outbox (
        segment_id INTEGER PRIMARY KEY,
        start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, frame_id TEXT NOT NULL,
        poses BLOB NOT NULL, video_feat BLOB NOT NULL, pose_feat BLOB NOT NULL,
        terms BLOB NOT NULL, beta REAL NOT NULL, gamma REAL NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS fleet_state (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    f"""CREATE TRIGGER IF NOT EXISTS fleet_outbox_on_store AFTER INSERT ON segments BEGIN
        INSERT OR REPLACE INTO fleet_outbox (segment_id, {ROW_COLUMNS})
        VALUES (NEW.id, NEW.start_ns, NEW.end_ns, NEW.frame_id, NEW.poses, NEW.video_feat,
                NEW.pose_feat, NEW.terms, NEW.beta, NEW.gamma);
    END""",
)


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def enable(memory_path: str) -> int:
    """Install the outbox in a memory file (idempotent); returns the segments queued.

    The first time, every segment already in the file is queued too, so the fleet ends up
    with the whole memory whatever the node stored before mirroring was turned on.
    """
    conn = _connect(memory_path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _OUTBOX_SQL:
                conn.execute(statement)
            done = conn.execute("SELECT value FROM fleet_state WHERE key = 'backfilled'").fetchone()
            if done is None:
                conn.execute(f"INSERT OR IGNORE INTO fleet_outbox (segment_id, {ROW_COLUMNS}) "
                             f"SELECT id, {ROW_COLUMNS} FROM segments")
                conn.execute("INSERT INTO fleet_state VALUES ('backfilled', '1')")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return pending(conn)
    finally:
        conn.close()


def disable(memory_path: str) -> int:
    """Stop queueing new segments (mirroring turned off); returns the segments left queued."""
    conn = _connect(memory_path)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if "fleet_outbox_on_store" in names:
            conn.execute("DROP TRIGGER fleet_outbox_on_store")
            # Segments stored while mirroring is off are not queued: the next enable() queues
            # the whole memory again (upserts: nothing is duplicated in the fleet).
            conn.execute("DELETE FROM fleet_state WHERE key = 'backfilled'")
        return pending(conn) if "fleet_outbox" in names else 0
    finally:
        conn.close()


def pending(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM fleet_outbox").fetchone()[0])


@dataclass
class MirrorStats:
    sent: int = 0
    pending: int = 0
    connected: bool = False
    failures: int = 0
    last_error: str = ""
    last_sent_id: int = 0
    counts: dict[str, int] = field(default_factory=dict)


class FleetMirror:
    """A thread sending the outbox of ``memory_path`` to the fleet store at ``conn``."""

    def __init__(self, memory_path: str, conn: Connection, vehicle_id: str, *,
                 batch_size: int = 64, poll_s: float = 0.5, max_backoff_s: float = 30.0,
                 log: Any = None) -> None:
        if not vehicle_id:
            raise ValueError("fleet mirroring needs a vehicle_id")
        self.memory_path = os.path.abspath(memory_path)
        self.conn = conn
        self.vehicle_id = vehicle_id
        self.batch_size = batch_size
        self.poll_s = poll_s
        self.max_backoff_s = max_backoff_s
        self.log = log or logging.getLogger("spartan_ros.fleet")
        self.stats = MirrorStats()
        self._db = _connect(self.memory_path)
        self.model_hash, self.embed_dim = memory_meta(self._db)
        self.stats.pending = pending(self._db)
        self._fleet: MilvusSegmentStore | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="spartan-fleet", daemon=True)
            self._thread.start()

    def notify(self) -> None:
        """A segment was stored: send without waiting for the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._disconnect()
        self._db.close()

    def _disconnect(self) -> None:
        if self._fleet is not None:
            self._fleet.close()
            self._fleet = None
        self.stats.connected = False

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            try:
                sent = self.send_once()
                backoff = 0.0
            except FleetUnavailable as exc:
                self._disconnect()
                self.stats.failures += 1
                if self.stats.failures == 1 or backoff >= self.max_backoff_s:
                    self.log.warning(f"fleet store unreachable ({exc}); {self.stats.pending} "
                                     "segments wait in the outbox and will be sent later")
                self.stats.last_error = str(exc)
                backoff = min(max(2 * backoff, 0.5), self.max_backoff_s)
                self._stop.wait(backoff)
                continue
            except Exception as exc:  # never let the mirror take the node down
                self.log.error(f"fleet mirror: {type(exc).__name__}: {exc}")
                self.stats.last_error = str(exc)
                self._stop.wait(self.max_backoff_s)
                continue
            if sent == 0:
                self._wake.wait(self.poll_s)
                self._wake.clear()

    def send_once(self) -> int:
        """Send one batch from the outbox; returns how many segments left it."""
        batch = next(iter_batches(self._db, "fleet_outbox", "segment_id", self.embed_dim,
                                  self.batch_size), [])
        self.stats.pending = pending(self._db)
        if not batch:
            return 0
        if self._fleet is None:
            self._fleet = MilvusSegmentStore(self.conn, self.model_hash, self.embed_dim,
                                             vehicle_id=self.vehicle_id)
            if self.stats.failures:
                self.log.info(f"fleet store reachable again: sending {self.stats.pending} "
                              "queued segments")
            self.stats.connected, self.stats.failures = True, 0
        self._fleet.upsert([segment_record(s, self.vehicle_id, int(s.id or 0)) for s in batch])
        ids = [(int(s.id or 0),) for s in batch]
        # Only after the fleet acknowledged the batch; a crash in between resends it (upsert).
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("DELETE FROM fleet_outbox WHERE segment_id = ?", ids)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self.stats.sent += len(batch)
        self.stats.last_sent_id = ids[-1][0]
        self.stats.pending = pending(self._db)
        return len(batch)

    def drain(self, timeout: float) -> bool:
        """Send until the outbox is empty (tests, shutdown); False when time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.send_once() == 0 and self.stats.pending == 0:
                return True
        return False
