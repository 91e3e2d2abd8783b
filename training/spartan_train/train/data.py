"""Training data path: preprocessed-frame cache, torch Dataset and collate over the reader.

Decoding a PNG and resizing it with Pillow costs far more than a training step can afford on a
small CPU, and neighbouring windows share most of their frames. So every distinct frame of a split
is decoded and preprocessed once (``spartan_ros.preprocess.preprocess_batch``, the same function
the node and the exporter use) into a memory-mapped cache, and a batch is then a memmap slice.

The cache stores each preprocessed frame as its 8-bit codes: the preprocessing is
``(k / 255 - mean) / std`` of the uint8 pixels k of the resized crop, so keeping k is lossless and
``decode_frames`` recomputes exactly the same float32 values (bit for bit, checked when the cache is
built), at half the size of float16 and a quarter of float32.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from spartan_ros import preprocess
from spartan_ros.poses import relative_window
from spartan_ros.tokenizer import tokenize
from spartan_train.data import DrivingDataset, short_caption
from spartan_train.data.layout import FPS, image_path

log = logging.getLogger(__name__)

CACHE_VERSION = 1
FRAMES_FILE = "frames.u8"
INDEX_FILE = "index.json"
_BUILD_CHUNK = 64  # frames preprocessed per call while building

_MEAN = torch.from_numpy(preprocess.CLIP_MEAN.copy()).view(3, 1, 1)
_STD = torch.from_numpy(preprocess.CLIP_STD.copy()).view(3, 1, 1)


def default_cache_dir() -> Path:
    """``$SPARTAN_CACHE_DIR`` or ``~/.cache/spartan_ros/frames``."""
    env = os.environ.get("SPARTAN_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "spartan_ros" / "frames"


# --------------------------------------------------------------------------- pixels <-> codes


def encode_codes(x: np.ndarray) -> np.ndarray:
    """Preprocessed float32 frames [..., 3, R, R] -> their uint8 pixel codes (exact inverse)."""
    mean = preprocess.CLIP_MEAN.reshape(3, 1, 1)
    std = preprocess.CLIP_STD.reshape(3, 1, 1)
    k = np.rint((x * std + mean) * 255.0)
    return np.clip(k, 0, 255).astype(np.uint8)


def decode_frames(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes [..., 3, R, R] -> float32 preprocessed frames, the same operations in the same
    order as ``preprocess_image`` (so the same values)."""
    x = codes.float() / 255.0
    return (x - _MEAN.to(x.device)) / _STD.to(x.device)


def _decode_numpy(codes: np.ndarray) -> np.ndarray:
    x = codes.astype(np.float32) / np.float32(255.0)
    return (x - preprocess.CLIP_MEAN.reshape(3, 1, 1)) / preprocess.CLIP_STD.reshape(3, 1, 1)


# --------------------------------------------------------------------------- frame cache


def window_frames(reader: DrivingDataset) -> list[tuple[str, int]]:
    """Every distinct (sequence, frame) that some window of ``reader`` covers, sorted."""
    frames = {(e.seq, e.start + o) for e in reader.entries for o in range(reader.window)}
    return sorted(frames)


