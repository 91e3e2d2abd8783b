"""``spartan-train``: contrastive training of SPARTAN, one process or under torchrun (DDP).

    spartan-train --data DATA --init tiny --out runs/tiny --epochs 10 --batch-size 32 --frames 8
    torchrun --nproc_per_node 2 -m spartan_train.train.trainer --data DATA --init tiny --out runs/x
    spartan-train --data DATA --resume runs/tiny --epochs 20     # continue where it stopped

What follows the reference (docs/model.md 8): the loss of 8.2 with features gathered across ranks
with autograd; AdamW (betas 0.9/0.999, eps 1e-8); per-step linear warm-up then cosine; logit_scale
reset to 4.6052 at the start; the text tower's positional_embedding frozen; fp16 autocast +
GradScaler on CUDA, no gradient clipping; in-training validation (text+pose -> video top-1 in
galleries of 12, pooled, rank 0) after every epoch.

Deliberate differences (Q12, Q13 and speed):
- the sampler is re-seeded every epoch (``set_epoch``) and validation restores train mode;
- weight decay skips 1-D parameters (biases, norms, logit_scale, class embedding) by default, as
  open_clip does; ``--decay all`` applies it to everything as the reference's single group does;
- an incomplete last batch of an epoch is dropped (a 1-item contrastive batch teaches nothing);
- ``--frames K`` uses a random K of the 24 frames per clip in training (evenly spaced K at
  validation); the pose window always has all 24 rows;
- frames are decoded and preprocessed once into a memmap cache (``train/data.py``) and the text
  tower skips padding after the last EOT of the batch (same features, ``step.text_features``);
- checkpoints are our format in ``OUT/epoch_XXX/`` (the newest ``--keep``) and ``OUT/last/``
  (+ ``OUT/best/``, the best in-training validation), each with
  ``train_state.pt`` (optimizer, GradScaler, schedule, step, RNG of every rank; tensors and plain
  containers only, readable with ``torch.load(weights_only=True)``) and ``train_meta.json``.

``--no-pose`` replaces every pose window by a vehicle standing still (``data.still_poses``), in
training and validation, and drops the pose terms of the loss (constant there).

Stopping: ``--epochs`` sets the cosine schedule (or ``--schedule-steps``); ``--max-steps`` (a total,
counting resumed steps) and ``--max-minutes`` (wall time from start-up, frame caching included)
stop early and save ``last/``. ``--schedule clock`` ends the cosine at ``--max-minutes`` instead,
so a run budgeted in time decays fully on a fast machine and on a loaded one. ``--resume``
continues exactly (same data order, frames, dropout).
On a small CPU, run 2 processes of 1 thread (torchrun, ``--batch-size`` per process) rather than
one process of 2 threads: matrix products this small scale poorly across threads.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from spartan_ros.preprocess import FITS
from spartan_train.data import DatasetError, DrivingDataset, windows_meta_by_name
from spartan_train.model import (
    CONFIGS,
    MODES,
    POSE_CONVENTIONS,
    CheckpointError,
    ModelConfig,
    SpartanModel,
    build_model,
    get_config,
    load_checkpoint,
    save_checkpoint,
)
from spartan_train.train.data import (
    FRAME_SAMPLINGS,
    ClipDataset,
    FrameCache,
    collate,
    decode_frames,
    drive_group_count,
    drive_groups,
    look_alike_group_count,
    look_alike_groups,
    still_poses,
)
from spartan_train.train.loss import LOSS_KINDS, POSE_WEIGHT, LossConfig
from spartan_train.train.schedule import ClockCosine, Schedule, WarmupCosine
from spartan_train.train.step import ContrastiveStep, gallery_top1
from spartan_train.train.words import WordHead

log = logging.getLogger("spartan_train.train")

LOGIT_SCALE_INIT = 4.6052  # ln(100), what the reference resets logit_scale to (Q21)
STATE_FILE = "train_state.pt"
META_FILE = "train_meta.json"
LOG_COLUMNS = ("step", "epoch", "loss", "loss_long", "loss_short", "lr", "logit_scale", "seconds")
DEFAULT_LR_FRESH = 5e-4  # from scratch (named config)
DEFAULT_LR_FINETUNE = 1e-6  # from a checkpoint: the reference's default
SCHEDULES = ("steps", "clock")
# Options that shape a fresh model (attribute of the parsed args -> ModelConfig fields it sets);
# the option is the attribute with dashes (--image-resolution, --width, ...).
FRESH_SIZES = {"image_resolution": ("image_resolution",), "patch_size": ("vision_patch_size",),
               "image_fit": ("image_fit",), "width": ("vision_width", "text_width"),
               "layers": ("vision_layers", "text_layers")}


class TrainError(RuntimeError):
    """A problem with the command line, the data or a checkpoint, reported without a traceback."""


# --------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="spartan-train", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    d = ap.add_argument_group("data")
    d.add_argument("--data", required=True, help="dataset root (DrivingScenePTX layout)")
    d.add_argument("--train-list", default="config/train.txt", help="relative to --data or a path")
    d.add_argument("--val-list", default="config/val.txt", help="'none' to skip validation")
    d.add_argument("--frames", type=int, default=None,
                   help="frames per clip: random K of 24 in training, evenly spaced K at "
                        "validation (default all 24)")
    d.add_argument("--frame-sampling", choices=FRAME_SAMPLINGS, default="random",
                   help="how training draws --frames K: any K of the window (random), one in "
                        "each of K equal stretches of it (segments: the K frames always span "
                        "the window), or always the K evenly spaced frames that evaluation and "
                        "the node use (even: first and last for K = 2)")
    d.add_argument("--caption-drop", type=float, default=0.0, metavar="P",
                   help="leave each sentence of a training caption but the first out with "
                        "probability P, drawn afresh every epoch (default 0: whole captions)")
    d.add_argument("--shift", type=int, default=0, metavar="PX",
                   help="move a training clip's frames by up to PX pixels in x and y, drawn "
                        "afresh every epoch (default 0: as cached)")
    d.add_argument("--cache-dir", default=None,
                   help="frame cache directory (default $SPARTAN_CACHE_DIR or "
                        "~/.cache/spartan_ros/frames)")
    d.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (0-1)")

    m = ap.add_argument_group("model")
    m.add_argument("--init", default="tiny",
                   help=f"a named config ({', '.join(CONFIGS)}) for a fresh model, or a checkpoint "
                        "(OpenAI CLIP, Long-CLIP, SPARTAN or ours)")
    m.add_argument("--resume", default=None,
                   help="continue from a checkpoint dir with train_state.pt, or an --out dir "
                        "(its last/); --init is then ignored")
    m.add_argument("--mode", choices=MODES, default=None,
                   help="pose-branch mode (default: the checkpoint's, or reference)")
    m.add_argument("--pose-convention", choices=POSE_CONVENTIONS, default=None,
                   help="pose convention (default: the checkpoint's, or reference)")
    m.add_argument("--no-pose", action="store_true",
                   help="ablation: every pose window is a vehicle standing still")
    m.add_argument("--image-resolution", type=int, default=None, metavar="PX",
                   help="input side in pixels for a fresh model (default: the named config's, "
                        "64 for tiny); the frame cache is built at this size")
    m.add_argument("--patch-size", type=int, default=None, metavar="PX",
                   help="vision patch side for a fresh model (default: the config's, 8 for "
                        "tiny); --image-resolution 96 --patch-size 12 keeps tiny's 8x8 grid, "
                        "so a step costs about the same while each patch sees 2.25x the pixels")
    m.add_argument("--image-fit", choices=FITS, default=None,
                   help="how a frame becomes square, for a fresh model: crop (the reference: "
                        "the centre square) or squash (the whole frame, aspect not kept)")
    m.add_argument("--width", type=int, default=None, metavar="W",
                   help="width of both towers for a fresh model, a multiple of 64 (default: the "
                        "config's, 128 for tiny); the joint space keeps the config's size")
    m.add_argument("--layers", type=int, default=None, metavar="N",
                   help="transformer layers of both towers for a fresh model (default: the "
                        "config's, 4 for tiny)")
    m.add_argument("--logit-scale", type=float, default=LOGIT_SCALE_INIT,
                   help="initial logit_scale (not on --resume)")

    lo = ap.add_argument_group("loss")
    lo.add_argument("--loss", choices=LOSS_KINDS, default="reference",
                    help="reference: SPARTAN's weights + pose terms; longclip: symmetric, no pose")
    lo.add_argument("--no-short", action="store_true", help="drop the short-caption terms")
    lo.add_argument("--no-pose-terms", action="store_true",
                    help="reference loss without the pose terms (SPARTAN without --new_loss)")
    lo.add_argument("--pose-weight", type=float, default=POSE_WEIGHT, metavar="W",
                    help="weight of each of the two pose terms, pose to clip and clip to pose "
                         f"(default {POSE_WEIGHT}, SPARTAN's); a larger weight asks the clip "
                         "features to carry the motion the pose input describes "
                         "(docs/evaluation.md: 0.25 measured no better)")
    lo.add_argument("--own-motion", type=float, default=0.0, metavar="W",
                    help="weight of the own-motion term (ours, not SPARTAN's): each caption "
                         "against every clip fused with that clip's own motion, as the node "
                         "scores its memory (default 0: the reference loss)")
    lo.add_argument("--word-loss", type=float, default=0.0, metavar="W",
                    help="weight of the caption-word term (ours): each clip's feature predicts "
                         "the words of its own caption through a training-only head, rare words "
                         "weighing most (default 0: off)")
    lo.add_argument("--word-sides", action="store_true",
                    help="with --word-loss: a word also carries the side (left, right, centre) "
                         "its sentence names, so the clip has to say where things are")

    o = ap.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, default=2)
    o.add_argument("--batch-size", type=int, default=32, help="per rank")
    o.add_argument("--drive-group", type=int, default=1, metavar="K",
                   help="build batches from groups of K windows of the same drive, far apart, "
                        "so negatives include other places of one drive (default 1: uniform "
                        "shuffle, as the reference); the batch size must be a multiple of K")
    o.add_argument("--look-alike", type=int, default=1, metavar="K",
                   help="build batches from groups of K windows of K different drives that "
                        "look alike (a generated set's look-alike groups), the rest of the set "
                        "in random groups of K, so negatives include places that only motion "
                        "tells apart (default 1: uniform shuffle); the batch size must be a "
                        "multiple of K")
    o.add_argument("--lr", type=float, default=None,
                   help=f"peak LR (default {DEFAULT_LR_FRESH} fresh, {DEFAULT_LR_FINETUNE} "
                        "from a checkpoint)")
    o.add_argument("--wd", type=float, default=0.01, help="AdamW weight decay")
    o.add_argument("--decay", choices=("matrices", "all"), default="matrices",
                   help="which parameters get weight decay (reference: all)")
    o.add_argument("--warmup", type=int, default=200, help="warm-up steps")
    o.add_argument("--schedule", choices=SCHEDULES, default="steps",
                   help="steps: the cosine lasts --schedule-steps (default epochs x "
                        "steps/epoch); clock: it ends at --max-minutes, however many steps the "
                        "machine makes by then")
    o.add_argument("--schedule-steps", type=int, default=None,
                   help="length of the cosine schedule in steps (--schedule steps)")
    o.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many steps in total (counting resumed ones)")
    o.add_argument("--max-minutes", type=float, default=None,
                   help="stop cleanly after this much wall time (from start-up), saving last/")
    o.add_argument("--seed", type=int, default=0)

    r = ap.add_argument_group("run")
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out that holds an earlier run (its logs are reset)")
    r.add_argument("--keep", type=int, default=5,
                   help="epoch_XXX directories kept (the newest; 0 = all); last/ and best/ stay")
    r.add_argument("--val-batch", type=int, default=12, help="validation gallery size")
    r.add_argument("--device", default=None, help="cpu or cuda (default cuda when available)")
    r.add_argument("--threads", type=int, default=None,
                   help="torch threads per process (default cores / local processes, or 1 when "
                        "other processes keep the cores busy at start)")
    r.add_argument("--cache-only", action="store_true",
                   help="build the frame caches of both lists, then exit (no training)")
    r.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    r.add_argument("--tensorboard", action="store_true",
                   help="also log to TensorBoard (needs the tensorboard package)")
    r.add_argument("--compile", action="store_true",
                   help="torch.compile the image tower (~1 min of compiling, then faster steps)")
    r.add_argument("--print-checksum", action="store_true",
                   help="each rank prints a SHA-256 of its parameters at the end (for tests)")
    return ap


def check_args(args: argparse.Namespace) -> None:
    def bad(msg: str) -> None:
        raise TrainError(msg)

    if args.epochs < 1:
        bad(f"--epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 2:
        bad(f"--batch-size must be >= 2 (a contrastive batch), got {args.batch_size}")
    if args.frames is not None and args.frames < 1:
        bad(f"--frames must be >= 1, got {args.frames}")
    if args.workers not in (0, 1):
        bad(f"--workers must be 0 or 1, got {args.workers}")
    if args.warmup < 0:
        bad(f"--warmup must be >= 0, got {args.warmup}")
    if args.lr is not None and not args.lr > 0:
        bad(f"--lr must be positive, got {args.lr}")
    if args.max_steps is not None and args.max_steps < 1:
        bad(f"--max-steps must be >= 1, got {args.max_steps}")
    if args.max_minutes is not None and not args.max_minutes > 0:
        bad(f"--max-minutes must be positive, got {args.max_minutes}")
    if args.schedule_steps is not None and args.schedule_steps < 1:
        bad(f"--schedule-steps must be >= 1, got {args.schedule_steps}")
    if args.schedule == "clock" and (args.max_minutes is None or args.schedule_steps is not None):
        bad("--schedule clock ends the cosine at --max-minutes: give --max-minutes, and no "
            "--schedule-steps")
    if args.drive_group < 1 or args.batch_size % args.drive_group:
        bad(f"--drive-group must be >= 1 and divide --batch-size {args.batch_size}, "
            f"got {args.drive_group}")
    if args.look_alike < 1 or args.batch_size % args.look_alike:
        bad(f"--look-alike must be >= 1 and divide --batch-size {args.batch_size}, "
            f"got {args.look_alike}")
    if args.look_alike > 1 and args.drive_group > 1:
        bad("--look-alike and --drive-group each build the batches: choose one")
    weights = (("--own-motion", args.own_motion), ("--pose-weight", args.pose_weight),
               ("--word-loss", args.word_loss))
    for flag, weight in weights:
        if not (weight >= 0 and math.isfinite(weight)):
            bad(f"{flag} must be a finite weight >= 0, got {weight}")
    if args.word_sides and not args.word_loss > 0:
        bad("--word-sides needs --word-loss W > 0")
    if not 0.0 <= args.caption_drop < 1.0:
        bad(f"--caption-drop must be a probability in [0, 1), got {args.caption_drop}")
    if args.shift < 0:
        bad(f"--shift must be >= 0 pixels, got {args.shift}")
    _check_fresh_sizes(args, bad)
    if args.val_batch < 1:
        bad(f"--val-batch must be >= 1, got {args.val_batch}")
    if args.keep < 0:
        bad(f"--keep must be >= 0, got {args.keep}")


def _check_fresh_sizes(args: argparse.Namespace, bad: Callable[[str], None]) -> None:
    given = ["--" + name.replace("_", "-") for name in FRESH_SIZES
             if getattr(args, name) is not None]
    if not given:
        return
    if not fresh_model(args):
        bad(f"{' and '.join(given)} shape a fresh model (--init a config name); a checkpoint "
            "keeps the sizes it was trained at")
    try:
        fresh_config(args)
    except ValueError as e:
        bad(f"{' and '.join(given)}: {e}")


def fresh_model(args: argparse.Namespace) -> bool:
    """A model built from a named config (not a checkpoint, not a resumed run)."""
    return args.resume is None and args.init.replace("ViT-", "") in CONFIGS


def fresh_config(args: argparse.Namespace) -> ModelConfig:
    """The named config of a fresh model with the command line's mode, convention, input size
    and tower sizes."""
    overrides = {k: v for k, v in (("mode", args.mode),
                                   ("pose_convention", args.pose_convention)) if v is not None}
    for name, fields in FRESH_SIZES.items():
        if getattr(args, name) is not None:
            overrides.update(dict.fromkeys(fields, getattr(args, name)))
    return get_config(args.init).replace(**overrides)  # replace() validates


# --------------------------------------------------------------------------- distributed


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup_distributed(device_type: str) -> Dist:
    """Join the torchrun process group when launched by torchrun with more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=60))
    return Dist(
        rank=dist.get_rank(),
        world=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
    )


