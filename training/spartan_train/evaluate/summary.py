"""All evaluation figures of one set of embeddings, as one JSON-ready dict (numpy + evo, no torch).

``evaluate_embeddings`` runs every protocol of ``retrieval`` and, when trajectories are given, the
trajectory errors of the top-1 retrievals of ``trajectory``; ``per_query`` keeps the per-query
predictions as plain integers (Q16: never a tensor repr).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from spartan_train.evaluate import retrieval, trajectory


def _ranking_rows(ranking: retrieval.Ranking, k: int) -> dict[str, list[Any]]:
    return {
        "rank": [int(r) for r in ranking.ranks],
        "top": [[int(j) for j in row[:k] if j >= 0] for row in ranking.top],
        "score": [
            [round(float(s), 6) for s in row[:k] if np.isfinite(s)] for row in ranking.scores
        ],
    }


# Groups whose clips look alike and differ only in how the car moves (generated sets: windows
# that start at one place, e.g. the drives of a family before and as they part). Two of their
# clips whose positions stay within SAME_MOTION_M of each other over the whole window are the
# same clip to any model.
MOTION_SEPARATED_GROUPS = ("look_group",)
SAME_MOTION_M = 0.5


def same_motion_ceiling(ids: np.ndarray, positions: np.ndarray,
                        tol_m: float = SAME_MOTION_M) -> float | None:
    """The best R@1 within groups (``ids``, negative = none) a model can expect when it tells
    apart every two clips of a group except those that move the same: a query with k such clips
    in its group (itself included) is a 1-in-k draw. ``positions``: each clip's positions over
    its window ``[N, T, 3]``, in one frame for the whole set (metres). None without a group of
    two or more."""
    draws: list[float] = []
    for g in np.unique(ids[ids >= 0]):
        members = np.flatnonzero(ids == g)
        if len(members) < 2:
            continue
        pos = positions[members]
        apart = np.abs(pos[:, None] - pos[None]).max(axis=(2, 3))  # [k, k] largest gap, m
        draws.extend((1.0 / (apart <= tol_m).sum(axis=1)).tolist())
    return float(np.mean(draws)) if draws else None


def evaluate_embeddings(
    queries: np.ndarray,
    videos: np.ndarray,
    rows: np.ndarray | None = None,
    groups: Mapping[str, np.ndarray] | None = None,
    gallery_size: int = retrieval.PAPER_GALLERY,
    top_k: int = 10,
) -> dict[str, Any]:
    """Figures for queries ``[N, E]`` and videos ``[N, E]`` (row i of both = clip i).

    rows: ``[N, T, 8]`` pose windows for the trajectory errors (the paper used the reference
    relative windows). groups: named group ids ``[N]`` (negative = none), e.g. ``look_alike``:
    each gets ``group_protocol`` (query against its own group) and ``subset_summary`` (the group's
    queries in the usual galleries).
    """
    ks = retrieval.KS
    paper, p_t2v, p_v2t = retrieval.paper_protocol(queries, videos, gallery_size, ks)
    pooled, o_t2v, o_v2t = retrieval.pooled_protocol(queries, videos, ks)
    out: dict[str, Any] = {
        "n": int(len(queries)),
        "paper": paper,
        "pooled": pooled,
        "in_training_top1": retrieval.in_training_accuracy(queries, videos),
    }
    per_query: dict[str, Any] = {
        "paper_t2v": _ranking_rows(p_t2v, top_k) | {"gallery": [int(g) for g in p_t2v.gallery]},
        "paper_v2t_rank": [int(r) for r in p_v2t.ranks],
        "pooled_t2v": _ranking_rows(o_t2v, top_k),
        "pooled_v2t_rank": [int(r) for r in o_v2t.ranks],
    }
    if groups:
        out["groups"] = {}
        for name, ids in groups.items():
            ids = np.asarray(ids)
            values, counts = np.unique(ids[ids >= 0], return_counts=True)
            member = np.isin(ids, values[counts >= 2])  # clips that have a look-alike
            if not member.any():
                continue
            figures, g_t2v, _ = retrieval.group_protocol(queries, videos, ids)
            figures["paper_subset_t2v"] = retrieval.subset_summary(p_t2v, member, ks)
            figures["pooled_subset_t2v"] = retrieval.subset_summary(o_t2v, member, ks)
            out["groups"][name] = figures
            per_query[f"group_{name}_t2v_rank"] = [int(r) for r in g_t2v.ranks]
    if rows is not None:
        out["trajectory"] = {}
        for name, ranking in (("paper", p_t2v), ("pooled", o_t2v)):
            errors = trajectory.query_errors(rows, ranking.top[:, 0])
            out["trajectory"][name] = trajectory.aggregate(errors)
            per_query[f"{name}_trajectory"] = trajectory.errors_to_dicts(errors)
    out["per_query"] = per_query
    return out
