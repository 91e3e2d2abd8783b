"""The Milvus store (on Milvus Lite, the real engine) answers exactly as the SQLite store."""

import numpy as np
import pytest
from fleet_helpers import random_segments, text_queries

from spartan_ros.memory.backend import MemoryBackend
from spartan_ros.memory.milvus_store import (
    FleetUnavailable,
    MilvusSegmentStore,
    collection_name,
    segment_record,
)
from spartan_ros.memory.store import ModelMismatchError, SegmentStore

E = 128
N = 2000


def assert_same(a, b, what):
    ids_a = [f.segment.id for f in a.found]
    ids_b = [f.segment.id for f in b.found]
    assert ids_a == ids_b, f"{what}: {ids_a[:10]} != {ids_b[:10]}"
    np.testing.assert_allclose([f.score for f in a.found], [f.score for f in b.found],
                               atol=1e-5, rtol=0, err_msg=what)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """The same segments of car1 in SQLite and in Milvus, plus car2's in Milvus only."""
    head, segs = random_segments(N, E, seed=0)
    _, other = random_segments(200, E, seed=5, head=head)
    sqlite = SegmentStore(None, "m0", E, head=head, vehicle_id="car1")
    for s in segs:
        sqlite.add(s)
    milvus = MilvusSegmentStore(str(tmp_path_factory.mktemp("milvus") / "fleet.db"), "m0", E,
                                head=head, vehicle_id="car1")
    records = [segment_record(s, "car1", i + 1) for i, s in enumerate(segs)]
    records += [segment_record(s, "car2", i + 1) for i, s in enumerate(other)]
    for i in range(0, len(records), 1000):
        milvus.upsert(records[i : i + 1000])
    milvus.flush()
    yield head, segs, sqlite, milvus
    milvus.close()
    sqlite.close()


def test_both_stores_implement_the_backend(stores):
    _, _, sqlite, milvus = stores
    assert isinstance(sqlite, MemoryBackend) and isinstance(milvus, MemoryBackend)


def test_text_queries_give_the_same_top_k_with_few_candidates(stores):
    head, segs, sqlite, milvus = stores
    scored = []
    for t in text_queries(head, segs, 4):
        for k in (1, 10):
            a = sqlite.search(k, t, vehicle_id="car1")
            b = milvus.search(k, t, vehicle_id="car1")
            assert_same(a, b, f"k={k}")
            assert all(f.segment.vehicle_id == "car1" for f in b.found)
            scored.append(b.candidates)
    # The bound rules out almost every segment: only a few dozen are scored exactly.
    assert np.median(scored) < 100 < N


@pytest.mark.parametrize("filters", [
    {"since_ns": "seg:300", "until_ns": "seg:1100"},
    {"since_ns": "seg:1300"},
    {"near": (0.0, 0.0, 0.0), "radius": 80.0},
    {"near": (250.0, -100.0, 0.0), "radius": 150.0, "until_ns": "seg:1200"},
    {"min_score": 0.3},
])
def test_filters_give_the_same_answers(stores, filters):
    head, segs, sqlite, milvus = stores
    kw = {k: (segs[int(v[4:])].start_ns if isinstance(v, str) else v) for k, v in filters.items()}
    for t in text_queries(head, segs, 3, seed=7):
        assert_same(sqlite.search(10, t, **kw), milvus.search(10, t, vehicle_id="car1", **kw),
                    str(filters))


def test_trajectory_queries_give_the_same_answers(stores):
    head, segs, sqlite, milvus = stores
    rng = np.random.default_rng(3)
    for i in range(4):
        q = head.fuse(head.w_text.T @ segs[i * 300].terms.video_unit * 30,
                      rng.standard_normal(E))
        for kw in ({}, {"since_ns": segs[700].start_ns}, {"near": (0, 0, 0), "radius": 100.0}):
            a = sqlite.search(10, query_embedding=q, **kw)
            b = milvus.search(10, query_embedding=q, vehicle_id="car1", **kw)
            assert_same(a, b, f"trajectory {kw}")
            assert b.candidates < 200


