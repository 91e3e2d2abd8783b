"""Exact fast retrieval scoring over stored segments (numpy only, no torch).

SPARTAN fuses the text feature t with a pose feature p into the query q = W_t t + W_p p + b
(``projection`` weight split by columns, docs/model.md 5.4), and the score of a segment is
cos(q, v̂) with v̂ its L2-normalised video feature. When every stored segment s is scored with its
own recorded motion p_s, each segment has its own query q_s, and the naive way runs the fusion N
times per request (N·E² multiply-adds). Expanding the cosine with c_s = W_p p_s + b gives

    q_s · v̂_s = (W_tᵀ v̂_s) · t + c_s · v̂_s        = a_s · t + β_s
    |q_s|²    = |W_t t|² + 2 (W_tᵀ c_s) · t + |c_s|²  = α + 2 g_s · t + γ_s

a_s, g_s, β_s, γ_s depend on the segment only and are computed once when it is stored, so a
request costs one [N, 2E] · [E] matrix-vector product. This is the same cosine, not an
approximation (test_scoring.py checks it against the naive form).

Bytes kept in RAM per segment at E = 512 (float32):
  - terms [a_s | g_s]: 2E · 4 = 4096 B, plus β_s, γ_s: 8 B (the text-query scoring matrix);
  - v̂_s: E · 4 = 2048 B, for requests that bring their own trajectory: their query is one vector
    q and the score is q̂ · v̂_s. v̂_s could in principle be recovered from a_s = W_tᵀ v̂_s, but that
    needs W_t⁻ᵀ, which is ill-conditioned (condition number ~10³ for a random 512² matrix) and
    would not be exact, so it is kept (``keep_video=False`` drops it and those requests);
  - id, start and end stamps: 24 B; path points for the spatial filter: T · 3 · 8 B (+ dict cost).
With ``dtype="float16"`` the terms and v̂_s take half (2048 + 1024 B); β, γ stay float32.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

# Rows converted from float16 to float32 per block, so fp16 storage never needs a full fp32 copy.
_FP16_BLOCK_ROWS = 8192
# |q|² below this is a zero query: report score 0 instead of dividing by ~0.
_MIN_NORM2 = 1e-20
_DTYPES = {"float32": np.float32, "float16": np.float16}


def _finite_array(x: object, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(x)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has non-finite values")
    return arr


@dataclass(frozen=True, eq=False)
class FusionHead:
    """SPARTAN's fusion Linear(2E -> E) split by columns: q = w_text @ t + w_pose @ p + bias."""

    w_text: np.ndarray  # [E, E] = projection.weight[:, :E]
    w_pose: np.ndarray  # [E, E] = projection.weight[:, E:]
    bias: np.ndarray  # [E]
    # float64 copies: storage-time terms are computed in float64 so only the final cast rounds.
    _w_text64: np.ndarray = field(init=False, repr=False)
    _w_pose64: np.ndarray = field(init=False, repr=False)
    _bias64: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        w = np.asarray(self.w_text)
        if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] == 0:
            raise ValueError(f"w_text must be a square [E, E] matrix, got shape {list(w.shape)}")
        e = w.shape[0]
        arrays = {
            "w_text": _finite_array(self.w_text, (e, e), "w_text"),
            "w_pose": _finite_array(self.w_pose, (e, e), "w_pose"),
            "bias": _finite_array(self.bias, (e,), "bias"),
        }
        for name, arr in arrays.items():
            object.__setattr__(self, name, np.ascontiguousarray(arr, dtype=np.float32))
            object.__setattr__(self, f"_{name}64", np.asarray(arr, dtype=np.float64))

    @classmethod
    def from_projection(cls, weight: npt.ArrayLike, bias: npt.ArrayLike) -> FusionHead:
        """From the checkpoint's ``projection.weight`` [E, 2E] and ``projection.bias`` [E]."""
        w = np.asarray(weight)
        if w.ndim != 2 or w.shape[1] != 2 * w.shape[0]:
            raise ValueError(f"projection.weight must have shape [E, 2E], got {list(w.shape)}")
        e = w.shape[0]
        return cls(w[:, :e], w[:, e:], np.asarray(bias))

    @property
    def embed_dim(self) -> int:
        return int(self.w_text.shape[0])

    def fuse(self, t: npt.ArrayLike, p: npt.ArrayLike) -> np.ndarray:
        """q = W_t t + W_p p + b for [..., E] inputs (broadcasting), float32, unnormalised."""
        t = np.asarray(t, dtype=np.float32)
        p = np.asarray(p, dtype=np.float32)
        return t @ self.w_text.T + p @ self.w_pose.T + self.bias

    def text_norm2(self, t: npt.ArrayLike) -> float:
        """α = |W_t t|², computed once per request."""
        wt = self._w_text64 @ np.asarray(t, dtype=np.float64)
        return float(wt @ wt)


