"""MemoryService (the node's logic without ROS) on a real exported tiny model and real SQLite."""

import threading

import numpy as np
import pytest
from ros_graph import QUAT, START_NS, drive_image, drive_position, tiny_model

from spartan_ros.memory.service import IngestWorker, MemoryService, ServiceConfig
from spartan_ros.memory.store import SegmentStore
from spartan_ros.query import Query, QueryError
from spartan_ros.runtime.engine import Engine

IMG = 50_000_000  # 20 Hz camera
ODOM = 20_000_000  # 50 Hz odometry


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(tiny_model(tmp_path_factory.getbasetemp() / "models"), providers=("cpu",))


def service(engine, path=None, backend="sqlite", **cfg) -> MemoryService:
    if backend == "milvus":  # Milvus Lite, embedded: the engine a Milvus server runs
        from spartan_ros.memory.milvus_store import MilvusSegmentStore

        store = MilvusSegmentStore(str(path), engine.model_hash, engine.embed_dim,
                                   head=engine.fusion_head, vehicle_id="car1")
    else:
        store = SegmentStore(path, engine.model_hash, engine.embed_dim, head=engine.fusion_head,
                             vehicle_id="car1")
    return MemoryService(engine, store, ServiceConfig(**cfg))


BACKENDS = pytest.mark.parametrize("backend", ["sqlite", "milvus"])


