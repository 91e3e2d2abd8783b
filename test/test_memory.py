"""Durable segment memory (spartan_ros.memory) on real SQLite files."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from spartan_ros.memory import MemoryFileError, ModelMismatchError, Segment, SegmentStore
from spartan_ros.runtime.scoring import naive_scores, random_head

REPO = Path(__file__).resolve().parents[1]
E = 16
HEAD = random_head(E, 0)


def make_segment(i: int, start_ns: int | None = None, t_len: int = 24) -> Segment:
    """Deterministic segment number i (content depends on i only)."""
    rng = np.random.default_rng(i)
    start = i * 600_000_000 if start_ns is None else start_ns
    poses = np.zeros((t_len, 8))
    poses[:, 0] = start * 1e-9 + 0.1 * np.arange(t_len)
    poses[:, 1:4] = rng.uniform(-100, 100, size=3) + np.cumsum(rng.normal(0, 1, (t_len, 3)), 0)
    q = rng.normal(size=(t_len, 4))
    poses[:, 4:8] = q / np.linalg.norm(q, axis=1, keepdims=True)
    return Segment.build(
        HEAD,
        start,
        start + (t_len - 1) * 100_000_000,
        "odom",
        poses,
        rng.standard_normal(E),
        rng.standard_normal(E),
    )


def assert_same_segment(got: Segment | None, want: Segment) -> None:
    assert got is not None
    assert (got.start_ns, got.end_ns, got.frame_id) == (want.start_ns, want.end_ns, want.frame_id)
    np.testing.assert_array_equal(got.poses, want.poses)
    np.testing.assert_array_equal(got.video_feat, want.video_feat)
    np.testing.assert_array_equal(got.pose_feat, want.pose_feat)
    np.testing.assert_array_equal(got.terms.ag, want.terms.ag)
    np.testing.assert_array_equal(got.terms.video_unit, want.terms.video_unit)
    assert got.terms.beta == want.terms.beta and got.terms.gamma == want.terms.gamma


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    segs = [make_segment(i) for i in range(40)]
    segs.append(make_segment(99, start_ns=5 * 600_000_000 + 1))  # out of start order
    with SegmentStore(path, "model-a", E, head=HEAD) as store:
        ids = [store.add(s) for s in segs]
        assert ids == list(range(1, 42))
        assert len(store) == 41 and store.all_ids() == ids
        for i, s in zip(ids, segs, strict=True):
            got = store.get(i)
            assert_same_segment(got, s)
            assert got is not None and got.id == i and got.frame_count == 24
        assert store.get(10_000) is None
        assert [s.id for s in store.get_many([3, 10_000, 1])] == [3, 1]
        meta = store.meta()
        assert meta["model_hash"] == "model-a" and meta["embed_dim"] == str(E)
        assert meta["schema_version"] == "1" and meta["created"]
        t = np.random.default_rng(1).standard_normal(E)
        before = store.index.search(10, t)
        fresh = store.load_index().snapshot()
        live = store.index.snapshot()
        for key in live:
            np.testing.assert_array_equal(fresh[key], live[key])
    with SegmentStore(str(path), "model-a", E, head=HEAD) as store:
        assert len(store) == 41
        after = store.index.search(10, t)
        np.testing.assert_array_equal(after.ids, before.ids)
        np.testing.assert_array_equal(after.scores, before.scores)
        ref = naive_scores(
            HEAD, t, np.stack([s.video_feat for s in segs]), np.stack([s.pose_feat for s in segs])
        )
        res = store.index.score(t)
        np.testing.assert_allclose(res.scores, ref[res.ids - 1], atol=1e-5)
        assert_same_segment(store.get(41), segs[-1])
        assert store.index.ids()[6] == 41  # sorted by start stamp, not by id
        assert store.integrity_check() == "ok"
        con = sqlite3.connect(path)
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        con.close()


def test_new_file_in_new_directory_and_bad_paths(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "memory.db"
    with SegmentStore(path, "m", E, head=HEAD) as store:
        store.add(make_segment(0))
    with SegmentStore(path, "m", E) as store:
        assert len(store) == 1
    with pytest.raises(MemoryFileError, match="is a directory"):
        SegmentStore(tmp_path, "m", E)
    empty = tmp_path / "empty.db"
    empty.touch()  # a zero-byte file is a new, empty memory
    with SegmentStore(empty, "m", E, head=HEAD) as store:
        assert len(store) == 0 and store.meta()["model_hash"] == "m"


def test_in_ram_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for path in (None, "", ":memory:"):
        with SegmentStore(path, "m", E, head=HEAD) as store:
            assert store.in_memory
            ids = [store.add(make_segment(i)) for i in range(5)]
            assert_same_segment(store.get(ids[2]), make_segment(2))
            assert store.evict_oldest(3) == ids[:2]
    assert list(tmp_path.iterdir()) == []


def test_evict_oldest(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    with SegmentStore(path, "m", E, head=HEAD) as store:
        starts = [5, 1, 9, 3, 7, 2]
        ids = [store.add(make_segment(i, start_ns=s * 10**9)) for i, s in enumerate(starts)]
        assert store.evict_oldest(10) == []
        assert len(store.get_many(ids)) == 6  # every row now in the row cache too
        gone = store.evict_oldest(3)
        assert gone == [ids[1], ids[5], ids[3]]  # starts 1, 2, 3
        assert all(store.get(i) is None for i in gone)
        assert store.all_ids() == sorted(set(ids) - set(gone))
        with pytest.raises(ValueError, match="max_segments"):
            store.evict_oldest(-1)
        last = store.add(make_segment(50, start_ns=4 * 10**9))
        assert store.evict_oldest(0) == [last, ids[0], ids[4], ids[2]]
    with SegmentStore(path, "m", E, head=HEAD) as store:
        assert len(store) == 0
        assert store.add(make_segment(51)) == last + 1  # ids are never reused


CHILD = r"""
import sys
sys.path.insert(0, sys.argv[2])
sys.path.insert(0, sys.argv[3])
from test_memory import make_segment
from spartan_ros.memory import SegmentStore
from spartan_ros.runtime.scoring import random_head
store = SegmentStore(sys.argv[1], "durable", 16, head=random_head(16, 0))
i = int(sys.argv[4])
while True:
    seg_id = store.add(make_segment(i))
    print(seg_id, i, flush=True)  # printed only once add() has returned
    i += 1
