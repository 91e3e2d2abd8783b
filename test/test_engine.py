"""The torch-free Engine: end-to-end equality with PyTorch, load-time validation of broken model
directories, provider fallback, windows, and that torch never gets imported."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from spartan_train.export import export_model
from spartan_train.model import load_checkpoint, save_checkpoint
from test_export import random_tiny

from spartan_ros.ingest.window import SlidingWindow
from spartan_ros.poses import interpolate_pose, quat_from_yaw, relative_window, resample_window
from spartan_ros.preprocess import preprocess_batch
from spartan_ros.runtime.engine import (
    ROLES,
    Engine,
    ModelLoadError,
    compute_model_hash,
    file_sha256,
    resolve_providers,
)
from spartan_ros.tokenizer import tokenize

REPO = Path(__file__).resolve().parent.parent
TEXTS = ["a car turns left at a gas station", "driving straight past parked trucks",
         "stopped at a red light"]  # fmt: skip


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("engine")
    ckpt = save_checkpoint(random_tiny(seed=4), root / "ckpt")
    export_model(ckpt, root / "model", log=lambda _: None)
    return ckpt, root / "model"


@pytest.fixture(scope="module")
def engine(model_dir: tuple[Path, Path]) -> Engine:
    return Engine(model_dir[1], providers=("cpu",), batch_size=4)


def drive(frames: int, seed: int, rate_hz: float = 10.0, t0: float = 1000.0) -> np.ndarray:
    """Absolute TUM rows of a vehicle turning gently, far from the origin."""
    rng = np.random.default_rng(seed)
    dt = 1.0 / rate_hz
    yaw = rng.uniform(-3, 3) + np.cumsum(np.full(frames, rng.normal(0, 0.08) * dt * 10))
    speed = rng.uniform(2, 12)
    rows = np.zeros((frames, 8))
    rows[:, 0] = t0 + dt * np.arange(frames)
    rows[:, 1] = 150 + np.cumsum(speed * dt * np.cos(yaw))
    rows[:, 2] = -80 + np.cumsum(speed * dt * np.sin(yaw))
    rows[:, 4:8] = quat_from_yaw(yaw)
    return rows


def frames_uint8(count: int, seed: int, shape: tuple[int, int] = (90, 120)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (*shape, 3))
    return [np.clip(base + rng.integers(-30, 30, (*shape, 3)), 0, 255).astype(np.uint8)
            for _ in range(count)]  # fmt: skip


# --------------------------------------------------------------------------- end to end


def test_clip_text_pose_score_matches_torch(model_dir: tuple[Path, Path], engine: Engine):
    """Same uint8 clips + texts + absolute poses -> the same cosine scores as the PyTorch path."""
    model = load_checkpoint(model_dir[0])
    clips = [frames_uint8(24, seed=s) for s in range(3)]
    windows = np.stack([drive(24, seed=s) for s in range(3)])

    videos = np.stack([engine.video_feature(engine.encode_frames(c)) for c in clips])
    queries = engine.encode_query(TEXTS, windows)

    with torch.no_grad():
        pixels = torch.from_numpy(np.stack([preprocess_batch(c, 64) for c in clips]))
        v = model.encode_video(pixels).numpy()
        rel = np.stack([relative_window(w, "reference") for w in windows])
        q = model.encode_text(torch.from_numpy(tokenize(TEXTS)), torch.from_numpy(rel)).numpy()

    def scores(qs: np.ndarray, vs: np.ndarray) -> np.ndarray:
        qs = qs / np.linalg.norm(qs, axis=1, keepdims=True)
        return qs @ (vs / np.linalg.norm(vs, axis=1, keepdims=True)).T

    assert np.abs(scores(queries, videos) - scores(q, v)).max() <= 1e-4
    assert np.abs(queries - q).max() <= 1e-4
    # the fast scorer's fusion head is the graph's projection
    t = engine.encode_text(TEXTS)
    p = engine.encode_pose(windows)
    assert np.abs(engine.fusion_head.fuse(t, p) - queries).max() <= 1e-4
    # one text is paired with every window
    one = engine.encode_query(TEXTS[0], windows)
    assert np.abs(one[0] - queries[0]).max() <= 1e-5 and one.shape == (3, 128)


def test_frames_batching_and_colour(engine: Engine) -> None:
    frames = frames_uint8(10, seed=7)
    whole = Engine(engine.model_dir, providers=("cpu",), batch_size=16).encode_frames(frames)
    assert engine.batch_size == 4
    assert np.abs(engine.encode_frames(frames) - whole).max() <= 1e-5
    assert np.abs(engine.encode_frames(np.stack(frames)) - whole).max() <= 1e-5
    bgr = [f[..., ::-1] for f in frames]
    assert np.abs(engine.encode_frames(bgr, color="bgr") - whole).max() <= 1e-5
    assert engine.encode_frames([]).shape == (0, 128)
    with pytest.raises(ValueError, match="image 1"):
        engine.encode_frames([frames[0], frames[1].astype(np.float32)])
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        engine.encode_frames(frames[0])


def test_sliding_window_equals_encoding_from_scratch(engine: Engine) -> None:
    """Frames encoded once and pooled by SlidingWindow = the window encoded whole."""
    frames = frames_uint8(40, seed=3)
    poses = drive(40, seed=3)
    feats = engine.encode_frames(frames)  # each frame once
    window = SlidingWindow(window_frames=24, stride_frames=6)
    emitted = []
    for i in range(40):
        ready = window.push(int(poses[i, 0] * 1e9), feats[i], poses[i])
        if ready is not None:
            emitted.append((i, ready))
    assert [i for i, _ in emitted] == [23, 29, 35]
    for last, ready in emitted:
        scratch = engine.video_feature(engine.encode_frames(frames[last - 23 : last + 1]))
        assert np.abs(ready.video_feat - scratch).max() <= 1e-5
        assert np.array_equal(ready.poses, poses[last - 23 : last + 1])


def test_pose_inputs_are_checked(engine: Engine) -> None:
    w = drive(24, seed=1)
    with pytest.raises(ValueError, match="resample_window"):
        engine.encode_pose(drive(30, seed=1)[None])
    with pytest.raises(ValueError, match="wrap a single"):
        engine.encode_pose(w)
    bad = w.copy()
    bad[5, 2] = np.nan
    with pytest.raises(ValueError, match="window 1: pose row 5"):
        engine.encode_pose(np.stack([w, bad]))
    with pytest.raises(ValueError, match="2 texts for 3 pose windows"):
        engine.encode_query(TEXTS[:2], np.stack([w, w, w]))
    with pytest.raises(ValueError, match=r"\[T, 128\]"):
        engine.video_feature(np.zeros((24, 64), dtype=np.float32))


def test_resample_window() -> None:
    rows = drive(91, seed=2, rate_hz=30.0)  # 3 s at 30 Hz
    out = resample_window(rows, 24, 10.0, align="center")
    assert out.shape == (24, 8)
    assert np.allclose(np.diff(out[:, 0]), 0.1)
    assert out[0, 0] - rows[0, 0] == pytest.approx((3.0 - 2.3) / 2)
    assert np.allclose(out, interpolate_pose(out[:, 0], rows))
    assert resample_window(rows, 24, 10.0, align="start")[0, 0] == rows[0, 0]
    assert resample_window(rows, 24, 10.0, align="end")[-1, 0] == pytest.approx(rows[-1, 0])
    short = rows[:16]  # 0.5 s: the pose is held where the trajectory does not reach
    held = resample_window(short, 24, 10.0, align="start")
    assert np.allclose(np.diff(held[:, 0]), 0.1)
    assert np.allclose(held[-1, 1:], short[-1, 1:])
    two = resample_window(rows[[0, -1]], 24, 10.0)  # the minimum a request may bring
    assert two.shape == (24, 8) and np.isfinite(two).all()
    with pytest.raises(ValueError, match="increasing"):
        resample_window(rows[::-1], 24)
    with pytest.raises(ValueError, match="align"):
        resample_window(rows, 24, align="middle")
    with pytest.raises(ValueError, match="rate_hz"):
        resample_window(rows, 24, rate_hz=0.0)


def test_engine_resample_feeds_the_pose_graph(engine: Engine) -> None:
    rows = drive(61, seed=5, rate_hz=20.0)
    window = engine.resample_window(rows)
    assert window.shape == (engine.window, 8)
    assert engine.encode_query("turning", window[None]).shape == (1, 128)


def test_engine_attributes(engine: Engine, model_dir: tuple[Path, Path]) -> None:
    meta = json.loads((model_dir[1] / "model.json").read_text())
    assert engine.model_hash == meta["model_hash"]
    assert (engine.embed_dim, engine.image_resolution, engine.window) == (128, 64, 24)
    assert (engine.mode, engine.pose_convention) == ("reference", "reference")
    assert engine.providers == ["CPUExecutionProvider"]
    assert engine.fusion_head.embed_dim == 128


# --------------------------------------------------------------------------- providers


def test_provider_fallback_is_logged(model_dir: tuple[Path, Path]) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    log = logging.getLogger("test_engine.providers")
    log.setLevel(logging.INFO)
    log.addHandler(Keep())
    engine = Engine(model_dir[1], providers=("tensorrt", "cuda"), logger=log)
    assert engine.providers == ["CPUExecutionProvider"]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert any("falling back to CPUExecutionProvider" in m and "CUDAExecutionProvider" in m
               and "TensorrtExecutionProvider" in m for m in warnings)  # fmt: skip
    assert resolve_providers(["cuda", "cpu"], ["CUDAExecutionProvider", "CPUExecutionProvider"])[
        0
    ] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(["cpu"], ["CPUExecutionProvider"]) == (["CPUExecutionProvider"], [])
    assert Engine(model_dir[1], providers="cpu").providers == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="unknown execution provider 'rocm'"):
        Engine(model_dir[1], providers=("rocm",))


# --------------------------------------------------------------------------- broken directories


def _rewrite(meta_path: Path, edit: Callable[[dict], None]) -> None:
    meta = json.loads(meta_path.read_text())
    edit(meta)
    meta_path.write_text(json.dumps(meta))


def _resign(d: Path) -> None:
    """Recompute the sha256 fields and hashes after a deliberate edit (a consistent but bad dir)."""

    def edit(meta: dict) -> None:
        for entries in meta["graphs"].values():
            for entry in entries.values():
                entry["sha256"] = file_sha256(d / entry["file"])
        meta["fusion"]["sha256"] = file_sha256(d / meta["fusion"]["file"])
        shas = {r: meta["graphs"]["float32"][r]["sha256"] for r in ROLES}
        meta["model_hash"] = compute_model_hash(shas, meta["fusion"]["sha256"])
        meta["model_hashes"]["float32"] = meta["model_hash"]

    _rewrite(d / "model.json", edit)


def _truncate(d: Path) -> None:
    data = (d / "image.onnx").read_bytes()
    (d / "image.onnx").write_bytes(data[: len(data) // 2])


def _truncate_and_resign(d: Path) -> None:
    _truncate(d)
    _resign(d)


def _swap_image_and_text(d: Path) -> None:
    (d / "image.onnx").rename(d / "tmp.onnx")
    (d / "text.onnx").rename(d / "image.onnx")
    (d / "tmp.onnx").rename(d / "text.onnx")
    _resign(d)


def _other_fusion(d: Path) -> None:
    tensors = load_file(str(d / "fusion.safetensors"))
    tensors["projection.weight"] = tensors["projection.weight"][::-1].copy()
    save_file(tensors, str(d / "fusion.safetensors"))
    _resign(d)


def _drop_key(key: str) -> Callable[[Path], None]:
    return lambda d: _rewrite(d / "model.json", lambda m: m.pop(key))


def _set(key: str, value: object) -> Callable[[Path], None]:
    return lambda d: _rewrite(d / "model.json", lambda m: m.__setitem__(key, value))


def _wrong_sha(role: str) -> Callable[[Path], None]:
    def edit(meta: dict) -> None:
        meta["graphs"]["float32"][role]["sha256"] = "0" * 64

    return lambda d: _rewrite(d / "model.json", edit)


BROKEN = {
    "missing model.json": (lambda d: (d / "model.json").unlink(), "model.json", "missing"),
    "model.json not json": (lambda d: (d / "model.json").write_text("{"), "model.json",
                            "unreadable"),
    "truncated onnx": (_truncate, "image.onnx", "sha256 mismatch"),
    "truncated onnx, sha re-signed": (_truncate_and_resign, "image.onnx", "cannot load"),
    "missing fusion file": (lambda d: (d / "fusion.safetensors").unlink(), "fusion.safetensors",
                            "missing"),
    "missing graph": (lambda d: (d / "pose_fusion.onnx").unlink(), "pose_fusion.onnx", "missing"),
    "wrong sha": (_wrong_sha("text"), "text.onnx", "sha256 mismatch"),
    "unsupported version": (_set("format_version", 99), "model.json",
                            "unsupported format_version 99"),
    "wrong format": (_set("format", "something"), "model.json", "field 'format'"),
    "version 2 without its fit": (_set("format_version", 2), "model.json",
                                  "missing field 'image_fit'"),
    "unknown fit": (lambda d: _rewrite(d / "model.json", lambda m: m.update(
        format_version=2, image_fit="letterbox")), "model.json", "field 'image_fit'"),
    "missing key": (_drop_key("window"), "model.json", "missing field 'window'"),
    "wrong type": (_set("embed_dim", "128"), "model.json", "field 'embed_dim' has the wrong type"),
    "wrong size": (_set("embed_dim", 64), "fusion.safetensors", "expected \\[64, 128\\]"),
    "bad mode": (_set("mode", "fast"), "model.json", "field 'mode'"),
    "other normalisation": (_set("normalization", {"mean": [0.5] * 3, "std": [0.5] * 3}),
                            "model.json", "normalization.mean"),
    "edited model hash": (lambda d: _rewrite(d / "model.json", lambda m: m["model_hashes"]
                                             .__setitem__("float32", "f" * 64)), "model.json",
                          "model_hashes.float32"),
    "edited top-level hash": (_set("model_hash", "0" * 64), "model.json", "differs from"),
    "graphs swapped": (_swap_image_and_text, "image.onnx", "graph inputs"),
    "fusion of another model": (_other_fusion, "fusion.safetensors", "do not match"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_model_dir_fails_at_load(case: str, model_dir: tuple[Path, Path], tmp_path):
    damage, file_name, message = BROKEN[case]
    d = tmp_path / "model"
    shutil.copytree(model_dir[1], d)
    damage(d)
    with pytest.raises(ModelLoadError, match=message) as info:
        Engine(d, providers=("cpu",))
    assert file_name in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_dir_and_precision(model_dir: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        Engine(tmp_path / "nowhere")
    with pytest.raises(ModelLoadError, match="no 'int8' graphs"):
        Engine(model_dir[1], precision="int8")
    with pytest.raises(ValueError, match="precision"):
        Engine(model_dir[1], precision="bf16")


# --------------------------------------------------------------------------- no torch


def test_engine_never_imports_torch(model_dir: tuple[Path, Path]) -> None:
    code = f"""
import sys
import numpy as np
from spartan_ros.runtime.engine import Engine
e = Engine({str(model_dir[1])!r}, providers=("cuda", "cpu"))
rows = np.zeros((30, 8)); rows[:, 0] = np.arange(30) * 0.05; rows[:, 1] = rows[:, 0]; rows[:, 7] = 1
w = e.resample_window(rows)
q = e.encode_query(["a road"], w[None])
v = e.video_feature(e.encode_frames([np.zeros((48, 80, 3), np.uint8)] * 3))
assert q.shape == (1, 128) and v.shape == (128,)
bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print("TORCH" if bad else "CLEAN", bad[:5])
"""
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "CLEAN" in run.stdout, run.stdout