def feed(svc, seconds, start_ns=START_NS, odom_lag_ns=0, odom=True, process=True, frame_id="odom"):
    """Images at 20 Hz and odometry at 50 Hz in message order; odometry may arrive late."""
    stored = []
    events = []
    for i in range(int(seconds * 1e9) // IMG + 1):
        events.append((start_ns + i * IMG, 1, i))
    if odom:
        for j in range(int(seconds * 1e9) // ODOM + 1):
            events.append((start_ns + j * ODOM + odom_lag_ns, 0, j))
    for arrival, kind, k in sorted(events):
        if kind == 0:
            stamp = arrival - odom_lag_ns
            svc.add_odometry(stamp, drive_position(stamp, start_ns), QUAT, frame_id)
        else:
            svc.add_frame(arrival, drive_image(k))
        if process:
            stored += svc.process()
    return stored + svc.flush()


def test_ingest_builds_segments_with_interpolated_poses(engine, tmp_path):
    svc = service(engine, tmp_path / "m.db")
    stored = feed(svc, 4.6, odom_lag_ns=30_000_000)  # odometry 30 ms behind the camera
    # 47 frames taken at 10 Hz: windows end at frames 24, 30, 36, 42
    assert [s.id for s in stored] == [1, 2, 3, 4]
    assert [s.start_ns - START_NS for s in stored] == [0, 600_000_000, 1_200_000_000,
                                                       1_800_000_000]
    assert all(s.end_ns - s.start_ns == 2_300_000_000 for s in stored)
    counts = svc.stats()["counts"]
    assert counts["frames taken"] == 47 and counts["frames encoded"] == 47
    assert not any(k.startswith("dropped") for k in counts)

    seg = svc.store.get(2)
    assert seg.frame_id == "odom" and seg.poses.shape == (24, 8)
    stamps = START_NS + 600_000_000 + np.arange(24) * 100_000_000
    expected = np.array([drive_position(s) for s in stamps])
    np.testing.assert_allclose(seg.poses[:, 1:4], expected, atol=1e-9)
    np.testing.assert_allclose(seg.poses[:, 4:], np.tile(QUAT, (24, 1)), atol=1e-12)
    # video feature = mean of the frame features, encoded once each
    feats = engine.encode_frames([drive_image(2 * k) for k in range(6, 30)])
    np.testing.assert_allclose(seg.video_feat, feats.mean(axis=0), rtol=1e-4, atol=1e-5)


def test_replay_is_deterministic(engine):
    a, b = service(engine), service(engine, max_pending_frames=1000)
    feed(a, 3.5)
    feed(b, 3.5, process=False)  # processed in other batches: same result
    sa, sb = a.store.get_many(a.store.all_ids()), b.store.get_many(b.store.all_ids())
    assert [s.start_ns for s in sa] == [s.start_ns for s in sb] and len(sa) == 3
    for x, y in zip(sa, sb, strict=True):
        np.testing.assert_array_equal(x.poses, y.poses)
        np.testing.assert_allclose(x.video_feat, y.video_feat, rtol=1e-5, atol=1e-6)


def test_frames_without_odometry_are_dropped_and_counted(engine):
    svc = service(engine)
    assert feed(svc, 3.0, odom=False) == []
    counts = svc.stats()["counts"]
    assert counts["dropped: pose no odometry yet"] == counts["frames taken"] == 31
    assert len(svc.store) == 0

    svc.add_odometry(START_NS, (np.nan, 0, 0), QUAT, "odom")
    assert svc.stats()["counts"]["odometry rejected: not finite"] == 1


def test_stale_odometry_drops_frames(engine):
    svc = service(engine, max_pose_gap_s=0.25)
    svc.add_odometry(START_NS, (0, 0, 0), QUAT, "odom")
    for i in range(12):  # images for 0.55 s, odometry stopped at 0
        svc.add_frame(START_NS + i * IMG, drive_image(i))
    svc.flush()
    counts = svc.stats()["counts"]
    assert counts["frames encoded"] == 3  # 0, 0.1, 0.2 s hold the last sample (within 0.25 s)
    assert counts["dropped: pose future"] == 3


def test_backlog_drops_oldest_frames(engine):
    svc = service(engine, max_pending_frames=4)
    for j in range(60):
        svc.add_odometry(START_NS + j * ODOM, drive_position(START_NS + j * ODOM), QUAT, "odom")
    for i in range(20):
        svc.add_frame(START_NS + i * IMG, drive_image(i))
    assert svc.pending() == 4
    assert svc.stats()["counts"]["dropped: inference behind"] == 6
    svc.flush()
    assert svc.stats()["counts"]["frames encoded"] == 4


def test_time_jump_back_restarts_the_window(engine):
    svc = service(engine)
    first = feed(svc, 3.0)
    second = feed(svc, 3.0)  # the same stamps again: a bag loop
    assert len(first) == len(second) == 2
    # The window did not mix the two passes; the first frame of the second pass waited for the
    # next one to confirm the jump, and was kept.
    assert second[0].start_ns == first[0].start_ns
    assert "dropped: stamp jump not confirmed" not in svc.stats()["counts"]
    assert svc.stats()["counts"]["sampler reset: time jumped back"] == 1


@BACKENDS
def test_queries(engine, tmp_path, backend):
    path = tmp_path / "m.db" if backend == "milvus" else None
    svc = service(engine, path, backend, max_segments=0)
    with pytest.raises(QueryError, match="memory is empty"):
        svc.query(Query("a road"))
    feed(svc, 4.6)
    n = len(svc.store)
    assert n == 4
    res = svc.query(Query("a straight road", top_k=100))
    assert len(res.matches) == n and res.candidates == n
    assert [m.rank for m in res.matches] == list(range(n))
    assert all(a.score >= b.score for a, b in zip(res.matches, res.matches[1:], strict=False))
    m = res.matches[0]
    assert m.frame_count == 24 and m.frame_id == "odom" and m.vehicle_id == "car1"
    assert m.stamps_ns[0] == m.start_ns and m.stamps_ns[-1] == m.end_ns
    # inner stamps come from the float64 seconds of the stored rows: exact to ~250 ns
    np.testing.assert_allclose(np.diff(m.stamps_ns), 100_000_000, atol=500)
    assert m.distance == pytest.approx(2.3 * np.hypot(5.0, 1.0), rel=1e-6)

    assert len(svc.query(Query("x", top_k=0)).matches) == min(svc.config.default_top_k, n)
    late = svc.query(Query("x", top_k=10, since_ns=START_NS + 1_000_000_000))
    assert sorted(x.start_ns - START_NS for x in late.matches) == [1_200_000_000, 1_800_000_000]
    near = svc.query(Query("x", top_k=10, near=(0.0, 0.0, 0.0), radius=1.0))
    assert [x.start_ns for x in near.matches] == [START_NS]

    traj = np.array([[t, 5 * t, t, 0, *QUAT] for t in np.linspace(0, 3, 7)])
    with_traj = svc.query(Query("x", top_k=10, trajectory=traj))
    assert len(with_traj.matches) == n
    assert {x.id for x in with_traj.matches} == {x.id for x in res.matches}
    holed = traj.copy()
    holed[2, 1] = np.nan
    for bad, msg in [(Query(" "), "text is empty"),
                     (Query("x", since_ns=5, until_ns=1), "after until"),
                     (Query("x", radius=-1.0), "radius"),
                     (Query("x", trajectory=traj[:1]), "at least 2"),
                     (Query("x", trajectory=holed), "not finite"),
                     (Query("x", scope="fleet"), "no fleet store"),
                     (Query("x", scope="cars"), "scope must be one of"),
                     (Query("x", vehicle_id="car2"), "scope fleet for 'car2'")]:
        with pytest.raises(QueryError, match=msg):
            svc.query(bad)


@BACKENDS
def test_max_segments_evicts_oldest(engine, tmp_path, backend):
    svc = service(engine, tmp_path / "m.db", backend, max_segments=2)
    stored = feed(svc, 4.6)
    assert [s.id for s in stored] == [1, 2, 3, 4]
    assert stored[2].evicted == (1,) and stored[3].evicted == (2,)
    assert svc.store.all_ids() == [3, 4]


def test_worker_ingests_while_queries_run(engine, tmp_path):
    svc = service(engine, tmp_path / "m.db", max_pending_frames=1000)
    worker = IngestWorker(svc)
    worker.start()
    answers, errors = [], []

    def ask():
        while not stop.is_set():
            try:
                answers.append(len(svc.query(Query("road", top_k=50)).matches))
            except QueryError as exc:
                errors.append(str(exc))

    stop = threading.Event()
    asker = threading.Thread(target=ask)
    asker.start()
    try:
        feed(svc, 4.6, process=False)
    finally:
        stop.set()
        asker.join()
        worker.stop()
    assert len(svc.store) == 4
    assert set(errors) <= {"memory is empty"}
    assert answers == sorted(answers)  # segments only ever appear, whole


def test_frames_with_bad_stamps_are_dropped_and_the_window_kept(engine, caplog):
    """Stamp 0, a negative stamp, 2^31 - 1 s and a jump, each alone among good frames: the
    frame is dropped with its reason and the segments are those of the clean drive."""
    expected = [(s.start_ns, s.end_ns) for s in feed(service(engine), 3.0)]
    assert len(expected) == 2
    svc = service(engine)
    real = svc.add_frame
    bad = {10: 0, 20: -5 * 10**9, 30: (2**31 - 1) * 10**9, 40: START_NS - 100 * 10**9}
    calls = 0

    def add_frame(stamp, image):
        nonlocal calls
        calls += 1
        taken = real(stamp, image)
        if calls in bad:
            assert real(bad[calls], image) is False
        return taken

    svc.add_frame = add_frame  # type: ignore[method-assign]
    stored = feed(svc, 3.0)
    assert [(s.start_ns, s.end_ns) for s in stored] == expected
    counts = svc.stats()["counts"]
    assert counts["dropped: bad stamp (zero or negative)"] == 2
    assert counts["dropped: stamp jump not confirmed"] == 2
    assert "the window in progress is kept" in caplog.text


def test_odometry_frame_change_is_a_warning_in_log_and_diagnostics(engine, caplog):
    svc = service(engine)
    feed(svc, 1.0)
    assert svc.stats()["warnings"] == []
    for k, frame in enumerate(["odom", "odom_2", "odom", "odom_2"]):  # two sources alternate
        assert svc.add_odometry(START_NS + 2 * 10**9 + k * ODOM, (0, 0, 0), QUAT, frame) is None
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert any("odometry frame_id changed from 'odom' to 'odom_2'" in r.getMessage()
               for r in warnings)
    [warning] = svc.stats()["warnings"]
    assert "changed from 'odom_2' to 'odom'" in warning or "to 'odom_2'" in warning
    assert "3 changes so far" in warning and "second odometry source" in warning
    assert svc.stats()["counts"]["odometry frame changes"] == 3


def test_huge_finite_numbers_never_raise(engine):
    svc = service(engine)
    # a finite orientation whose norm overflows once crashed the node
    assert svc.add_odometry(START_NS, (0, 0, 0), (1e200, 0, 0, 1), "odom") == (
        "not a unit quaternion")
    assert svc.add_odometry(START_NS, (1e30, 0, 0), QUAT, "odom") == "position out of range"
    feed(svc, 3.0)
    assert len(svc.store) == 2
    line = [[t, 5 * t, t, 0.0, *QUAT] for t in (0.0, 1.0)]
    far = [[t, 1e30 * (1 + t), 0.0, 0.0, *QUAT] for t in (0.0, 1.0)]
    fast = [[t, 1e6 * t, 0.0, 0.0, *QUAT] for t in (0.0, 1.0)]  # 1000 km/s: float16 overflows
    bad = [
        (Query("a road", near=(1e308, 1e308, 1e308), radius=1e308), "radius must be"),
        (Query("a road", near=(1e308, 0, 0), radius=10.0), "near .* is out of range"),
        (Query("a road", trajectory=np.array(far)), "trajectory pose 0: position out of range"),
        (Query("a road", trajectory=np.array(fast)), "trajectory: .*overflows float16"),
        (Query("a road", trajectory=np.array([line[0], [1e300, *line[1][1:]]])),
         "trajectory pose 1 has stamp 1e\\+300 s"),
        (Query("a road", trajectory=np.array([line[0], [*line[1][:4], 1e200, 0, 0, 1]])),
         "trajectory pose 1: not a unit quaternion"),
        (Query("a road", top_k=2**31 - 1), "top_k must be in"),
        (Query("x" * 70_000), "text is 70000 characters long"),
    ]
    for query, message in bad:
        with pytest.raises(QueryError, match=message):
            svc.query(query)
    assert len(svc.query(Query("a road", trajectory=np.array(line), top_k=5)).matches) == 2


def test_diagnostics_show_the_frame_change_as_warn(engine):
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticStatus

    from spartan_ros.node.diagnostics import diagnostic_array

    svc = service(engine)
    feed(svc, 1.0)
    svc.add_odometry(START_NS + 2 * 10**9, (0, 0, 0), QUAT, "map")
    ingest, _ = diagnostic_array(Time(), "spartan", svc.stats(), [], {}).status
    assert ingest.level == DiagnosticStatus.WARN
    assert "odometry frame_id changed from 'odom' to 'map'" in ingest.message
