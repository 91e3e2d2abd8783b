"""Tests for the DrivingScenePTX reader (spartan_train.data): real files in tmp_path, no mocks."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from spartan_train.data import (
    DatasetError,
    DrivingDataset,
    format_list_line,
    parse_list_line,
    read_list,
    short_caption,
)

from spartan_ros.poses import relative_window

H, W = 6, 8


def _poses(n: int, x0: float = 100.0) -> np.ndarray:
    t = np.arange(n) / 10.0 + 1000.0
    yaw = np.linspace(0.0, 1.0, n)
    p = np.zeros((n, 8))
    p[:, 0] = t
    p[:, 1] = x0 + np.arange(n) * 0.8
    p[:, 2] = -50.0 + np.arange(n) * 0.1
    p[:, 3] = 1.5
    p[:, 6] = np.sin(yaw / 2)
    p[:, 7] = np.cos(yaw / 2)
    return p


def make_set(root: Path, frames: dict[str, int], pose_name: str = "{seq}_poses.npy") -> Path:
    rng = np.random.default_rng(0)
    for seq, n in frames.items():
        (root / "images" / seq).mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / "images" / seq / f"{i:06d}.png")
        (root / "poses").mkdir(exist_ok=True)
        np.save(root / "poses" / pose_name.format(seq=seq), _poses(n))
    return root


def write_list(root: Path, entries: list[tuple[str, int, str]], name: str = "list.txt") -> Path:
    path = root / "config" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(format_list_line(s, k, c) for s, k, c in entries), encoding="utf-8")
    return path


CAP = "The video shows a street at dusk. The car turns left at an intersection."


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path]:
    root = make_set(tmp_path / "set", {"carla_01": 30, "carla_02": 26})
    lst = write_list(
        root, [("carla_01", 0, CAP), ("carla_01", 6, "Plain caption"), ("carla_02", 2, CAP)]
    )
    return root, lst


def test_items_frames_poses_captions(small):
    root, lst = small
    ds = DrivingDataset(root, lst)
    assert len(ds) == 3 and ds.sequences == ["carla_01", "carla_02"]
    item = ds[1]
    assert item.frames.shape == (24, H, W, 3) and item.frames.dtype == np.uint8
    # frame 6 + 3 of carla_01, loaded with Pillow as RGB
    expected = np.asarray(Image.open(root / "images" / "carla_01" / "000009.png").convert("RGB"))
    np.testing.assert_array_equal(item.frames[3], expected)
    assert item.poses.shape == (24, 8) and item.poses.dtype == np.float32
    raw = np.load(root / "poses" / "carla_01_poses.npy")[6:30]
    np.testing.assert_array_equal(item.poses, relative_window(raw, "reference"))
    assert np.all(item.poses[0, :4] == 0)
    assert item.caption == "Plain caption" and item.short_caption == "Plain caption"
    assert (item.seq, item.start, item.name) == ("carla_01", 6, "carla_01/000006.png")
    first = ds[0]
    assert first.short_caption == "The video shows a street at dusk"
    assert ds[-1].seq == "carla_02"
    with pytest.raises(IndexError):
        ds[3]


def test_heading_convention_and_frame_subsets(small):
    root, lst = small
    ds = DrivingDataset(root, lst, pose_convention="heading", frame_stride=4)
    item = ds[0]
    assert item.frames.shape[0] == 6
    assert item.frame_indices.tolist() == [0, 4, 8, 12, 16, 20]
    raw = np.load(root / "poses" / "carla_01_poses.npy")[0:24]
    np.testing.assert_allclose(item.poses, relative_window(raw, "heading"))
    ds2 = DrivingDataset(root, lst, frame_indices=[0, 23])
    assert ds2[2].frames.shape == (2, H, W, 3)
    assert ds2.load_poses(2).shape == (24, 8)
    with pytest.raises(ValueError, match="frame_indices"):
        DrivingDataset(root, lst, frame_indices=[24])
    with pytest.raises(ValueError, match="pose_convention"):
        DrivingDataset(root, lst, pose_convention="body")


def test_readme_pose_name_and_relative_list_path(tmp_path):
    root = make_set(tmp_path, {"carla_05": 25}, pose_name="{seq}.npy")  # Q17
    write_list(root, [("carla_05", 1, CAP)], "val.txt")
    ds = DrivingDataset(root, "config/val.txt")
    assert ds[0].poses.shape == (24, 8)


def test_rgba_frames_drop_alpha(tmp_path):
    root = make_set(tmp_path, {"carla_01": 24})
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 10
    Image.fromarray(rgba, "RGBA").save(root / "images" / "carla_01" / "000000.png")
    lst = write_list(root, [("carla_01", 0, CAP)])
    frame = DrivingDataset(root, lst)[0].frames[0]
    assert frame.shape == (H, W, 3) and np.all(frame[..., 0] == 200)


def test_list_line_parsing():
    e = parse_list_line("carla_09/039177.png *** A caption. With two sentences.\n", "x.txt", 7)
    assert (e.seq, e.start, e.caption) == ("carla_09", 39177, "A caption. With two sentences.")
    assert e.where == "x.txt:7"
    assert short_caption("No period at all") == "No period at all"
    assert short_caption("Speed 2.5 km/h. Next") == "Speed 2"  # the reference rule (Q8)
    with pytest.raises(ValueError):
        format_list_line("s", 0, "two\nlines")


@pytest.mark.parametrize(
    "line, message",
    [
        ("carla_01/000000.png A caption without separator", "expected"),
        ("carla_01/abc.png *** caption", "frame name"),
        ("000000.png *** caption", "frame name"),
        ("carla_01/000000.png *** ", "empty caption"),
    ],
)
def test_malformed_lines_name_file_and_line(small, line, message):
    root, lst = small
    text = lst.read_text(encoding="utf-8") + line + "\n"
    lst.write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError, match=message) as err:
        DrivingDataset(root, lst)
    assert f"{lst}:4" in str(err.value)


def test_missing_frame_names_file_line_and_frame(small):
    root, lst = small
    (root / "images" / "carla_02" / "000010.png").unlink()
    with pytest.raises(DatasetError) as err:
        DrivingDataset(root, lst)
    msg = str(err.value)
    assert f"{lst}:3" in msg and "carla_02/000010.png" in msg and "missing" in msg
    # without the construction check the loader still names it
    ds = DrivingDataset(root, lst, check_frames=False)
    with pytest.raises(DatasetError, match="000010.png"):
        ds[2]


def test_short_pose_file(small):
    root, lst = small
    np.save(root / "poses" / "carla_02_poses.npy", _poses(20))
    with pytest.raises(DatasetError) as err:
        DrivingDataset(root, lst)
    msg = str(err.value)
    assert f"{lst}:3" in msg and "carla_02_poses.npy" in msg and "only 20 rows" in msg


def test_nan_pose_names_row(small):
    root, lst = small
    p = _poses(30)
    p[17, 2] = np.nan
    np.save(root / "poses" / "carla_01_poses.npy", p)
    with pytest.raises(DatasetError) as err:
        DrivingDataset(root, lst)
    msg = str(err.value)
    assert f"{lst}:1" in msg and "row 17" in msg and "carla_01_poses.npy" in msg
    p[17, 2] = np.inf
    np.save(root / "poses" / "carla_01_poses.npy", p)
    with pytest.raises(DatasetError, match="row 17"):
        DrivingDataset(root, lst)


def test_bad_pose_files(small):
    root, lst = small
    path = root / "poses" / "carla_01_poses.npy"
    np.save(path, np.zeros((30, 7)))
    with pytest.raises(DatasetError, match=r"\[n_frames, 8\]"):
        DrivingDataset(root, lst)
    np.save(path, np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match="not a plain numeric"):
        DrivingDataset(root, lst)
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DatasetError, match="carla_01_poses.npy"):
        DrivingDataset(root, lst)


def test_unknown_sequence_and_missing_list(small):
    root, lst = small
    write_list(root, [("carla_01", 0, CAP), ("carla_77", 0, CAP)], "bad.txt")
    with pytest.raises(DatasetError) as err:
        DrivingDataset(root, root / "config" / "bad.txt")
    assert "bad.txt:2" in str(err.value) and "unknown sequence 'carla_77'" in str(err.value)
    with pytest.raises(DatasetError, match="does not exist"):
        read_list(root / "config" / "nope.txt")
    with pytest.raises(DatasetError, match="not a directory"):
        DrivingDataset(root / "nope", lst)


def test_pose_files_loaded_once(small):
    root, lst = small
    ds = DrivingDataset(root, lst)
    table = ds.pose_table("carla_01")
    (root / "poses" / "carla_01_poses.npy").unlink()
    assert ds.pose_table("carla_01") is table
    assert ds.load_poses(0).shape == (24, 8)
