"""Reader for the DrivingScenePTX layout (real CARLA set or our synthetic one). No torch here.

Every list entry is checked when the dataset is built (sequence known, pose file long enough and
finite over the window, all frames present) so that a bad file fails at once with a message naming
the list file and line, not hours into training. Frames are decoded lazily with Pillow.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from spartan_ros.poses import CONVENTIONS, relative_window
from spartan_train.data.layout import (
    WINDOW,
    DatasetError,
    ListEntry,
    image_path,
    pose_path,
    read_list,
    short_caption,
)


@dataclass
class DrivingItem:
    """One window: frames (a subset if requested), relative poses of all T rows, and captions."""

    frames: np.ndarray  # uint8 [K, H, W, 3] RGB
    frame_indices: np.ndarray  # int64 [K]: window offsets (0..T-1) of the loaded frames
    poses: np.ndarray  # float32 [T, 8], relative via spartan_ros.poses.relative_window
    caption: str
    short_caption: str
    seq: str
    start: int
    name: str  # "<seq>/%06d.png" as in the list file


def load_pose_file(path: Path) -> np.ndarray:
    """A ``[n, 8]`` float64 pose table; DatasetError naming the file if it is not one."""
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(f"pose file {path} does not exist") from None
    except (ValueError, OSError, EOFError) as e:  # pickled objects, truncated or not .npy
        raise DatasetError(f"pose file {path} is not a plain numeric .npy array: {e}") from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 2 or arr.shape[1] != 8:
        shape = getattr(arr, "shape", None)
        raise DatasetError(f"pose file {path} must hold an array [n_frames, 8], got shape {shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise DatasetError(f"pose file {path} has non-numeric dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _frame_numbers(folder: Path) -> set[int]:
    """Frame numbers present in an image folder (one directory listing, no per-file stat)."""
    numbers = set()
    for name in os.listdir(folder):
        stem, ext = os.path.splitext(name)
        if ext == ".png" and stem.isdigit():
            numbers.add(int(stem))
    return numbers


class DrivingDataset:
    """Windows of ``window`` frames listed in ``list_file`` under ``root``.

    ``frame_stride`` loads every k-th frame of a window (offsets 0, k, 2k, ...) to save decoding
    time; ``frame_indices`` gives the offsets explicitly instead. Poses always cover all ``window``
    rows. ``check_frames=False`` skips the frame-presence check at construction (huge sets).
    """

    def __init__(
        self,
        root: str | Path,
        list_file: str | Path,
        window: int = WINDOW,
        pose_convention: str = "reference",
        frame_stride: int = 1,
        frame_indices: Sequence[int] | None = None,
        check_frames: bool = True,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset root {self.root} is not a directory")
        if pose_convention not in CONVENTIONS:
            raise ValueError(
                f"pose_convention must be one of {CONVENTIONS}, got {pose_convention!r}"
            )
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if frame_stride < 1:
            raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
        self.window = window
        self.pose_convention = pose_convention
        if frame_indices is None:
            offsets = np.arange(0, window, frame_stride, dtype=np.int64)
        else:
            offsets = np.asarray(list(frame_indices), dtype=np.int64)
            if (
                offsets.ndim != 1
                or offsets.size == 0
                or offsets.min() < 0
                or offsets.max() >= window
            ):
                raise ValueError(f"frame_indices must be offsets in [0, {window}), got {offsets}")
        self.frame_offsets = offsets

        path = Path(list_file)
        if not path.is_absolute() and not path.exists() and (self.root / path).exists():
            path = self.root / path  # a list path relative to the dataset root
        self.list_file = path
        self.entries: list[ListEntry] = read_list(path)
        self._poses: dict[str, np.ndarray] = {}  # pose tables, loaded once per sequence
        self._frames: dict[str, set[int]] = {}
        for entry in self.entries:
            self._check_entry(entry, check_frames)

    # -- construction-time checks -------------------------------------------------------------

    def pose_table(self, seq: str) -> np.ndarray:
        """The absolute ``[n_frames, 8]`` float64 pose table of ``seq`` (cached)."""
        table = self._poses.get(seq)
        if table is None:
            table = load_pose_file(pose_path(self.root, seq))
            self._poses[seq] = table
        return table

    def _check_entry(self, entry: ListEntry, check_frames: bool) -> None:
        folder = self.root / "images" / entry.seq
        ppath = pose_path(self.root, entry.seq)
        if not folder.is_dir() and not ppath.exists():
            raise DatasetError(
                f"{entry.where}: unknown sequence {entry.seq!r} (no {folder} and no {ppath})"
            )
        try:
            table = self.pose_table(entry.seq)
        except DatasetError as e:
            raise DatasetError(f"{entry.where}: {e}") from None
        end = entry.start + self.window
        if end > len(table):
            raise DatasetError(
                f"{entry.where}: window {entry.name} needs pose rows {entry.start}..{end - 1} "
                f"but {ppath} has only {len(table)} rows"
            )
        rows = table[entry.start : end]
        finite = np.isfinite(rows).all(axis=1)
        if not finite.all():
            bad = entry.start + int(np.argmin(finite))
            raise DatasetError(f"{entry.where}: {ppath} row {bad} is not finite: {table[bad]}")
        if not check_frames:
            return
        if not folder.is_dir():
            raise DatasetError(f"{entry.where}: image folder {folder} does not exist")
        present = self._frames.get(entry.seq)
        if present is None:
            present = self._frames[entry.seq] = _frame_numbers(folder)
        for offset in self.frame_offsets:
            frame = entry.start + int(offset)
            if frame not in present:
                missing = image_path(self.root, entry.seq, frame)
                raise DatasetError(f"{entry.where}: frame {missing} is missing")

    # -- access --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def sequences(self) -> list[str]:
        return sorted({e.seq for e in self.entries})

    def load_poses(self, index: int) -> np.ndarray:
        """Relative poses ``float32 [window, 8]`` of entry ``index`` (no image decoding)."""
        entry = self.entries[index]
        rows = self.pose_table(entry.seq)[entry.start : entry.start + self.window]
        try:
            return relative_window(rows, self.pose_convention)
        except ValueError as e:
            raise DatasetError(f"{entry.where}: {e}") from None

    def load_frames(self, index: int, offsets: Sequence[int] | None = None) -> np.ndarray:
        """RGB frames ``uint8 [K, H, W, 3]`` at window ``offsets`` (default: the dataset's)."""
        entry = self.entries[index]
        chosen = self.frame_offsets if offsets is None else np.asarray(offsets, dtype=np.int64)
        frames = []
        for offset in chosen:
            path = image_path(self.root, entry.seq, entry.start + int(offset))
            try:
                with Image.open(path) as img:
                    # convert("RGB") drops an alpha channel without compositing, as the reference.
                    frames.append(np.asarray(img.convert("RGB")))
            except FileNotFoundError:
                raise DatasetError(f"{entry.where}: frame {path} is missing") from None
            except OSError as e:
                raise DatasetError(f"{entry.where}: frame {path} cannot be decoded: {e}") from None
            if frames[-1].shape != frames[0].shape:
                raise DatasetError(
                    f"{entry.where}: frame {path} is {frames[-1].shape[:2]} but the window's "
                    f"first frame is {frames[0].shape[:2]}"
                )
        return np.stack(frames)

    def __getitem__(self, index: int) -> DrivingItem:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} entries")
        index %= len(self)
        entry = self.entries[index]
        return DrivingItem(
            frames=self.load_frames(index),
            frame_indices=self.frame_offsets.copy(),
            poses=self.load_poses(index),
            caption=entry.caption,
            short_caption=short_caption(entry.caption),
            seq=entry.seq,
            start=entry.start,
            name=entry.name,
        )
