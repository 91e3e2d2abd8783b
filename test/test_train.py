"""spartan-train on a tiny generated set: data path, 2-step runs (one process and torchrun with 2
gloo processes), exact resume, the time budget, and error reporting."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from spartan_train.data import DrivingDataset
from spartan_train.data.synth.generate import GenConfig, write_dataset
from spartan_train.model import ModelConfig, build_model, load_checkpoint, save_checkpoint
from spartan_train.train.data import (
    ClipDataset,
    FrameCache,
    decode_frames,
    drive_group_count,
    drive_groups,
    drop_sentences,
    encode_codes,
    frame_offsets,
    look_alike_group_count,
    look_alike_groups,
    shift_frames,
    still_poses,
)
from spartan_train.train.step import text_features
from spartan_train.train.trainer import STATE_FILE, main, train
from spartan_train.train.words import WordHead, side_codes

from spartan_ros.preprocess import preprocess_batch
from spartan_ros.tokenizer import get_tokenizer, tokenize

REPO = Path(__file__).resolve().parents[1]

# A model far smaller than `tiny` (1 layer per tower, 32 px) keeps the multi-run tests fast.
MICRO = ModelConfig(embed_dim=32, image_resolution=32, vision_patch_size=8, vision_width=64,
                    vision_layers=1, text_width=64, text_layers=1, pose_width=32, pose_heads=4,
                    pose_layers=1)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "set"
    write_dataset(GenConfig(out=str(root), seed=0, sequences=3, frames=60, width=64, height=48),
                  progress=False)
    return root


@pytest.fixture(scope="module")
def micro_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(build_model(MICRO), tmp_path_factory.mktemp("micro") / "init")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _args(data: Path, out: Path, cache: Path, init: str | Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--init", str(init), "--cache-dir", str(cache),
            "--batch-size", "4", "--frames", "2", "--warmup", "2", "--epochs", "3", "--lr", "1e-3",
            "--no-progress", "--threads", "1", *extra]


def _log_rows(out: Path) -> list[dict[str, str]]:
    with (out / "log.csv").open(newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- data path


def test_frame_codes_are_exact(data_root: Path) -> None:
    reader = DrivingDataset(data_root, "config/val.txt")
    frames = reader.load_frames(0)
    x = preprocess_batch(frames, 32)
    codes = encode_codes(x)
    assert codes.dtype == np.uint8
    assert torch.equal(decode_frames(torch.from_numpy(codes)), torch.from_numpy(x))


def test_frame_cache_and_dataset(data_root: Path, tmp_path: Path) -> None:
    reader = DrivingDataset(data_root, "config/val.txt")
    cache = FrameCache.build_or_open(reader, 32, tmp_path)
    again = FrameCache.build_or_open(reader, 32, tmp_path)
    assert again.path == cache.path and len(list(tmp_path.iterdir())) == 1  # reused, not rebuilt
    e = reader.entries[1]
    rows = cache.rows(e.seq, range(e.start, e.start + 24))
    want = preprocess_batch(reader.load_frames(1), 32)
    assert torch.equal(decode_frames(torch.from_numpy(np.asarray(cache.codes[rows]))),
                       torch.from_numpy(want))

    ds = ClipDataset(reader, cache, frames=5, train=True, seed=3)
    frames, tok_long, tok_short, poses = ds[1]
    assert frames.shape == (5, 3, 32, 32) and frames.dtype == torch.uint8
    assert torch.equal(tok_long, torch.from_numpy(tokenize([e.caption])[0]))
    assert int(tok_short.argmax()) < int(tok_long.argmax())  # the first sentence only
    assert torch.equal(poses, torch.from_numpy(reader.load_poses(1)))
    first = ds.offsets(1)
    assert np.array_equal(first, ds.offsets(1))  # same epoch, same frames
    ds.set_epoch(1)
    assert len(set(ds.offsets(1))) == 5
    evens = ClipDataset(reader, cache, frames=4, train=False).offsets(0)
    assert evens.tolist() == [0, 8, 15, 23]


def test_caption_drop_keeps_the_first_sentence() -> None:
    caption = ("The car turns left at a crossroads. On the left, there is a red house. "
               "The sky is clear. It slows from 2.5 to 0 m/s. At the end it is in the right lane.")
    sentences = ["On the left, there is a red house.", "The sky is clear.",
                 "It slows from 2.5 to 0 m/s.", "At the end it is in the right lane."]
    rng = np.random.default_rng(0)
    draws = [drop_sentences(caption, 0.5, rng) for _ in range(400)]
    assert all(d.startswith("The car turns left at a crossroads.") for d in draws)
    for s in sentences:  # each later sentence is kept about half the time, never cut inside
        assert 120 < sum(s in d for d in draws) < 280
    for d in draws:  # what is kept keeps its order
        kept = [s for s in sentences if s in d]
        assert d == " ".join(["The car turns left at a crossroads.", *kept])
    assert drop_sentences(caption, 0.0, rng) == caption
    assert drop_sentences("One sentence only", 0.9, rng) == "One sentence only"


def test_shift_frames_moves_all_frames_alike() -> None:
    codes = np.arange(2 * 3 * 8 * 8, dtype=np.uint8).reshape(2, 3, 8, 8)
    rng = np.random.default_rng(1)
    moves = set()
    for _ in range(200):
        out = shift_frames(codes, 2, rng)
        assert out.shape == codes.shape and out.flags.c_contiguous
        # every moved frame is a window of the edge-padded frame; both frames by the same move
        padded = np.pad(codes, ((0, 0), (0, 0), (2, 2), (2, 2)), mode="edge")
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if np.array_equal(out, padded[:, :, dy:dy + 8, dx:dx + 8])]
        assert len(hits) == 1
        moves.add(hits[0])
    assert len(moves) == 25  # every move up to 2 px each way is drawn


def test_dataset_augmentations_are_seeded_and_off_outside_training(data_root: Path,
                                                                  tmp_path: Path) -> None:
    reader = DrivingDataset(data_root, "config/val.txt")
    cache = FrameCache.build_or_open(reader, 32, tmp_path)
    whole = tokenize([reader.entries[0].caption])[0]
    ds = ClipDataset(reader, cache, frames=2, train=True, seed=3, caption_drop=0.6, shift=3)
    items = [ds[i] for i in range(len(ds))]
    again = [ds[i] for i in range(len(ds))]  # same epoch: the same draw, in any process
    assert all(torch.equal(a[k], b[k]) for a, b in zip(items, again, strict=True)
               for k in range(4))
    assert any(not torch.equal(it[1], torch.from_numpy(tokenize([e.caption])[0]))
               for it, e in zip(items, reader.entries, strict=True))  # some sentences dropped
    plain = ClipDataset(reader, cache, frames=2, train=True, seed=3)
    assert any(not torch.equal(a[0], plain[i][0]) for i, a in enumerate(items))  # shifted
    ds.set_epoch(1)
    assert any(not torch.equal(ds[i][1], items[i][1]) for i in range(len(ds)))  # a new draw
    evaluation = ClipDataset(reader, cache, frames=2, train=False, caption_drop=0.6, shift=3)
    assert torch.equal(evaluation[0][1], torch.from_numpy(whole))
    assert torch.equal(evaluation[0][0], ClipDataset(reader, cache, frames=2, train=False)[0][0])
    with pytest.raises(ValueError, match="caption drop"):
        ClipDataset(reader, cache, caption_drop=1.0)
    with pytest.raises(ValueError, match="shift"):
        ClipDataset(reader, cache, shift=-1)


def test_frame_offsets() -> None:
    assert frame_offsets(24, None, None).tolist() == list(range(24))
    assert frame_offsets(24, 30, None).tolist() == list(range(24))
    assert frame_offsets(24, 1, None).tolist() == [0]
    r = frame_offsets(24, 8, np.random.default_rng(0))
    assert len(set(r.tolist())) == 8 and np.all(np.diff(r) > 0)
    with pytest.raises(ValueError, match="frames per clip"):
        frame_offsets(24, 0, None)


def test_segment_sampling_spans_the_window() -> None:
    """--frame-sampling segments: one frame in each of K equal stretches, every frame reachable;
    evaluation (no rng) stays evenly spaced whatever the sampling, and so does even."""
    rng = np.random.default_rng(0)
    draws = np.stack([frame_offsets(24, 2, rng, "segments") for _ in range(500)])
    assert draws[:, 0].min() == 0 and draws[:, 0].max() == 11
    assert draws[:, 1].min() == 12 and draws[:, 1].max() == 23
    five = np.stack([frame_offsets(24, 5, rng, "segments") for _ in range(500)])
    assert np.all(np.diff(five, axis=1) > 0) and set(five.ravel().tolist()) == set(range(24))
    # random sampling draws both frames from one half in about half the clips; segments never do
    random = np.stack([frame_offsets(24, 2, rng, "random") for _ in range(500)])
    assert np.mean((random[:, 1] < 12) | (random[:, 0] >= 12)) > 0.3
    assert frame_offsets(24, 3, None, "segments").tolist() == [0, 12, 23]
    # even: the frames of evaluation, every epoch
    assert frame_offsets(24, 2, rng, "even").tolist() == [0, 23]
    assert frame_offsets(24, 3, rng, "even").tolist() == [0, 12, 23]
    with pytest.raises(ValueError, match="frame sampling"):
        frame_offsets(24, 2, rng, "uniform")


def test_trimmed_text_features_match_the_model() -> None:
    torch.manual_seed(0)
    model = build_model(MICRO).eval()
    texts = ["a short one", "a somewhat longer caption. Two sentences."]
    tokens = torch.from_numpy(tokenize(texts))
    with torch.no_grad():
        full = model.encode_text_features(tokens)
        trimmed = text_features(model, tokens)
    assert torch.allclose(full, trimmed, atol=1e-5)


@pytest.mark.parametrize("mode", ["reference", "corrected"])
def test_still_poses_are_finite_in_both_modes(mode: str) -> None:
    for convention in ("reference", "heading"):
        p = still_poses(3, 24, convention)
        assert p.shape == (3, 24, 8) and p.dtype == np.float32
        assert np.all(p[:, :, 1:7] == 0) and np.all(p[:, :, 7] == 1)
    torch.manual_seed(0)
    model = build_model(MICRO.replace(mode=mode)).eval()
    with torch.no_grad():
        assert torch.isfinite(model.encode_pose(torch.from_numpy(p))).all()


def test_drive_groups_hold_far_apart_windows_of_one_drive() -> None:
    seqs = ["a"] * 10 + ["b"] * 7 + ["c"] * 3
    starts = list(range(0, 60, 6)) + list(range(0, 42, 6)) + [0, 6, 12]
    order = np.random.default_rng(1).permutation(len(seqs))  # list order must not matter
    seqs, starts = [seqs[i] for i in order], [starts[i] for i in order]
    groups = drive_groups(seqs, starts, 3, seed=0, epoch=0)
    assert len(groups) == drive_group_count(seqs, 3) == 3 + 2 + 1
    flat = [i for g in groups for i in g]
    assert len(flat) == len(set(flat))  # each window at most once per epoch
    for g in groups:
        assert len({seqs[i] for i in g}) == 1
        n = seqs.count(seqs[g[0]])
        gaps = np.diff(sorted(starts[i] for i in g))
        assert gaps.min() >= 6 * (n // 3)  # every (n // k)-th window of the drive
    assert groups == drive_groups(seqs, starts, 3, seed=0, epoch=0)  # same on every rank
    assert groups != drive_groups(seqs, starts, 3, seed=0, epoch=1)  # new groups each epoch
    assert drive_groups(seqs, starts, 4, seed=0, epoch=0) and drive_group_count(seqs, 11) == 0
    with pytest.raises(ValueError, match="group size"):
        drive_groups(seqs, starts, 0, seed=0, epoch=0)


def test_look_alike_groups_pair_different_drives_of_one_place() -> None:
    # place P: drives a (two windows: a stopped car), b and c; place Q: drives a and d; R: e only
    seqs = ["a", "a", "b", "c", "a", "d", "e", "f", "f", "g", "h"]
    looks = ["P", "P", "P", "P", "Q", "Q", "R", None, None, None, "S"]
    groups = look_alike_groups(seqs, looks, 2, seed=0, epoch=0)
    assert (len(groups), 3) == look_alike_group_count(seqs, looks, 2) == (5, 3)
    flat = [i for g in groups for i in g]
    assert len(flat) == len(set(flat)) == 10  # one window left over, the others once each
    alike = [g for g in groups if looks[g[0]] is not None and looks[g[0]] == looks[g[1]]
             and seqs[g[0]] != seqs[g[1]]]
    # both windows of the stopped car get a partner, and the place two drives saw is paired
    assert sorted(looks[g[0]] for g in alike) == ["P", "P", "Q"]
    assert groups == look_alike_groups(seqs, looks, 2, seed=0, epoch=0)  # same on every rank
    assert any(look_alike_groups(seqs, looks, 2, seed=0, epoch=e) != groups for e in (1, 2, 3))
    assert look_alike_group_count(seqs, looks, 3) == (3, 1)  # only P has three drives
    with pytest.raises(ValueError, match="group size"):
        look_alike_groups(seqs, looks, 1, seed=0, epoch=0)
    with pytest.raises(ValueError, match="look-alike groups"):
        look_alike_groups(seqs, looks[:-1], 2, seed=0, epoch=0)


# --------------------------------------------------------------------------- training runs


def test_two_steps_tiny(data_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train(_args(data_root, out, cache_dir, "tiny", "--max-steps", "2"))
    assert result.step == 2 and result.stopped == "max_steps"
    assert math.isfinite(result.last_loss)
    rows = _log_rows(out)
    assert [r["step"] for r in rows] == ["1", "2"]
    assert all(math.isfinite(float(r[k])) for r in rows for k in ("loss", "loss_long", "lr"))
    assert float(rows[0]["logit_scale"]) == pytest.approx(4.6052, abs=1e-2)
    model = load_checkpoint(out / "last")
    assert model.config.embed_dim == 128 and model.config.mode == "reference"
    state = torch.load(out / "last" / STATE_FILE, weights_only=True)
    assert state["step"] == 2 and len(state["rng"]) == 1
    torch.manual_seed(0)  # the trainer's seed before building the model
    fresh = build_model("tiny")
    assert torch.equal(model.positional_embedding, fresh.positional_embedding)  # frozen (Q22)
    assert not torch.equal(model.positional_embedding_res, fresh.positional_embedding_res)


def test_a_fresh_model_at_another_resolution_trains_and_exports(
        data_root: Path, cache_dir: Path, tmp_path: Path, micro_ckpt: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r48"
    result = train(_args(data_root, out, cache_dir, "tiny", "--max-steps", "1",
                         "--image-resolution", "48", "--patch-size", "6", "--image-fit", "squash"))
    assert result.step == 1 and math.isfinite(result.last_loss)
    model = load_checkpoint(out / "last")
    config = model.config
    assert (config.image_resolution, config.vision_patch_size, config.image_fit) == \
        (48, 6, "squash")
    squashed = {p for p in cache_dir.iterdir() if "-r48-squash-" in p.name}
    reader = DrivingDataset(data_root, "config/train.txt")
    frames = FrameCache.build_or_open(reader, 48, cache_dir, fit="squash")
    assert frames.path in squashed  # the trainer's, reused
    assert frames.fit == "squash" and frames.resolution == 48
    from spartan_train.export.onnx_export import main as export_main  # the node's model too

    assert export_main([str(out / "last"), str(tmp_path / "onnx")]) == 0
    meta = json.loads((tmp_path / "onnx" / "model.json").read_text())
    assert (meta["image_resolution"], meta["image_fit"], meta["format_version"]) == \
        (48, "squash", 2)
    # The node preprocesses as the model was trained: the cached codes of a frame, exactly.
    from spartan_ros.runtime.engine import Engine

    engine = Engine(tmp_path / "onnx", providers=["cpu"])
    entry = reader.entries[0]
    [image] = reader.load_frames(0, [0])
    row = frames.rows(entry.seq, [entry.start])[0]
    np.testing.assert_array_equal(engine.preprocess([image])[0],
                                  decode_frames(torch.from_numpy(frames.codes[row])).numpy())
    for bad in (["--image-resolution", "50", "--patch-size", "6"],  # not a multiple
                ["--patch-size", "0"]):
        assert main(_args(data_root, tmp_path / "bad", cache_dir, "tiny", *bad)) == 2
    assert main(_args(data_root, tmp_path / "bad", cache_dir, micro_ckpt,
                      "--image-resolution", "48")) == 2  # a checkpoint keeps its sizes
    err = capsys.readouterr().err
    assert "must be a multiple of vision_patch_size" in err
    assert "a checkpoint keeps the sizes it was trained at" in err


def test_a_fresh_model_with_other_tower_sizes_trains_and_reloads(
        data_root: Path, cache_dir: Path, tmp_path: Path, micro_ckpt: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "w192"
    result = train(_args(data_root, out, cache_dir, "tiny", "--max-steps", "1",
                         "--width", "192", "--layers", "2"))
    assert result.step == 1 and math.isfinite(result.last_loss)
    config = load_checkpoint(out / "last").config
    assert (config.vision_width, config.text_width) == (192, 192)
    assert (config.vision_layers, config.text_layers) == (2, 2)
    assert config.embed_dim == 128  # the joint space stays tiny's
    assert main(_args(data_root, tmp_path / "bad", cache_dir, "tiny", "--width", "100")) == 2
    assert main(_args(data_root, tmp_path / "bad", cache_dir, micro_ckpt, "--layers", "6")) == 2
    err = capsys.readouterr().err
    assert "vision_width must be a multiple of 64" in err
    assert "a checkpoint keeps the sizes it was trained at" in err


def test_resume_is_exact(data_root: Path, micro_ckpt: Path, cache_dir: Path,
                         tmp_path: Path) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(_args(data_root, straight, cache_dir, micro_ckpt, "--max-steps", "4"))
    train(_args(data_root, split, cache_dir, micro_ckpt, "--max-steps", "2"))
    assert not (split / "epoch_000").exists()  # stopped inside the first epoch (3 steps)
    result = train(_args(data_root, split, cache_dir, micro_ckpt, "--max-steps", "4",
                         "--resume", str(split)))
    assert result.step == 4
    assert (split / "epoch_000").is_dir()  # the resumed run finished epoch 0
    a = load_file(straight / "last" / "model.safetensors")
    b = load_file(split / "last" / "model.safetensors")
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 1e-6
    start = load_file(micro_ckpt / "model.safetensors")
    assert float((a["projection.weight"] - start["projection.weight"]).abs().max()) > 1e-5
    la, lb = _log_rows(straight), _log_rows(split)
    assert [r["step"] for r in lb] == ["1", "2", "3", "4"]
    for ra, rb in zip(la, lb, strict=True):
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), abs=1e-5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _torchrun(trainer_args: list[str]) -> subprocess.CompletedProcess[str]:
    """spartan-train on 2 processes; asserts it succeeded with the same parameters on both."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()), "-m", "spartan_train.train.trainer",
           *trainer_args, "--print-checksum"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sums = dict(re.findall(r"rank (\d) parameter sha256 ([0-9a-f]{64})", proc.stdout))
    assert set(sums) == {"0", "1"}, proc.stdout
    assert sums["0"] == sums["1"]  # both ranks hold the same parameters after the steps
    return proc


