"""Query trajectories as planners send them (paths without stamps), on a real exported model.

The score of a trajectory query must be SPARTAN's: the cosine between the PyTorch model's fused
query (text + pose branch + projection) and the stored video feature.
"""

import math

import numpy as np
import pytest
import torch
from ros_graph import QUAT, START_NS, drive_image, tiny_model

from spartan_ros.memory.service import MemoryService, ServiceConfig
from spartan_ros.memory.store import SegmentStore
from spartan_ros.poses import quat_from_yaw, relative_window, resample_window, time_along_path
from spartan_ros.query import Query, QueryError, untimed, validate_query
from spartan_ros.runtime.engine import Engine
from spartan_ros.tokenizer import tokenize

FRAME_NS = 100_000_000  # frames and odometry at 10 Hz, the model's rate


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.getbasetemp() / "models"
    return tiny_model(base), base / "checkpoint0"


@pytest.fixture(scope="module")
def engine(exported):
    return Engine(exported[0], providers=("cpu",))


def curve_pose(t: float) -> tuple[tuple[float, float, float], tuple[float, float, float, float]]:
    """A drive that bends left at 0.2 rad/s at 6 m/s: positions and headings both change."""
    yaw = 0.2 * t
    x, y = 30.0 * math.sin(yaw), 30.0 * (1.0 - math.cos(yaw))
    return (x, y, 0.0), tuple(float(v) for v in quat_from_yaw(yaw))


def ingest_curve(engine, seconds: float = 6.0, listener=None) -> MemoryService:
    store = SegmentStore(None, engine.model_hash, engine.embed_dim, head=engine.fusion_head)
    svc = MemoryService(engine, store, ServiceConfig())
    svc.on_stored = listener
    for i in range(int(seconds * 10) + 1):
        stamp = START_NS + i * FRAME_NS
        svc.add_odometry(stamp, *curve_pose(i * 0.1), "odom")
        svc.add_frame(stamp, drive_image(i))
        svc.process()
    svc.flush()
    return svc


def planner_path(n: int = 9, step_s: float = 0.5) -> np.ndarray:
    """Poses along the curve at its own positions, every stamp zero."""
    rows = np.zeros((n, 8))
    for k in range(n):
        xyz, q = curve_pose(k * step_s)
        rows[k, 1:4], rows[k, 4:8] = xyz, q
    return rows


# -- timing a path --------------------------------------------------------------------------------