@dataclass(frozen=True, eq=False)
class SegmentTerms:
    """The per-segment constants of the fast score (see the module docstring)."""

    ag: np.ndarray  # [2E] float32: a_s = W_tᵀ v̂_s, then g_s = W_tᵀ c_s
    beta: float  # c_s · v̂_s
    gamma: float  # |c_s|²
    video_unit: np.ndarray  # [E] float32: v̂_s

    @property
    def embed_dim(self) -> int:
        return int(self.video_unit.shape[0])


def unit_rows(v: np.ndarray, name: str = "vector") -> np.ndarray:
    """v / |v| along the last axis (same arithmetic for one vector and for rows)."""
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    if np.any(~(norms > 0)):
        row = int(np.argmin(norms.reshape(-1)))
        raise ValueError(f"{name} row {row} is all zeros: it cannot be normalised")
    return v / norms


def segment_terms(
    head: FusionHead, video_feat: npt.ArrayLike, pose_feat: npt.ArrayLike
) -> SegmentTerms:
    """Terms of one segment from its video feature (mean of frame features) and pose feature."""
    e = head.embed_dim
    v = _finite_array(video_feat, (e,), "video_feat").astype(np.float64)
    p = _finite_array(pose_feat, (e,), "pose_feat").astype(np.float64)
    vh = unit_rows(v, "video_feat")
    c = head._w_pose64 @ p + head._bias64
    ag = np.concatenate([vh @ head._w_text64, c @ head._w_text64])  # W_tᵀ x == x @ W_t
    return SegmentTerms(
        ag=ag.astype(np.float32),
        beta=float(c @ vh),
        gamma=float(c @ c),
        video_unit=vh.astype(np.float32),
    )


@dataclass(frozen=True, eq=False)
class TermArrays:
    """Terms of many segments at once: row s of each array belongs to segment s."""

    ag: np.ndarray  # [N, 2E] float32
    bg: np.ndarray  # [N, 2] float32 (β, γ)
    video_unit: np.ndarray  # [N, E] float32


def segment_terms_batch(
    head: FusionHead, video_feats: np.ndarray, pose_feats: np.ndarray, dtype: type = np.float64
) -> TermArrays:
    """Vectorised ``segment_terms`` for [N, E] inputs (rebuilds, benchmarks).

    ``dtype`` is the arithmetic precision: float64 (default) matches ``segment_terms``; float32
    is ~4x faster for large N at ~1e-7 relative error in the terms.
    """
    e = head.embed_dim
    v = np.asarray(video_feats)
    n = v.shape[0] if v.ndim == 2 else -1
    v = _finite_array(v, (max(n, 0), e), "video_feats").astype(dtype)
    p: np.ndarray = _finite_array(pose_feats, (v.shape[0], e), "pose_feats").astype(dtype)
    if dtype == np.float64:
        wt, wp, b = head._w_text64, head._w_pose64, head._bias64
    else:
        wt, wp, b = (x.astype(dtype) for x in (head.w_text, head.w_pose, head.bias))
    vh = unit_rows(v, "video_feats")
    c = p @ wp.T + b
    ag = np.empty((v.shape[0], 2 * e), dtype=np.float32)
    ag[:, :e] = vh @ wt
    ag[:, e:] = c @ wt
    bg = np.stack([np.sum(c * vh, axis=1), np.sum(c * c, axis=1)], axis=1).astype(np.float32)
    return TermArrays(ag=ag, bg=bg, video_unit=vh.astype(np.float32))


