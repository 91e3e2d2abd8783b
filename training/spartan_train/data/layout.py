"""The DrivingScenePTX directory layout (docs/model.md section 9): paths and list-line parsing.

```
<root>/images/<seq>/%06d.png        frames, numbered from 0
<root>/poses/<seq>_poses.npy        float [n_frames, 8] TUM rows [t, x, y, z, qx, qy, qz, qw]
                                    (<seq>.npy is accepted too, Q17)
<root>/config/train.txt, val.txt    lines "<seq>/%06d.png *** <caption>" (first frame of a window)
<root>/meta/windows.jsonl           synthetic sets only: one JSON object per listed window
<root>/meta/<seq>.json              synthetic sets only: per-frame ground truth
```

Numpy and the standard library only, so the bag tools and the runtime can use it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WINDOW = 24  # frames per clip (T)
FPS = 10.0  # frame rate the poses and captions assume
SEPARATOR = " *** "  # between the frame name and the caption in a list line

_FRAME_NAME = re.compile(r"^(?P<seq>[^/\s]+)/(?P<frame>\d+)\.png$")


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file (and line)."""


@dataclass(frozen=True)
class ListEntry:
    """One list line: the window starting at frame ``start`` of ``seq``, and its caption."""

    seq: str
    start: int
    caption: str
    list_file: str = ""
    line_no: int = 0  # 1-based, 0 when not read from a file

    @property
    def name(self) -> str:
        return frame_name(self.seq, self.start)

    @property
    def where(self) -> str:
        """``file:line`` for error messages."""
        return f"{self.list_file}:{self.line_no}" if self.list_file else self.name


def frame_name(seq: str, frame: int) -> str:
    """``<seq>/%06d.png``, the name used in list files."""
    return f"{seq}/{frame:06d}.png"


def image_path(root: str | Path, seq: str, frame: int) -> Path:
    return Path(root) / "images" / seq / f"{frame:06d}.png"


def pose_path(root: str | Path, seq: str) -> Path:
    """The pose file of ``seq``: ``<seq>_poses.npy`` (what the code reads) else ``<seq>.npy``."""
    poses = Path(root) / "poses"
    primary = poses / f"{seq}_poses.npy"
    if primary.exists():
        return primary
    alternative = poses / f"{seq}.npy"
    return alternative if alternative.exists() else primary


def short_caption(caption: str) -> str:
    """The text before the first ``"."`` (the reference rule, Q8: a decimal number would cut it)."""
    return caption.split(".")[0]


def format_list_line(seq: str, start: int, caption: str) -> str:
    """One list line including its newline; the caption must be a single line."""
    if "\n" in caption or "\r" in caption or SEPARATOR in caption:
        raise ValueError(f"caption of {frame_name(seq, start)} contains a newline or {SEPARATOR!r}")
    return f"{frame_name(seq, start)}{SEPARATOR}{caption}\n"


def parse_list_line(line: str, list_file: str = "", line_no: int = 0) -> ListEntry:
    """Parse ``<seq>/%06d.png *** <caption>``; DatasetError naming ``list_file:line_no`` if bad."""
    where = f"{list_file}:{line_no}" if list_file else f"line {line_no}"
    text = line.rstrip("\r\n")
    if SEPARATOR not in text:
        raise DatasetError(
            f"{where}: expected '<seq>/<frame>.png{SEPARATOR}<caption>', got {text!r}"
        )
    name, caption = text.split(SEPARATOR, 1)
    match = _FRAME_NAME.match(name.strip())
    if match is None:
        raise DatasetError(f"{where}: frame name {name!r} is not '<seq>/<6-digit number>.png'")
    if not caption.strip():
        raise DatasetError(f"{where}: empty caption for {name!r}")
    return ListEntry(match["seq"], int(match["frame"]), caption, list_file, line_no)


def read_list(path: str | Path) -> list[ListEntry]:
    """All entries of a list file (blank lines are skipped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"list file {path} does not exist") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"list file {path} is not UTF-8 text: {e}") from None
    return [parse_list_line(line, str(path), i) for i, line in enumerate(lines, 1) if line.strip()]


def read_windows_meta(root: str | Path) -> list[dict[str, Any]]:
    """The records of ``<root>/meta/windows.jsonl`` (synthetic sets), in file order."""
    path = Path(root) / "meta" / "windows.jsonl"
    if not path.exists():
        raise DatasetError(f"{path} does not exist (only synthetic sets have it)")
    records = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{i}: not valid JSON ({e})") from None
    return records


def windows_meta_by_name(root: str | Path) -> dict[str, dict[str, Any]]:
    """The records of ``meta/windows.jsonl`` keyed by the list-file name of their window
    (``<seq>/%06d.png``), so they can be matched to list entries; raises DatasetError without
    the file."""
    by_name: dict[str, dict[str, Any]] = {}
    for i, rec in enumerate(read_windows_meta(root), 1):
        if "seq" in rec and "start" in rec:
            if not isinstance(rec["start"], int) or isinstance(rec["start"], bool):
                raise DatasetError(f"{Path(root) / 'meta' / 'windows.jsonl'}: record {i} has "
                                   f"start {rec['start']!r}, not a frame number")
            by_name[frame_name(str(rec["seq"]), rec["start"])] = rec
        elif "name" in rec:
            by_name[str(rec["name"])] = rec
    return by_name


def read_sequence_meta(root: str | Path, seq: str) -> dict[str, Any]:
    """``<root>/meta/<seq>.json``: per-frame ground truth of a synthetic sequence."""
    path = Path(root) / "meta" / f"{seq}.json"
    if not path.exists():
        raise DatasetError(f"{path} does not exist (only synthetic sets have it)")
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None
    return data