def cache_key(reader: DrivingDataset, resolution: int, frames: Sequence[tuple[str, int]],
              fit: str = "crop") -> str:
    """Hash of what the cached pixels depend on: data root, resolution and fit, the frame files
    (size and modification time, so a regenerated set is not mistaken for the old one) and the
    preprocessing code."""
    h = hashlib.sha256()
    head = {"version": CACHE_VERSION, "root": str(reader.root.resolve()), "resolution": resolution,
            "fit": fit}
    h.update(json.dumps(head, sort_keys=True).encode())
    h.update(Path(preprocess.__file__).read_bytes())
    for seq, frame in frames:
        path = image_path(reader.root, seq, frame)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise FileNotFoundError(f"frame {path} is missing") from None
        h.update(f"{seq}/{frame}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


class FrameCache:
    """Preprocessed frames of a split, uint8 codes [N, 3, R, R] in a read-only memmap."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            meta = json.loads((self.path / INDEX_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"frame cache {self.path} is unreadable ({e}); delete it") from None
        if meta.get("version") != CACHE_VERSION:
            raise ValueError(f"frame cache {self.path} has version {meta.get('version')!r}")
        self.resolution = int(meta["resolution"])
        self.fit = str(meta.get("fit", "crop"))
        frames = [(str(s), int(f)) for s, f in meta["frames"]]
        self.index = {key: i for i, key in enumerate(frames)}
        r = self.resolution
        shape = (len(frames), 3, r, r)
        expected = int(np.prod(shape))
        size = (self.path / FRAMES_FILE).stat().st_size
        if size != expected:
            raise ValueError(f"frame cache {self.path}: {FRAMES_FILE} has {size} bytes, "
                             f"expected {expected}; delete it")
        self.codes = np.memmap(self.path / FRAMES_FILE, dtype=np.uint8, mode="r", shape=shape)

    def __len__(self) -> int:
        return len(self.index)

    def rows(self, seq: str, frames: Sequence[int]) -> np.ndarray:
        try:
            return np.array([self.index[(seq, int(f))] for f in frames], dtype=np.int64)
        except KeyError as e:
            raise KeyError(f"frame {e.args[0]} is not in the frame cache {self.path}") from None

    @classmethod
    def build_or_open(
        cls,
        reader: DrivingDataset,
        resolution: int,
        cache_dir: str | Path | None = None,
        progress: Callable[[int, int], None] | None = None,
        fit: str = "crop",
    ) -> FrameCache:
        """Open the cache of ``reader``'s frames at ``resolution`` (fitted by ``fit``), building it
        first if needed.

        Built into a temporary directory and renamed into place, so an interrupted build leaves
        nothing that looks complete, and concurrent builders do not see each other's halves.
        """
        frames = window_frames(reader)
        key = cache_key(reader, resolution, frames, fit)
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        size = f"r{resolution}" + ("" if fit == "crop" else f"-{fit}")
        final = root / f"{reader.root.resolve().name}-{size}-{key}"
        if (final / INDEX_FILE).exists():
            return cls(final)
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            _build(reader, resolution, frames, tmp, progress, fit)
            try:
                os.rename(tmp, final)
            except OSError:  # another process finished the same cache first
                if not (final / INDEX_FILE).exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return cls(final)


def _build(
    reader: DrivingDataset,
    resolution: int,
    frames: list[tuple[str, int]],
    out: Path,
    progress: Callable[[int, int], None] | None,
    fit: str = "crop",
) -> None:
    r = resolution
    data = np.memmap(out / FRAMES_FILE, dtype=np.uint8, mode="w+", shape=(len(frames), 3, r, r))
    row = {key: i for i, key in enumerate(frames)}
    done = np.zeros(len(frames), dtype=bool)
    pending_rows: list[int] = []
    pending: list[np.ndarray] = []

    def flush() -> None:
        x = preprocess.preprocess_batch(pending, r, fit=fit)
        k = encode_codes(x)
        if not np.array_equal(_decode_numpy(k), x):
            raise RuntimeError("preprocessed frames are no longer an 8-bit affine map of the "
                               "pixels; the frame cache (spartan_train.train.data) must be revised")
        data[np.array(pending_rows)] = k
        pending_rows.clear()
        pending.clear()
        if progress is not None:
            progress(int(done.sum()), len(frames))

    # Decode through the reader (its errors name the list file and line), window by window,
    # each frame once.
    for i, entry in enumerate(reader.entries):
        rows = [row[(entry.seq, entry.start + o)] for o in range(reader.window)]
        todo = [o for o, j in enumerate(rows) if not done[j]]
        if not todo:
            continue
        for o, img in zip(todo, reader.load_frames(i, todo), strict=True):
            j = rows[o]
            done[j] = True
            pending_rows.append(j)
            pending.append(img)
        if len(pending) >= _BUILD_CHUNK:
            flush()
    if pending:
        flush()
    data.flush()
    meta = {"version": CACHE_VERSION, "resolution": r, "fit": fit,
            "root": str(reader.root.resolve()),
            "frames": [[s, f] for s, f in frames]}
    (out / INDEX_FILE).write_text(json.dumps(meta), encoding="utf-8")


# --------------------------------------------------------------------------- poses


def still_poses(batch: int, window: int, convention: str) -> np.ndarray:
    """The no-pose ablation input, float32 [batch, window, 8]: a vehicle standing still at the
    origin (timestamps k / FPS, zero position, identity orientation) made relative with
    ``convention``, the same window for every clip.

    All-zero poses would be the obvious choice, but in reference mode the pose branch divides by
    the batch-wide std of its FFT features (Q2, no epsilon), which is 0 for all-zero input: NaN.
    A constant still window carries no motion information either and stays finite in both modes.
    """
    table = np.zeros((window, 8), dtype=np.float64)
    table[:, 0] = np.arange(window) / FPS
    table[:, 7] = 1.0
    rel = relative_window(table, convention)
    return np.broadcast_to(rel, (batch, window, 8)).astype(np.float32)


# --------------------------------------------------------------------------- dataset


# How training draws a clip's K frames: any K of the window ("random"), or one in each of K
# equal stretches of it ("segments", so the K frames always span the window, as evaluation's
# evenly spaced frames do, and the motion between them is always there to see).
FRAME_SAMPLINGS = ("random", "segments", "even")


def frame_offsets(window: int, k: int | None, rng: np.random.Generator | None,
                  sampling: str = "random") -> np.ndarray:
    """Which of the ``window`` frames to use: all (k None or >= window); k drawn with ``rng``
    (training) as ``sampling`` says; or k evenly spaced from first to last (evaluation, and
    training with ``even``: always the frames evaluation and the node use)."""
    if sampling not in FRAME_SAMPLINGS:
        raise ValueError(f"frame sampling must be one of {FRAME_SAMPLINGS}, got {sampling!r}")
    if k is None or k >= window:
        return np.arange(window, dtype=np.int64)
    if k < 1:
        raise ValueError(f"frames per clip must be >= 1, got {k}")
    if rng is None or sampling == "even":
        return np.linspace(0, window - 1, k).round().astype(np.int64)
    if sampling == "segments":
        edges = np.floor(np.linspace(0, window, k + 1)).astype(np.int64)
        return edges[:-1] + rng.integers(0, np.diff(edges))
    return np.sort(rng.choice(window, size=k, replace=False)).astype(np.int64)


# A caption is a list of facts, one sentence each (scene and manoeuvre first, then buildings,
# lights, weather, speed). A sentence ends at a "." followed by white space, so "2.5" stays whole.
_SENTENCE_END = re.compile(r"(?<=\.)\s+")


def drop_sentences(caption: str, p: float, rng: np.random.Generator) -> str:
    """``caption`` without some of its sentences: the first (the short caption) always kept,
    each later one dropped with probability ``p``. A model that has to match a clip from any
    subset of its facts cannot identify it by the whole caption's wording."""
    first, *rest = _SENTENCE_END.split(caption.strip())
    kept = [s for s in rest if rng.random() >= p]
    return " ".join([first, *kept])


def shift_frames(codes: np.ndarray, px: int, rng: np.random.Generator) -> np.ndarray:
    """``codes`` [K, 3, R, R] moved by up to ``px`` pixels in x and y (the same move for all K
    frames, as a camera mounted a little differently), the border repeated into the gap."""
    r = codes.shape[-1]
    padded = np.pad(codes, ((0, 0), (0, 0), (px, px), (px, px)), mode="edge")
    dy, dx = rng.integers(0, 2 * px + 1, size=2)
    return np.ascontiguousarray(padded[:, :, dy:dy + r, dx:dx + r])


class ClipDataset(Dataset):
    """Items ``(frames uint8 [K, 3, R, R], long tokens [248], short tokens [248], poses [T, 8])``.

    Captions are tokenised and pose windows made relative once, up front. In training the K frames
    are a fresh random subset per epoch, drawn from a generator seeded by (seed, epoch, index), so
    an item is the same whichever process or worker loads it and whenever (resume is exact). The
    augmentations (``caption_drop``: sentences left out of the long caption; ``shift``: the
    frames moved by a few pixels) draw from their own generators seeded the same way, and are
    off outside training.
    """

    def __init__(
        self,
        reader: DrivingDataset,
        cache: FrameCache,
        frames: int | None = None,
        train: bool = True,
        seed: int = 0,
        sampling: str = "random",
        caption_drop: float = 0.0,
        shift: int = 0,
    ) -> None:
        if not 0.0 <= caption_drop < 1.0:
            raise ValueError(f"caption drop must be in [0, 1), got {caption_drop}")
        if shift < 0:
            raise ValueError(f"shift must be >= 0 pixels, got {shift}")
        self.caption_drop = caption_drop if train else 0.0
        self.shift = shift if train else 0
        self.reader = reader
        self.cache = cache
        self.frames = frames
        self.sampling = sampling
        self.train = train
        self.seed = seed
        self.epoch = 0
        entries = reader.entries
        self.window = reader.window
        self.tokens_long = tokenize([e.caption for e in entries])
        self.tokens_short = tokenize([short_caption(e.caption) for e in entries])
        t = reader.window
        self.poses = np.zeros((len(entries), t, 8), dtype=np.float32)
        self.rows = np.zeros((len(entries), t), dtype=np.int64)  # cache row of every frame
        for i, e in enumerate(entries):
            self.poses[i] = reader.load_poses(i)
            self.rows[i] = cache.rows(e.seq, range(e.start, e.start + t))

    def __len__(self) -> int:
        return len(self.reader.entries)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def offsets(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.train else None
        return frame_offsets(self.window, self.frames, rng, self.sampling)

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index, stream])

    def long_tokens(self, index: int) -> np.ndarray:
        """The long caption's tokens, with sentences left out when ``caption_drop`` is on."""
        if not self.caption_drop:
            return self.tokens_long[index]
        caption = self.reader.entries[index].caption
        return tokenize(drop_sentences(caption, self.caption_drop, self._rng(index, 1)))[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        rows = self.rows[index, self.offsets(index)]
        frames = np.ascontiguousarray(self.cache.codes[rows])
        if self.shift:
            frames = shift_frames(frames, self.shift, self._rng(index, 2))
        return (
            torch.from_numpy(frames),
            torch.from_numpy(self.long_tokens(index)),
            torch.from_numpy(self.tokens_short[index]),
            torch.from_numpy(self.poses[index]),
        )


def collate(items: Sequence[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """Stack the fields of a list of items: (frames u8 [B,K,3,R,R], long [B,248], short [B,248],
    poses [B,T,8])."""
    return tuple(torch.stack(field) for field in zip(*items, strict=True))


# --------------------------------------------------------------------------- drive-grouped batches


def drive_groups(seqs: Sequence[str], starts: Sequence[int], k: int, seed: int,
                 epoch: int) -> list[list[int]]:
    """Window indices in groups of ``k`` from the same drive, spread along it, shuffled.

    Random batches of a set with many drives rarely hold two windows of one drive, so in-batch
    negatives differ in town and weather and the model never has to tell places of *one* drive
    apart, which is the node's whole job. A group takes every (n // k)-th window of a drive from a
    random offset, so its members are far apart in time (not near-duplicates that would be false
    negatives). The same (seed, epoch) gives the same groups on every rank; drives with fewer than
    ``k`` windows and the remainder of each drive sit this epoch out.
    """
    if k < 1:
        raise ValueError(f"group size must be >= 1, got {k}")
    rng = np.random.default_rng([seed, epoch, 7919])
    by_seq: dict[str, list[int]] = {}
    if len(seqs) != len(starts):
        raise ValueError(f"{len(seqs)} sequence names but {len(starts)} starts")
    for i in sorted(range(len(seqs)), key=lambda j: (seqs[j], starts[j])):
        by_seq.setdefault(seqs[i], []).append(i)
    groups: list[list[int]] = []
    for seq in sorted(by_seq):
        windows = by_seq[seq]
        g = len(windows) // k
        if g == 0:
            continue
        rolled = np.roll(windows, -int(rng.integers(len(windows))))
        for j in rng.permutation(g):
            groups.append([int(rolled[j + m * g]) for m in range(k)])
    return [groups[i] for i in rng.permutation(len(groups))]


def drive_group_count(seqs: Sequence[str], k: int) -> int:
    """How many groups ``drive_groups`` makes (the same every epoch)."""
    counts: dict[str, int] = {}
    for s in seqs:
        counts[s] = counts.get(s, 0) + 1
    return sum(n // k for n in counts.values())


# --------------------------------------------------------------------------- look-alike batches


def _looks_by_drive(seqs: Sequence[str],
                    looks: Sequence[str | None]) -> dict[str, dict[str, list[int]]]:
    """look-alike group -> drive -> its window indices (windows without a group left out)."""
    if len(seqs) != len(looks):
        raise ValueError(f"{len(seqs)} sequence names but {len(looks)} look-alike groups")
    by_look: dict[str, dict[str, list[int]]] = {}
    for i, (seq, look) in enumerate(zip(seqs, looks, strict=True)):
        if look is not None:
            by_look.setdefault(look, {}).setdefault(seq, []).append(i)
    return by_look


def _alike_groups(drives: list[list[int]], k: int,
                  rng: np.random.Generator | None) -> list[list[int]]:
    """Groups of ``k`` windows of ``k`` different drives, from each drive's windows at one
    place: always from the ``k`` drives with the most windows left, so as many as possible."""
    pools = [list(rng.permutation(w)) if rng is not None else list(w) for w in drives]
    groups = []
    while sum(1 for w in pools if w) >= k:
        ties = rng.random(len(pools)) if rng is not None else np.zeros(len(pools))
        fullest = sorted(range(len(pools)), key=lambda j: (-len(pools[j]), ties[j]))[:k]
        groups.append([int(pools[j].pop()) for j in fullest])
    return groups


def look_alike_groups(seqs: Sequence[str], looks: Sequence[str | None], k: int, seed: int,
                      epoch: int) -> list[list[int]]:
    """Window indices in groups of ``k``: windows of ``k`` *different* drives that look alike
    (same look-alike group: same town and weather, first frames at the same place and heading),
    as many such groups as the set allows, then the rest of the set in random groups of ``k``;
    all shuffled.

    Random batches almost never hold two look-alike windows, so the loss never asks the model to
    tell them apart, which only their motion (and so the pose input) can do. A group never holds
    two windows of one drive: at one place they are near-duplicates (false negatives). Every
    window is used at most once per epoch; the number of groups does not depend on the epoch.
    """
    if k < 2:
        raise ValueError(f"group size must be >= 2, got {k}")
    rng = np.random.default_rng([seed, epoch, 104729])
    used = np.zeros(len(seqs), dtype=bool)
    groups: list[list[int]] = []
    for _, drives in sorted(_looks_by_drive(seqs, looks).items()):
        for group in _alike_groups([drives[s] for s in sorted(drives)], k, rng):
            groups.append(group)
            used[group] = True
    rest = rng.permutation(np.flatnonzero(~used))
    groups += [[int(i) for i in rest[j * k:(j + 1) * k]] for j in range(len(rest) // k)]
    return [groups[i] for i in rng.permutation(len(groups))]


def look_alike_group_count(seqs: Sequence[str], looks: Sequence[str | None],
                           k: int) -> tuple[int, int]:
    """(all groups, look-alike groups) that ``look_alike_groups`` makes, the same every epoch."""
    alike = sum(len(_alike_groups(list(d.values()), k, None))
                for d in _looks_by_drive(seqs, looks).values())
    return alike + (len(seqs) - alike * k) // k, alike
