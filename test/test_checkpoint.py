"""Checkpoint formats: files built in each real key layout (written here from docs/model.md 6, not
from our model), saved the way the reference saves them, then loaded, checked and broken on
purpose."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import zipfile
from pathlib import Path

import pytest
import spartan_train.model as M
import torch
from spartan_train.model import CheckpointError, load_checkpoint, save_checkpoint
from spartan_train.model.checkpoint import round_like_reference_fp16
from torch import nn

# ----------------------------------------------------------------------------- reference layouts

SMALL = dict(embed=64, res=32, patch=8, vwidth=128, vlayers=2, twidth=128, tlayers=2)
B16 = dict(embed=512, res=224, patch=16, vwidth=768, vlayers=12, twidth=512, tlayers=12)


def _block(prefix: str, w: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.attn.in_proj_weight": (3 * w, w),
        f"{prefix}.attn.in_proj_bias": (3 * w,),
        f"{prefix}.attn.out_proj.weight": (w, w),
        f"{prefix}.attn.out_proj.bias": (w,),
        f"{prefix}.ln_1.weight": (w,),
        f"{prefix}.ln_1.bias": (w,),
        f"{prefix}.mlp.c_fc.weight": (4 * w, w),
        f"{prefix}.mlp.c_fc.bias": (4 * w,),
        f"{prefix}.mlp.c_proj.weight": (w, 4 * w),
        f"{prefix}.mlp.c_proj.bias": (w,),
        f"{prefix}.ln_2.weight": (w,),
        f"{prefix}.ln_2.bias": (w,),
    }


def reference_layout(
    sizes: dict[str, int], kind: str = "spartan", fft: bool = True, pose_layers: int = 4
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a reference checkpoint (docs/model.md 6): kind spartan | longclip |
    openai."""
    embed, res, patch = sizes["embed"], sizes["res"], sizes["patch"]
    vwidth, vlayers, twidth, tlayers = (
        sizes[k] for k in ("vwidth", "vlayers", "twidth", "tlayers")
    )
    ctx = 77 if kind == "openai" else 248
    grid = res // patch
    s: dict[str, tuple[int, ...]] = {
        "positional_embedding": (ctx, twidth),
        "text_projection": (twidth, embed),
        "logit_scale": (),
        "visual.class_embedding": (vwidth,),
        "visual.positional_embedding": (grid * grid + 1, vwidth),
        "visual.proj": (vwidth, embed),
        "visual.conv1.weight": (vwidth, 3, patch, patch),
        "visual.ln_pre.weight": (vwidth,),
        "visual.ln_pre.bias": (vwidth,),
        "visual.ln_post.weight": (vwidth,),
        "visual.ln_post.bias": (vwidth,),
        "token_embedding.weight": (49408, twidth),
        "ln_final.weight": (twidth,),
        "ln_final.bias": (twidth,),
    }
    if kind != "openai":
        s["positional_embedding_res"] = (ctx, twidth)
    for i in range(vlayers):
        s.update(_block(f"visual.transformer.resblocks.{i}", vwidth))
    for i in range(tlayers):
        s.update(_block(f"transformer.resblocks.{i}", twidth))
    if kind == "spartan":
        t = "temporal_attention"
        s[f"{t}.positional_encoding"] = (1, 5000, 128)
        s[f"{t}.input_projection.weight"] = (128, 24 if fft else 8)
        s[f"{t}.input_projection.bias"] = (128,)
        for i in range(pose_layers):
            p = f"{t}.transformer_encoder.layers.{i}"
            s.update({
                f"{p}.self_attn.in_proj_weight": (384, 128),
                f"{p}.self_attn.in_proj_bias": (384,),
                f"{p}.self_attn.out_proj.weight": (128, 128),
                f"{p}.self_attn.out_proj.bias": (128,),
                f"{p}.linear1.weight": (512, 128), f"{p}.linear1.bias": (512,),
                f"{p}.linear2.weight": (128, 512), f"{p}.linear2.bias": (128,),
                f"{p}.norm1.weight": (128,), f"{p}.norm1.bias": (128,),
                f"{p}.norm2.weight": (128,), f"{p}.norm2.bias": (128,),
            })  # fmt: skip
        s[f"{t}.output_projection.weight"] = (embed, 128)
        s[f"{t}.output_projection.bias"] = (embed,)
        s["projection.weight"] = (embed, 2 * embed)
        s["projection.bias"] = (embed,)
    return s