def test_when_the_bound_cannot_apply_every_segment_is_scored(stores):
    head, segs, sqlite, milvus = stores
    t = text_queries(head, segs, 1)[0]
    # The N-th best score is negative: the bound does not hold, the whole vehicle is scanned.
    a, b = sqlite.search(N, t), milvus.search(N, t, vehicle_id="car1")
    assert b.found[-1].score < 0
    assert_same(a, b, "full scan")
    assert b.candidates == N


def test_vehicle_filter_and_fleet_answers_name_vehicles(stores):
    head, segs, sqlite, milvus = stores
    t = text_queries(head, segs, 1, seed=11)[0]
    both = milvus.search(3000, t)
    vehicles = {f.segment.vehicle_id for f in both.found}
    assert vehicles == {"car1", "car2"} and len(both.found) == N + 200
    only2 = milvus.search(5, t, vehicle_id="car2")
    assert {f.segment.vehicle_id for f in only2.found} == {"car2"}
    assert sqlite.search(5, t, vehicle_id="car2").found == []  # one vehicle's file
    assert milvus.vehicles() == {"car1": N, "car2": 200}


def test_segments_round_trip(stores):
    _, segs, sqlite, milvus = stores
    for got, want in zip(milvus.get_many([1, 77, N]), sqlite.get_many([1, 77, N]), strict=True):
        assert got.id == want.id and got.start_ns == want.start_ns
        np.testing.assert_array_equal(got.poses, want.poses)
        np.testing.assert_array_equal(got.video_feat, want.video_feat)
        np.testing.assert_array_equal(got.pose_feat, want.pose_feat)
        np.testing.assert_array_equal(got.terms.ag, want.terms.ag)
        np.testing.assert_array_equal(got.terms.video_unit, want.terms.video_unit)


def test_add_evict_and_reopen(tmp_path):
    head, segs = random_segments(30, 16, seed=2)
    uri = str(tmp_path / "own.db")
    with MilvusSegmentStore(uri, "m1", 16, head=head, vehicle_id="car9") as store:
        ids = [store.add(s) for s in segs[:20]]
        assert ids == list(range(1, 21)) and len(store) == 20
        assert store.evict_oldest(15) == [1, 2, 3, 4, 5]
        assert store.all_ids() == list(range(6, 21))
    with MilvusSegmentStore(uri, "m1", 16, head=head, vehicle_id="car9") as store:
        assert len(store) == 15 and store.add(segs[20]) == 21  # ids are never reused
        assert store.count() == 16


def test_one_collection_per_model_and_no_mixing(tmp_path):
    head, segs = random_segments(3, 16, seed=4)
    uri = str(tmp_path / "models.db")
    with MilvusSegmentStore(uri, "modelA", 16, head=head, vehicle_id="v") as a:
        a.add(segs[0])
        client = a._client
        assert collection_name("modelA", 16) != collection_name("modelB", 16)
        # A collection whose record names another model is refused, not written to.
        client.alter_collection_properties(a.collection, properties={
            "spartan.meta": '{"app": "spartan_ros segment memory", "schema_version": 1, '
                            '"model_hash": "modelX", "embed_dim": 16}'})
    with pytest.raises(ModelMismatchError, match="modelX"):
        MilvusSegmentStore(uri, "modelA", 16, head=head, vehicle_id="v")
    with MilvusSegmentStore(uri, "modelB", 16, head=head, vehicle_id="v") as b:
        assert len(b) == 0 and b.count() == 0


def test_unreachable_server_is_a_readable_error():
    with pytest.raises(FleetUnavailable, match="127.0.0.1:9"):
        MilvusSegmentStore("http://127.0.0.1:9", "m", 8, vehicle_id="v")
    with pytest.raises(FleetUnavailable, match="ending in .db"):
        MilvusSegmentStore("/tmp/fleet.sqlite", "m", 8, vehicle_id="v")