def naive_scores(
    head: FusionHead,
    t: np.ndarray,
    video_feats: np.ndarray,
    pose_feats: np.ndarray,
    dtype: type = np.float64,
) -> np.ndarray:
    """Reference: fuse a query per segment (N fusion passes), then cos(q_s, v̂_s). Returns [N]."""
    e = head.embed_dim
    t = _finite_array(t, (e,), "t").astype(dtype)
    v: np.ndarray = np.asarray(video_feats, dtype=dtype)
    if v.ndim != 2:
        raise ValueError(f"video_feats must be [N, {e}], got {list(v.shape)}")
    v = _finite_array(v, (v.shape[0], e), "video_feats")
    p: np.ndarray = _finite_array(pose_feats, (v.shape[0], e), "pose_feats").astype(dtype)
    if dtype == np.float64:
        wt, wp, b = head._w_text64, head._w_pose64, head._bias64
    else:
        wt, wp, b = (x.astype(dtype) for x in (head.w_text, head.w_pose, head.bias))
    q = (wt @ t)[None, :] + p @ wp.T + b
    vh = unit_rows(v, "video_feats")
    return np.sum(q * vh, axis=1) / np.linalg.norm(q, axis=1)


def top_k(scores: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Indices of the k best scores, best first (ties: lower index first; NaN ranks last).

    ``mask`` (bool, same length) restricts the choice. Uses argpartition: O(N + k log k).
    """
    s = np.asarray(scores)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {list(s.shape)}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if mask is None:
        idx = np.arange(s.shape[0])
    else:
        m = np.asarray(mask, dtype=bool)
        if m.shape != s.shape:
            raise ValueError(f"mask shape {list(m.shape)} does not match scores {list(s.shape)}")
        idx = np.flatnonzero(m)
    vals = s[idx].astype(np.float64)
    vals[np.isnan(vals)] = -np.inf
    if k == 0 or idx.size == 0:
        return idx[:0]
    if k < idx.size:
        part = np.argpartition(-vals, k - 1)[:k]
        idx, vals = idx[part], vals[part]
    return idx[np.lexsort((idx, -vals))]


class _PathGrid:
    """Uniform grid hash over the xy of segment path points: cell -> ids with a point in it.

    A query visits only the cells overlapping the query disk; cells lying entirely inside it
    accept their segments without looking at points, border cells check points exactly.
    """

    def __init__(self, cell_size: float, planar: bool) -> None:
        if not (math.isfinite(cell_size) and cell_size > 0):
            raise ValueError(f"cell_size must be a positive number of metres, got {cell_size}")
        self.cell = float(cell_size)
        self.planar = planar
        self._cells: dict[tuple[int, int], set[int]] = {}
        self._points: dict[int, np.ndarray] = {}
        self._keys: dict[int, list[tuple[int, int]]] = {}
        # Bounding box of every point ever added (never shrinks: a superset is still correct).
        self._lo = np.full(3, np.inf)
        self._hi = np.full(3, -np.inf)

    def __len__(self) -> int:
        return len(self._points)

    def covers_all(self, near: np.ndarray, radius: float) -> bool:
        """True when the query ball holds every point ever added (then no lookup is needed)."""
        if not self._points:
            return False
        dims = 2 if self.planar else 3
        far = np.maximum(
            np.abs(near[:dims] - self._lo[:dims]), np.abs(near[:dims] - self._hi[:dims])
        )
        return bool(np.linalg.norm(far) <= radius * (1 - 1e-12))

    def add(self, seg_id: int, points: np.ndarray) -> None:
        pts = np.array(points[:, :2] if self.planar else points[:, :3], dtype=np.float64)
        ij = np.floor(pts[:, :2] / self.cell).astype(np.int64)
        keys = sorted({(int(i), int(j)) for i, j in ij})
        for key in keys:
            self._cells.setdefault(key, set()).add(seg_id)
        self._points[seg_id] = pts
        self._keys[seg_id] = keys
        self._lo[: pts.shape[1]] = np.minimum(self._lo[: pts.shape[1]], pts.min(axis=0))
        self._hi[: pts.shape[1]] = np.maximum(self._hi[: pts.shape[1]], pts.max(axis=0))

    def remove(self, seg_id: int) -> None:
        for key in self._keys.pop(seg_id, []):
            ids = self._cells[key]
            ids.discard(seg_id)
            if not ids:
                del self._cells[key]
        self._points.pop(seg_id, None)

    def _within(self, seg_id: int, near: np.ndarray, r2: float) -> bool:
        d = self._points[seg_id] - near
        return bool(np.min(np.einsum("ij,ij->i", d, d)) <= r2)

    def query(self, near: np.ndarray, radius: float) -> list[int]:
        x, y = float(near[0]), float(near[1])
        c, r = self.cell, radius
        i0, i1 = math.floor((x - r) / c), math.floor((x + r) / c)
        j0, j1 = math.floor((y - r) / c), math.floor((y + r) / c)
        if (i1 - i0 + 1) * (j1 - j0 + 1) <= len(self._cells):
            keys = [(i, j) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1)]
            cells = [(k, self._cells[k]) for k in keys if k in self._cells]
        else:  # the disk covers more cells than are occupied: walk the occupied ones
            cells = [
                (k, ids) for k, ids in self._cells.items() if i0 <= k[0] <= i1 and j0 <= k[1] <= j1
            ]
        point = near[:2] if self.planar else near[:3]
        r2 = r * r
        margin = 1e-9 * (1.0 + r + abs(x) + abs(y))  # floor() at cell borders may be off by an ulp
        found: set[int] = set()
        checked: set[int] = set()
        for (i, j), ids in cells:
            dx_far = max(abs(x - i * c), abs(x - (i + 1) * c))
            dy_far = max(abs(y - j * c), abs(y - (j + 1) * c))
            if self.planar and math.hypot(dx_far, dy_far) <= r - margin:
                found.update(ids)
                continue
            dx_near = max(i * c - x, 0.0, x - (i + 1) * c)
            dy_near = max(j * c - y, 0.0, y - (j + 1) * c)
            if math.hypot(dx_near, dy_near) > r + margin:
                continue
            for seg_id in ids:
                if seg_id not in found and seg_id not in checked:
                    checked.add(seg_id)
                    if self._within(seg_id, point, r2):
                        found.add(seg_id)
        return sorted(found)


@dataclass(frozen=True, eq=False)
class Scores:
    """Scores of the candidate segments, in index order (oldest start stamp first)."""

    ids: np.ndarray  # int64 [M]
    scores: np.ndarray  # float32 [M]


@dataclass(frozen=True, eq=False)
class Hits:
    """The best segments of a request, best first."""

    ids: np.ndarray  # int64 [k]
    scores: np.ndarray  # float32 [k]
    candidates: int  # segments left after the time and spatial filters


class ScoreIndex:
    """In-RAM scoring matrix of stored segments with time and radius filters. Thread safe.

    Rows are kept sorted by (start stamp, insertion order) inside a buffer that doubles its
    capacity when full (amortised O(1) appends) and drops the oldest rows by moving a head pointer.
    An out-of-order append shifts the younger rows by one (rare; stays correct).

    Filters: ``since_ns``/``until_ns`` (inclusive) bound the segment's *start* stamp, resolved by
    ``np.searchsorted`` to a slice; ``near``/``radius`` keep segments with a recorded path point
    within ``radius`` metres of ``near`` (xy distance when ``planar``, else xyz), resolved by a grid
    hash. Only the candidate rows are read for scoring.
    """

    def __init__(
        self,
        embed_dim: int,
        head: FusionHead | None = None,
        *,
        dtype: str = "float32",
        keep_video: bool = True,
        cell_size: float = 10.0,
        planar: bool = True,
        capacity: int = 256,
    ) -> None:
        if embed_dim <= 0:
            raise ValueError(f"embed_dim must be positive, got {embed_dim}")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        self.embed_dim = int(embed_dim)
        self.dtype = dtype
        self.keep_video = keep_video
        self._head: FusionHead | None = None
        self.head = head
        self._lock = threading.RLock()
        self._grid = _PathGrid(cell_size, planar)
        self._cap = 0
        self._head_row = 0  # first live row
        self._tail = 0  # one past the last live row
        self._arrays: dict[str, np.ndarray] = {}
        self._start_of: dict[int, int] = {}  # id -> start_ns, to find a row from an id
        self._reserve(max(int(capacity), 1))

    # -- configuration ---------------------------------------------------------------------

    @property
    def head(self) -> FusionHead | None:
        return self._head

    @head.setter
    def head(self, head: FusionHead | None) -> None:
        if head is not None and head.embed_dim != self.embed_dim:
            raise ValueError(
                f"fusion head has embed_dim {head.embed_dim}, the index {self.embed_dim}"
            )
        self._head = head

    def bytes_per_segment(self) -> int:
        """Bytes of the scoring arrays per segment (terms, β/γ, v̂, id and stamps)."""
        e, item = self.embed_dim, np.dtype(_DTYPES[self.dtype]).itemsize
        return 2 * e * item + 8 + (e * item if self.keep_video else 0) + 24

    # -- storage ----------------------------------------------------------------------------

    def _reserve(self, extra: int) -> None:
        """Make room for ``extra`` rows after the tail: compact or double, never per append."""
        n = self._tail - self._head_row
        if self._tail + extra <= self._cap:
            return
        if self._head_row >= n and n + extra <= self._cap:
            # At least n rows were dropped since the last move, so this copy is paid for.
            for arr in self._arrays.values():
                arr[:n] = arr[self._head_row : self._tail]
        else:
            cap = max(2 * self._cap, n + extra, 16)
            e, dt = self.embed_dim, _DTYPES[self.dtype]
            shapes: dict[str, tuple[tuple[int, ...], type]] = {
                "ag": ((cap, 2 * e), dt),
                "bg": ((cap, 2), np.float32),
                "ids": ((cap,), np.int64),
                "start": ((cap,), np.int64),
                "end": ((cap,), np.int64),
            }
            if self.keep_video:
                shapes["video"] = ((cap, e), dt)
            new: dict[str, np.ndarray] = {
                name: np.empty(shape, dtype=d) for name, (shape, d) in shapes.items()
            }
            for name, arr in self._arrays.items():
                new[name][:n] = arr[self._head_row : self._tail]
            self._arrays = new
            self._cap = cap
        self._head_row, self._tail = 0, n

    def __len__(self) -> int:
        return self._tail - self._head_row

    def __contains__(self, seg_id: object) -> bool:
        return seg_id in self._start_of

    def ids(self) -> np.ndarray:
        """Live segment ids in index order (oldest start first), a copy."""
        with self._lock:
            return self._arrays["ids"][self._head_row : self._tail].copy()

    def append(
        self,
        seg_id: int,
        start_ns: int,
        end_ns: int,
        terms: SegmentTerms,
        path: np.ndarray | None = None,
    ) -> None:
        """Add one segment; ``path`` is its [T, >=3] positions (x, y, z) for the radius filter."""
        e = self.embed_dim
        ag = _finite_array(terms.ag, (2 * e,), "terms.ag")
        if not (math.isfinite(terms.beta) and math.isfinite(terms.gamma)):
            raise ValueError("terms.beta / terms.gamma must be finite")
        video = _finite_array(terms.video_unit, (e,), "terms.video_unit")
        pts = _path_points(path)
        with self._lock:
            seg_id = int(seg_id)
            if seg_id in self._start_of:
                raise ValueError(f"segment id {seg_id} is already in the index")
            self._reserve(1)
            a, h, t = self._arrays, self._head_row, self._tail
            if t == h or start_ns >= a["start"][t - 1]:
                pos = t
            else:  # out of order: shift the younger rows by one (numpy handles the overlap)
                pos = h + int(np.searchsorted(a["start"][h:t], start_ns, side="right"))
                for arr in a.values():
                    arr[pos + 1 : t + 1] = arr[pos:t]
            a["ag"][pos] = ag
            a["bg"][pos] = (terms.beta, terms.gamma)
            a["ids"][pos] = seg_id
            a["start"][pos] = start_ns
            a["end"][pos] = end_ns
            if self.keep_video:
                a["video"][pos] = video
            self._tail = t + 1
            self._start_of[seg_id] = int(start_ns)
            if pts is not None:
                self._grid.add(seg_id, pts)

    def extend(
        self,
        ids: np.ndarray,
        start_ns: np.ndarray,
        end_ns: np.ndarray,
        terms: TermArrays,
        paths: Sequence[np.ndarray | None] | None = None,
    ) -> None:
        """Bulk append (e.g. when loading a memory file). Vectorised when already in order."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        starts = np.asarray(start_ns, dtype=np.int64).reshape(-1)
        ends = np.asarray(end_ns, dtype=np.int64).reshape(-1)
        n, e = ids.shape[0], self.embed_dim
        if starts.shape[0] != n or ends.shape[0] != n:
            raise ValueError("ids, start_ns and end_ns must have the same length")
        ag = _finite_array(terms.ag, (n, 2 * e), "terms.ag")
        bg = _finite_array(terms.bg, (n, 2), "terms.bg")
        video = _finite_array(terms.video_unit, (n, e), "terms.video_unit")
        if paths is not None and len(paths) != n:
            raise ValueError(f"paths has {len(paths)} entries for {n} segments")
        pts = [None] * n if paths is None else [_path_points(p) for p in paths]
        with self._lock:
            id_list = ids.tolist()
            if len(set(id_list)) != n or any(i in self._start_of for i in id_list):
                raise ValueError("extend() got duplicate segment ids or ids already in the index")
            h, t = self._head_row, self._tail
            in_order = bool(np.all(np.diff(starts) >= 0)) and (
                n == 0 or t == h or starts[0] >= self._arrays["start"][t - 1]
            )
            if not in_order:
                for s in range(n):
                    one = SegmentTerms(ag[s], float(bg[s, 0]), float(bg[s, 1]), video[s])
                    self.append(int(ids[s]), int(starts[s]), int(ends[s]), one, pts[s])
                return
            self._reserve(n)
            a, t = self._arrays, self._tail
            a["ag"][t : t + n] = ag
            a["bg"][t : t + n] = bg
            a["ids"][t : t + n] = ids
            a["start"][t : t + n] = starts
            a["end"][t : t + n] = ends
            if self.keep_video:
                a["video"][t : t + n] = video
            self._tail = t + n
            for s in range(n):
                self._start_of[int(ids[s])] = int(starts[s])
                p = pts[s]
                if p is not None:
                    self._grid.add(int(ids[s]), p)

    def remove_oldest(self, count: int) -> np.ndarray:
        """Drop the ``count`` segments with the oldest start stamps; returns their ids."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        with self._lock:
            count = min(count, len(self))
            h = self._head_row
            gone = self._arrays["ids"][h : h + count].copy()
            for seg_id in gone.tolist():
                del self._start_of[seg_id]
                self._grid.remove(seg_id)
            self._head_row = h + count
            if self._head_row == self._tail:
                self._head_row = self._tail = 0
            return gone

    def snapshot(self) -> dict[str, np.ndarray]:
        """Copies of the live rows (ids, start, end, ag, bg[, video]) taken under the lock."""
        with self._lock:
            return {k: v[self._head_row : self._tail].copy() for k, v in self._arrays.items()}

    # -- filters ----------------------------------------------------------------------------

    def _rows_of(self, ids: list[int]) -> np.ndarray:
        """Physical rows of live ids, found by their start stamp (rows are sorted by it)."""
        if not ids:
            return np.zeros(0, dtype=np.int64)
        a, h, t = self._arrays, self._head_row, self._tail
        want = np.asarray(ids, dtype=np.int64)
        stamps = np.asarray([self._start_of[i] for i in ids], dtype=np.int64)
        rows = h + np.searchsorted(a["start"][h:t], stamps, side="left")
        for k in np.flatnonzero(a["ids"][rows] != want):  # several segments share a stamp
            r = int(rows[k])
            while a["ids"][r] != want[k]:
                r += 1
            rows[k] = r
        return np.sort(rows)

    def _candidates(
        self,
        since_ns: int | None,
        until_ns: int | None,
        near: npt.ArrayLike | None,
        radius: float | None,
    ) -> slice | np.ndarray:
        a, h, t = self._arrays, self._head_row, self._tail
        lo, hi = h, t
        if since_ns is not None:
            lo = h + int(np.searchsorted(a["start"][h:t], since_ns, side="left"))
        if until_ns is not None:
            hi = h + int(np.searchsorted(a["start"][h:t], until_ns, side="right"))
        hi = max(lo, hi)
        if radius is None or radius == 0:
            return slice(lo, hi)
        if not (math.isfinite(radius) and radius > 0):
            raise ValueError(f"radius must be a finite number > 0 (or None), got {radius}")
        if near is None:
            raise ValueError("a radius filter needs a point `near`")
        point = np.asarray(near, dtype=np.float64).reshape(-1)
        need = 2 if self._grid.planar else 3
        if point.shape[0] < need or not np.isfinite(point[:need]).all():
            raise ValueError(f"near must hold {need} finite coordinates, got {point.tolist()}")
        if len(self._grid) == len(self) and self._grid.covers_all(point, float(radius)):
            return slice(lo, hi)  # every segment has a path and all of it lies in the ball
        rows = self._rows_of(self._grid.query(point, float(radius)))
        return rows[(rows >= lo) & (rows < hi)]

    # -- scoring ----------------------------------------------------------------------------

    def _matvec(self, name: str, rows: slice | np.ndarray, vec: np.ndarray) -> np.ndarray:
        """(arrays[name][rows] reshaped to [-1, E]) @ vec in float32, fp16 converted per block."""
        mat = self._arrays[name]
        e = self.embed_dim
        if self.dtype == "float32":
            return mat[rows].reshape(-1, e) @ vec
        idx = np.arange(rows.start, rows.stop) if isinstance(rows, slice) else rows
        parts = [
            mat[idx[i : i + _FP16_BLOCK_ROWS]].astype(np.float32).reshape(-1, e) @ vec
            for i in range(0, idx.shape[0], _FP16_BLOCK_ROWS)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def score(
        self,
        t: np.ndarray,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        near: npt.ArrayLike | None = None,
        radius: float | None = None,
    ) -> Scores:
        """cos(W_t t + W_p p_s + b, v̂_s) of each candidate segment, from the stored terms."""
        if self._head is None:
            raise ValueError("scoring a text feature needs the fusion head (ScoreIndex.head)")
        e = self.embed_dim
        t64 = _finite_array(t, (e,), "t").astype(np.float64)
        alpha = np.float32(self._head.text_norm2(t64))
        t32 = t64.astype(np.float32)
        with self._lock:
            rows = self._candidates(since_ns, until_ns, near, radius)
            ids = self._arrays["ids"][rows].copy()
            bg = self._arrays["bg"][rows]
            r = self._matvec("ag", rows, t32).reshape(-1, 2)
            dot = r[:, 0] + bg[:, 0]  # rows may move once the lock is released: use them here
            norm2 = alpha + 2.0 * r[:, 1] + bg[:, 1]
        return Scores(ids, (dot / np.sqrt(np.maximum(norm2, _MIN_NORM2))).astype(np.float32))

    def score_query_embedding(
        self,
        q: np.ndarray,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        near: npt.ArrayLike | None = None,
        radius: float | None = None,
    ) -> Scores:
        """cos(q, v̂_s) for one ready query embedding (a request with its own trajectory)."""
        if not self.keep_video:
            raise ValueError("this index was built with keep_video=False: no v̂ to score against")
        q64 = _finite_array(q, (self.embed_dim,), "query embedding").astype(np.float64)
        norm = float(np.linalg.norm(q64))
        if not norm > 0:
            raise ValueError("query embedding is all zeros")
        qh = (q64 / norm).astype(np.float32)
        with self._lock:
            rows = self._candidates(since_ns, until_ns, near, radius)
            ids = self._arrays["ids"][rows].copy()
            s = self._matvec("video", rows, qh)
        return Scores(ids, s.astype(np.float32))

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
    ) -> Hits:
        """Top-k segments for a text feature ``t`` or a ready ``query_embedding`` (exactly one)."""
        if (t is None) == (query_embedding is None):
            raise ValueError("give exactly one of t (text feature) or query_embedding")
        if t is not None:
            res = self.score(t, since_ns=since_ns, until_ns=until_ns, near=near, radius=radius)
        else:
            assert query_embedding is not None
            res = self.score_query_embedding(
                query_embedding, since_ns=since_ns, until_ns=until_ns, near=near, radius=radius
            )
        mask = None if min_score is None else res.scores >= min_score
        best = top_k(res.scores, k, mask)
        return Hits(res.ids[best], res.scores[best], int(res.ids.shape[0]))


def _path_points(path: np.ndarray | None) -> np.ndarray | None:
    if path is None:
        return None
    pts = np.asarray(path, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] == 0 or pts.shape[1] < 3:
        raise ValueError(f"path must be [T, >=3] positions (x, y, z), got {list(pts.shape)}")
    if not np.isfinite(pts[:, :3]).all():
        raise ValueError("path has non-finite positions")
    return pts[:, :3]


def random_head(embed_dim: int, seed: int = 0, scale: float | None = None) -> FusionHead:
    """A random fusion head (benchmarks and tests); default scale keeps |q| ~ |t|."""
    rng = np.random.default_rng(seed)
    s = scale if scale is not None else 1.0 / math.sqrt(2 * embed_dim)
    w = rng.normal(0.0, s, size=(embed_dim, 2 * embed_dim))
    return FusionHead.from_projection(w, rng.normal(0.0, 0.1, size=embed_dim))


def bench_scoring(
    n: int,
    embed_dim: int = 512,
    *,
    repeats: int = 3,
    dtype: str = "float32",
    naive: bool = True,
    seed: int = 0,
) -> dict[str, float]:
    """Time one text request over n random segments: fast exact form vs naive fusion.

    Returns seconds per request (best of ``repeats``) and bytes per segment, for the benchmark
    script. Building the random index is not timed. Needs ~3·n·E·4 bytes of RAM.
    """
    rng = np.random.default_rng(seed)
    head = random_head(embed_dim, seed)
    v = rng.standard_normal((n, embed_dim), dtype=np.float32)
    p = rng.standard_normal((n, embed_dim), dtype=np.float32)
    index = ScoreIndex(embed_dim, head, dtype=dtype, capacity=n)
    stamps = np.arange(n)
    index.extend(stamps, stamps, stamps, segment_terms_batch(head, v, p, dtype=np.float32))
    t = rng.standard_normal(embed_dim).astype(np.float32)

    def best_of(fn: Callable[[], object]) -> float:
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return best

    out = {"n": float(n), "embed_dim": float(embed_dim)}
    out["bytes_per_segment"] = float(index.bytes_per_segment())
    out["fast_s"] = best_of(lambda: index.score(t))
    if naive:
        out["naive_s"] = best_of(lambda: naive_scores(head, t, v, p, dtype=np.float32))
    return out
