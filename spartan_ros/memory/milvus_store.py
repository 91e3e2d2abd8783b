"""Segment memory in Milvus (Milvus Lite file, standalone server or cluster), exact answers.

One collection per model (named from its hash); each row is one segment of one vehicle, keyed by
``"<vehicle_id>/<segment id>"``, so copying a segment twice overwrites it instead of adding it.

The node's score of a segment j for a text feature t is not one inner product
(``runtime.scoring``)::

    s_j = n_j / D(x_j),   n_j = t·a_j + β_j,   x_j = 2 t·g_j + γ_j,   D(x) = sqrt(α + x)

so Milvus cannot rank by it. Each row carries one vector u_j = [a_j, β_j, 2 g_j, γ_j], and
u_j · [t, 1, -c t, -c] = n_j - c x_j for any c. D is concave, so on an interval [x_lo, x_hi]
that holds every x_j it lies above its chord: D(x) >= A + B x. If s* > 0 is the k-th best exact
score found so far, every segment that could beat it has n_j >= s* D(x_j) >= s* (A + B x_j), i.e.

    u_j · [t, 1, -s* B t, -s* B]  >=  s* A

which a range search (radius) on a FLAT (brute force) index returns completely. Re-scoring those
candidates exactly on the client gives the true top-k: the answer is proven, not approximate.
The interval comes from two searches (the largest x_j and the largest -x_j under the filters).
When the bound cannot be used (s* <= 0, fewer than k segments found, or a range search that
hits Milvus's result limit) every filtered segment is scored instead.

A request with its own trajectory scores cos(q, v̂_j), a plain inner product with the stored
v̂_j: the same probe / range search / exact re-score with the threshold s* itself.

Filters: the time window and vehicle are Milvus filter expressions; the radius filter is a
bounding-box expression (a superset) followed by the exact point test of ``ScoreIndex``.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from spartan_ros.memory.backend import Found, SearchResult
from spartan_ros.memory.store import MemoryFileError, ModelMismatchError, Segment
from spartan_ros.runtime.scoring import FusionHead, SegmentTerms, top_k

SCHEMA_VERSION = 1
_APP = "spartan_ros segment memory"
_F32, _F64 = np.dtype("<f4"), np.dtype("<f8")
_MIN_NORM2 = 1e-20  # as runtime.scoring: |q|² below this scores 0
# Milvus returns at most this many rows per search (its documented topk limit).
MAX_LIMIT = 16384
# Rows scored per page when every filtered segment has to be scored.
_SCAN_BATCH = 2000
# Relative slack on everything Milvus computes in float32, so rounding can only add candidates.
_SLACK = 1e-4
# Segments the first search fetches beyond k: their exact scores set the threshold.
PROBE_EXTRA = 8

# Collection property holding the model hash, embed dim and schema version (JSON).
_META_PROPERTY = "spartan.meta"
_BASE_FIELDS = ["key", "vehicle_id", "segment_id"]
# Arrays stored as base64 text: poses float64 [T, 8], video_feat and pose_feat float32 [E].
BLOB_FIELDS = ("poses", "video_feat", "pose_feat")
_ROW_FIELDS = ["start_ns", "end_ns", "frame_id", *BLOB_FIELDS]


class FleetUnavailable(RuntimeError):
    """The Milvus server cannot be reached (or refused the request)."""


# gRPC settings for a Milvus server. By default every channel to one address shares a connection
# whose reconnect pause grows to two minutes while the server is down, so a fresh client made after
# the server came back still failed for seconds to minutes; with a connection of its own a fresh
# client connects at once, and a long-lived one tries again at least every 2 s.
GRPC_OPTIONS = {"grpc.use_local_subchannel_pool": 1, "grpc.max_reconnect_backoff_ms": 2000}

# The TLS settings as users set them: node parameter (spartan-fleet option).
_SETTINGS = {name: f"milvus_{name} (--{name.replace('_', '-')})"
             for name in ("tls_ca", "tls_cert", "tls_key", "tls_server_name")}


@dataclass(frozen=True)
class Connection:
    """Where Milvus is and how to talk to it (passed through to ``pymilvus.MilvusClient``)."""

    uri: str
    token: str = ""
    tls_ca: str = ""  # CA certificate (PEM) of the server; setting it turns TLS on
    tls_cert: str = ""  # client certificate and key, for mutual TLS
    tls_key: str = ""
    tls_server_name: str = ""  # name in the server certificate, when it differs from the host
    db_name: str = ""
    timeout_s: float = 10.0

    @property
    def is_local(self) -> bool:
        """A file path: Milvus Lite runs embedded in this process."""
        return "://" not in self.uri

    @property
    def uses_tls(self) -> bool:
        """An https:// URI (pymilvus then trusts the system's CAs) or a CA / client certificate
        given (TLS whatever the scheme)."""
        return bool(self.tls_ca or self.tls_cert) or self.uri.lower().startswith("https://")

    def describe(self) -> str:
        """Where, and how (TLS, token; never the token itself): error messages name it."""
        if self.is_local:
            return f"Milvus Lite {self.uri}"
        how = []
        if self.uses_tls:
            tls = f"TLS, CA {self.tls_ca}" if self.tls_ca else "TLS, system CAs"
            if self.tls_cert:
                tls += f", client certificate {self.tls_cert}"
            if self.tls_server_name:
                tls += f", server name {self.tls_server_name}"
            how.append(tls)
        if self.token:
            how.append("token set")
        return f"Milvus {self.uri}" + (f" ({'; '.join(how)})" if how else "")

    def check(self) -> None:
        """FleetUnavailable naming the setting when the TLS settings cannot work together (the
        client would otherwise drop the client certificate silently, or fail on a file).
        A Milvus Lite file takes no TLS: nothing to check."""
        if self.is_local:
            return
        problem = None
        if bool(self.tls_cert) != bool(self.tls_key):
            problem = (f"mutual TLS needs both {_SETTINGS['tls_cert']} and "
                       f"{_SETTINGS['tls_key']}")
        elif self.tls_cert and not self.tls_ca:
            problem = (f"mutual TLS needs {_SETTINGS['tls_ca']} too (the CA that signed the "
                       "server's certificate)")
        elif self.tls_server_name and not self.uses_tls:
            problem = (f"{_SETTINGS['tls_server_name']} is set but TLS is off: use an https:// "
                       f"URI or set {_SETTINGS['tls_ca']}")
        for name in ("tls_ca", "tls_cert", "tls_key"):
            path = getattr(self, name)
            if problem is None and path and not os.access(path, os.R_OK):
                why = "is not readable" if os.path.exists(path) else "does not exist"
                problem = f"{_SETTINGS[name]}: {path} {why}"
        if problem is not None:
            raise FleetUnavailable(f"{self.describe()}: {problem}")

    def client_kwargs(self) -> dict[str, Any]:
        uri = os.path.abspath(os.path.expanduser(self.uri)) if self.is_local else self.uri
        kw: dict[str, Any] = {"uri": uri, "timeout": self.timeout_s}
        if self.is_local:  # Milvus Lite in this process: no credentials, no TLS (the node's
            return kw      # settings may be meant for its fleet_uri)
        kw["grpc_options"] = dict(GRPC_OPTIONS)
        if self.token:
            kw["token"] = self.token
        if self.db_name:
            kw["db_name"] = self.db_name
        if self.tls_ca or self.tls_cert:
            kw["secure"] = True
            if self.tls_cert:
                kw.update(client_pem_path=self.tls_cert, client_key_path=self.tls_key,
                          ca_pem_path=self.tls_ca)
            else:
                kw["server_pem_path"] = self.tls_ca
            if self.tls_server_name:
                kw["server_name"] = self.tls_server_name
        return kw


def connect(conn: Connection) -> Any:
    """A ``MilvusClient``; FleetUnavailable with one readable line when that fails."""
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:  # pragma: no cover - the fleet extra is not installed
        raise FleetUnavailable("the Milvus client is not installed: pip install "
                               "'spartan_ros[fleet]' (pymilvus, milvus-lite)") from exc
    # pymilvus logs every failed RPC with a traceback (and notes on iterators); the store turns
    # failures into FleetUnavailable with one line, which the caller logs (throttled).
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    _skip_client_string_check()
    if conn.is_local and not conn.uri.endswith(".db"):
        raise FleetUnavailable(f"{conn.uri!r}: a Milvus Lite store is a path ending in .db; "
                               "a server is http(s)://host:19530")
    if conn.is_local:
        parent = os.path.dirname(os.path.abspath(os.path.expanduser(conn.uri)))
        os.makedirs(parent, exist_ok=True)
    conn.check()
    try:
        return MilvusClient(**conn.client_kwargs())
    except Exception as exc:
        raise FleetUnavailable(f"cannot connect to {conn.describe()}: "
                               f"{type(exc).__name__}: {exc}") from exc


def _skip_client_string_check() -> None:
    """Turn off pymilvus's client-side check of VARCHAR values (its ``CHECK_STR_ARRAY`` switch).

    For a row-wise insert the check walks each string character by character (``isinstance``
    and ``len`` of every character), which for our 7.5 KB of base64 per segment cost as much CPU
    as packing the two vectors (bench/fleet_ingest.py). It checks nothing useful for a single
    string, and Milvus (server and Lite) checks each value against its ``max_length`` anyway.
    """
    try:
        from pymilvus.client import entity_helper
    except ImportError:  # pragma: no cover - another pymilvus layout: keep its checks
        return
    if hasattr(entity_helper, "CHECK_STR_ARRAY"):
        entity_helper.CHECK_STR_ARRAY = False


def read_meta(info: dict) -> dict[str, Any]:
    """The spartan_ros record of a collection (``describe_collection``), {} when absent."""
    try:
        meta = json.loads((info.get("properties") or {}).get(_META_PROPERTY, "{}"))
    except (json.JSONDecodeError, TypeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def collection_name(model_hash: str, embed_dim: int) -> str:
    """One collection per model: Milvus names allow letters, digits and underscores."""
    safe = re.sub(r"[^0-9A-Za-z]", "", model_hash)[:32] or "model"
    return f"spartan_{safe}_e{int(embed_dim)}"


def segment_key(vehicle_id: str, segment_id: int) -> str:
    return f"{vehicle_id}/{int(segment_id)}"


def _b64(arr: np.ndarray, dtype: np.dtype) -> str:
    return base64.b64encode(np.ascontiguousarray(arr, dtype=dtype).tobytes()).decode("ascii")


def _unb64(text: str, dtype: np.dtype, width: int) -> np.ndarray:
    raw = np.frombuffer(base64.b64decode(text), dtype=dtype)
    return raw.reshape(-1, width).astype(dtype.newbyteorder("=")) if width > 1 else raw.astype(
        dtype.newbyteorder("="))


def u_vector(terms: SegmentTerms) -> np.ndarray:
    """u = [a, β, 2 g, γ] (float32; doubling and halving g are exact in binary floating point)."""
    e = terms.embed_dim
    u = np.empty(2 * e + 2, dtype=np.float32)
    u[:e] = terms.ag[:e]
    u[e] = np.float32(terms.beta)
    u[e + 1 : 2 * e + 1] = 2 * terms.ag[e:]
    u[2 * e + 1] = np.float32(terms.gamma)
    return u


def segment_record(segment: Segment, vehicle_id: str, segment_id: int) -> dict[str, Any]:
    """The Milvus row of a stored segment."""
    poses = np.asarray(segment.poses, dtype=np.float64)
    xy = poses[:, 1:3]
    return {
        "key": segment_key(vehicle_id, segment_id),
        "vehicle_id": vehicle_id,
        "segment_id": int(segment_id),
        "start_ns": int(segment.start_ns),
        "end_ns": int(segment.end_ns),
        "frame_id": segment.frame_id,
        "min_x": float(xy[:, 0].min()), "max_x": float(xy[:, 0].max()),
        "min_y": float(xy[:, 1].min()), "max_y": float(xy[:, 1].max()),
        "poses": _b64(poses, _F64),
        "video_feat": _b64(segment.video_feat, _F32),
        "pose_feat": _b64(segment.pose_feat, _F32),
        "u": u_vector(segment.terms).tolist(),
        "v": np.asarray(segment.terms.video_unit, dtype=np.float32).tolist(),
    }


def _scalar_filter(
    since_ns: int | None, until_ns: int | None, near: np.ndarray | None, radius: float | None,
    vehicle_id: str | None,
) -> str:
    parts = []
    if vehicle_id is not None:
        parts.append(f"vehicle_id == {json.dumps(vehicle_id)}")
    if since_ns is not None:
        parts.append(f"start_ns >= {int(since_ns)}")
    if until_ns is not None:
        parts.append(f"start_ns <= {int(until_ns)}")
    if near is not None and radius is not None:
        x, y, r = float(near[0]), float(near[1]), float(radius) * (1 + 1e-9) + 1e-9
        parts.append(f"max_x >= {x - r!r} and min_x <= {x + r!r} and "
                     f"max_y >= {y - r!r} and min_y <= {y + r!r}")
    return " and ".join(parts)


def _path_within(poses: np.ndarray, near: np.ndarray, radius: float) -> bool:
    """The exact radius test of ScoreIndex (planar): a path point within ``radius`` of near."""
    d = poses[:, 1:3] - near[:2]
    return bool(np.min(np.einsum("ij,ij->i", d, d)) <= radius * radius)


def text_scores(alpha: np.float32, t32: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Exact scores from rows of u, with the arithmetic of ``ScoreIndex.score`` (float32)."""
    e = t32.shape[0]
    ag = np.empty((u.shape[0], 2 * e), dtype=np.float32)
    ag[:, :e] = u[:, :e]
    ag[:, e:] = u[:, e + 1 : 2 * e + 1] * np.float32(0.5)
    bg = u[:, [e, 2 * e + 1]]
    r = (ag.reshape(-1, e) @ t32).reshape(-1, 2)
    dot = r[:, 0] + bg[:, 0]
    norm2 = alpha + np.float32(2.0) * r[:, 1] + bg[:, 1]
    return (dot / np.sqrt(np.maximum(norm2, _MIN_NORM2))).astype(np.float32)


