"""Tests for the synthetic drive generator (spartan_train.data.synth): real rendering and files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from spartan_train.data import (
    DatasetError,
    DrivingDataset,
    read_list,
    read_sequence_meta,
    read_windows_meta,
    windows_meta_by_name,
)
from spartan_train.data.synth import trajectory, world
from spartan_train.data.synth.generate import GenConfig, main, write_dataset

from spartan_ros.tokenizer import tokenize

SEQ, FRAMES, WIDTH, HEIGHT = 3, 80, 64, 48


def _cfg(out: Path, seed: int, workers: int = 1) -> GenConfig:
    return GenConfig(
        out=str(out),
        seed=seed,
        sequences=SEQ,
        frames=FRAMES,
        width=WIDTH,
        height=HEIGHT,
        val_fraction=0.34,
        grid_size=4,
        workers=workers,
    )


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "a"
    write_dataset(_cfg(out, seed=11), progress=False)
    return out


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_differs(synth, tmp_path):
    again = tmp_path / "b"
    write_dataset(_cfg(again, seed=11, workers=2), progress=False)  # workers do not matter
    a, b = _tree(synth), _tree(again)
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]][:5]
    other = tmp_path / "c"
    write_dataset(_cfg(other, seed=12), progress=False)
    c = _tree(other)
    assert c.keys() == a.keys()  # same layout
    assert c["config/train.txt"] != a["config/train.txt"]
    assert c["images/synth_000/000040.png"] != a["images/synth_000/000040.png"]


def test_layout_and_reader(synth):
    for k in range(SEQ):
        seq = f"synth_{k:03d}"
        names = sorted(p.name for p in (synth / "images" / seq).iterdir())
        assert names == [f"{i:06d}.png" for i in range(FRAMES)]
        poses = np.load(synth / "poses" / f"{seq}_poses.npy", allow_pickle=False)
        assert poses.shape == (FRAMES, 8) and poses.dtype == np.float64
        meta = read_sequence_meta(synth, seq)
        assert len(meta["frames"]) == FRAMES and meta["seq"] == seq
    train = read_list(synth / "config" / "train.txt")
    val = read_list(synth / "config" / "val.txt")
    assert train and val
    assert not {e.seq for e in train} & {e.seq for e in val}  # split by sequence
    records = read_windows_meta(synth)
    assert {(r["seq"], r["start"]) for r in records} == {(e.seq, e.start) for e in train + val}
    by_key = {(r["seq"], r["start"]): r for r in records}
    for e in train + val:
        r = by_key[(e.seq, e.start)]
        assert r["caption"] == e.caption
        assert r["split"] == ("val" if e in val else "train")
        assert {"look_group", "motion_group", "maneuver", "tags"} <= r.keys()
    # window starts step by 1..12 frames and keep whole windows
    for seq in {e.seq for e in train + val}:
        starts = sorted(e.start for e in train + val if e.seq == seq)
        assert starts[0] == 0 and starts[-1] + 24 <= FRAMES
        assert all(1 <= b - a <= 12 for a, b in zip(starts, starts[1:], strict=False))
    # the records match list entries by the entries' names
    by_name = windows_meta_by_name(synth)
    assert all(by_name[e.name]["caption"] == e.caption for e in train + val)
    ds = DrivingDataset(synth, "config/val.txt")
    item = ds[0]
    assert item.frames.shape == (24, HEIGHT, WIDTH, 3) and item.frames.dtype == np.uint8
    assert item.poses.shape == (24, 8) and np.all(item.poses[0, :4] == 0)
    assert item.frames.std() > 10  # a rendered scene, not a blank image
    assert "." not in item.short_caption and item.caption.startswith(item.short_caption)
    info = json.loads((synth / "meta" / "dataset.json").read_text())
    assert info["camera"]["width"] == WIDTH and info["config"]["seed"] == 11


def _check_kinematics(poses: np.ndarray) -> None:
    assert np.all(np.isfinite(poses))
    np.testing.assert_allclose(poses[:, 0], np.arange(len(poses)) / 10.0)  # 10 Hz
    np.testing.assert_allclose(np.linalg.norm(poses[:, 4:], axis=1), 1.0, atol=1e-12)
    assert np.all(poses[:, 4:6] == 0)  # level camera: yaw only
    speed = np.hypot(np.diff(poses[:, 1]), np.diff(poses[:, 2])) * 10.0
    assert speed.max() <= trajectory.V_MAX + 1e-6
    yaw = np.unwrap(2 * np.arctan2(poses[:, 6], poses[:, 7]))
    yaw_rate = np.abs(np.diff(yaw)) * 10.0
    assert yaw_rate.max() <= trajectory.YAW_RATE_MAX
    accel = np.diff(speed) * 10.0
    assert accel.max() <= trajectory.A_MAX + 0.5 and accel.min() >= -trajectory.B_MAX - 0.5
    # the car moves along its heading (no sideways slip beyond the lane-change S-curves)
    step = np.stack([np.diff(poses[:, 1]), np.diff(poses[:, 2])], 1)
    heading = np.stack([np.cos(yaw[:-1]), np.sin(yaw[:-1])], 1)
    moving = speed > 1.0
    cos = np.einsum("ij,ij->i", step[moving], heading[moving]) / np.linalg.norm(
        step[moving], axis=1
    )
    assert cos.min() > np.cos(np.radians(8))


def test_poses_kinematically_plausible(synth):
    for k in range(SEQ):
        _check_kinematics(np.load(synth / "poses" / f"synth_{k:03d}_poses.npy"))


def test_long_drives_plausible_and_stop_at_red_lights():
    """Trajectories alone (no rendering): many random drives of 60 s."""
    grid = world.make_grid(np.random.default_rng(0))
    stopped_at_red = 0
    turns = set()
    for k in range(12):
        rng = np.random.default_rng(k)
        plan = trajectory.RoutePlan(
            (2, 2),
            [(1.0, 0.0), (0.0, -1.0)][k % 2],
            40.0,
            k % 2,
            trajectory.TURNS[k % 3],
            float(rng.uniform(0, 10)),
        )
        path = trajectory.build_path(grid, plan, rng, np.random.default_rng(100 + k), 900.0)
        sched = trajectory.make_schedule(grid, np.random.default_rng(200 + k))
        d = trajectory.drive(path, sched, 600, plan.v0)
        _check_kinematics(d.poses())
        turns |= {t for _, t in path.turns}
        for i in range(len(d.t)):
            if d.speed[i] < 0.05 and d.light[i] == "red":
                stopped_at_red += 1
        # never stopped without a reason: standing still only before a red/yellow light
        for i in np.flatnonzero(d.speed < 0.05):
            if i > 0:
                assert d.light[i] in ("red", "yellow") or d.light[i - 1] in ("red", "yellow")
    assert stopped_at_red > 0
    assert turns == {"left", "straight", "right"}


def test_captions_describe_what_happens(synth):
    records = read_windows_meta(synth)
    poses = {
        f"synth_{k:03d}": np.load(synth / "poses" / f"synth_{k:03d}_poses.npy") for k in range(SEQ)
    }
    checked_turns = 0
    for r in records:
        text = r["caption"].lower()
        p = poses[r["seq"]][r["start"] : r["start"] + 24]
        yaw = np.unwrap(2 * np.arctan2(p[:, 6], p[:, 7]))
        dyaw = np.degrees(yaw[-1] - yaw[0])
        if abs(dyaw) > 45:  # measured from the poses, independently of the generator's label
            side = "left" if dyaw > 0 else "right"
            assert r["maneuver"] == f"turn_{side}"
            summary = text.split(".")[0]
            assert side in summary and "turn" in summary, text
            checked_turns += 1
        speed = np.hypot(np.diff(p[:, 1]), np.diff(p[:, 2])) * 10
        if speed.max() < 0.2:
            assert r["maneuver"] == "stopped"
            assert any(w in text for w in ("wait", "still", "stationary")), text
        if r["maneuver"].startswith("lane_change"):
            assert f"{r['maneuver'].split('_')[-1]} lane" in text, text
    assert checked_turns > 0
    lengths = tokenize([r["caption"] for r in records], truncate=False).astype(bool).sum(1)
    assert lengths.min() >= 45 and lengths.max() <= 200, (lengths.min(), lengths.max())
    short = tokenize([r["caption"].split(".")[0] for r in records]).astype(bool).sum(1)
    assert short.max() <= 77
    assert len({r["caption"] for r in records}) > 0.9 * len(records)  # varied wording


def test_look_alike_and_move_alike_groups(synth):
    records = read_windows_meta(synth)
    look: dict[str, list[dict]] = {}
    for r in records:
        look.setdefault(r["look_group"], []).append(r)
    # same look, different sequences that end up moving differently
    mixed = [
        g
        for g in look.values()
        if len({r["seq"] for r in g}) > 1 and len({r["motion_group"] for r in g}) > 1
    ]
    assert mixed
    # same motion, different towns or weather (the twin repeats its source's drive)
    by_motion: dict[str, set] = {}
    for r in records:
        by_motion.setdefault(r["motion_group"], set()).add((r["town"], r["weather"]))
    assert any(len(v) > 1 for v in by_motion.values())
    twin = [r for r in records if r["role"] == "twin"]
    source = {(r["start"]): r for r in records if r["seq"] == "synth_000"}
    assert twin
    for r in twin:
        s = source[r["start"]]
        assert r["motion_group"] == s["motion_group"] and r["look_group"] != s["look_group"]
    a = np.load(synth / "poses" / "synth_000_poses.npy")
    b = np.load(synth / "poses" / "synth_002_poses.npy")
    np.testing.assert_array_equal(a, b)  # identical drive, other town and weather


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    args = [
        "--out",
        str(out),
        "--seed",
        "3",
        "--sequences",
        "1",
        "--frames",
        "30",
        "--width",
        "32",
        "--height",
        "24",
        "--grid-size",
        "4",
        "--stride",
        "5",
        "--quiet",
    ]
    assert main(args) == 0
    assert "wrote 1 sequences" in capsys.readouterr().out
    starts = sorted(e.start for e in read_list(out / "config" / "train.txt"))
    assert starts == [0, 5]
    assert main(args) == 2  # refuses a non-empty directory
    assert "not empty" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "x"), "--frames", "10"]) == 2


def test_one_process_generates_different_sets_independently(tmp_path):
    # A town cached from an earlier set (other seed, other grid) must not leak into the next one.
    write_dataset(GenConfig(out=str(tmp_path / "big"), seed=3, sequences=1, frames=30, width=48,
                            height=36, grid_size=6), progress=False)
    write_dataset(_cfg(tmp_path / "small", seed=11), progress=False)
    assert sorted((tmp_path / "small" / "images").iterdir())


def test_window_facts_recorded_and_rederivable(synth):
    """Every window's facts (the ground truth of free text) follow from its frame records,
    agree with the caption's manoeuvre and include the drive's weather."""
    from spartan_train.data.synth.facts import frame_record, window_facts

    metas = {f"synth_{k:03d}": read_sequence_meta(synth, f"synth_{k:03d}") for k in range(SEQ)}
    for r in read_windows_meta(synth):
        meta = metas[r["seq"]]
        frames = [frame_record(f) for f in meta["frames"][r["start"]: r["start"] + 24]]
        assert r["facts"] == sorted(window_facts(frames, meta["weather"]))
        assert meta["weather"] in r["facts"]
        if r["maneuver"] in ("turn_left", "turn_right", "lane_change_left", "lane_change_right"):
            assert r["maneuver"] in r["facts"]
        assert ("stop" in r["facts"]) == (min(f["speed"] for f in frames) < 0.3)


def test_landmark_captions_name_every_gas_station_in_view(synth, tmp_path):
    """--name-landmarks: every window with a gas station in view (the free-text fact) names it in
    its caption; nothing else changes (same images, poses and the other windows' captions), and
    the dataset records the option."""
    named = tmp_path / "named"
    cfg = _cfg(named, seed=11)
    cfg.name_landmarks = True
    write_dataset(cfg, progress=False)
    plain, marked = read_windows_meta(synth), read_windows_meta(named)
    assert [(r["seq"], r["start"]) for r in plain] == [(r["seq"], r["start"]) for r in marked]
    with_gas = [(a, b) for a, b in zip(plain, marked, strict=True) if "gas_station" in b["facts"]]
    assert with_gas, "the test drive must pass a gas station"
    assert all("gas station" in b["caption"] for _, b in with_gas)
    # the default misses some of them (the reason for the option)
    assert sum("gas station" not in a["caption"] for a, _ in with_gas) > 0
    assert all(a["caption"] == b["caption"]
               for a, b in zip(plain, marked, strict=True) if "gas_station" not in b["facts"])
    a, b = _tree(synth), _tree(named)
    assert a.keys() == b.keys()
    changed = {k for k in a if a[k] != b[k]}
    assert {"meta/windows.jsonl", "meta/dataset.json"} <= changed <= {
        "config/train.txt", "config/val.txt", "meta/windows.jsonl", "meta/dataset.json"}, changed
    assert json.loads(b["meta/dataset.json"])["config"]["name_landmarks"] is True
    assert "name_landmarks" not in json.loads(a["meta/dataset.json"])["config"]


def test_gas_stations_per_town(tmp_path, capsys):
    grid = world.make_grid(np.random.default_rng(0), 6, 6)
    towns = {n: world.build_town(0, grid, np.random.default_rng(1), gas_stations=n)
             for n in (0, world.GAS_STATIONS, 6)}
    assert {n: len(t.gas_stations) for n, t in towns.items()} == {0: 0, 2: 2, 6: 6}
    out = tmp_path / "gas"
    args = ["--out", str(out), "--seed", "3", "--sequences", "1", "--frames", "30", "--width",
            "32", "--height", "24", "--gas-stations", "6", "--name-landmarks", "--quiet"]
    assert main(args) == 0
    config = json.loads((out / "meta" / "dataset.json").read_text())["config"]
    assert config["gas_stations"] == 6 and config["name_landmarks"] is True
    assert main(["--out", str(tmp_path / "x"), "--gas-stations", "-1"]) == 2
    assert "--gas-stations must be >= 0" in capsys.readouterr().err


def test_ensure_dataset_generates_once_and_replaces_a_set_cut_short(tmp_path):
    """A complete set is kept; a set cut short (no meta/dataset.json) or a leftover .partial is
    replaced by a whole one, the same bytes as a straight generation."""
    from spartan_train.data.synth.generate import ensure_dataset

    cfg = GenConfig(out=str(tmp_path / "set"), seed=4, sequences=1, frames=40)
    assert ensure_dataset(cfg, progress=False) is not None
    assert not (tmp_path / "set.partial").exists()
    stamp = (tmp_path / "set" / "meta" / "dataset.json").stat().st_mtime_ns
    assert ensure_dataset(cfg, progress=False) is None  # kept, not generated again
    assert (tmp_path / "set" / "meta" / "dataset.json").stat().st_mtime_ns == stamp
    (tmp_path / "set" / "meta" / "dataset.json").unlink()  # as if cut short
    (tmp_path / "set.partial").mkdir()
    (tmp_path / "set.partial" / "stray").write_text("x")
    assert ensure_dataset(cfg, progress=False) is not None
    assert not (tmp_path / "set.partial").exists()
    write_dataset(GenConfig(out=str(tmp_path / "straight"), seed=4, sequences=1, frames=40),
                  progress=False)
    files = sorted(p.relative_to(tmp_path / "set") for p in (tmp_path / "set").rglob("*"))
    assert files == sorted(p.relative_to(tmp_path / "straight")
                           for p in (tmp_path / "straight").rglob("*"))
    for rel in files:
        if (tmp_path / "set" / rel).is_file():
            assert (tmp_path / "set" / rel).read_bytes() == \
                (tmp_path / "straight" / rel).read_bytes(), rel


def test_windows_meta_with_a_bad_start_is_refused(tmp_path: Path) -> None:
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "windows.jsonl").write_text('{"seq": "a", "start": "x"}\n')
    with pytest.raises(DatasetError, match="record 1 has start 'x'"):
        windows_meta_by_name(tmp_path)
