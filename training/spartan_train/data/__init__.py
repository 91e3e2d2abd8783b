"""Datasets: the DrivingScenePTX reader and the synthetic drive generator (``data.synth``).

Import-light: no torch, no OpenCV (the generator imports OpenCV only inside ``data.synth``).
"""

from spartan_train.data.dataset import DrivingDataset, DrivingItem, load_pose_file
from spartan_train.data.layout import (
    FPS,
    WINDOW,
    DatasetError,
    ListEntry,
    format_list_line,
    image_path,
    parse_list_line,
    pose_path,
    read_list,
    read_sequence_meta,
    read_windows_meta,
    short_caption,
    windows_meta_by_name,
)

__all__ = [
    "FPS",
    "WINDOW",
    "DatasetError",
    "DrivingDataset",
    "DrivingItem",
    "ListEntry",
    "format_list_line",
    "image_path",
    "load_pose_file",
    "parse_list_line",
    "pose_path",
    "read_list",
    "read_sequence_meta",
    "read_windows_meta",
    "short_caption",
    "windows_meta_by_name",
]