"""


def test_durability_after_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    stored: dict[int, int] = {}
    env = dict(os.environ, PYTHONPATH=str(REPO))
    rng = np.random.default_rng(0)
    first = 0
    for _round in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(REPO), str(REPO / "test"), str(first)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert child.stdout is not None
        lines: list[str] = []
        want = int(rng.integers(20, 60))
        deadline = time.monotonic() + 60
        while len(lines) < want and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            lines.append(line)
        time.sleep(float(rng.uniform(0.0, 0.05)))  # land somewhere inside a later add()
        os.kill(child.pid, signal.SIGKILL)
        rest, err = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL, err
        lines += rest.splitlines(keepends=True)
        complete = [ln.split() for ln in lines if ln.endswith("\n")]
        assert len(complete) >= want, err
        for printed_id, printed_i in complete:
            stored[int(printed_id)] = int(printed_i)
        first = max(stored.values()) + 1
        with SegmentStore(path, "durable", E, head=HEAD) as store:
            assert store.integrity_check() == "ok"
            for seg_id, seg_i in stored.items():
                assert_same_segment(store.get(seg_id), make_segment(seg_i))
            # At most the one segment whose commit raced the kill may be there unprinted.
            assert len(store) - len(stored) in (0, 1)
            # Drop it so the next round's numbering stays simple.
            extra = set(store.all_ids()) - set(stored)
            for extra_id in extra:
                assert_same_segment(store.get(extra_id), make_segment(first))
                stored[extra_id] = first
                first += 1
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


def test_model_mismatch_leaves_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    with SegmentStore(path, "model-a", E, head=HEAD) as store:
        store.add(make_segment(0))
    digest = sha(path)
    with pytest.raises(ModelMismatchError) as err:
        SegmentStore(path, "model-b", E)
    msg = str(err.value)
    assert str(path) in msg and "model-a" in msg and "model-b" in msg
    assert "re-index" in msg and "memory_path" in msg
    with pytest.raises(ModelMismatchError, match="embed_dim 32"):
        SegmentStore(path, "model-a", 32)
    assert sha(path) == digest
    with SegmentStore(path, "model-a", E) as store:  # the right model still opens it
        assert len(store) == 1


def test_corrupt_files_are_reported_and_untouched(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(np.random.default_rng(0).bytes(10_000))
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    good = tmp_path / "good.db"
    with SegmentStore(good, "m", E, head=HEAD) as store:
        for i in range(200):
            store.add(make_segment(i))
    data = bytearray(good.read_bytes())
    assert not (tmp_path / "good.db-wal").exists()
    rng = np.random.default_rng(1)
    broken = tmp_path / "broken.db"
    data[4096:] = rng.bytes(len(data) - 4096)  # keep the header page, garble the rest
    broken.write_bytes(bytes(data))
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(good.read_bytes()[:3000])
    for path, pattern in [
        (junk, "not a SQLite database"),
        (other, "not a spartan_ros segment memory file"),
        (broken, "corrupt or unreadable|non-finite|blob has"),
        (truncated, "corrupt or unreadable"),
    ]:
        before = sha(path)
        with pytest.raises(MemoryFileError, match=pattern) as err:
            SegmentStore(path, "m", E)
        assert str(path) in str(err.value) and "not modified" in str(err.value)
        assert sha(path) == before


def test_segment_validation(tmp_path: Path) -> None:
    with SegmentStore(None, "m", E, head=HEAD) as store:
        seg = make_segment(0)
        bad_poses = seg.poses.copy()
        bad_poses[3, 2] = np.nan
        with pytest.raises(ValueError, match="pose row 3 is not finite"):
            store.add(Segment(**{**seg.__dict__, "poses": bad_poses}))
        with pytest.raises(ValueError, match=r"poses must be \[T, 8\]"):
            store.add(Segment(**{**seg.__dict__, "poses": seg.poses[:, :7]}))
        with pytest.raises(ValueError, match=r"video_feat must be \[16\]"):
            store.add(Segment(**{**seg.__dict__, "video_feat": np.zeros(8, np.float32)}))
        with pytest.raises(ValueError, match="end_ns"):
            store.add(Segment(**{**seg.__dict__, "end_ns": seg.start_ns - 1}))
        assert len(store) == 0
    with pytest.raises(ValueError, match="model_hash"):
        SegmentStore(None, "", E)


def test_concurrent_writer_and_readers(tmp_path: Path) -> None:
    """Readers never see a half-written segment: every indexed row is complete and committed."""
    store = SegmentStore(tmp_path / "c.db", "m", E, head=HEAD)
    done = threading.Event()
    errors: list[BaseException] = []
    expected = {i: make_segment(i) for i in range(150)}
    by_start = {s.start_ns: (i, s) for i, s in expected.items()}
    t = np.random.default_rng(2).standard_normal(E)
    checks = [0]

    def writer() -> None:
        try:
            for i in range(150):
                store.add(expected[i])
                if i % 25 == 24:
                    store.evict_oldest(60)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            done.set()

    def reader() -> None:
        try:
            while not done.is_set():
                snap = store.index.snapshot()
                for row in range(snap["ids"].shape[0]):
                    _, seg = by_start[int(snap["start"][row])]
                    np.testing.assert_array_equal(snap["ag"][row], seg.terms.ag)
                    assert tuple(snap["bg"][row]) == (
                        np.float32(seg.terms.beta),
                        np.float32(seg.terms.gamma),
                    )
                hits = store.index.search(5, t)
                for seg_id in hits.ids.tolist():
                    got = store.get(seg_id)
                    if got is not None:  # None only if evicted since the search
                        assert_same_segment(got, by_start[got.start_ns][1])
                    else:
                        assert seg_id not in store.index
                checks[0] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader) for _ in range(3)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    store.close()
    if errors:
        raise errors[0]
    assert checks[0] > 0
    with SegmentStore(tmp_path / "c.db", "m", E) as again:
        assert len(again) == 60  # the last eviction (after segment 149) kept 60
        assert again.integrity_check() == "ok"