def random_state_dict(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in layout.items():
        t = torch.randn(shape, generator=g)
        if key == "logit_scale":
            t = torch.tensor(4.6052)
        elif len(shape) == 1 and key.endswith("weight"):  # norm gains
            t = 1 + 0.1 * t
        else:
            t = t / math.sqrt(shape[-1] if len(shape) > 1 else 64)
        sd[key] = t
    return sd


class _Payload:
    """A pickled Python object that weights_only loading must refuse."""


class _Holder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def save_torchscript(sd: dict[str, torch.Tensor], path: Path) -> None:
    """An OpenAI-style TorchScript archive: a scripted module tree holding the tensors by name."""
    root = _Holder()
    for key, t in sd.items():
        *parents, leaf = key.split(".")
        node: nn.Module = root
        for part in parents:
            if not hasattr(node, part):
                node.add_module(part, _Holder())
            node = getattr(node, part)
        if t.is_floating_point():
            node.register_parameter(leaf, nn.Parameter(t.clone(), requires_grad=False))
        else:
            node.register_buffer(leaf, t.clone())
    torch.jit.script(root).save(str(path))


def save_as_if_on_cuda(sd: dict[str, torch.Tensor], path: Path) -> None:
    """torch.save whose storages are tagged 'cuda:0', like SPARTAN's training output."""
    from torch import serialization

    entry = (0, lambda obj: "cuda:0", lambda obj, location: None)
    # torch has no public way to unregister a tagger; remove ours from the registry afterwards
    serialization._package_registry.append(entry)
    serialization._package_registry.sort(key=lambda e: e[0])
    try:
        torch.save(sd, path)
    finally:
        serialization._package_registry.remove(entry)


def openai_state_dict(seed: int = 0, **sizes: int) -> dict[str, torch.Tensor]:
    sd = random_state_dict(reference_layout({**SMALL, **sizes}, kind="openai"), seed)
    sd = {k: v.half() for k, v in sd.items()}  # OpenAI ships fp16 weights
    sd.update(input_resolution=torch.tensor(32), context_length=torch.tensor(77),
              vocab_size=torch.tensor(49408))  # fmt: skip
    return sd


def tokens_and_poses(batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.zeros(batch, 248, dtype=torch.long)
    for b in range(batch):
        n = 5 + 40 * b
        tokens[b, 0], tokens[b, 1:n], tokens[b, n] = 49406, 1000 + b, 49407
    g = torch.Generator().manual_seed(1)
    poses = torch.cumsum(torch.randn(batch, 24, 8, generator=g), dim=1)
    return tokens, poses - poses[:, :1]


# ----------------------------------------------------------------------------- layouts match ours


def test_reference_layout_counts_and_our_state_dict_agree() -> None:
    layout = reference_layout(B16)
    assert len(layout) == 358
    assert sum(math.prod(s) for s in layout.values()) == 151_862_401
    with torch.device("meta"):
        ours = M.build_model("B/16").state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == layout
    small = reference_layout(SMALL, fft=False)
    with torch.device("meta"):
        cfg = M.infer_config(random_state_dict(small))
        assert {k: tuple(v.shape) for k, v in M.build_model(cfg).state_dict().items()} == small


# ----------------------------------------------------------------------------- SPARTAN


@pytest.mark.parametrize("fft", [True, False])
def test_spartan_checkpoint_loads_strictly(tmp_path: Path, fft: bool) -> None:
    sd = random_state_dict(reference_layout(SMALL, fft=fft))
    path = tmp_path / "9-0.972-longclip.pt"
    torch.save(sd, path)
    assert M.detect_format(path) == "spartan"
    model = load_checkpoint(path)
    assert model.config.use_fft is fft and model.config.mode == "reference"
    assert model.source_format == "spartan" and model.pose_branch_trained
    assert not model.training and model.logit_scale.dtype == torch.float32
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())  # no fp16 rounding on this path
    tokens, poses = tokens_and_poses()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        q = model.encode_text(tokens, poses)
        again = load_checkpoint(path)
        assert torch.equal(q, again.encode_text(tokens, poses))
        assert torch.equal(model.encode_image(images), again.encode_image(images))
    assert q.shape == (3, 64)


def test_spartan_saved_on_cuda_inside_zip(tmp_path: Path) -> None:
    sd = random_state_dict(reference_layout(SMALL))
    pt = tmp_path / "9-0.972-longclip.pt"
    save_as_if_on_cuda(sd, pt)
    with pytest.raises(RuntimeError, match="CUDA"):  # really tagged as CUDA tensors
        torch.load(pt, weights_only=True)
    direct = load_checkpoint(pt)
    archive = tmp_path / "9-0.972-longclip.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.write(pt, "checkpoints/9-0.972-longclip.pt")
        zf.writestr("checkpoints/README.txt", "released SPARTAN weights")
    assert M.detect_format(archive) == "spartan"
    zipped = load_checkpoint(archive)
    for k, v in direct.state_dict().items():
        assert torch.equal(v, zipped.state_dict()[k]), k
    # a torch.save file that happens to be named .zip is read directly
    renamed = tmp_path / "plain.zip"
    renamed.write_bytes(pt.read_bytes())
    assert torch.equal(load_checkpoint(renamed).projection.weight, direct.projection.weight)


def test_ddp_prefix_and_wrapped_state_dict(tmp_path: Path) -> None:
    sd = random_state_dict(reference_layout(SMALL))
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "w.pt")
    model = load_checkpoint(tmp_path / "w.pt")
    assert torch.equal(model.visual.proj, sd["visual.proj"])