def test_torchrun_two_processes(data_root: Path, micro_ckpt: Path, cache_dir: Path,
                                tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    proc = _torchrun(_args(data_root, out, cache_dir, micro_ckpt, "--max-steps", "2",
                           "--batch-size", "3", "--own-motion", "0.5", "--drive-group", "3"))
    rows = _log_rows(out)
    assert [r["step"] for r in rows] == ["1", "2"]
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    state = torch.load(out / "last" / STATE_FILE, weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    # the saved weights are those parameters, and they moved away from the initial ones
    saved = load_file(out / "last" / "model.safetensors")
    start = load_file(micro_ckpt / "model.safetensors")
    assert float((saved["projection.weight"] - start["projection.weight"]).abs().max()) > 1e-5
    assert "spartan-train: max_steps at step 2" in proc.stdout


def test_clock_schedule_ends_at_the_deadline_on_two_processes(
        data_root: Path, micro_ckpt: Path, cache_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "clock"
    proc = _torchrun(_args(data_root, out, cache_dir, micro_ckpt, "--batch-size", "2",
                           "--epochs", "1000", "--schedule", "clock", "--max-minutes", "0.3"))
    assert "spartan-train: max_minutes at step" in proc.stdout  # one learning rate for both
    lrs = [float(r["lr"]) for r in _log_rows(out)]
    assert len(lrs) > 10, "too few steps in 18 s to see the schedule"
    after_warmup = lrs[2:]
    assert after_warmup[0] > 0.5e-3  # the peak (1e-3) soon after warm-up
    assert all(b <= a + 1e-12 for a, b in zip(after_warmup, after_warmup[1:], strict=False))
    assert lrs[-1] < 0.1e-3  # decayed by the deadline, whatever the number of steps
    state = torch.load(out / "last" / STATE_FILE, weights_only=True)
    # the run stops when one rank's clock passes the deadline; the ranks' mean may be a step short
    assert state["schedule"]["kind"] == "clock" and state["schedule"]["used"] > 0.9


def test_clock_schedule_is_refused_without_a_budget_or_on_a_step_checkpoint(
        data_root: Path, micro_ckpt: Path, cache_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    steps = tmp_path / "steps"
    train(_args(data_root, steps, cache_dir, micro_ckpt, "--max-steps", "1"))
    for extra in (["--schedule", "clock"],
                  ["--schedule", "clock", "--max-minutes", "1", "--schedule-steps", "9"],
                  ["--schedule", "clock", "--max-minutes", "1", "--resume", str(steps)]):
        assert main(_args(data_root, tmp_path / "bad", cache_dir, micro_ckpt, *extra)) == 2
    err = capsys.readouterr().err
    assert "give --max-minutes, and no --schedule-steps" in err
    assert "cannot resume with --schedule clock" in err


def test_drive_groups_and_own_motion_term(data_root: Path, micro_ckpt: Path, cache_dir: Path,
                                          tmp_path: Path) -> None:
    out = tmp_path / "grouped"
    result = train(_args(data_root, out, cache_dir, micro_ckpt, "--max-steps", "3",
                         "--drive-group", "2", "--own-motion", "1"))
    assert result.step == 3 and math.isfinite(result.last_loss)
    rows = _log_rows(out)
    # the own-motion term is in the optimised loss, on top of long + short
    assert all(float(r["loss"]) > float(r["loss_long"]) + float(r["loss_short"]) + 0.1
               for r in rows)
    for bad in (["--drive-group", "3"], ["--own-motion", "-1"],  # 3 does not divide batch 4
                ["--pose-weight", "nan"]):
        assert main(_args(data_root, tmp_path / "bad", cache_dir, micro_ckpt, *bad)) == 2


def test_look_alike_batches(data_root: Path, micro_ckpt: Path, cache_dir: Path, tmp_path: Path,
                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="spartan_train.train")
    both = tmp_path / "both.txt"  # the two drives of the family that start alike
    both.write_text("".join((data_root / "config" / f).read_text() for f in ("train.txt",
                                                                              "val.txt")))
    result = train(_args(data_root, tmp_path / "alike", cache_dir, micro_ckpt, "--max-steps", "2",
                         "--look-alike", "2", "--pose-weight", "0.5", "--train-list", str(both)))
    assert result.step == 2 and math.isfinite(result.last_loss)
    alike = re.search(r"look-alike batches: (\d+) groups of 2", caplog.text)
    assert alike and int(alike.group(1)) >= 1, caplog.text
    for bad in (["--look-alike", "3"], ["--look-alike", "2", "--drive-group", "2"]):
        assert main(_args(data_root, tmp_path / "bad", cache_dir, micro_ckpt, *bad)) == 2
    bare = tmp_path / "bare"  # a set without look-alike groups (real sets have none)
    shutil.copytree(data_root, bare, ignore=shutil.ignore_patterns("meta"))
    assert main(_args(bare, tmp_path / "bad", cache_dir, micro_ckpt, "--look-alike", "2")) != 0


def test_segment_frame_sampling_trains(data_root: Path, micro_ckpt: Path, cache_dir: Path,
                                       tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="spartan_train.train")
    result = train(_args(data_root, tmp_path / "seg", cache_dir, micro_ckpt, "--max-steps", "2",
                         "--frame-sampling", "segments"))
    assert result.step == 2 and math.isfinite(result.last_loss)
    assert "frames per clip: 2 of 24, drawn segments" in caplog.text
    with pytest.raises(SystemExit) as bad:  # argparse's choices: a usage error
        main(_args(data_root, tmp_path / "bad", cache_dir, micro_ckpt,
                   "--frame-sampling", "uniform"))
    assert bad.value.code == 2


def test_augmented_training(data_root: Path, micro_ckpt: Path, cache_dir: Path,
                            tmp_path: Path, caplog: pytest.LogCaptureFixture,
                            capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.INFO, logger="spartan_train.train")
    result = train(_args(data_root, tmp_path / "aug", cache_dir, micro_ckpt, "--max-steps", "2",
                         "--caption-drop", "0.3", "--shift", "2"))
    assert result.step == 2 and math.isfinite(result.last_loss)
    assert "caption sentences dropped with p 0.30, frames shifted by up to 2 px" in caplog.text
    for flags, message in ((("--caption-drop", "1"), "--caption-drop must be a probability"),
                           (("--shift", "-2"), "--shift must be >= 0")):
        assert main(_args(data_root, tmp_path / "bad", cache_dir, micro_ckpt, *flags)) == 2
        assert message in capsys.readouterr().err


def test_word_head_targets_weigh_rare_words() -> None:
    # three captions: word 7 in all, word 8 in two, word 9 in one (SOT 49406, EOT 49407, pad 0)
    captions = np.array([[49406, 7, 8, 9, 49407, 0],
                         [49406, 7, 8, 49407, 0, 0],
                         [49406, 7, 7, 49407, 0, 0]])
    head = WordHead(captions, embed_dim=4, min_captions=1)
    assert head.words == 3  # markers and padding are not words
    target = head.targets(torch.from_numpy(captions))
    idf8, idf9 = math.log(3 / 2), math.log(3)
    expected = torch.tensor([[0, idf8, idf9], [0, 1, 0], [0, 0, 0]])
    expected[0] /= idf8 + idf9
    assert torch.allclose(target, expected.float())  # a word in every caption weighs nothing
    loss = head(torch.randn(3, 4), torch.from_numpy(captions))
    assert loss.dim() == 0 and math.isfinite(float(loss.detach()))
    assert WordHead(captions, embed_dim=4, min_captions=2).words == 2  # word 9 is too rare
    with pytest.raises(ValueError, match="no word appears"):
        WordHead(captions, embed_dim=4, min_captions=4)
    with pytest.raises(ValueError, match="token ids"):
        WordHead(captions, embed_dim=4, vocab_size=9)


def test_word_sides_follow_the_sentence_that_names_them() -> None:
    caption = ("On the left, there is a pink house. To the right of the road, a pink house. "
               "A white house on the right or the left. Two trees.")
    tokens = torch.from_numpy(tokenize([caption])).long()
    stop = get_tokenizer().encode(".")[0]
    codes, sentences, current = side_codes(tokens)[0].tolist(), [], set()
    for token, code in zip(tokens[0, 1:].tolist(), codes[1:], strict=True):
        current.add(code)
        if token == stop:
            sentences.append(sorted(current))
            current = set()
    assert sentences == [[1], [2], [2], [0]]  # the first side a sentence names decides
    # with sides, "pink house" on the left and on the right are different outputs
    captions = tokenize([caption] * 5)
    assert WordHead(captions, 4, sides=True).words > WordHead(captions, 4).words
    with pytest.raises(ValueError, match="no word appears"):
        WordHead(captions[:1], 4, sides=True)


def test_word_loss_trains_and_resumes_exactly(data_root: Path, micro_ckpt: Path,
                                              cache_dir: Path, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.INFO, logger="spartan_train.train")
    straight, split = tmp_path / "straight", tmp_path / "split"
    words = ("--word-loss", "0.5", "--word-sides", "--max-steps")
    train(_args(data_root, straight, cache_dir, micro_ckpt, *words, "4"))
    assert re.search(r"caption words: a head over \d+ words with their sides", caplog.text)
    train(_args(data_root, split, cache_dir, micro_ckpt, *words, "2"))
    assert "word_head" in torch.load(split / "last" / STATE_FILE, weights_only=True)
    train(_args(data_root, split, cache_dir, micro_ckpt, *words, "4", "--resume", str(split)))
    a = load_file(straight / "last" / "model.safetensors")
    b = load_file(split / "last" / "model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    plain = tmp_path / "plain"
    train(_args(data_root, plain, cache_dir, micro_ckpt, "--max-steps", "4"))
    c = load_file(plain / "last" / "model.safetensors")
    assert a.keys() == c.keys()  # the head is not part of the model
    assert float((a["visual.proj"] - c["visual.proj"]).abs().max()) > 1e-6  # but it trains it
    assert main(_args(data_root, tmp_path / "bad", cache_dir, micro_ckpt, "--word-loss", "-1")) == 2
    assert "--word-loss must be a finite weight >= 0" in capsys.readouterr().err
    assert main(_args(data_root, tmp_path / "bad", cache_dir, micro_ckpt, "--word-sides")) == 2
    assert "--word-sides needs --word-loss" in capsys.readouterr().err
    assert main(_args(data_root, plain, cache_dir, micro_ckpt, *words, "6", "--resume",
                      str(plain))) == 2
    assert "trained with --word-loss and this run is not" in capsys.readouterr().err
    assert main(_args(data_root, split, cache_dir, micro_ckpt, "--max-steps", "6", "--resume",
                      str(split))) == 2
    assert "trained with --word-loss and this run is not" in capsys.readouterr().err


def test_max_minutes_stops_cleanly_with_no_pose(data_root: Path, micro_ckpt: Path,
                                                cache_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "budget"
    result = train(_args(data_root, out, cache_dir, micro_ckpt, "--max-minutes", "0.0001",
                         "--no-pose"))
    assert result.stopped == "max_minutes" and result.step == 1
    assert math.isfinite(result.last_loss)  # still poses keep reference mode finite
    state = torch.load(out / "last" / STATE_FILE, weights_only=True)
    assert state["step"] == 1
    assert not (out / "epoch_000").exists()
    # a second fresh run into the same directory must be asked for
    args = _args(data_root, out, cache_dir, micro_ckpt, "--max-steps", "1")
    assert main(args) == 2
    assert main([*args, "--overwrite"]) == 0
    assert [r["step"] for r in _log_rows(out)] == ["1"]


def test_errors_are_reported(data_root: Path, cache_dir: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_args(data_root, tmp_path / "a", cache_dir, "huge")) == 2
    assert "neither a config name" in capsys.readouterr().err
    assert main(_args(tmp_path / "missing", tmp_path / "b", cache_dir, "tiny")) == 2
    assert "missing" in capsys.readouterr().err
    assert main(_args(data_root, tmp_path / "c", cache_dir, "tiny", "--resume",
                      str(tmp_path))) == 2
    assert "train_state.pt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(_args(data_root, tmp_path / "d", cache_dir, "tiny", "--loss", "bogus"))


def test_cache_only(data_root: Path, micro_ckpt: Path, tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    out, cache = tmp_path / "run", tmp_path / "cache"
    assert main(_args(data_root, out, cache, micro_ckpt, "--cache-only")) == 0
    assert "frame caches ready" in capsys.readouterr().out
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 2  # train + val
    assert not (out / "log.csv").exists() and not (out / "last").exists()


def test_keep_limits_epoch_dirs(data_root: Path, micro_ckpt: Path, cache_dir: Path,
                                tmp_path: Path) -> None:
    out = tmp_path / "keep"
    result = train(_args(data_root, out, cache_dir, micro_ckpt, "--max-steps", "6", "--keep", "1"))
    assert result.step == 6 and result.epoch == 2  # 3 steps per epoch: epochs 0 and 1 complete
    assert sorted(p.name for p in out.glob("epoch_*")) == ["epoch_001"]
    assert (out / "best").is_dir() and (out / "last").is_dir()
    assert load_checkpoint(out / "best").config.embed_dim == MICRO.embed_dim
    rows = list(csv.DictReader((out / "val.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert all(0.0 <= float(r["val_top1"]) <= 1.0 and r["val_n"] == "7" for r in rows)
