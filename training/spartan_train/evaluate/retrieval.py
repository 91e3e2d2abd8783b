"""Retrieval metrics for text+pose -> video (t2v) and video -> text+pose (v2t). Numpy only.

Every protocol is one function, ``rank_in_galleries``, applied with a different split of the
items into galleries: query ``i`` is scored against the items of its own gallery only, and its
target is item ``i`` (query ``i`` and video ``i`` come from the same clip).

- paper (docs/model.md 10.1, Q14): consecutive galleries of 100 in file order, the last one partial;
  R@k is computed per gallery and averaged with equal weight, std is the population std (np.std).
- pooled: the whole set is one gallery.
- in-training (docs/model.md 10.2): galleries of 12, t2v top-1 pooled over all queries (the number
  in the reference's checkpoint names).
- groups: each query against the clips of its own group (e.g. clips that look alike but move
  differently), which is how "the pose helps on look-alike clips" is measured.

Ranks are 1-based. Ties go to the lower index, as argmax does: the rank of the target is
1 + #(items scoring higher) + #(items with a lower index scoring the same). A gallery of n < k
items gives R@k = 1 for all its queries (every rank is <= n); the reference's ``topk(5)`` would
crash on a gallery of fewer than 5 items, so this is our definition there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

KS = (1, 5, 10)
PAPER_GALLERY = 100  # test.py's DataLoader batch size
TRAINING_GALLERY = 12  # train.py's validation batch size
_ROW_CHUNK = 1024  # rows of the similarity matrix computed at once (bounds memory)


def normalize(x: np.ndarray, name: str = "embeddings") -> np.ndarray:
    """L2-normalised rows as float64; ValueError on a wrong shape, non-finite or zero rows."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must have shape [N, E] with N, E > 0, got {x.shape}")
    x = x.astype(np.float64)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise ValueError(f"{name} row {int(np.argmin(finite))} is not finite")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name} row {int(np.argmin(norms[:, 0]))} is all zeros")
    return x / norms


def consecutive_galleries(n: int, size: int = PAPER_GALLERY) -> np.ndarray:
    """Gallery id of each of ``n`` items in chunks of ``size`` in file order (last one partial)."""
    if size < 1:
        raise ValueError(f"gallery size must be >= 1, got {size}")
    return np.arange(n, dtype=np.int64) // size


@dataclass
class Ranking:
    """One direction of one protocol, per query (index = the query's item)."""

    ranks: np.ndarray  # int64 [N], 1-based rank of the target in the query's gallery; 0 = unranked
    top: np.ndarray  # int64 [N, k], global indices of the k best gallery items; -1 = none
    scores: np.ndarray  # float64 [N, k], their cosine similarities (NaN where top is -1)
    gallery: np.ndarray  # int64 [N], the gallery id of each query (-1 = not evaluated)

    @property
    def evaluated(self) -> np.ndarray:
        return self.ranks > 0