def test_time_along_path_times_by_arc_length_and_drops_repeats():
    rows = np.zeros((4, 8))
    rows[:, 7] = 1.0
    rows[:, 1:3] = [(0, 0), (3, 4), (3, 4), (6, 8)]
    timed = time_along_path(rows, 5.0)
    np.testing.assert_array_equal(timed[:, 0], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(timed[:, 1:3], [(0, 0), (3, 4), (6, 8)])
    with pytest.raises(ValueError, match="one position"):
        time_along_path(np.tile(rows[:1], (3, 1)), 5.0)
    with pytest.raises(ValueError, match="positive"):
        time_along_path(rows, 0.0)


def test_validation_accepts_equal_stamps_and_refuses_mixed_ones():
    path = planner_path()
    assert untimed(path) and untimed(path + [7.5, 0, 0, 0, 0, 0, 0, 0])
    validate_query(Query("a road", trajectory=path))
    mixed = path.copy()
    mixed[3:, 0] = 1.0  # partly equal: neither a timed trajectory nor a path
    with pytest.raises(QueryError, match="strictly increasing .or all equal"):
        validate_query(Query("a road", trajectory=mixed))
    for speed in (-1.0, float("nan"), float("inf"), 101.0):
        with pytest.raises(QueryError, match="trajectory_speed must be in"):
            validate_query(Query("a road", trajectory=path, trajectory_speed=speed))


def test_a_standing_path_is_refused_with_a_clear_message(engine):
    svc = ingest_curve(engine, seconds=3.0)
    path = np.tile(planner_path()[:1], (4, 1))
    with pytest.raises(QueryError, match="trajectory: all its poses are at one position"):
        svc.query(Query("a road", trajectory=path))


def test_untimed_path_is_timed_at_the_requested_or_default_speed(engine):
    svc = ingest_curve(engine)
    path = planner_path()  # 4 s of the curve: 24 m
    length = float(np.linalg.norm(np.diff(path[:, 1:4], axis=0), axis=1).sum())
    at_6 = svc.query(Query("a road", top_k=100, trajectory=path, trajectory_speed=6.0))
    assert at_6.notes == (f"trajectory without stamps timed along its {length:.1f} m at 6 m/s "
                          "(4.0 s; the model's 2.3 s window takes its middle)",)
    # the same poses with the stamps of a drive at 6 m/s ask the same question
    stamped = time_along_path(path, 6.0)
    stamped[:, 0] += 1234.5
    same = svc.query(Query("a road", top_k=100, trajectory=stamped))
    assert same.notes == ()
    assert [m.id for m in same.matches] == [m.id for m in at_6.matches]
    np.testing.assert_allclose([m.score for m in same.matches],
                               [m.score for m in at_6.matches], atol=1e-6)
    # speed 0: the service's default (the node passes its trajectory_speed parameter)
    default = svc.query(Query("a road", top_k=100, trajectory=path))
    assert "at 5 m/s (4.8 s;" in default.notes[0]
    assert [m.score for m in default.matches] != [m.score for m in at_6.matches]


# -- parity with PyTorch --------------------------------------------------------------------------

def test_trajectory_query_score_is_the_torch_fused_query_cosine(engine, exported):
    from spartan_train.model import load_checkpoint

    svc = ingest_curve(engine)
    text, speed = "a curve to the left past the houses", 7.0
    path = planner_path()
    result = svc.query(Query(text, top_k=100, trajectory=path, trajectory_speed=speed))
    assert len(result.matches) == len(svc.store) >= 5

    # the query as PyTorch computes it, timed here without the library's timing code
    steps = np.linalg.norm(np.diff(path[:, 1:4], axis=0), axis=1)
    timed = path.copy()
    timed[:, 0] = np.concatenate([[0.0], np.cumsum(steps)]) / speed
    window = resample_window(timed, engine.window, engine.window_rate_hz)
    rel = relative_window(window, engine.pose_convention)
    model = load_checkpoint(exported[1]).float().eval()
    with torch.no_grad():
        q = model.encode_text(torch.from_numpy(tokenize([text])),
                              torch.from_numpy(rel[None])).double().numpy()[0]
    for match in result.matches:
        video = svc.store.get(match.id).video_feat.astype(np.float64)
        cosine = q @ video / (np.linalg.norm(q) * np.linalg.norm(video))
        assert match.score == pytest.approx(cosine, abs=1e-4)


# -- ~/segments: announced after the commit -------------------------------------------------------

def test_each_segment_is_announced_once_after_its_commit(engine, tmp_path):
    announced = []

    def listener(match):
        # the commit is done: a second connection to the file already sees the row
        import sqlite3

        with sqlite3.connect(tmp_path / "m.db") as db:
            row = db.execute("SELECT start_ns, end_ns FROM segments WHERE id = ?",
                             (match.id,)).fetchone()
        announced.append((match, row))

    store = SegmentStore(tmp_path / "m.db", engine.model_hash, engine.embed_dim,
                         head=engine.fusion_head)
    svc = MemoryService(engine, store, ServiceConfig())
    svc.on_stored = listener
    for i in range(41):
        stamp = START_NS + i * FRAME_NS
        svc.add_odometry(stamp, (0.5 * i, 0.0, 0.0), QUAT, "odom")
        svc.add_frame(stamp, drive_image(i))
        svc.process()
    svc.flush()
    assert [m.id for m, _ in announced] == store.all_ids() == [1, 2, 3]
    for match, row in announced:
        assert row == (match.start_ns, match.end_ns)
        assert match.poses.shape == (24, 8) and match.stamps_ns[0] == match.start_ns
        assert match.distance == pytest.approx(0.5 * 23)

    def broken(match):
        raise RuntimeError("subscriber gone")

    svc.on_stored = broken  # a failing listener never stops ingest
    for i in range(41, 60):
        stamp = START_NS + i * FRAME_NS
        svc.add_odometry(stamp, (0.5 * i, 0.0, 0.0), QUAT, "odom")
        svc.add_frame(stamp, drive_image(i))
        svc.process()
    svc.flush()
    assert len(store) == 7  # windows end at frames 23, 29, ..., 59


# -- a trajectory picks between look-alike places -------------------------------------------------

@pytest.fixture(scope="module")
def lookalike_memory(tmp_path_factory):
    """One spartan-synth family (seed 11, never trained on): drives that start at the same place
    of the same town in the same weather and part at the first intersection (synth_000 turns
    right, synth_003 goes straight; synth_002 is synth_000's drive in another town), stored by the
    committed trained model the way the path-pick benchmark stores its drives."""
    from spartan_train.data.synth.generate import GenConfig, write_dataset
    from spartan_train.demo import DEFAULT_CHECKPOINT
    from spartan_train.export import export_model

    from bench.path_picks import store_drives

    work = tmp_path_factory.mktemp("lookalike")
    write_dataset(GenConfig(out=str(work / "drive"), seed=11, sequences=4, frames=80),
                  progress=False)
    model_dir = work / "model"
    export_model(DEFAULT_CHECKPOINT, model_dir, log=lambda _line: None)
    memory = store_drives(Engine(model_dir, providers=("cpu",)), work / "drive")
    return memory.service, memory.places


@pytest.mark.slow
def test_a_planners_path_picks_between_look_alike_places(lookalike_memory):
    from bench.path_picks import planner_path

    svc, where = lookalike_memory
    ids = {place: seg_id for seg_id, place in where.items()}
    assert len(svc.store) == 40  # 10 windows per drive
    # text that fits every drive of the family: the motion has to tell them apart
    text = "a downtown street with tall buildings on a rainy day"

    def ranks(query: Query) -> dict[tuple[str, int], int]:
        return {where[m.id]: r for r, m in enumerate(svc.query(query).matches)}

    own = ranks(Query(text, top_k=100))  # each segment with its own recorded motion
    for start in (36, 48):  # the approach to the intersection, and the turn itself
        right, straight = ("synth_000", start), ("synth_003", start)
        for drive, other in ((right, straight), (straight, right)):
            path, speed = planner_path(svc.store.get(ids[drive]))  # as a planner sends it
            result = svc.query(Query(text, top_k=100, trajectory=path, trajectory_speed=speed))
            assert "trajectory without stamps timed along its" in result.notes[0]
            got = {where[m.id]: r for r, m in enumerate(result.matches)}
            assert got != own  # the trajectory changes the ranking ...
            assert got[drive] < got[other], (drive, got[drive], other, got[other])  # ... rightly