# ----------------------------------------------------------------------------- Long-CLIP


def test_longclip_checkpoint_gets_fresh_pose_branch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sd = random_state_dict(reference_layout(SMALL, kind="longclip"))
    path = tmp_path / "longclip-B.pt"
    torch.save(sd, path)
    assert M.detect_format(path) == "longclip"
    with caplog.at_level(logging.WARNING, logger="spartan_train.model.checkpoint"):
        model = load_checkpoint(path)
    assert "freshly initialised" in caplog.text and str(path) in caplog.text
    assert not model.pose_branch_trained and model.source_format == "longclip"
    assert model.config.mode == "reference" and model.config.use_fft
    # longclip.load goes through an fp16 model: Linear/Conv/in_proj/projections are rounded ...
    assert torch.equal(model.visual.proj, sd["visual.proj"].half().float())
    assert torch.equal(model.visual.conv1.weight, sd["visual.conv1.weight"].half().float())
    w = "transformer.resblocks.1.attn.in_proj_weight"
    assert torch.equal(model.state_dict()[w], sd[w].half().float())
    assert not torch.equal(model.visual.proj, sd["visual.proj"])
    # ... LayerNorms, embeddings and positional tables are not
    for key in ("ln_final.weight", "token_embedding.weight", "positional_embedding_res",
                "visual.class_embedding", "visual.positional_embedding"):  # fmt: skip
        assert torch.equal(model.state_dict()[key], sd[key]), key
    ta = model.temporal_attention
    assert torch.count_nonzero(ta.positional_encoding) == 0
    assert torch.count_nonzero(model.projection.bias) == 0