@dataclass
class _Scored:
    """Candidates scored so far, by key."""

    keys: list[str]
    scores: list[float]
    seen: set[str]

    @classmethod
    def empty(cls) -> _Scored:
        return cls([], [], set())

    def add(self, keys: list[str], scores: np.ndarray) -> None:
        for key, s in zip(keys, scores.tolist(), strict=True):
            if key not in self.seen:
                self.seen.add(key)
                self.keys.append(key)
                self.scores.append(s)

    def best(self, k: int, min_score: float | None) -> tuple[list[str], np.ndarray]:
        s = np.asarray(self.scores, dtype=np.float32)
        # Ties broken by key, as the stores differ in row order (real ties are rare).
        order = np.argsort(np.asarray(self.keys, dtype=object), kind="stable")
        s_sorted = s[order]
        mask = None if min_score is None else s_sorted >= min_score
        pick = order[top_k(s_sorted, k, mask)]
        return [self.keys[i] for i in pick], s[pick]


class MilvusSegmentStore:
    """Segments of one model in a Milvus collection; implements ``backend.MemoryBackend``.

    ``vehicle_id`` is the vehicle this store writes for (its segment ids count up per vehicle);
    searches see every vehicle unless a ``vehicle_id`` filter is given. ``head`` is needed to
    answer text requests. The store keeps no segment data in RAM beyond this vehicle's
    (start stamp, id) pairs for eviction.
    """

    in_memory = False

    def __init__(
        self,
        conn: Connection | str,
        model_hash: str,
        embed_dim: int,
        *,
        head: FusionHead | None = None,
        vehicle_id: str = "",
        client: Any = None,
    ) -> None:
        if not model_hash:
            raise ValueError("model_hash must be a non-empty string")
        if embed_dim <= 0:
            raise ValueError(f"embed_dim must be positive, got {embed_dim}")
        self.conn = Connection(conn) if isinstance(conn, str) else conn
        self.model_hash = str(model_hash)
        self.embed_dim = int(embed_dim)
        self.vehicle_id = str(vehicle_id)
        self.problems: list[str] = []  # Milvus keeps its own integrity; nothing is checked here
        self.head = head
        self.collection = collection_name(self.model_hash, self.embed_dim)
        self.path = self.conn.uri
        self._lock = threading.RLock()
        self._client = client if client is not None else connect(self.conn)
        self._owns_client = client is None
        try:
            self._open_collection()
            self._own = self._load_own_ids()
        except (MemoryFileError, FleetUnavailable):
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise FleetUnavailable(f"{self.conn.describe()}: {type(exc).__name__}: {exc}") from exc
        self._next_id = max((i for _, i in self._own), default=0) + 1

    # -- schema ---------------------------------------------------------------------------------

    def _description(self) -> str:
        return json.dumps({"app": _APP, "schema_version": SCHEMA_VERSION,
                           "model_hash": self.model_hash, "embed_dim": self.embed_dim})

    def _open_collection(self) -> None:
        client = self._client
        if client.has_collection(self.collection):
            self._check_collection()
        else:
            self._create_collection()
        client.load_collection(self.collection)

    def _check_collection(self) -> None:
        meta = read_meta(self._client.describe_collection(self.collection))
        where = f"collection {self.collection!r} in {self.conn.describe()}"
        if meta.get("app") != _APP:
            raise MemoryFileError(f"{where} was not written by spartan_ros; it was not modified")
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise MemoryFileError(f"{where} has schema version {meta.get('schema_version')}; "
                                  f"this build reads version {SCHEMA_VERSION}")
        if meta.get("model_hash") != self.model_hash or meta.get("embed_dim") != self.embed_dim:
            raise ModelMismatchError(
                f"{where} holds segments of model {meta.get('model_hash')!r} (embed_dim "
                f"{meta.get('embed_dim')}), not of the loaded model {self.model_hash!r}: "
                "segments of different models never share a collection")

    def _create_collection(self, blobs: tuple[str, ...] = BLOB_FIELDS,
                           indexed: bool = True) -> None:
        """The collection's schema. ``blobs`` and ``indexed`` exist for the ingest benchmark,
        which measures what the stored arrays and the vector indexes cost."""
        from pymilvus import DataType, MilvusClient

        e = self.embed_dim
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=512)
        schema.add_field("vehicle_id", DataType.VARCHAR, max_length=256)
        for name in ("segment_id", "start_ns", "end_ns"):
            schema.add_field(name, DataType.INT64)
        schema.add_field("frame_id", DataType.VARCHAR, max_length=256)
        for name in ("min_x", "max_x", "min_y", "max_y"):
            schema.add_field(name, DataType.DOUBLE)
        for name in blobs:
            schema.add_field(name, DataType.VARCHAR, max_length=65535)
        schema.add_field("u", DataType.FLOAT_VECTOR, dim=2 * e + 2)  # [a, β, 2g, γ]
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=e)  # v̂, unit video feature
        index = None
        if indexed:
            index = self._client.prepare_index_params()
            # FLAT: brute force, so a range search returns every row past the radius (exactness).
            index.add_index(field_name="u", index_type="FLAT", metric_type="IP")
            index.add_index(field_name="v", index_type="FLAT", metric_type="IP")
        self._client.create_collection(self.collection, schema=schema, index_params=index,
                                       properties={_META_PROPERTY: self._description()})

    def _load_own_ids(self) -> list[tuple[int, int]]:
        """(start_ns, segment id) of this vehicle's rows, oldest first."""
        rows = self._iterate(f"vehicle_id == {json.dumps(self.vehicle_id)}",
                             ["segment_id", "start_ns"])
        return sorted((int(r["start_ns"]), int(r["segment_id"])) for r in rows)

    # -- writing --------------------------------------------------------------------------------

    def describe(self) -> str:
        return f"{self.conn.describe()} collection {self.collection}"

    def add_many(self, segments: list[Segment]) -> list[int]:
        """Store segments with one upsert (the node's writer hands over what queued up)."""
        for segment in segments:
            segment.validate(self.embed_dim)
        with self._lock:
            ids = list(range(self._next_id, self._next_id + len(segments)))
            self.upsert([segment_record(segment, self.vehicle_id, seg_id)
                         for segment, seg_id in zip(segments, ids, strict=True)])
            self._next_id += len(segments)
            self._own.extend((int(segment.start_ns), seg_id)
                             for segment, seg_id in zip(segments, ids, strict=True))
            self._own.sort()
        return ids

    def add(self, segment: Segment) -> int:
        return self.add_many([segment])[0]

    def upsert(self, records: list[dict[str, Any]]) -> None:
        """Write rows; a key already present is replaced, never duplicated."""
        if records:
            self._call("upsert", self.collection, records)

    def insert(self, records: list[dict[str, Any]]) -> None:
        """Write rows whose keys the collection does not hold (cheaper than an upsert, which
        looks each key up first). A key already present would be held twice by a Milvus server:
        callers check first (``segment_ids``) or use ``upsert``."""
        if records:
            self._call("insert", self.collection, records)

    def flush(self) -> None:
        """Seal written rows (searching a large unflushed collection is much slower)."""
        self._call("flush", self.collection)

    def evict_oldest(self, max_segments: int) -> list[int]:
        if max_segments < 0:
            raise ValueError(f"max_segments must be >= 0, got {max_segments}")
        with self._lock:
            excess = len(self._own) - max_segments
            if excess <= 0:
                return []
            gone = [i for _, i in self._own[:excess]]
            self._call("delete", self.collection,
                       ids=[segment_key(self.vehicle_id, i) for i in gone])
            del self._own[:excess]
            return gone

    # -- reading --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._own)

    def count(self, vehicle_id: str | None = None) -> int:
        """Rows in the collection (all vehicles, or one)."""
        expr = "" if vehicle_id is None else f"vehicle_id == {json.dumps(vehicle_id)}"
        res = self._call("query", self.collection, filter=expr, output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def vehicles(self) -> dict[str, int]:
        """Segments per vehicle."""
        out: dict[str, int] = {}
        for r in self._iterate("", ["vehicle_id"]):
            out[r["vehicle_id"]] = out.get(r["vehicle_id"], 0) + 1
        return out

    def segment_ids(self, vehicle_id: str) -> set[int]:
        rows = self._iterate(f"vehicle_id == {json.dumps(vehicle_id)}", ["segment_id"])
        return {int(r["segment_id"]) for r in rows}

    def all_ids(self) -> list[int]:
        return sorted(i for _, i in self._own)

    def get(self, seg_id: int) -> Segment | None:
        found = self.get_many([seg_id])
        return found[0] if found else None

    def get_many(self, ids: list[int] | np.ndarray, vehicle_id: str | None = None
                 ) -> list[Segment]:
        """This vehicle's (or ``vehicle_id``'s) segments for these ids, in the given order."""
        vehicle = self.vehicle_id if vehicle_id is None else vehicle_id
        keys = [segment_key(vehicle, int(i)) for i in ids]
        return [s for s in self._fetch(keys) if s is not None]

    def _fetch(self, keys: list[str]) -> list[Segment | None]:
        if not keys:
            return []
        rows: dict[str, dict] = {}
        for k in range(0, len(keys), 1000):
            for r in self._call("get", self.collection, ids=keys[k : k + 1000],
                                output_fields=[*_BASE_FIELDS, *_ROW_FIELDS, "u", "v"]):
                rows[r["key"]] = r
        return [self._segment(rows[key]) if key in rows else None for key in keys]

    def _segment(self, r: dict) -> Segment:
        e = self.embed_dim
        u = np.asarray(r["u"], dtype=np.float32)
        terms = SegmentTerms(
            ag=np.concatenate([u[:e], u[e + 1 : 2 * e + 1] * np.float32(0.5)]),
            beta=float(u[e]), gamma=float(u[2 * e + 1]),
            video_unit=np.asarray(r["v"], dtype=np.float32),
        )
        return Segment(
            id=int(r["segment_id"]), start_ns=int(r["start_ns"]), end_ns=int(r["end_ns"]),
            frame_id=str(r["frame_id"]), poses=_unb64(r["poses"], _F64, 8),
            video_feat=_unb64(r["video_feat"], _F32, 1),
            pose_feat=_unb64(r["pose_feat"], _F32, 1), terms=terms,
            vehicle_id=str(r["vehicle_id"]))

    def _iterate(self, expr: str, fields: list[str]) -> Iterable[dict]:
        it = self._call("query_iterator", self.collection, batch_size=_SCAN_BATCH, filter=expr,
                        output_fields=fields)
        try:
            while True:
                page = self._guard(it.next)
                if not page:
                    return
                yield from page
        finally:
            it.close()

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._guard(getattr(self._client, method), *args, **kwargs)

    def _guard(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MemoryFileError:
            raise
        except Exception as exc:
            raise FleetUnavailable(f"{self.conn.describe()}: {type(exc).__name__}: "
                                   f"{str(exc)[:300]}") from exc

    # -- searching ------------------------------------------------------------------------------

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
        if (t is None) == (query_embedding is None):
            raise ValueError("give exactly one of t (text feature) or query_embedding")
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        point = None
        if radius:
            if near is None:
                raise ValueError("a radius filter needs a point `near`")
            point = np.asarray(near, dtype=np.float64).reshape(-1)
        query = _Query(self, k, since_ns, until_ns, point, radius or None, min_score, vehicle_id)
        if t is not None:
            if self.head is None:
                raise ValueError("scoring a text feature needs the fusion head")
            keys, scores, scored = query.text(np.asarray(t, dtype=np.float64))
        else:
            keys, scores, scored = query.embedding(np.asarray(query_embedding, dtype=np.float64))
        segments = self._fetch(keys)
        found = [Found(seg, float(s)) for seg, s in zip(segments, scores.tolist(), strict=True)
                 if seg is not None]
        return SearchResult(found, scored)

    def close(self) -> None:
        client = getattr(self, "_client", None)
        if client is not None and self._owns_client:
            try:
                client.close()
            except Exception:  # closing a connection that already failed
                pass
        self._client = None

    def __enter__(self) -> MilvusSegmentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Query:
    """One search: probe, bound, range search, exact re-score (see the module docstring)."""

    def __init__(self, store: MilvusSegmentStore, k: int, since_ns: int | None,
                 until_ns: int | None, near: np.ndarray | None, radius: float | None,
                 min_score: float | None, vehicle_id: str | None) -> None:
        self.store = store
        self.k = k
        self.near, self.radius = near, radius
        self.min_score = min_score
        self.expr = _scalar_filter(since_ns, until_ns, near, radius, vehicle_id)
        self.scored = _Scored.empty()
        self.count = 0  # exact scores computed

    # -- text: s = n / sqrt(α + x) ---------------------------------------------------------------

    def text(self, t64: np.ndarray) -> tuple[list[str], np.ndarray, int]:
        e = self.store.embed_dim
        head = self.store.head
        assert head is not None
        alpha64 = head.text_norm2(t64)
        alpha, t32 = np.float32(alpha64), t64.astype(np.float32)

        def score(u: np.ndarray) -> np.ndarray:
            return text_scores(alpha, t32, u)

        zeros = np.zeros(e + 1, dtype=np.float32)
        x_dir = np.concatenate([zeros, t32, [1.0]]).astype(np.float32)  # u · x_dir = x
        hi, lo = self._search_many("u", [x_dir, -x_dir], 1)  # one request: one pass of the rows
        if not hi:
            return [], np.zeros(0, np.float32), 0
        x_hi, x_lo = float(hi[0]["distance"]), -float(lo[0]["distance"])
        slack = _SLACK * (abs(x_hi) + abs(x_lo) + abs(alpha64) + 1.0)
        x_lo, x_hi = max(x_lo - slack, -alpha64), x_hi + slack
        d_lo, d_hi = math.sqrt(max(alpha64 + x_lo, 0.0)), math.sqrt(alpha64 + x_hi)
        slope = (d_hi - d_lo) / (x_hi - x_lo)
        icept = d_lo - slope * x_lo  # D(x) >= icept + slope * x on [x_lo, x_hi]

        def direction(c: float) -> np.ndarray:
            return np.concatenate([t32, [1.0], -c * t32, [-c]]).astype(np.float32)

        # Probe: rank by n - c x with c from a typical score, then score exactly.
        d_mid = math.sqrt(alpha64 + 0.5 * (x_lo + x_hi))
        self._score_rows(self._search("u", direction(0.25 / d_mid), self.k + PROBE_EXTRA,
                                      ["u"]), "u", score)
        thr = self._threshold()
        if thr is None or thr <= 0:
            return self._full_scan("u", score)
        magnitude = abs(thr) * (abs(icept) + abs(slope) * max(abs(x_lo), abs(x_hi)) + d_hi) + 1.0
        bound = thr * icept - _SLACK * magnitude
        hits = self._range("u", direction(thr * slope), bound)
        if hits is None:
            return self._full_scan("u", score)
        self._score_rows(hits, "u", score)
        return self._answer()

    # -- trajectory: s = q̂ · v̂ -----------------------------------------------------------------

    def embedding(self, q64: np.ndarray) -> tuple[list[str], np.ndarray, int]:
        norm = float(np.linalg.norm(q64))
        if not norm > 0:
            raise ValueError("query embedding is all zeros")
        qh = (q64 / norm).astype(np.float32)

        def score(v: np.ndarray) -> np.ndarray:
            return (v @ qh).astype(np.float32)

        self._score_rows(self._search("v", qh, self.k + PROBE_EXTRA, ["v"]), "v", score)
        thr = self._threshold()
        if thr is None:
            return self._full_scan("v", score)
        hits = self._range("v", qh, thr - _SLACK * (1 + abs(thr)))
        if hits is None:
            return self._full_scan("v", score)
        self._score_rows(hits, "v", score)
        return self._answer()

    # -- shared steps ----------------------------------------------------------------------------

    def _threshold(self) -> float | None:
        """The score every answer must reach: the k-th best so far, or min_score if higher."""
        if self.k == 0:
            return math.inf
        _, best = self.scored.best(self.k, self.min_score)
        floor = self.min_score
        if len(best) < self.k:
            return floor if floor is not None and floor > 0 else None
        return float(best[-1]) if floor is None else max(float(best[-1]), floor)

    def _answer(self) -> tuple[list[str], np.ndarray, int]:
        keys, scores = self.scored.best(self.k, self.min_score)
        return keys, scores, self.count

    def _search(self, field: str, vec: np.ndarray, limit: int, fields: Sequence[str] = (),
                radius: float | None = None) -> list[dict]:
        if radius is not None and not math.isfinite(radius):
            return []
        return self._search_many(field, [vec], limit, fields, radius)[0]

    def _search_many(self, field: str, vecs: list[np.ndarray], limit: int,
                     fields: Sequence[str] = (), radius: float | None = None
                     ) -> list[list[dict]]:
        """One search request for several vectors (Milvus passes over the rows once)."""
        params: dict[str, Any] = {"metric_type": "IP", "params": {}}
        if radius is not None:
            params["params"]["radius"] = float(radius)
        out_fields = list(fields) + (["poses"] if self.radius else []) + ["key"]
        res = self.store._call("search", self.store.collection,
                               data=[vec.tolist() for vec in vecs], anns_field=field,
                               limit=limit, filter=self.expr, search_params=params,
                               output_fields=out_fields)
        return [[{"distance": h["distance"], **h["entity"]} for h in hits] for hits in res]

    def _range(self, field: str, vec: np.ndarray, radius: float) -> list[dict] | None:
        """Every row with inner product above ``radius``; None when there are more than Milvus
        returns at once. The limit starts small and grows only when a page comes back full (a
        range search costs more the larger its limit, on Milvus Lite markedly)."""
        limit = max(4 * self.k, 64)
        while True:
            hits = self._search(field, vec, min(limit, MAX_LIMIT), [field], radius=radius)
            if len(hits) < min(limit, MAX_LIMIT):
                return hits
            if limit >= MAX_LIMIT:
                return None
            limit *= 8

    def _score_rows(self, rows: list[dict], field: str, score: Any) -> None:
        rows = [r for r in rows if r["key"] not in self.scored.seen]
        if self.radius is not None and self.near is not None:
            near, radius = self.near, self.radius
            rows = [r for r in rows if _path_within(_unb64(r["poses"], _F64, 8), near, radius)]
        if not rows:
            return
        vecs = np.asarray([r[field] for r in rows], dtype=np.float32)
        self.scored.add([r["key"] for r in rows], score(vecs))
        self.count += len(rows)

    def _full_scan(self, field: str, score: Any) -> tuple[list[str], np.ndarray, int]:
        fields = ["key", field] + (["poses"] if self.radius else [])
        page: list[dict] = []
        for row in self.store._iterate(self.expr, fields):
            page.append(row)
            if len(page) >= _SCAN_BATCH:
                self._score_rows(page, field, score)
                page = []
        self._score_rows(page, field, score)
        return self._answer()