def busy_cores(seconds: float = 0.5) -> float | None:
    """How many cores other processes keep busy right now (from /proc/stat over ``seconds``,
    while this process sleeps); None where /proc/stat is unavailable."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
        cores = len(os.sched_getaffinity(0))
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    if total1 <= total0:
        return None
    return cores * (1.0 - (idle1 - idle0) / (total1 - total0))


def default_threads(local_world: int) -> int:
    """Cores per local process, but 1 when other processes already keep all but half a core busy:
    oversubscribed OpenMP threads wait on each other, and a step then ran 2-3x slower than with
    one thread on the shared 2-core CPU this was written on."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    share = max(1, cores // max(local_world, 1))
    if share == 1:
        return 1
    busy = busy_cores()
    return 1 if busy is not None and busy > cores - 0.5 else share


def all_mean(values: list[float], flag: bool, d: Dist) -> tuple[list[float], bool]:
    """Mean of ``values`` over ranks and whether any rank raised ``flag`` (one all_reduce)."""
    if d.world == 1:
        return values, flag
    t = torch.tensor([*values, float(flag)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    out = t.cpu().tolist()
    return [v / d.world for v in out[:-1]], out[-1] > 0


# --------------------------------------------------------------------------- RNG state


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain containers (weights_only-loadable)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    version, mt, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


# --------------------------------------------------------------------------- checkpoints


def find_resume_dir(path: str | Path) -> Path:
    p = Path(path)
    for cand in (p, p / "last"):
        if (cand / STATE_FILE).is_file():
            return cand
    raise TrainError(f"--resume {p}: no {STATE_FILE} in it or in {p / 'last'}")


def load_train_state(ckpt: Path) -> dict[str, Any]:
    try:
        state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, not a torch file, pickled objects
        raise TrainError(f"{ckpt / STATE_FILE}: unreadable training state ({e})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise TrainError(f"{ckpt / STATE_FILE}: not a spartan-train state (no 'step')")
    return state


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def publish(staged: Path, targets: Sequence[Path]) -> None:
    """Make each target directory a copy of ``staged`` (hard links where possible), replacing it as
    a whole so a reader never sees a mix of two checkpoints; then remove ``staged``."""
    for target in targets:
        tmp = target.with_name(f".{target.name}.new")
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in staged.iterdir():
            _link_or_copy(f, tmp / f.name)
        if target.exists():
            os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staged, ignore_errors=True)


def _plain_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if v is None or isinstance(v, str | int | float)}


# --------------------------------------------------------------------------- model + optimiser


def make_model(args: argparse.Namespace) -> SpartanModel:
    init = args.init
    if init in CONFIGS or init.replace("ViT-", "") in CONFIGS:
        model = build_model(fresh_config(args))
    else:
        if not Path(init).exists():
            raise TrainError(f"--init {init!r} is neither a config name ({', '.join(CONFIGS)}) "
                             "nor an existing checkpoint")
        try:
            model = load_checkpoint(init, mode=args.mode, pose_convention=args.pose_convention)
        except CheckpointError as e:
            raise TrainError(str(e)) from None
    with torch.no_grad():
        model.logit_scale.fill_(args.logit_scale)
    return model


def make_optimizer(model: SpartanModel, lr: float, wd: float, decay: str,
                   extra: nn.Module | None = None) -> torch.optim.AdamW:
    """AdamW over the model's trainable parameters and those of ``extra`` (a training-only
    head), its matrices decayed (``decay`` "all": every parameter)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if extra is not None:
        params += list(extra.named_parameters())
    if decay == "all":
        groups: list[dict[str, Any]] = [{"params": [p for _, p in params], "weight_decay": wd}]
    else:
        groups = [
            {"params": [p for _, p in params if p.ndim >= 2], "weight_decay": wd},
            {"params": [p for _, p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
    try:  # the fused kernel is one pass over the parameters: ~7x faster than the loop on CPU
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)


# --------------------------------------------------------------------------- logging


class RunLog:
    """CSV log (always) and TensorBoard (when asked and importable), rank 0 only."""

    def __init__(self, out: Path, tensorboard: bool) -> None:
        self.path = out / "log.csv"
        new = not self.path.exists()
        self._f = self.path.open("a", newline="", encoding="utf-8")
        self._csv = csv.writer(self._f)
        if new:
            self._csv.writerow(LOG_COLUMNS)
        self.val_path = out / "val.csv"
        self.tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                log.warning("TensorBoard is not installed; logging to %s only", self.path)

    def step(self, row: dict[str, float]) -> None:
        self._csv.writerow([row[c] for c in LOG_COLUMNS])
        self._f.flush()
        if self.tb is not None:
            for key in ("loss", "loss_long", "loss_short", "lr", "logit_scale"):
                self.tb.add_scalar(f"train/{key}", row[key], int(row["step"]))

    def validation(self, step: int, epoch: int, top1: float, n: int) -> None:
        new = not self.val_path.exists()
        with self.val_path.open("a", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            if new:
                w.writerow(("step", "epoch", "val_top1", "val_n"))
            w.writerow((step, epoch, f"{top1:.6f}", n))
        if self.tb is not None:
            self.tb.add_scalar("val/top1_gallery12", top1, step)

    def close(self) -> None:
        self._f.close()
        if self.tb is not None:
            self.tb.close()


# --------------------------------------------------------------------------- the run


@dataclass
class Result:
    step: int
    epoch: int
    stopped: str  # "done", "max_steps", "max_minutes" or "cache_only"
    last_loss: float
    val_top1: float | None
    seconds: float
    train_seconds: float  # time inside the step loop, without start-up, validation and saving
    train_steps: int  # steps taken in this run
    out: Path


class Trainer:
    def __init__(self, args: argparse.Namespace, started: float) -> None:
        self.args = args
        self.started = started
        self._setup_device()
        self.out = Path(args.out)
        if self.d.main:
            self._prepare_out()
        self._setup_model()
        self._setup_data()
        self._setup_optimisation()
        if self.state is not None:
            self._restore_state(self.state)
        step_module = ContrastiveStep(self.model, self.loss_config, self.word_head)
        self.net: torch.nn.Module = step_module
        if self.d.world > 1:
            ids = [self.d.local_rank] if self.device.type == "cuda" else None
            # Buffers are not synced at each forward (every rank starts from the same weights).
            self.net = DistributedDataParallel(step_module, device_ids=ids,
                                               forward_sync_buffers=False)
        self.runlog: RunLog | None = None
        self.still = torch.from_numpy(
            still_poses(1, self.model.num_frames, self.model.config.pose_convention)
        ).to(self.device)

    # -- set-up steps ----------------------------------------------------------------------

    def _setup_device(self) -> None:
        args = self.args
        cuda = torch.cuda.is_available() if args.device is None else args.device.startswith("cuda")
        self.d = setup_distributed("cuda" if cuda else "cpu")
        if cuda:
            torch.cuda.set_device(self.d.local_rank)
            self.device = torch.device("cuda", self.d.local_rank)
        else:
            self.device = torch.device(args.device or "cpu")
        torch.set_num_threads(args.threads or default_threads(self.d.local_world))
        self.amp = self.device.type == "cuda"

    def _prepare_out(self) -> None:
        """The output folder; an earlier run's logs there need --resume or --overwrite."""
        args = self.args
        self.out.mkdir(parents=True, exist_ok=True)
        if not (args.resume or args.cache_only) and (self.out / "log.csv").exists():
            if not args.overwrite:
                raise TrainError(f"{self.out} holds an earlier run: continue it with --resume "
                                 f"{self.out}, or start afresh with --overwrite")
            for name in ("log.csv", "val.csv"):
                (self.out / name).unlink(missing_ok=True)

    def _setup_model(self) -> None:
        """A fresh model, or the checkpoint to resume (its train state kept in ``self.state``)."""
        args = self.args
        self.state: dict[str, Any] | None = None
        if args.resume:
            ckpt = find_resume_dir(args.resume)
            self.state = load_train_state(ckpt)
            try:
                self.model = load_checkpoint(ckpt)
            except CheckpointError as e:
                raise TrainError(str(e)) from None
            self._check_resume_args(self.state.get("args", {}))
            if (args.mode or args.pose_convention) and self.d.main:
                log.warning("--resume: --mode / --pose-convention are ignored (the checkpoint's "
                            "config applies)")
            if self.d.main:
                log.info("resuming from %s at step %d", ckpt, self.state["step"])
        else:
            seed_everything(args.seed)  # same initial weights on every rank (DDP also syncs them)
            self.model = make_model(args)
        self.model.positional_embedding.requires_grad_(False)  # Q22
        self.model.to(self.device).train()
        if args.compile:
            self.model.visual.compile()  # in place: state-dict keys do not change
        cfg = self.model.config
        if self.d.main:
            log.info("model: %s mode, %s poses, %.1fM parameters", cfg.mode, cfg.pose_convention,
                     sum(p.numel() for p in self.model.parameters()) / 1e6)

    def _setup_data(self) -> None:
        """Training (and validation) windows, the batch size and the batches of an epoch."""
        args = self.args
        self.train_set = self._dataset(args.train_list, train=True)
        if self.d.main:
            window, k = self.train_set.window, args.frames
            log.info("frames per clip: %s", f"all {window}" if k is None or k >= window else
                     f"{k} of {window}, drawn {args.frame_sampling}")
            if args.caption_drop or args.shift:
                log.info("augmentation: caption sentences dropped with p %.2f, frames shifted "
                         "by up to %d px", args.caption_drop, args.shift)
        self.val_set = None
        if self.d.main and args.val_list and args.val_list.lower() != "none":
            self.val_set = self._dataset(args.val_list, train=False)
        n_local = math.ceil(len(self.train_set) / self.d.world)
        if n_local < 2:
            raise TrainError(f"{len(self.train_set)} training windows are too few for "
                             f"{self.d.world} process(es)")
        self.batch = min(args.batch_size, n_local)
        self.steps_per_epoch = max(n_local // self.batch, 1)
        self.train_seqs = [e.seq for e in self.train_set.reader.entries]
        self.train_looks: list[str | None] = []
        if args.drive_group > 1:
            self._grouped_steps("--drive-group", args.drive_group,
                                drive_group_count(self.train_seqs, args.drive_group))
        if args.look_alike > 1:
            self._setup_look_alike(args.look_alike)
        self.sampler: DistributedSampler[int] = DistributedSampler(
            self.train_set, num_replicas=self.d.world, rank=self.d.rank, shuffle=True,
            seed=args.seed)

    def _setup_look_alike(self, k: int) -> None:
        self.train_looks = self._look_alike_ids(self.args.data)
        groups, alike = look_alike_group_count(self.train_seqs, self.train_looks, k)
        self._grouped_steps("--look-alike", k, groups)
        if self.d.main:
            log.info("look-alike batches: %d groups of %d look-alike windows per epoch, "
                     "%d groups in all", alike, k, groups)
            if not alike:
                log.warning("--look-alike %d: no place of the training set was seen by %d "
                            "drives, so every batch is random", k, k)

    def _setup_optimisation(self) -> None:
        args = self.args
        self.loss_config = LossConfig(kind=args.loss, short=not args.no_short,
                                      pose_terms=not (args.no_pose_terms or args.no_pose),
                                      own_motion=args.own_motion,
                                      pose_weight=args.pose_weight, words=args.word_loss)
        self.word_head = self._word_head() if args.word_loss > 0 else None
        lr = args.lr
        if lr is None:
            lr = DEFAULT_LR_FRESH if fresh_model(args) else DEFAULT_LR_FINETUNE
        self.schedule: Schedule
        if args.schedule == "clock":
            self.schedule = ClockCosine(lr, args.warmup)
        else:
            total = args.schedule_steps or args.epochs * self.steps_per_epoch
            self.schedule = WarmupCosine(lr, args.warmup, total)
        self.optimizer = make_optimizer(self.model, lr, args.wd, args.decay, self.word_head)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.step = 0
        self.elapsed_before = 0.0  # training seconds of earlier runs (resume)
        self.best: float | None = None

    def _word_head(self) -> WordHead:
        """The caption-word term's head, over the words of the training captions."""
        args, cfg = self.args, self.model.config
        head = WordHead(self.train_set.tokens_long, cfg.embed_dim, cfg.vocab_size,
                        sides=args.word_sides).to(self.device)
        if self.d.main:
            log.info("caption words: a head over %d %s of the training captions, weight %g",
                     head.words, "words with their sides" if args.word_sides else "words",
                     args.word_loss)
        return head

    def _restore_state(self, state: dict[str, Any]) -> None:
        """Optimiser, scaler, schedule and counters of the run being resumed."""
        args = self.args
        if (self.word_head is None) != ("word_head" not in state):
            raise TrainError("cannot resume: the checkpoint was trained with --word-loss and "
                             "this run is not, or the other way round")
        if self.word_head is not None:
            try:
                self.word_head.load_state_dict(state["word_head"])
            except RuntimeError as e:
                raise TrainError(f"cannot resume the caption-word head (were the training "
                                 f"captions changed?): {e}") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        try:
            self.schedule.load_state_dict(state["schedule"])
        except ValueError as e:
            raise TrainError(f"cannot resume with --schedule {args.schedule}: {e}") from e
        if args.schedule_steps and isinstance(self.schedule, WarmupCosine):
            self.schedule.total = args.schedule_steps
        self.step = int(state["step"])
        self.elapsed_before = float(state.get("seconds", 0.0))
        self.best = state.get("best_val_top1")
        if state.get("steps_per_epoch") != self.steps_per_epoch:
            raise TrainError(
                f"cannot resume exactly: the checkpoint had {state.get('steps_per_epoch')}"
                f" steps per epoch, this run has {self.steps_per_epoch} (same data, batch size"
                " and process count needed)")

    # -- set-up helpers ---------------------------------------------------------------------

    def _grouped_steps(self, option: str, k: int, groups: int) -> None:
        """Batches made of whole groups of ``k`` windows: full batches of every rank's share."""
        groups_local = groups // self.d.world
        self.batch = self.args.batch_size
        self.steps_per_epoch = groups_local * k // self.batch
        if self.steps_per_epoch < 1:
            raise TrainError(f"{option} {k}: {len(self.train_set)} training windows make "
                             f"{groups_local} groups per process, fewer than one batch of "
                             f"{self.batch}")

    def _look_alike_ids(self, root: str) -> list[str | None]:
        """Each training window's look-alike group, from a generated set's meta/windows.jsonl."""
        try:
            by_name = windows_meta_by_name(root)
        except DatasetError as e:
            raise TrainError(f"--look-alike needs look-alike groups: {e}") from None
        looks = [by_name.get(e.name, {}).get("look_group") for e in self.train_set.reader.entries]
        return [str(v) if v is not None else None for v in looks]

    def _check_resume_args(self, saved: dict[str, Any]) -> None:
        keys = ("data", "frames", "batch_size", "seed", "loss", "no_short", "no_pose",
                "no_pose_terms", "pose_weight", "decay", "wd", "own_motion", "drive_group",
                "look_alike", "caption_drop", "shift", "word_loss", "word_sides")
        for k in keys:
            if k in saved and saved[k] != getattr(self.args, k) and self.d.main:
                log.warning("--resume: %s was %r, now %r", k, saved[k], getattr(self.args, k))

    def _dataset(self, list_file: str, train: bool) -> ClipDataset:
        """The training set on every rank (rank 0 builds the frame cache while the others wait,
        then they open it); the validation set is only read on rank 0."""
        args = self.args
        cfg = self.model.config
        try:
            reader = DrivingDataset(args.data, list_file, window=cfg.num_frames,
                                    pose_convention=cfg.pose_convention)
        except (DatasetError, ValueError) as e:
            raise TrainError(str(e)) from None
        if len(reader) == 0:
            raise TrainError(f"{reader.list_file} lists no windows")
        cache = None
        if self.d.main:
            bar = tqdm(total=0, desc=f"caching {Path(list_file).name}", unit="frame",
                       disable=args.no_progress, leave=False)

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            try:
                cache = FrameCache.build_or_open(reader, cfg.image_resolution, args.cache_dir,
                                                 progress, cfg.image_fit)
            except DatasetError as e:
                raise TrainError(str(e)) from None
            finally:
                bar.close()
        if train:
            self.d.barrier()
            if cache is None:
                cache = FrameCache.build_or_open(reader, cfg.image_resolution, args.cache_dir,
                                                 fit=cfg.image_fit)
        assert cache is not None
        return ClipDataset(reader, cache, frames=args.frames, train=train, seed=args.seed,
                           sampling=args.frame_sampling, caption_drop=args.caption_drop,
                           shift=args.shift)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of ``epoch``: a shuffled split of the set (or of its drive
        groups, ``--drive-group``, or look-alike groups, ``--look-alike``), full batches only."""
        b = self.batch
        groups = None
        if self.args.drive_group > 1:
            entries = self.train_set.reader.entries
            groups = drive_groups(self.train_seqs, [e.start for e in entries],
                                  self.args.drive_group, self.args.seed, epoch)
        elif self.args.look_alike > 1:
            groups = look_alike_groups(self.train_seqs, self.train_looks, self.args.look_alike,
                                       self.args.seed, epoch)
        if groups is not None:
            idx = [i for g in groups[self.d.rank::self.d.world] for i in g]
            return [idx[i * b:(i + 1) * b] for i in range(self.steps_per_epoch)]
        self.sampler.set_epoch(epoch)
        idx = list(self.sampler)
        return [idx[i * b:(i + 1) * b] for i in range(self.steps_per_epoch)]

    def loader(self, batches: list[list[int]]) -> Iterator[tuple[torch.Tensor, ...]]:
        # own generator: creating the iterator must not consume the global RNG (exact resume)
        dl = DataLoader(self.train_set, batch_sampler=batches, num_workers=self.args.workers,
                        collate_fn=collate, generator=torch.Generator())
        return iter(dl)

    def poses(self, poses: torch.Tensor) -> torch.Tensor:
        if self.args.no_pose:
            return self.still.expand(poses.shape[0], -1, -1)
        return poses

    # -- validation -------------------------------------------------------------------------

    def validate(self) -> tuple[float, int] | None:
        """Rank 0: pooled top-1 in galleries of ``--val-batch`` (docs/model.md 10.2), fp32."""
        if self.val_set is None:
            return None
        ds, n = self.val_set, self.args.val_batch

        def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
            for i in range(0, len(ds), n):
                frames, tokens, _, poses = collate([ds[j] for j in range(i, min(i + n, len(ds)))])
                yield (decode_frames(frames.to(self.device)), tokens.to(self.device),
                       self.poses(poses.to(self.device)))

        self.model.eval()
        try:
            correct, total = gallery_top1(self.model, batches())
        finally:
            self.model.train()  # Q12 fixed: back to train mode (dropout on) after validation
        return correct / total, total

    # -- checkpoints ------------------------------------------------------------------------

    def save(self, epoch: int, targets: Sequence[str], val: tuple[float, int] | None,
             loss: float, seconds: float) -> None:
        """Every rank contributes its RNG state; rank 0 writes and publishes to ``targets``."""
        rng = rng_state()
        rngs: list[Any] = [rng]
        if self.d.world > 1:
            rngs = [None] * self.d.world
            dist.all_gather_object(rngs, rng)
        if self.d.main:
            staged = self.out / f".staged-{os.getpid()}"
            shutil.rmtree(staged, ignore_errors=True)
            save_checkpoint(self.model, staged)
            state = {
                "step": self.step,
                "epoch": epoch,
                "steps_per_epoch": self.steps_per_epoch,
                "world_size": self.d.world,
                "batch_size": self.batch,
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "schedule": self.schedule.state_dict(),
                "rng": rngs,
                "seconds": seconds,
                "best_val_top1": self.best,
                "args": _plain_args(self.args),
            }
            if self.word_head is not None:
                state["word_head"] = self.word_head.state_dict()
            torch.save(state, staged / STATE_FILE)
            meta = {
                "step": self.step,
                "epoch": epoch,
                "val_top1": None if val is None else round(val[0], 6),
                "val_n": None if val is None else val[1],
                "val_protocol": f"text+pose -> video top-1, galleries of {self.args.val_batch}, "
                                "pooled (docs/model.md 10.2)",
                "loss": loss,
                "seconds": round(seconds, 3),
                "world_size": self.d.world,
                "args": _plain_args(self.args),
            }
            (staged / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            publish(staged, [self.out / t for t in targets])
            if self.args.keep > 0:
                epochs = sorted(p for p in self.out.glob("epoch_*") if p.is_dir())
                for old in epochs[: -self.args.keep]:
                    shutil.rmtree(old, ignore_errors=True)
        self.d.barrier()

    # -- loop -------------------------------------------------------------------------------

    def train_step(self, batch: tuple[torch.Tensor, ...]) -> tuple[float, float, float, float]:
        frames_u8, tok_long, tok_short, poses = (t.to(self.device, non_blocking=True)
                                                 for t in batch)
        frames = decode_frames(frames_u8)
        lr = self.schedule.apply(self.optimizer, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            parts = self.net(frames, tok_long, tok_short, self.poses(poses))
        self.scaler.scale(parts.loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        if not self.args.no_pose:
            self.model.pose_branch_trained = True  # e.g. after a (Long-)CLIP init: now trained
        return (float(parts.loss.detach()), float(parts.long.detach()),
                float(parts.short.detach()), lr)

    def run(self) -> Result:
        args = self.args
        if args.cache_only:
            return Result(step=self.step, epoch=0, stopped="cache_only", last_loss=math.nan,
                          val_top1=None, seconds=time.monotonic() - self.started,
                          train_seconds=0.0, train_steps=0, out=self.out)
        spe = self.steps_per_epoch
        bar = self._begin()
        stopped = "done"
        last_loss = math.nan
        val: tuple[float, int] | None = None
        loop_seconds = 0.0
        steps_here = 0
        epoch = self.step // spe
        while epoch < args.epochs and stopped == "done":
            self.train_set.set_epoch(epoch)
            batches = self.epoch_batches(epoch)[self.step - epoch * spe:]
            t_loop = time.monotonic()
            for batch in self.loader(batches):
                if args.max_steps is not None and self.step >= args.max_steps:
                    stopped = "max_steps"
                    break
                last_loss, over = self._after_step(*self.train_step(batch), epoch, bar)
                steps_here += 1
                if over:
                    stopped = "max_minutes"
                    break
                if args.max_steps is not None and self.step >= args.max_steps:
                    stopped = "max_steps"
                    break
            loop_seconds += time.monotonic() - t_loop
            if self.step == (epoch + 1) * spe:  # the epoch is complete
                val = self._end_epoch(epoch, last_loss, bar)
                epoch += 1
            else:
                self.save(epoch, ["last"], None, last_loss, self._seconds())
        bar.close()
        if self.runlog is not None:
            self.runlog.close()
        return Result(step=self.step, epoch=epoch, stopped=stopped, last_loss=last_loss,
                      val_top1=None if val is None else val[0],
                      seconds=time.monotonic() - self.started, train_seconds=loop_seconds,
                      train_steps=steps_here, out=self.out)

    def _seconds(self) -> float:
        """Training seconds so far, earlier runs of a resume included."""
        return self.elapsed_before + time.monotonic() - self.started

    def _begin(self) -> tqdm:
        """Open the run log, seed or restore the RNG, announce the plan; the progress bar."""
        args, d = self.args, self.d
        if d.main:
            self.runlog = RunLog(self.out, args.tensorboard)
        if self.state is not None:
            set_rng_state(self.state["rng"][min(d.rank, len(self.state["rng"]) - 1)])
        else:
            seed_everything(args.seed + d.rank)  # dropout streams differ between ranks
        spe = self.steps_per_epoch
        planned = args.epochs * spe
        if args.max_steps:
            planned = min(planned, args.max_steps)
        if d.main:
            log.info("%d training windows, %d per rank, batch %d x %d process(es), %d steps/epoch,"
                     " %d steps planned", len(self.train_set), math.ceil(len(self.train_set) /
                     d.world), self.batch, d.world, spe, planned)
        return tqdm(total=planned, initial=min(self.step, planned), desc="train", unit="step",
                    disable=not d.main or args.no_progress, dynamic_ncols=True)

    def _after_step(self, loss: float, long: float, short: float, lr: float, epoch: int,
                    bar: tqdm) -> tuple[float, bool]:
        """Agree with the other ranks on the losses, the clock and whether the budget is spent;
        log the step. Returns the mean loss and whether to stop for --max-minutes."""
        args = self.args
        since_start = time.monotonic() - self.started
        over = args.max_minutes is not None and since_start >= 60 * args.max_minutes
        # every rank sets its next learning rate by the same clock: the ranks' mean
        (loss, long, short, since_start), over = all_mean(
            [loss, long, short, since_start], over, self.d)
        if isinstance(self.schedule, ClockCosine):
            self.schedule.advance(since_start / (60 * args.max_minutes))
        if not math.isfinite(loss):
            raise TrainError(f"loss is {loss} at step {self.step}; stopping")
        if self.runlog is not None:
            self.runlog.step({"step": self.step, "epoch": epoch, "loss": loss,
                              "loss_long": long, "loss_short": short, "lr": lr,
                              "logit_scale": self.model.logit_scale.item(),
                              "seconds": round(self._seconds(), 3)})
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", epoch=epoch, refresh=False)
        return loss, over

    def _end_epoch(self, epoch: int, last_loss: float, bar: tqdm) -> tuple[float, int] | None:
        """Validate (main rank) and save the epoch's checkpoint, ``last`` and maybe ``best``."""
        seconds = self._seconds()
        val = self.validate() if self.d.main else None
        if val is not None and self.runlog is not None:
            self.runlog.validation(self.step, epoch, val[0], val[1])
            bar.write(f"epoch {epoch}: val top-1 (galleries of {self.args.val_batch}) "
                      f"{val[0]:.3f} over {val[1]} queries")
        targets = [f"epoch_{epoch:03d}", "last"]
        if val is not None and (self.best is None or val[0] > self.best):
            self.best = val[0]
            targets.append("best")
        self.save(epoch, targets, val, last_loss, seconds)
        return val

    def checksum(self) -> str:
        h = hashlib.sha256()
        for name, t in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def close(self) -> None:
        if self.d.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def train(argv: Sequence[str] | None = None) -> Result:
    """Run spartan-train with command-line ``argv``; returns what happened (rank 0's view)."""
    started = time.monotonic()
    args = build_parser().parse_args(argv)
    check_args(args)
    trainer = Trainer(args, started)
    try:
        result = trainer.run()
        if args.print_checksum:
            print(f"spartan-train: rank {trainer.d.rank} parameter sha256 {trainer.checksum()}",
                  flush=True)
        return result
    finally:
        trainer.close()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        result = train(argv)
    except TrainError as e:
        print(f"spartan-train: error: {e}", file=sys.stderr)
        return 2
    if result.stopped == "cache_only":
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"spartan-train: frame caches ready ({result.seconds:.1f} s)")
        return 0
    if int(os.environ.get("RANK", "0")) == 0:
        rate = result.train_steps / result.train_seconds if result.train_seconds > 0 else 0.0
        val = "n/a" if result.val_top1 is None else f"{result.val_top1:.3f}"
        print(f"spartan-train: {result.stopped} at step {result.step} (epoch {result.epoch}), "
              f"loss {result.last_loss:.4f}, val top-1 {val}, {rate:.3f} steps/s, "
              f"{result.seconds:.1f} s; checkpoints in {result.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