def test_round_like_reference_fp16_touches_only_converted_weights() -> None:
    model = M.build_model("tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    round_like_reference_fp16(model)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "visual.conv1.weight" in changed and "text_projection" in changed
    assert "temporal_attention.input_projection.weight" in changed
    assert "temporal_attention.transformer_encoder.layers.0.self_attn.in_proj_weight" in changed
    assert not any("ln_" in k or "norm" in k or "embedding" in k for k in changed)
    assert "logit_scale" not in changed


# ----------------------------------------------------------------------------- OpenAI CLIP


def _stretch_oracle(old: torch.Tensor) -> torch.Tensor:
    """docs/model.md 2.2 row by row, in fp16, each product / quotient / sum rounded in order."""
    a = old.half()
    new = torch.zeros(248, a.shape[1], dtype=torch.float16)
    for p in range(20):
        new[p] = a[p]
    for i in range(56):
        lo, hi = a[20 + i], a[21 + i]
        new[20 + 4 * i] = lo
        for r in (1, 2, 3):
            new[20 + 4 * i + r] = ((4 - r) * lo) / 4 + (r * hi) / 4
    for r in range(4):
        new[244 + r] = a[76] + (r * (a[76] - a[75])) / 4
    return new.float()


def test_positional_stretch() -> None:
    g = torch.Generator().manual_seed(0)
    old = (0.02 * torch.randn(77, 512, generator=g)).half().float()
    new = M.stretch_positional_embedding(old)
    assert new.shape == (248, 512) and new.dtype == torch.float32
    assert torch.equal(new[:20], old[:20])
    assert torch.equal(new[20:244:4], old[20:76])  # every 4th row is an original row
    assert torch.equal(new[244], old[76])
    torch.testing.assert_close(new, _stretch_oracle(old), rtol=0, atol=0)  # bit for bit
    # the maths in float64: interpolation inside, linear extrapolation for the last 4 rows
    o = old.double()
    for i, r in ((0, 1), (10, 2), (55, 3)):
        exact = ((4 - r) * o[20 + i] + r * o[21 + i]) / 4
        torch.testing.assert_close(new[20 + 4 * i + r].double(), exact, rtol=0, atol=6e-5)
    for r in range(4):
        exact = o[76] + r * (o[76] - o[75]) / 4
        torch.testing.assert_close(new[244 + r].double(), exact, rtol=0, atol=6e-5)
    # fp16 arithmetic really differs from fp32 somewhere (so the op order matters)
    fp32 = ((3 * o[20:75] + o[21:76]) / 4).float()
    assert not torch.equal(new[21:241:4], fp32)


@pytest.mark.parametrize("container", ["torchscript", "state_dict"])
def test_openai_checkpoint_is_stretched(tmp_path: Path, container: str) -> None:
    sd = openai_state_dict()
    path = tmp_path / "ViT-B-16.pt"
    if container == "torchscript":
        save_torchscript(sd, path)
        assert any("/code/" in n for n in zipfile.ZipFile(path).namelist())
    else:
        torch.save(sd, path)
    assert M.detect_format(path) == "openai"
    model = load_checkpoint(path)
    assert model.source_format == "openai" and not model.pose_branch_trained
    assert model.config.mode == "reference" and model.image_resolution == 32
    pe = model.positional_embedding
    assert pe.shape == (248, 128) and not pe.requires_grad
    assert torch.equal(pe, _stretch_oracle(sd["positional_embedding"].float()))
    assert torch.equal(model.positional_embedding_res, pe)
    assert model.positional_embedding_res.requires_grad
    assert torch.equal(model.visual.proj, sd["visual.proj"].float())
    tokens, poses = tokens_and_poses()
    with torch.no_grad():
        assert model.encode_text(tokens, poses).shape == (3, 64)


def test_openai_wrong_context_is_rejected(tmp_path: Path) -> None:
    sd = openai_state_dict()
    sd["positional_embedding"] = sd["positional_embedding"][:50]
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"positional_embedding.*50 rows"):
        load_checkpoint(tmp_path / "bad.pt")


# ----------------------------------------------------------------------------- our format


@pytest.mark.parametrize("mode", ["reference", "corrected"])
def test_our_format_round_trip_is_bit_identical(tmp_path: Path, mode: str) -> None:
    torch.save(random_state_dict(reference_layout(SMALL)), tmp_path / "s.pt")
    model = load_checkpoint(tmp_path / "s.pt", mode=mode, pose_convention="heading")
    out = save_checkpoint(model, tmp_path / "ours")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((out / "config.json").read_text())
    assert meta["format"] == "spartan_ros.model" and meta["format_version"] == 1
    assert meta["config"]["mode"] == mode and meta["config"]["pose_convention"] == "heading"
    assert M.detect_format(out) == "spartan_ros"
    tokens, poses = tokens_and_poses()
    frames = torch.randn(2, 4, 3, 32, 32)
    for target in (out, out / "model.safetensors"):
        again = load_checkpoint(target)
        assert again.config == model.config and again.source_format == "spartan"
        with torch.no_grad():
            assert torch.equal(again.encode_text(tokens, poses), model.encode_text(tokens, poses))
            assert torch.equal(again.encode_video(frames), model.encode_video(frames))
    # the mode stored in the file is used; an explicit override wins
    assert load_checkpoint(out, mode="reference").config.mode == "reference"


