"""spartan-export: layout, metadata, parity of every graph with PyTorch, atomic failure, CLI."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from spartan_train.export import ExportError, export_model, main
from spartan_train.export.onnx_export import sample_tokens, sample_windows
from spartan_train.model import SpartanModel, build_model, load_checkpoint, save_checkpoint
from spartan_train.model import sha256 as checkpoint_sha256

from spartan_ros.preprocess import CLIP_MEAN
from spartan_ros.runtime.engine import ROLES, Engine, compute_model_hash, file_sha256

GRAPH_IO = {
    "image.onnx": (["pixels"], ["features"]),
    "text.onnx": (["tokens"], ["text_features"]),
    "pose_fusion.onnx": (["text_features", "poses"], ["query", "pose_features"]),
}


def random_tiny(seed: int = 0, **changes: object) -> SpartanModel:
    """The tiny model with its pose branch and fusion scaled up from the fresh N(0, 0.02) init,
    so the pose actually moves the query (a fresh branch contributes almost nothing)."""
    torch.manual_seed(seed)
    model = build_model("tiny")
    if changes:
        model = build_model(model.config.replace(**changes))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("temporal_attention.", "projection.")) and "norm" not in name:
                p.normal_(0.0, 1.0 / math.sqrt(p.shape[-1] if p.dim() > 1 else 64))
    return model.eval()


# Small enough that an export takes about a second: for tests of the export mechanics.
MICRO = dict(embed_dim=32, image_resolution=32, vision_patch_size=16, vision_width=64,
             vision_layers=1, text_width=64, text_layers=1, pose_layers=1)  # fmt: skip


@pytest.fixture(scope="module")
def micro_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(random_tiny(seed=2, **MICRO), tmp_path_factory.mktemp("micro") / "c")


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict, float]:
    root = tmp_path_factory.mktemp("export")
    ckpt = save_checkpoint(random_tiny(), root / "ckpt")
    t0 = time.perf_counter()
    lines: list[str] = []
    meta = export_model(ckpt, root / "model", fp16=True, int8=True, log=lines.append)
    seconds = time.perf_counter() - t0
    assert any("int8" in line and "ok" in line for line in lines)
    return ckpt, root / "model", meta, seconds


def test_layout_metadata_and_hashes(exported: tuple[Path, Path, dict, float]) -> None:
    ckpt, out, meta, seconds = exported
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted([
        "fusion.safetensors", "image.onnx", "image.fp16.onnx", "image.int8.onnx", "model.json",
        "pose_fusion.onnx", "text.onnx", "text.fp16.onnx",
    ])  # fmt: skip
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".model.")]  # no temp left
    on_disk = json.loads((out / "model.json").read_text())
    assert on_disk == json.loads(json.dumps(meta))
    assert on_disk["source"]["sha256"] == checkpoint_sha256(ckpt)
    assert (on_disk["mode"], on_disk["pose_convention"]) == ("reference", "reference")
    assert on_disk["window"] == 24 and on_disk["context_length"] == 248
    assert on_disk["image_resolution"] == 64 and on_disk["embed_dim"] == 128
    assert on_disk["normalization"]["mean"] == pytest.approx(CLIP_MEAN.tolist())
    for precision, entries in on_disk["graphs"].items():
        for entry in entries.values():
            assert file_sha256(out / entry["file"]) == entry["sha256"]
        chosen = {**on_disk["graphs"]["float32"], **entries}
        expected = compute_model_hash(
            {r: chosen[r]["sha256"] for r in ROLES}, on_disk["fusion"]["sha256"]
        )
        assert on_disk["model_hashes"][precision] == expected
    assert on_disk["model_hash"] == on_disk["model_hashes"]["float32"]
    assert len(set(on_disk["model_hashes"].values())) == 3
    assert all(c["seconds"] >= 0 for c in on_disk["checks"]) and len(on_disk["checks"]) == 6
    for name, (inputs, outputs) in GRAPH_IO.items():
        proto = onnx.load(str(out / name))
        props = {p.key: p.value for p in proto.metadata_props}
        assert props["spartan_ros.graph"] == name[: -len(".onnx")]
        assert props["spartan_ros.source_sha256"] == on_disk["source"]["sha256"]
        assert json.loads(props["spartan_ros.config"])["mode"] == "reference"
        assert props["spartan_ros.window"] == "24"
        assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
        assert [i.name for i in proto.graph.input] == inputs
        assert [o.name for o in proto.graph.output] == outputs
        for value in list(proto.graph.input) + list(proto.graph.output):
            assert value.type.tensor_type.shape.dim[0].dim_param == "batch"  # dynamic batch
    print(f"tiny export (float32 + fp16 + int8, checks included): {seconds:.1f} s")


def test_float32_parity_with_torch(exported: tuple[Path, Path, dict, float]) -> None:
    ckpt, out, _, _ = exported
    model = load_checkpoint(ckpt)
    engine = Engine(out, providers=("cpu",))
    rng = np.random.default_rng(3)
    for batch in (1, 3):
        pixels = rng.standard_normal((batch, 3, 64, 64)).astype(np.float32)
        tokens = sample_tokens(batch, 248, seed=batch)
        t = rng.standard_normal((batch, 128)).astype(np.float32)
        poses = sample_windows(batch, 24, "reference", seed=batch)
        with torch.no_grad():
            img = model.encode_image(torch.from_numpy(pixels)).numpy()
            txt = model.encode_text_features(torch.from_numpy(tokens)).numpy()
            pose = model.encode_pose(torch.from_numpy(poses)).numpy()
            query = model.fuse(torch.from_numpy(t), torch.from_numpy(pose)).numpy()
        got_q, got_p = engine.run_pose_fusion(t, poses)
        assert np.abs(engine.run_image(pixels) - img).max() <= 1e-4
        assert np.abs(engine.run_text(tokens) - txt).max() <= 1e-4
        assert np.abs(got_p - pose).max() <= 1e-4
        assert np.abs(got_q - query).max() <= 1e-4


def test_reduced_precision_parity(exported: tuple[Path, Path, dict, float]) -> None:
    """fp16 runs on the CPU provider here (ORT computes fp16 nodes without CPU kernels in fp32,
    so this measures the weight rounding; fp16 arithmetic proper happens on CUDA only)."""
    ckpt, out, _, _ = exported
    model = load_checkpoint(ckpt)
    pixels = np.random.default_rng(5).standard_normal((4, 3, 64, 64)).astype(np.float32)
    tokens = sample_tokens(4, 248, seed=9)
    with torch.no_grad():
        img = model.encode_image(torch.from_numpy(pixels)).numpy()
        txt = model.encode_text_features(torch.from_numpy(tokens)).numpy()
    fp16 = Engine(out, providers=("cpu",), precision="float16")
    assert cosine_rows(fp16.run_image(pixels), img).min() >= 0.999
    assert cosine_rows(fp16.run_text(tokens), txt).min() >= 0.999
    int8 = Engine(out, providers=("cpu",), precision="int8")
    assert cosine_rows(int8.run_image(pixels), img).min() >= 0.99
    assert np.array_equal(int8.run_text(tokens), Engine(out, providers=("cpu",)).run_text(tokens))


def test_reference_mode_attends_across_the_batch(exported: tuple[Path, Path, dict, float]):
    """docs/model.md 11, Q1: the exported pose graph keeps the batch mixing for any batch size."""
    ckpt, out, _, _ = exported
    model = load_checkpoint(ckpt)
    engine = Engine(out, providers=("cpu",))
    poses = sample_windows(5, 24, "reference", seed=11)
    t = np.zeros((5, 128), dtype=np.float32)
    alone = engine.run_pose_fusion(t[:1], poses[:1])[1]
    together = engine.run_pose_fusion(t, poses)[1]
    with torch.no_grad():
        alone_ref = model.encode_pose(torch.from_numpy(poses[:1])).numpy()
        together_ref = model.encode_pose(torch.from_numpy(poses)).numpy()
    assert np.abs(alone - alone_ref).max() <= 1e-4
    assert np.abs(together - together_ref).max() <= 1e-4
    assert np.abs(alone[0] - together[0]).max() > 1e-3  # the batch changes window 0's feature


def test_corrected_mode_heading_convention(tmp_path: Path) -> None:
    model = random_tiny(seed=1, mode="corrected", pose_convention="heading", use_fft=False, **MICRO)
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    meta = export_model(ckpt, tmp_path / "model", log=lambda _: None)
    assert (meta["mode"], meta["pose_convention"]) == ("corrected", "heading")
    engine = Engine(tmp_path / "model", providers=("cpu",))
    assert (engine.mode, engine.pose_convention) == ("corrected", "heading")
    poses = sample_windows(5, 24, "heading", seed=2)
    t = np.zeros((5, engine.embed_dim), dtype=np.float32)
    together = engine.run_pose_fusion(t, poses)[1]
    with torch.no_grad():
        expected = load_checkpoint(ckpt).encode_pose(torch.from_numpy(poses)).numpy()
    assert np.abs(together - expected).max() <= 1e-4
    # corrected mode: a window's feature does not depend on the rest of the batch
    assert np.abs(engine.run_pose_fusion(t[:1], poses[:1])[1] - together[:1]).max() <= 1e-5


def test_failed_check_writes_nothing(micro_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    with pytest.raises(ExportError, match=r"parity check failed.*image\.onnx"):
        export_model(micro_ckpt, out, atol=0.0, log=lambda _: None)
    assert list(tmp_path.iterdir()) == []  # neither OUT_DIR nor a temp directory


def test_existing_output_needs_overwrite(micro_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ExportError, match="--overwrite"):
        export_model(micro_ckpt, out, log=lambda _: None)
    assert (out / "keep.txt").exists()
    export_model(micro_ckpt, out, overwrite=True, log=lambda _: None)
    assert (out / "model.json").exists() and not (out / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    mask = os.umask(0)
    os.umask(mask)
    assert (out.stat().st_mode & 0o777) == 0o777 & ~mask  # not mkdtemp's private 0700


def test_cli_and_stable_hash(micro_ckpt: Path, tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 1
    assert "missing" in capsys.readouterr().err
    assert main([str(micro_ckpt), str(tmp_path / "out"), "--opset", "16"]) == 1
    assert "--opset must be >= 17" in capsys.readouterr().err
    assert main([str(micro_ckpt), str(tmp_path / "out"), "--opset", "17"]) == 1
    assert "--opset 17 needs --exporter torchscript" in capsys.readouterr().err
    assert main([str(micro_ckpt), str(tmp_path / "out"), "--opset", "17", "--name", "t",
                 "--exporter", "torchscript"]) == 0
    assert "model_hash" in capsys.readouterr().out
    meta = json.loads((tmp_path / "out" / "model.json").read_text())
    assert (meta["name"], meta["onnx_opset"], meta["exporter"]) == ("t", 17, "torchscript")
    # the same checkpoint exports to the same bytes: the hash is stable (the name is not in it),
    # on both routes
    again = export_model(micro_ckpt, tmp_path / "again", opset=17, exporter="torchscript",
                         log=lambda _: None)
    assert again["model_hash"] == meta["model_hash"] and again["name"] == "c"
    dynamo = [export_model(micro_ckpt, tmp_path / f"dynamo{i}", log=lambda _: None)
              for i in range(2)]
    assert dynamo[0]["exporter"] == "dynamo" and dynamo[0]["onnx_opset"] == 18
    assert dynamo[0]["model_hash"] == dynamo[1]["model_hash"] != meta["model_hash"]


@pytest.mark.slow
def test_b16_export(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("B/16"), tmp_path / "ckpt")
    t0 = time.perf_counter()
    meta = export_model(ckpt, tmp_path / "model", log=print)
    print(f"B/16 float32 export: {time.perf_counter() - t0:.1f} s")
    assert meta["embed_dim"] == 512 and meta["image_resolution"] == 224
    assert all(c["max_abs"] <= 1e-4 for c in meta["checks"])
