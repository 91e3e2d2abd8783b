"""Damage and storage failures of the memory file are detected and named, never silent.

Real SQLite files; disk full and read-only on real (tmpfs) mounts, which needs root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_memory import HEAD, E, assert_same_segment, make_segment

from spartan_ros.memory import MemoryFileError, SegmentStore, StorageError
from spartan_ros.memory.integrity import Sidecar


def filled(path: Path, n: int, **kw) -> list:
    segs = [make_segment(i) for i in range(n)]
    with SegmentStore(path, "m", E, head=HEAD, **kw) as store:
        for s in segs:
            store.add(s)
    return segs


def test_a_flipped_bit_in_a_row_is_skipped_counted_and_named(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    segs = filled(path, 20)
    data = bytearray(path.read_bytes())
    feat = segs[6].video_feat.astype("<f4").tobytes()  # segment id 7
    at = data.find(feat)
    assert at > 0 and data.find(feat, at + 1) < 0
    data[at + 5] ^= 0x10
    path.write_bytes(bytes(data))
    with SegmentStore(path, "m", E, head=HEAD) as store:
        assert len(store) == 19 and 7 not in store.all_ids()
        assert store.corrupt_ids == [7]
        [problem] = store.problems
        assert "1 of 20 stored segments are corrupt" in problem and "ids 7" in problem
        assert str(path) in problem
        hits = store.index.search(50, np.ones(E, dtype=np.float32))
        assert 7 not in hits.ids.tolist()  # never scored


def test_random_bit_flips_never_load_silently(tmp_path: Path) -> None:
    """20 single-bit flips in the segment rows: each row either loads exactly as written or is
    skipped and named; a flip in SQLite's own structures is refused as corrupt."""
    good = tmp_path / "good.db"
    segs = filled(good, 60)
    size = good.stat().st_size
    rng = np.random.default_rng(3)
    outcomes = {"row skipped": 0, "file refused": 0, "harmless": 0}
    for k in range(20):
        path = tmp_path / f"flip{k}.db"
        data = bytearray(good.read_bytes())
        byte = int(rng.integers(4096, size))  # past the header page
        data[byte] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(data))
        try:
            with SegmentStore(path, "m", E, head=HEAD) as store:
                for seg in store.get_many(store.all_ids()):
                    assert seg.id is not None
                    assert_same_segment(seg, segs[seg.id - 1])
                if store.corrupt_ids:
                    outcomes["row skipped"] += 1
                    assert store.problems and "corrupt" in store.problems[0]
                else:
                    outcomes["harmless"] += 1  # free space or an unused byte of a page
        except MemoryFileError as exc:
            assert "corrupt" in str(exc) or "malformed" in str(exc)
            outcomes["file refused"] += 1
    print(outcomes)
    assert outcomes["row skipped"] >= 5


def test_segments_lost_with_the_wal_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    store = SegmentStore(path, "m", E, head=HEAD)
    for i in range(30):
        store.add(make_segment(i))
    assert Sidecar.read(str(path)) == Sidecar(30, 30)
    # as after a crash: everything is still in the -wal. Keep only the main file.
    copy = tmp_path / "copy.db"
    shutil.copy(path, copy)
    shutil.copy(str(path) + ".segments", str(copy) + ".segments")
    store.close()
    with SegmentStore(copy, "m", E, head=HEAD) as again:
        assert len(again) < 30
        [problem] = again.problems
        assert f"{copy} holds {len(again)} segments" in problem and "held 30" in problem
        assert "lost" in problem
    with SegmentStore(copy, "m", E, head=HEAD) as third:  # said once, then recorded
        assert third.problems == []


@pytest.mark.parametrize("damage", ["truncate", "delete", "replace"])
def test_a_truncated_deleted_or_replaced_file_is_reported(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "memory.db"
    filled(path, 12)
    if damage == "truncate":
        path.write_bytes(b"")
    elif damage == "delete":
        path.unlink()
    else:
        older = tmp_path / "older.db"
        filled(older, 5)
        shutil.copy(older, path)
    with SegmentStore(path, "m", E, head=HEAD) as store:
        want = 5 if damage == "replace" else 0
        assert len(store) == want
        assert any(f"holds {want} segments" in p and "held 12 (ids up to 12)" in p
                   for p in store.problems), store.problems


def test_eviction_is_not_reported_as_loss(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    with SegmentStore(path, "m", E, head=HEAD) as store:
        for i in range(20):
            store.add(make_segment(i))
            store.evict_oldest(5)
    with SegmentStore(path, "m", E, head=HEAD) as store:
        assert len(store) == 5 and store.problems == []


def test_a_file_killed_before_its_schema_is_initialised(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")  # header written, no table yet
    con.close()
    assert path.stat().st_size > 0
    with SegmentStore(path, "m", E, head=HEAD) as store:
        assert len(store) == 0 and store.meta()["model_hash"] == "m"
        store.add(make_segment(0))
    with SegmentStore(path, "m", E, head=HEAD) as store:
        assert len(store) == 1


def test_files_without_checksums_are_migrated(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    segs = filled(path, 8)
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE segments DROP COLUMN checksum")  # a file from before checksums
    con.commit()
    con.close()
    with SegmentStore(path, "m", E, head=HEAD) as store:
        assert len(store) == 8 and store.problems == []
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*) FROM segments WHERE checksum IS NULL").fetchone()[0] == 0
    con.close()
    with SegmentStore(path, "m", E, head=HEAD) as store:
        assert_same_segment(store.get(3), segs[2])


def test_synchronous_choice(tmp_path: Path) -> None:
    for mode in ("full", "normal"):
        path = tmp_path / f"{mode}.db"
        with SegmentStore(path, "m", E, head=HEAD, synchronous=mode) as store:
            store.add(make_segment(0))
            level = store._conn.execute("PRAGMA synchronous").fetchone()[0]
            assert level == {"full": 2, "normal": 1}[mode]
    with pytest.raises(ValueError, match="synchronous must be one of"):
        SegmentStore(None, "m", E, synchronous="off")


# -- real full and read-only file systems ----------------------------------------------------

@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill_disk(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def test_disk_full_is_named_and_storage_resumes(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "2m") as mnt:
        path = mnt / "memory.db"
        store = SegmentStore(path, "m", E, head=HEAD)
        stored = [store.add(make_segment(i)) for i in range(5)]
        filler = fill_disk(mnt)
        failed = 0
        for i in range(5, 60):
            try:
                stored.append(store.add(make_segment(i)))
            except StorageError as exc:
                failed += 1
                assert exc.kind == "disk full", exc
                assert str(exc).startswith("disk full: ") and str(path) in str(exc)
                assert "no transaction is active" not in str(exc)
        assert failed > 0
        filler.unlink()  # space returns
        stored.append(store.add(make_segment(100)))
        assert store.integrity_check() == "ok"
        store.close()
        with SegmentStore(path, "m", E, head=HEAD) as again:
            assert again.all_ids() == sorted(stored) and again.problems == []


def test_read_only_storage_is_named(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "4m") as mnt:
        path = mnt / "memory.db"
        with SegmentStore(path, "m", E, head=HEAD) as store:
            store.add(make_segment(0))
        # a file system remounted read-only (as after I/O errors): not "corrupt", read-only
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        with pytest.raises(MemoryFileError, match="read-only") as opened:
            SegmentStore(path, "m", E, head=HEAD)
        assert "corrupt" not in str(opened.value) and str(path) in str(opened.value)