def test_our_format_keeps_untrained_pose_flag_and_tiny(tmp_path: Path) -> None:
    torch.save(random_state_dict(reference_layout(SMALL, kind="longclip")), tmp_path / "l.pt")
    out = save_checkpoint(load_checkpoint(tmp_path / "l.pt"), tmp_path / "ours")
    again = load_checkpoint(out)
    assert not again.pose_branch_trained and again.source_format == "longclip"
    tiny = M.build_model("tiny")
    loaded = load_checkpoint(save_checkpoint(tiny, tmp_path / "tiny"))
    assert loaded.config == tiny.config and loaded.source_format == "fresh"
    assert not loaded.positional_embedding.requires_grad


def test_sha256(tmp_path: Path) -> None:
    path = tmp_path / "s.pt"
    torch.save(random_state_dict(reference_layout(SMALL)), path)
    assert M.sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    out = save_checkpoint(M.build_model("tiny"), tmp_path / "ours")
    both = (out / "model.safetensors").read_bytes() + (out / "config.json").read_bytes()
    assert M.sha256(out) == hashlib.sha256(both).hexdigest()
    with pytest.raises(CheckpointError):
        M.sha256(tmp_path / "missing.pt")


# ----------------------------------------------------------------------------- error paths


def _spartan_file(tmp_path: Path, edit=None) -> Path:  # type: ignore[no-untyped-def]
    sd = random_state_dict(reference_layout(SMALL))
    if edit:
        edit(sd)
    path = tmp_path / "ckpt.pt"
    torch.save(sd, path)
    return path


def test_missing_unexpected_and_misshapen_keys(tmp_path: Path) -> None:
    key = "transformer.resblocks.1.mlp.c_fc.bias"
    path = _spartan_file(tmp_path, lambda sd: sd.pop(key))
    with pytest.raises(CheckpointError, match=rf"{path}.*missing key '{key}'"):
        load_checkpoint(path)
    path = _spartan_file(tmp_path, lambda sd: sd.update({"visual.extra_gain": torch.ones(3)}))
    with pytest.raises(CheckpointError, match=rf"{path}.*unexpected key 'visual.extra_gain'"):
        load_checkpoint(path)
    path = _spartan_file(tmp_path, lambda sd: sd.update({"ln_final.bias": torch.zeros(127)}))
    with pytest.raises(
        CheckpointError, match=r"key 'ln_final.bias' has shape \[127\], expected \[128\]"
    ):
        load_checkpoint(path)
    key = "projection.bias"  # a SPARTAN file must have the whole pose branch
    path = _spartan_file(tmp_path, lambda sd: sd.pop(key))
    with pytest.raises(CheckpointError, match=f"missing key '{key}'"):
        load_checkpoint(path)
    path = _spartan_file(
        tmp_path,
        lambda sd: sd.update({"temporal_attention.input_projection.weight": torch.zeros(128, 16)}),
    )
    with pytest.raises(CheckpointError, match="16 input columns"):
        load_checkpoint(path)
    path = _spartan_file(tmp_path, lambda sd: sd["visual.proj"].__setitem__((0, 0), float("nan")))
    with pytest.raises(CheckpointError, match="'visual.proj' contains NaN"):
        load_checkpoint(path)
    path = _spartan_file(tmp_path, lambda sd: sd.pop("text_projection"))
    with pytest.raises(CheckpointError, match="missing key 'text_projection'"):
        load_checkpoint(path)
    # a Long-CLIP file with a stray key
    sd = random_state_dict(reference_layout(SMALL, kind="longclip"))
    sd["visual.ln_mid.weight"] = torch.ones(128)
    torch.save(sd, tmp_path / "lc.pt")
    with pytest.raises(CheckpointError, match="unexpected key 'visual.ln_mid.weight'"):
        load_checkpoint(tmp_path / "lc.pt")


