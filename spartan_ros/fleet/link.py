"""The node's link to the fleet store: the outbox mirror and fleet-scope queries.

Nothing here blocks the node when the fleet store is down: the mirror retries in its own thread,
and a fleet query that cannot reach the store answers with a readable error.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from spartan_ros.fleet import outbox
from spartan_ros.fleet.outbox import FleetMirror
from spartan_ros.memory.backend import SearchResult
from spartan_ros.memory.milvus_store import Connection, FleetUnavailable, MilvusSegmentStore
from spartan_ros.query import QueryError
from spartan_ros.runtime.scoring import FusionHead


def connection(values: dict[str, Any], uri_key: str) -> Connection:
    """Connection settings from the node parameters (``uri_key``: milvus_uri or fleet_uri)."""
    return Connection(
        uri=str(values[uri_key]),
        token=str(values.get("milvus_token", "")),
        tls_ca=str(values.get("milvus_tls_ca", "")),
        tls_cert=str(values.get("milvus_tls_cert", "")),
        tls_key=str(values.get("milvus_tls_key", "")),
        tls_server_name=str(values.get("milvus_tls_server_name", "")),
    )


RECONNECT_ATTEMPTS = 3
RECONNECT_PAUSE_S = 0.5


class FleetReader:
    """Answers fleet-scope searches; connects on first use and again after a failure."""

    def __init__(self, conn: Connection, model_hash: str, embed_dim: int,
                 head: FusionHead) -> None:
        self.conn = conn
        self.model_hash, self.embed_dim, self.head = model_hash, embed_dim, head
        self._store: MilvusSegmentStore | None = None
        self._lock = threading.Lock()

    def search(self, k: int, t: np.ndarray | None = None, **kwargs: Any) -> SearchResult:
        with self._lock:
            # A store that restarted since the last search refuses the old connection once:
            # connect afresh and ask again before saying it is unreachable.
            for attempt in range(RECONNECT_ATTEMPTS):
                try:
                    if self._store is None:
                        self._store = MilvusSegmentStore(self.conn, self.model_hash,
                                                         self.embed_dim, head=self.head)
                    return self._store.search(k, t, **kwargs)
                except FleetUnavailable as exc:
                    self._close()
                    if attempt + 1 == RECONNECT_ATTEMPTS:
                        raise QueryError(f"fleet store unreachable: {exc}") from exc
                    time.sleep(RECONNECT_PAUSE_S)
            raise AssertionError("unreachable")

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def close(self) -> None:
        with self._lock:
            self._close()


class FleetLink:
    """Mirror (when the memory is a SQLite file) plus reader, for one configured node."""

    def __init__(self, values: dict[str, Any], memory_path: str, model_hash: str,
                 embed_dim: int, head: FusionHead, log: Any) -> None:
        conn = connection(values, "fleet_uri")
        self.reader = FleetReader(conn, model_hash, embed_dim, head)
        queued = outbox.enable(memory_path)
        self.mirror = FleetMirror(memory_path, conn, str(values["vehicle_id"]), log=log)
        self.mirror.start()
        log.info(f"mirroring segments to the fleet at {conn.describe()} as vehicle "
                 f"{values['vehicle_id']!r} ({queued} queued)")

    def stats(self) -> dict[str, str]:
        s = self.mirror.stats
        return {"fleet segments sent": str(s.sent), "fleet segments queued": str(s.pending),
                "fleet store": "connected" if s.connected else (
                    f"unreachable: {s.last_error}" if s.last_error else "not contacted yet")}

    def close(self) -> None:
        self.mirror.stop()
        self.reader.close()


def turn_off(memory_path: str, log: Any) -> None:
    """fleet_uri is empty: stop queueing segments in a file that mirrored before."""
    left = outbox.disable(memory_path)
    if left:
        log.warning(f"fleet mirroring is off: {left} segments stay queued in {memory_path}; "
                    "`spartan-fleet push` sends the whole memory")
