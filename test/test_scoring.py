"""Exact fast retrieval scoring (spartan_ros.runtime.scoring) against the naive fusion."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from spartan_ros.runtime.scoring import (
    FusionHead,
    ScoreIndex,
    TermArrays,
    naive_scores,
    random_head,
    segment_terms,
    segment_terms_batch,
    top_k,
)

TOL = 1e-5


def _data(n: int, e: int, seed: int, scale: float | None = None):
    rng = np.random.default_rng(seed)
    head = random_head(e, seed, scale)
    v = rng.standard_normal((n, e)).astype(np.float32)
    p = rng.standard_normal((n, e)).astype(np.float32)
    t = rng.standard_normal(e).astype(np.float32)
    return rng, head, v, p, t


def _paths(rng: np.random.Generator, n: int, extent: float = 200.0, t_len: int = 24) -> np.ndarray:
    """Random short drives: start anywhere in the square, move 0..3 m per step."""
    start = rng.uniform(-extent, extent, size=(n, 1, 3))
    steps = rng.normal(0.0, 1.5, size=(n, t_len, 3))
    steps[:, :, 2] *= 0.05
    return start + np.cumsum(steps, axis=1)


def _assert_same_ranking(fast: np.ndarray, ref: np.ndarray, tol: float = TOL) -> None:
    """Scores within tol, and the fast order is the reference order up to near-ties."""
    assert fast.shape == ref.shape
    assert np.max(np.abs(fast.astype(np.float64) - ref), initial=0.0) <= tol
    order = np.argsort(-fast, kind="stable")
    along = ref[order]
    # Walking the fast ranking, the reference scores never go up by more than rounding.
    assert np.all(np.diff(along) <= 2e-6), np.max(np.diff(along), initial=0.0)
    k = min(10, fast.shape[0])
    ref_top = np.argsort(-ref, kind="stable")[:k]
    if k < fast.shape[0] and np.sort(ref)[::-1][k - 1] - np.sort(ref)[::-1][k] > 2e-6:
        assert set(order[:k].tolist()) == set(ref_top.tolist())


def _brute_candidates(
    starts, paths, since_ns=None, until_ns=None, near=None, radius=None, planar=True
):
    keep = np.ones(len(starts), dtype=bool)
    if since_ns is not None:
        keep &= starts >= since_ns
    if until_ns is not None:
        keep &= starts <= until_ns
    if radius:
        dims = 2 if planar else 3
        d = np.linalg.norm(paths[:, :, :dims] - np.asarray(near)[:dims], axis=2).min(axis=1)
        keep &= d <= radius
    return keep


@pytest.mark.parametrize(
    ("e", "n", "scale"), [(128, 10_000, None), (512, 10_000, None), (512, 2_000, 0.02)]
)
def test_fast_equals_naive(e: int, n: int, scale: float | None) -> None:
    rng, head, v, p, t = _data(n, e, seed=e + n, scale=scale)
    index = ScoreIndex(e, head, capacity=8)  # small capacity: exercises doubling
    stamps = np.arange(n, dtype=np.int64) * 100
    terms = segment_terms_batch(head, v, p)
    index.extend(np.arange(n), stamps, stamps + 50, terms)
    ref = naive_scores(head, t, v, p)
    res = index.score(t)
    assert res.scores.dtype == np.float32
    np.testing.assert_array_equal(res.ids, np.arange(n))
    _assert_same_ranking(res.scores, ref)
    hits = index.search(10, t)
    np.testing.assert_array_equal(hits.ids, np.argsort(-ref, kind="stable")[:10])
    assert hits.candidates == n


def test_single_segment_terms_match_batch() -> None:
    _, head, v, p, _ = _data(5, 64, seed=1)
    batch = segment_terms_batch(head, v, p)
    for s in range(5):
        one = segment_terms(head, v[s], p[s])
        np.testing.assert_array_equal(one.ag, batch.ag[s])
        assert one.beta == pytest.approx(float(batch.bg[s, 0]), rel=1e-6)
        assert one.gamma == pytest.approx(float(batch.bg[s, 1]), rel=1e-6)
        np.testing.assert_array_equal(one.video_unit, batch.video_unit[s])


def test_fusion_head_from_projection_and_fuse() -> None:
    rng = np.random.default_rng(3)
    w = rng.normal(size=(8, 16))
    b = rng.normal(size=8)
    head = FusionHead.from_projection(w, b)
    t, p = rng.normal(size=8), rng.normal(size=8)
    np.testing.assert_allclose(head.fuse(t, p), w @ np.concatenate([t, p]) + b, rtol=1e-5)
    with pytest.raises(ValueError, match=r"projection.weight must have shape \[E, 2E\]"):
        FusionHead.from_projection(rng.normal(size=(8, 15)), b)
    with pytest.raises(ValueError, match="bias"):
        FusionHead(w[:, :8], w[:, 8:], np.zeros(7))
    with pytest.raises(ValueError, match="w_pose has non-finite"):
        FusionHead(w[:, :8], np.full((8, 8), np.nan), b)


def test_query_embedding_scores() -> None:
    n, e = 3000, 128
    rng, head, v, p, t = _data(n, e, seed=5)
    index = ScoreIndex(e, head)
    stamps = np.arange(n)
    index.extend(stamps, stamps, stamps, segment_terms_batch(head, v, p))
    q = head.fuse(t, rng.standard_normal(e))
    ref = (v / np.linalg.norm(v, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    res = index.score_query_embedding(q)
    _assert_same_ranking(res.scores, ref.astype(np.float64))
    hits = index.search(5, query_embedding=q, since_ns=100, until_ns=199)
    assert hits.candidates == 100
    np.testing.assert_array_equal(hits.ids, 100 + np.argsort(-ref[100:200], kind="stable")[:5])
    with pytest.raises(ValueError, match="exactly one"):
        index.search(5)
    with pytest.raises(ValueError, match="all zeros"):
        index.score_query_embedding(np.zeros(e))
    small = ScoreIndex(e, head, keep_video=False)
    with pytest.raises(ValueError, match="keep_video=False"):
        small.score_query_embedding(q)


@pytest.mark.parametrize("planar", [True, False])
def test_filters_match_brute_force_and_touch_only_candidates(planar: bool, monkeypatch) -> None:
    n, e = 4000, 128
    rng, head, v, p, t = _data(n, e, seed=7)
    paths = _paths(rng, n)
    # Random start stamps with duplicates, appended in shuffled order (out-of-order path).
    starts = rng.integers(0, 2000, size=n).astype(np.int64) * 1_000_000
    terms = segment_terms_batch(head, v, p)
    index = ScoreIndex(e, head, cell_size=7.0, planar=planar)
    order = rng.permutation(n)
    index.extend(order, starts[order], starts[order] + 1, _take(terms, order), list(paths[order]))
    assert np.all(np.diff(starts[index.ids()]) >= 0)

    ref = naive_scores(head, t, v, p)
    seen_rows: list[int] = []
    real = ScoreIndex._matvec

    def spy(self, name, rows, vec):
        out = real(self, name, rows, vec)
        seen_rows.append(out.shape[0] // (2 if name == "ag" else 1))
        return out

    monkeypatch.setattr(ScoreIndex, "_matvec", spy)
    cases: list[dict[str, Any]] = [
        dict(since_ns=500_000_000, until_ns=900_000_000),
        dict(since_ns=None, until_ns=3_000_000),
        dict(near=(10.0, -20.0, 0.0), radius=25.0),
        dict(near=(10.0, -20.0, 0.0), radius=1000.0),  # holds every point: no lookup
        dict(near=(5000.0, 0.0, 0.0), radius=4900.0),  # more cells than occupied: walk those
        dict(near=paths[17, 5], radius=0.5),  # a small ball around one recorded point
        dict(since_ns=200_000_000, until_ns=1_500_000_000, near=(-50.0, 40.0, 0.0), radius=60.0),
        dict(since_ns=5_000_000_000),  # nothing
    ]
    for f in cases:
        keep = _brute_candidates(starts, paths, planar=planar, **f)
        seen_rows.clear()
        res = index.score(t, **f)
        assert sorted(res.ids.tolist()) == np.flatnonzero(keep).tolist(), f
        assert seen_rows == [int(keep.sum())]  # only candidate rows were multiplied
        _assert_same_ranking(res.scores, ref[res.ids])
        hits = index.search(5, t, **f)
        assert hits.candidates == int(keep.sum())
        expect = np.flatnonzero(keep)[np.argsort(-ref[keep], kind="stable")[:5]]
        np.testing.assert_array_equal(hits.ids, expect)


def _take(terms: TermArrays, idx: np.ndarray) -> TermArrays:
    return TermArrays(terms.ag[idx], terms.bg[idx], terms.video_unit[idx])


def test_append_evict_sequence_against_model() -> None:
    """Random appends (in and out of order), evictions and filtered queries vs a plain list."""
    n, e = 1500, 32
    rng, head, v, p, t = _data(n, e, seed=11)
    paths = _paths(rng, n, extent=50.0)
    ref = naive_scores(head, t, v, p)
    index = ScoreIndex(e, head, capacity=1, cell_size=5.0)
    live: list[tuple[int, int]] = []  # (start, id) sorted = index order
    starts = np.cumsum(rng.integers(1, 5, size=n)) * 1000
    starts[rng.random(n) < 0.1] -= 20_000  # some late arrivals
    for s in range(n):
        one = segment_terms(head, v[s], p[s])
        index.append(s, int(starts[s]), int(starts[s]) + 10, one, paths[s])
        live.append((int(starts[s]), s))
        live.sort()
        if rng.random() < 0.15:
            k = int(rng.integers(0, 8))
            gone = index.remove_oldest(k)
            assert gone.tolist() == [i for _, i in live[:k]]
            live = live[k:]
        if s % 97 == 0:
            ids = np.array([i for _, i in live])
            np.testing.assert_array_equal(index.ids(), ids)
            lo = int(starts[s]) - 30_000
            near = paths[s][5]
            for f in (dict(), dict(since_ns=lo), dict(near=near, radius=8.0), dict(until_ns=lo)):
                keep = _brute_candidates(starts[ids], paths[ids], **f)
                res = index.score(t, **f)
                assert sorted(res.ids.tolist()) == sorted(ids[keep].tolist())
                assert np.max(np.abs(res.scores - ref[res.ids]), initial=0.0) <= TOL
    assert len(index) == len(live)
    with pytest.raises(ValueError, match="already in the index"):
        index.append(live[-1][1], 0, 0, segment_terms(head, v[0], p[0]))
    assert index.remove_oldest(10**9).shape[0] == len(live)
    assert len(index) == 0 and index.score(t).ids.shape == (0,)
    assert index.search(3, t, near=(0, 0, 0), radius=1e6).ids.shape == (0,)


def test_fp16_storage_recall() -> None:
    n, e = 10_000, 512
    _, head, v, p, t = _data(n, e, seed=13)
    terms = segment_terms_batch(head, v, p, dtype=np.float32)
    stamps = np.arange(n)
    exact = ScoreIndex(e, head)
    half = ScoreIndex(e, head, dtype="float16")
    exact.extend(stamps, stamps, stamps, terms)
    half.extend(stamps, stamps, stamps, terms)
    assert half.bytes_per_segment() == 2 * e * 2 + 8 + e * 2 + 24
    assert exact.bytes_per_segment() == 2 * e * 4 + 8 + e * 4 + 24
    rng = np.random.default_rng(0)
    recalls, errs = [], []
    for _ in range(20):
        t = rng.standard_normal(e).astype(np.float32)
        a, b = exact.score(t), half.score(t)
        errs.append(float(np.max(np.abs(a.scores - b.scores))))
        recalls.append(len(set(top_k(a.scores, 10)) & set(top_k(b.scores, 10))) / 10)
    print(f"fp16 terms: recall@10 vs exact {np.mean(recalls):.3f}, max |dscore| {max(errs):.2e}")
    assert np.mean(recalls) >= 0.9
    assert max(errs) < 5e-3
    q = rng.standard_normal(e)
    np.testing.assert_allclose(
        half.score_query_embedding(q).scores, exact.score_query_embedding(q).scores, atol=5e-3
    )


def test_top_k() -> None:
    s = np.array([0.1, 0.5, np.nan, 0.5, -1.0, 0.9], dtype=np.float32)
    assert top_k(s, 3).tolist() == [5, 1, 3]  # tie 0.5: lower index first
    assert top_k(s, 10).tolist() == [5, 1, 3, 0, 4, 2]  # NaN last
    assert top_k(s, 0).tolist() == []
    mask = np.array([True, False, True, True, True, False])
    assert top_k(s, 2, mask).tolist() == [3, 0]
    assert top_k(np.zeros(0), 4).tolist() == []
    with pytest.raises(ValueError, match="k must be"):
        top_k(s, -1)
    with pytest.raises(ValueError, match="mask shape"):
        top_k(s, 1, np.ones(3, dtype=bool))
    rng = np.random.default_rng(0)
    big = rng.standard_normal(100_000)
    np.testing.assert_array_equal(top_k(big, 25), np.argsort(-big)[:25])


def test_min_score_and_bad_inputs() -> None:
    n, e = 200, 16
    _, head, v, p, t = _data(n, e, seed=17)
    index = ScoreIndex(e, head)
    stamps = np.arange(n)
    index.extend(stamps, stamps, stamps, segment_terms_batch(head, v, p))
    ref = naive_scores(head, t, v, p)
    hits = index.search(n, t, min_score=0.1)
    assert hits.ids.shape[0] == int((ref >= 0.1).sum())
    assert np.all(hits.scores >= 0.1) and np.all(np.diff(hits.scores) <= 0)
    with pytest.raises(ValueError, match=r"t must have shape \[16\]"):
        index.score(np.zeros(15))
    with pytest.raises(ValueError, match="radius must be"):
        index.score(t, near=(0, 0, 0), radius=-1.0)
    with pytest.raises(ValueError, match="needs a point"):
        index.score(t, radius=3.0)
    with pytest.raises(ValueError, match="near must hold"):
        index.score(t, near=(np.nan, 0.0, 0.0), radius=3.0)
    assert index.score(t, near=None, radius=0.0).ids.shape == (n,)  # 0 = no spatial filter
    with pytest.raises(ValueError, match="needs the fusion head"):
        ScoreIndex(e).score(t)
    with pytest.raises(ValueError, match="embed_dim"):
        ScoreIndex(e + 1, head)
    with pytest.raises(ValueError, match="all zeros"):
        segment_terms(head, np.zeros(e), p[0])
    with pytest.raises(ValueError, match="video_feat has non-finite"):
        segment_terms(head, np.full(e, np.inf), p[0])
    with pytest.raises(ValueError, match=r"pose_feat must have shape \[16\]"):
        segment_terms(head, v[0], p[0][:3])
    with pytest.raises(ValueError, match="path must be"):
        index.append(10_000, 0, 0, segment_terms(head, v[0], p[0]), np.zeros((24, 2)))
    with pytest.raises(ValueError, match="duplicate segment ids"):
        index.extend(stamps[:2], stamps[:2], stamps[:2], segment_terms_batch(head, v[:2], p[:2]))
    assert len(index) == n
    with pytest.raises(ValueError, match="dtype must be one of"):
        ScoreIndex(e, dtype="int8")