def _rank_block(sim: np.ndarray, targets: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    rows = np.arange(sim.shape[0])
    target_score = sim[rows, targets][:, None]
    higher = (sim > target_score).sum(axis=1)
    cols = np.arange(sim.shape[1])[None, :]
    tied_before = ((sim == target_score) & (cols < targets[:, None])).sum(axis=1)
    ranks = 1 + higher + tied_before
    # stable sort of the negated scores: equal scores keep index order, like argmax
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return ranks, order, np.take_along_axis(sim, order, axis=1)


def rank_in_galleries(
    queries: np.ndarray, videos: np.ndarray, gallery: np.ndarray, top_k: int = 10
) -> tuple[Ranking, Ranking]:
    """Rank each item's target within its gallery, both directions: (t2v, v2t).

    ``gallery[i]`` is the gallery id of item i; items with a negative id take no part (neither as
    query nor as gallery item) and get rank 0.
    """
    q = normalize(queries, "query embeddings")
    v = normalize(videos, "video embeddings")
    if q.shape != v.shape:
        raise ValueError(
            f"query and video embeddings must have the same shape, got {q.shape} and {v.shape}"
        )
    gallery = np.asarray(gallery, dtype=np.int64)
    if gallery.shape != (q.shape[0],):
        raise ValueError(f"gallery ids must have shape [{q.shape[0]}], got {gallery.shape}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    n = q.shape[0]
    out = []
    for a, b in ((q, v), (v, q)):
        ranks = np.zeros(n, dtype=np.int64)
        top = np.full((n, top_k), -1, dtype=np.int64)
        scores = np.full((n, top_k), np.nan)
        for gid in np.unique(gallery[gallery >= 0]):
            members = np.flatnonzero(gallery == gid)
            k = min(top_k, members.size)
            for lo in range(0, members.size, _ROW_CHUNK):
                rows = members[lo : lo + _ROW_CHUNK]
                sim = a[rows] @ b[members].T
                r, order, s = _rank_block(sim, np.arange(lo, lo + rows.size), k)
                ranks[rows] = r
                top[rows, :k] = members[order]
                scores[rows, :k] = s
        out.append(Ranking(ranks, top, scores, np.where(gallery >= 0, gallery, -1)))
    return out[0], out[1]


def summarize(ranks: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """R@k, median and mean rank over the given (1-based) ranks; unranked (0) entries skipped."""
    r = np.asarray(ranks)
    r = r[r > 0]
    if r.size == 0:
        raise ValueError("no ranked queries to summarise")
    out: dict[str, float] = {f"R@{k}": float(np.mean(r <= k)) for k in ks}
    out["median_rank"] = float(np.median(r))
    out["mean_rank"] = float(np.mean(r))
    out["n"] = int(r.size)
    return out


def per_gallery(ranking: Ranking, ks: tuple[int, ...] = KS) -> dict[str, Any]:
    """The paper's averaging (Q14): per-gallery figures, then mean and population std over
    galleries with equal weight, whatever their size. Galleries in order of their ids."""
    ids = [g for g in np.unique(ranking.gallery) if g >= 0]
    rows = [summarize(ranking.ranks[ranking.gallery == g], ks) for g in ids]
    out: dict[str, Any] = {}
    for key in [f"R@{k}" for k in ks] + ["median_rank", "mean_rank"]:
        values = np.array([row[key] for row in rows])
        out[key] = {
            "mean": float(values.mean()),
            "std": float(values.std()),  # np.std: population std, as the reference
            "per_gallery": [float(x) for x in values],
        }
    out["gallery_sizes"] = [int(row["n"]) for row in rows]
    return out


def paper_protocol(
    queries: np.ndarray, videos: np.ndarray, gallery_size: int = PAPER_GALLERY,
    ks: tuple[int, ...] = KS,
) -> tuple[dict[str, Any], Ranking, Ranking]:
    """test.py's protocol: consecutive galleries, per-gallery figures averaged (Q14).

    Returns (figures, t2v ranking, v2t ranking). ``figures[dir]["averaged"]`` is the paper's
    number; ``figures[dir]["pooled"]`` pools the same in-gallery ranks over all queries.
    """
    ids = consecutive_galleries(len(queries), gallery_size)
    t2v, v2t = rank_in_galleries(queries, videos, ids, top_k=max(ks))
    figures: dict[str, Any] = {
        "gallery_size": int(gallery_size),
        "n_galleries": int(ids.max() + 1) if ids.size else 0,
    }
    for name, ranking in (("t2v", t2v), ("v2t", v2t)):
        figures[name] = {
            "averaged": per_gallery(ranking, ks),
            "pooled": summarize(ranking.ranks, ks),
        }
    return figures, t2v, v2t


def pooled_protocol(
    queries: np.ndarray, videos: np.ndarray, ks: tuple[int, ...] = KS
) -> tuple[dict[str, Any], Ranking, Ranking]:
    """The whole set as one gallery. Returns (figures, t2v ranking, v2t ranking)."""
    ids = np.zeros(len(queries), dtype=np.int64)
    t2v, v2t = rank_in_galleries(queries, videos, ids, top_k=max(ks))
    figures = {"gallery_size": int(len(queries)), "t2v": summarize(t2v.ranks, ks),
               "v2t": summarize(v2t.ranks, ks)}
    return figures, t2v, v2t


def in_training_accuracy(
    queries: np.ndarray, videos: np.ndarray, batch: int = TRAINING_GALLERY
) -> float:
    """train.py's validation accuracy: t2v top-1 in galleries of ``batch``, pooled over all
    queries (docs/model.md 10.2); the number in the reference's checkpoint names."""
    t2v, _ = rank_in_galleries(queries, videos, consecutive_galleries(len(queries), batch), 1)
    return float(np.mean(t2v.ranks == 1))


def subset_summary(
    ranking: Ranking, mask: np.ndarray, ks: tuple[int, ...] = KS
) -> dict[str, float]:
    """R@k etc. over the queries selected by a boolean ``mask``, ranked in their usual galleries."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != ranking.ranks.shape:
        raise ValueError(f"mask must have shape {ranking.ranks.shape}, got {mask.shape}")
    return summarize(np.where(mask, ranking.ranks, 0), ks)


def group_protocol(
    queries: np.ndarray,
    videos: np.ndarray,
    groups: np.ndarray,
    mask: np.ndarray | None = None,
    min_size: int = 2,
    ks: tuple[int, ...] = KS,
) -> tuple[dict[str, Any], Ranking, Ranking]:
    """Each query against the clips of its own group (``groups[i]``; negative = no group).

    ``mask`` (optional) keeps only some items in play. Groups with fewer than ``min_size``
    members are left out: a one-clip gallery is trivially right. Figures are pooled over queries
    (groups differ in size); ``chance_R@1`` is the mean of 1/group size, the score of a random
    ranker, to read R@1 against.
    """
    g = np.asarray(groups, dtype=np.int64).copy()
    if g.shape != (len(queries),):
        raise ValueError(f"groups must have shape [{len(queries)}], got {g.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != g.shape:
            raise ValueError(f"mask must have shape {g.shape}, got {mask.shape}")
        g[~mask] = -1
    ids, counts = np.unique(g[g >= 0], return_counts=True)
    small = ids[counts < min_size]
    g[np.isin(g, small)] = -1
    if not (g >= 0).any():
        raise ValueError(f"no group has at least {min_size} members")
    t2v, v2t = rank_in_galleries(queries, videos, g, top_k=max(ks))
    sizes = counts[counts >= min_size]
    per_query_size = np.array([np.sum(g == gi) for gi in g[g >= 0]])
    figures: dict[str, Any] = {
        "n_groups": int(sizes.size),
        "n_queries": int((g >= 0).sum()),
        "mean_group_size": float(sizes.mean()),
        "chance_R@1": float(np.mean(1.0 / per_query_size)),
        "t2v": summarize(t2v.ranks, ks),
        "v2t": summarize(v2t.ranks, ks),
    }
    return figures, t2v, v2t