def test_unreadable_files(tmp_path: Path) -> None:
    good = _spartan_file(tmp_path)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
                        .to(torch.uint8).numpy().tobytes())  # fmt: skip
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path in (truncated, garbage, empty, tmp_path / "absent.pt"):
        with pytest.raises(CheckpointError, match=str(path)):
            load_checkpoint(path)
    assert issubclass(CheckpointError, ValueError)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    torch.save({"weights": torch.ones(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a CLIP"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"visual.proj": 3}, tmp_path / "int.pt")
    with pytest.raises(CheckpointError, match="'visual.proj' holds a int"):
        load_checkpoint(tmp_path / "int.pt")
    torch.save([torch.ones(2)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "list.pt")
    # arbitrary pickled objects are refused, never executed
    torch.save({"visual.proj": _Payload()}, tmp_path / "object.pt")
    with pytest.raises(CheckpointError, match="cannot read as a torch checkpoint"):
        load_checkpoint(tmp_path / "object.pt")
    # ResNet CLIP
    torch.save({"visual.layer1.0.conv1.weight": torch.ones(1), "text_projection": torch.ones(2, 2)},
               tmp_path / "rn.pt")  # fmt: skip
    with pytest.raises(CheckpointError, match="ResNet"):
        load_checkpoint(tmp_path / "rn.pt")


def test_bad_zip_archives(tmp_path: Path) -> None:
    empty = tmp_path / "nothing.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "no weights here")
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_checkpoint(empty)
    good = _spartan_file(tmp_path)
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as zf:
        zf.write(good, "a.pt")
        zf.write(good, "b.pt")
    with pytest.raises(CheckpointError, match="several checkpoint files"):
        load_checkpoint(two)


def test_bad_our_format(tmp_path: Path) -> None:
    out = save_checkpoint(
        M.build_model(M.get_config("tiny").replace(vision_layers=1)), tmp_path / "o"
    )
    weights, config = out / "model.safetensors", out / "config.json"
    meta = json.loads(config.read_text())

    def write(m: dict) -> None:  # type: ignore[type-arg]
        config.write_text(json.dumps(m))

    write({**meta, "format_version": 99})
    with pytest.raises(CheckpointError, match="format_version"):
        load_checkpoint(out)
    write({**meta, "config": {**meta["config"], "mode": "fast"}})
    with pytest.raises(CheckpointError, match=r"config.json.*'config' is invalid.*mode"):
        load_checkpoint(out)
    write({**meta, "config": {**meta["config"], "vision_layers": 2}})
    with pytest.raises(CheckpointError, match="missing key 'visual.transformer.resblocks.1"):
        load_checkpoint(out)
    config.write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable config"):
        load_checkpoint(out)
    write(meta)
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="cannot read safetensors"):
        load_checkpoint(out)
    weights.unlink()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(out)


# ----------------------------------------------------------------------------- full size


@pytest.mark.slow
def test_full_size_b16_spartan_checkpoint(tmp_path: Path) -> None:
    """B/16 shapes in the reference layout: load, then one 24-frame clip at 224 and one text."""
    path = tmp_path / "9-0.972-longclip.pt"
    torch.save(random_state_dict(reference_layout(B16)), path)
    tokens, poses = tokens_and_poses(1)
    start = time.perf_counter()
    model = load_checkpoint(path)
    loaded = time.perf_counter()
    with torch.no_grad():
        video = model.encode_video(torch.randn(1, 24, 3, 224, 224))
        query = model.encode_text(tokens, poses)
    done = time.perf_counter()
    print(f"\nB/16: load {loaded - start:.1f} s, 24-frame clip + 1 text {done - loaded:.1f} s")
    assert model.image_resolution == 224 and model.embed_dim == 512 and model.config.use_fft
    assert video.shape == (1, 512) and query.shape == (1, 512)
    assert torch.isfinite(video).all() and torch.isfinite(query).all()
