"""SpartanModel: shapes, named configs, init rules, modes, and independent oracles.

Oracles: OpenAI's own CLIP model code (PyPI clip-anytorch==2.6.0, module file loaded on its own
because the package __init__ imports torchvision) for the image and text towers; torch's
nn.TransformerEncoder fed exactly as docs/model.md 5.3 describes, and torch.fft.rfft, for the pose
branch.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import spartan_train.model as M
import torch
from spartan_train.model import ModelConfig, SpartanModel, build_model
from spartan_train.model.pose import fft_features
from torch import nn

SMALL = ModelConfig(
    embed_dim=64,
    image_resolution=32,
    vision_patch_size=8,
    vision_width=128,
    vision_layers=2,
    text_width=128,
    text_layers=2,
)


def small_model(**changes: object) -> SpartanModel:
    torch.manual_seed(0)
    model = build_model(SMALL.replace(**changes))
    randomize(model)
    return model.eval()


def randomize(model: nn.Module, seed: int = 0) -> None:
    """Every parameter random (also the ones a fresh init leaves zero or one)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                continue
            noise = torch.randn(p.shape, generator=g)
            if p.dim() == 1 and "weight" in name:  # LayerNorm gains
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(noise / math.sqrt(p.shape[-1] if p.dim() > 1 else 64))


def make_tokens(lengths: list[int], ctx: int = 248, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(len(lengths), ctx, dtype=torch.long)
    for b, n in enumerate(lengths):
        tokens[b, 0] = 49406
        tokens[b, 1:n] = torch.randint(1, 49406, (n - 1,), generator=g)
        tokens[b, n] = 49407
    return tokens


def make_poses(batch: int, frames: int = 24, seed: int = 0) -> torch.Tensor:
    """Relative poses as the reference feeds them: t, xyz from 0, absolute quaternion, fp16."""
    g = torch.Generator().manual_seed(seed)
    p = torch.zeros(batch, frames, 8)
    p[..., 0] = torch.arange(frames) * 0.1
    p[..., 1:4] = torch.cumsum(torch.randn(batch, frames, 3, generator=g), dim=1)
    q = torch.nn.functional.normalize(torch.randn(batch, 1, 4, generator=g), dim=-1)
    p[..., 4:] = q + 0.01 * torch.randn(batch, frames, 4, generator=g)
    p[..., :4] -= p[:, :1, :4].clone()
    return p.half().float()


# ----------------------------------------------------------------------------- configs and sizes


@pytest.mark.parametrize(
    "name, use_fft, keys, params",
    [
        ("B/16", True, 358, 151_862_401),
        ("B/16", False, 358, 151_860_353),
        ("L/14", True, 502, 430_654_081),
    ],
)
def test_named_config_sizes_match_spec(name: str, use_fft: bool, keys: int, params: int) -> None:
    with torch.device("meta"):  # sizes only, no memory
        model = build_model(M.get_config(name).replace(use_fft=use_fft))
    sd = model.state_dict()
    assert len(sd) == keys
    assert sum(t.numel() for t in sd.values()) == params
    text = sum(t.numel() for k, t in sd.items() if not k.startswith(("temporal", "projection")))
    if name == "B/16":
        assert text == 149_835_265  # Long-CLIP B/16 (docs/model.md 6)
        assert model.image_resolution == 224 and model.embed_dim == 512


def test_tiny_config_and_shapes() -> None:
    model = build_model("tiny").eval()
    cfg = model.config
    assert (cfg.image_resolution, cfg.vision_patch_size, cfg.vision_width) == (64, 8, 128)
    assert (cfg.text_width, cfg.text_layers, cfg.embed_dim, cfg.pose_width) == (128, 4, 128, 128)
    assert model.context_length == 248 and cfg.vocab_size == 49408
    assert cfg.mode == "reference" and cfg.pose_convention == "reference" and cfg.use_fft
    with torch.no_grad():
        assert model.encode_image(torch.randn(2, 3, 64, 64)).shape == (2, 128)
        assert model.encode_video(torch.randn(2, 3, 3, 64, 64)).shape == (2, 128)
        tokens, poses = make_tokens([5, 30]), make_poses(2)
        assert model.encode_text_features(tokens).shape == (2, 128)
        assert model.encode_pose(poses).shape == (2, 128)
        assert model.encode_text(tokens, poses).shape == (2, 128)


def test_config_validation_and_names() -> None:
    with pytest.raises(ValueError, match="mode"):
        ModelConfig(mode="fast")
    with pytest.raises(ValueError, match="pose_convention"):
        ModelConfig(pose_convention="enu")
    with pytest.raises(ValueError, match="context_length"):
        ModelConfig(context_length=77)
    with pytest.raises(ValueError, match="unknown model name"):
        build_model("B/32")
    with pytest.raises(ValueError, match="unknown model config field"):
        ModelConfig.from_dict({"embed_dim": 64, "colour": 1})
    assert M.get_config("ViT-L/14").vision_patch_size == 14
    cfg = M.get_config("tiny")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    cfg.embed_dim = 7  # a copy: the registry is untouched
    assert M.get_config("tiny").embed_dim == 128


def test_masks_are_not_in_state_dict_and_keys_are_reference_names() -> None:
    model = build_model("tiny")
    keys = set(model.state_dict())
    assert not any("mask" in k or "dft" in k for k in keys)
    for key in (
        "visual.conv1.weight",
        "visual.transformer.resblocks.0.attn.in_proj_weight",
        "visual.transformer.resblocks.3.mlp.c_proj.bias",
        "transformer.resblocks.0.ln_1.weight",
        "token_embedding.weight",
        "positional_embedding",
        "positional_embedding_res",
        "ln_final.bias",
        "text_projection",
        "logit_scale",
        "temporal_attention.positional_encoding",
        "temporal_attention.input_projection.weight",
        "temporal_attention.transformer_encoder.layers.1.self_attn.in_proj_bias",
        "temporal_attention.transformer_encoder.layers.1.norm2.weight",
        "temporal_attention.output_projection.bias",
        "projection.weight",
    ):
        assert key in keys, key
    assert model.temporal_attention.input_projection.weight.shape == (128, 24)
    assert build_model(SMALL.replace(use_fft=False)).state_dict()[
        "temporal_attention.input_projection.weight"
    ].shape == (128, 8)


# ----------------------------------------------------------------------------- init rules


def test_fresh_init_rules() -> None:
    torch.manual_seed(0)
    model = build_model(SMALL)
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert not model.positional_embedding.requires_grad
    assert model.positional_embedding_res.requires_grad
    assert torch.equal(model.positional_embedding, model.positional_embedding_res)
    assert model.positional_embedding.std().item() == pytest.approx(0.01, rel=0.1)
    assert model.token_embedding.weight.std().item() == pytest.approx(0.02, rel=0.05)
    ta = model.temporal_attention
    assert torch.count_nonzero(ta.positional_encoding) == 0
    for lin in (ta.input_projection, ta.output_projection, model.projection):
        assert torch.count_nonzero(lin.bias) == 0
        assert lin.weight.std().item() == pytest.approx(0.02, rel=0.2)
    layers = ta.transformer_encoder.layer_list()
    # reference: the deep-copied encoder layer gives every layer the same in_proj_weight
    first = layers[0].self_attn.in_proj_weight
    assert all(torch.equal(first, layer.self_attn.in_proj_weight) for layer in layers)
    assert torch.count_nonzero(layers[0].linear1.bias) == 0
    assert torch.equal(layers[0].norm1.weight, torch.ones(128))
    corrected = build_model(SMALL.replace(mode="corrected")).temporal_attention
    c_layers = corrected.transformer_encoder.layer_list()
    assert not torch.equal(
        c_layers[0].self_attn.in_proj_weight, c_layers[1].self_attn.in_proj_weight
    )


# ----------------------------------------------------------------------------- behaviour


def test_deterministic_and_video_is_mean_of_frames() -> None:
    model = small_model()
    frames = torch.randn(2, 5, 3, 32, 32)
    with torch.no_grad():
        a = model.encode_video(frames)
        b = model.encode_video(frames)
        per_frame = model.encode_image(frames.flatten(0, 1)).view(2, 5, -1).mean(1)
        tokens, poses = make_tokens([9, 120]), make_poses(2)
        q1, q2 = model.encode_text(tokens, poses), model.encode_text(tokens, poses)
    assert torch.equal(a, b) and torch.equal(q1, q2)
    torch.testing.assert_close(a, per_frame, rtol=0, atol=1e-6)


def test_encode_text_is_fuse_of_text_and_pose_features() -> None:
    model = small_model()
    tokens, poses = make_tokens([3, 50, 247]), make_poses(3)
    with torch.no_grad():
        t = model.encode_text_features(tokens)
        p = model.encode_pose(poses)
        q = model.encode_text(tokens, poses)
        w, b = model.projection.weight, model.projection.bias
        manual = t @ w[:, :64].T + p @ w[:, 64:].T + b
    torch.testing.assert_close(q, model.fuse(t, p), rtol=0, atol=0)
    torch.testing.assert_close(q, manual, rtol=1e-5, atol=1e-5)


def test_text_uses_both_positional_tables_and_ignores_tokens_after_eot() -> None:
    model = small_model()
    tokens = make_tokens([30])
    with torch.no_grad():
        base = model.encode_text_features(tokens)
        # padding after EOT cannot reach the EOT state through the causal mask
        padded = tokens.clone()
        padded[0, 31:] = 7
        torch.testing.assert_close(model.encode_text_features(padded), base, rtol=0, atol=1e-6)
        # rows >= 20 of positional_embedding and rows < 20 of _res are unused
        model.positional_embedding[20:] += 1.0
        model.positional_embedding_res[:20] += 1.0
        torch.testing.assert_close(model.encode_text_features(tokens), base, rtol=0, atol=0)
        model.positional_embedding_res[25] += 1.0
        assert not torch.allclose(model.encode_text_features(tokens), base)
    table = model.positional_table()
    assert torch.equal(table[:20], model.positional_embedding[:20])
    assert torch.equal(table[20:], model.positional_embedding_res[20:])


def test_shape_errors_are_clear() -> None:
    model = small_model()
    with pytest.raises(ValueError, match=r"images must have shape \[\*, 3, 32, 32\]"):
        model.encode_image(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="tokens must have shape"):
        model.encode_text_features(torch.zeros(1, 77, dtype=torch.long))
    with pytest.raises(ValueError, match="poses must have shape"):
        model.encode_pose(torch.zeros(1, 24, 7))
    with pytest.raises(ValueError, match="same batch size"):
        model.encode_text(make_tokens([5, 6]), make_poses(3))
    with pytest.raises(ValueError, match="mode"):
        model.set_mode("fast")


# ----------------------------------------------------------------------------- modes (Q1, Q2)


def test_reference_mode_pose_depends_on_batch_corrected_does_not() -> None:
    poses = make_poses(4, seed=1)
    other = poses.clone()
    other[1:] = make_poses(3, seed=2)
    for mode in ("reference", "corrected"):
        model = small_model(mode=mode)
        with torch.no_grad():
            a = model.encode_pose(poses)[0]
            b = model.encode_pose(other)[0]
            alone = model.encode_pose(poses[:1])[0]
        if mode == "reference":
            assert (a - b).abs().max() > 1e-3
            assert (a - alone).abs().max() > 1e-3
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=2e-6)
            torch.testing.assert_close(a, alone, rtol=0, atol=2e-6)


def test_set_mode_switches_pose_computation_with_same_weights() -> None:
    model = small_model()
    poses = make_poses(3)
    with torch.no_grad():
        ref = model.encode_pose(poses)
        model.set_mode("corrected")
        assert model.config.mode == "corrected"
        cor = model.encode_pose(poses)
        model.set_mode("reference")
        again = model.encode_pose(poses)
    assert not torch.allclose(ref, cor)
    assert torch.equal(ref, again)


def test_fft_features_match_torch_rfft_oracle() -> None:
    poses = make_poses(5) * torch.tensor([1, 30, 30, 3, 1, 1, 1, 1])  # metres-scale motion
    ta = small_model().temporal_attention
    ours = fft_features(poses, ta.dft_cos, ta.dft_sin, per_sample=False)
    # docs/model.md 5.2 step by step: rfft over time, [Re | Im], zero rows to T, global mean / std
    f = torch.fft.rfft(poses.double(), dim=1)
    g = torch.cat([f.real, f.imag], dim=2)
    g = torch.cat([g, torch.zeros(5, 24 - 13, 16, dtype=g.dtype)], dim=1)
    oracle = (g - g.mean()) / g.std(unbiased=True)
    torch.testing.assert_close(ours.double(), oracle, rtol=0, atol=2e-6)
    # corrected: per sample over the 13 real bins, padding rows zero
    per = fft_features(poses, ta.dft_cos, ta.dft_sin, per_sample=True)
    assert torch.count_nonzero(per[:, 13:]) == 0
    real = per[:, :13].double()
    zeros, ones = torch.zeros(5, dtype=torch.double), torch.ones(5, dtype=torch.double)
    torch.testing.assert_close(real.mean(dim=(1, 2)), zeros, rtol=0, atol=1e-6)
    torch.testing.assert_close(real.std(dim=(1, 2), unbiased=False), ones, rtol=0, atol=1e-4)


def _torch_reference_pose(model: SpartanModel, poses: torch.Tensor) -> torch.Tensor:
    """docs/model.md 5.3 built from torch's own modules: nn.TransformerEncoder(batch_first=True)
    fed a [T, B, C] tensor, input = [raw | normalised rfft features], mean over positions."""
    ta = model.temporal_attention
    cfg = model.config
    layer = nn.TransformerEncoderLayer(cfg.pose_width, cfg.pose_heads, 4 * cfg.pose_width,
                                       dropout=0.1, batch_first=True)  # fmt: skip
    encoder = nn.TransformerEncoder(layer, cfg.pose_layers, enable_nested_tensor=False).eval()
    encoder.load_state_dict(
        {k: v for k, v in ta.transformer_encoder.state_dict().items()}, strict=True
    )
    f = torch.fft.rfft(poses.float(), dim=1)
    g = torch.cat([f.real, f.imag], dim=2)
    g = torch.nn.functional.pad(g, (0, 0, 0, poses.shape[1] - g.shape[1]))
    g = (g - g.mean()) / g.std()
    x = ta.input_projection(torch.cat([poses, g], dim=2)) + ta.positional_encoding[:, :24]
    x = encoder(x.permute(1, 0, 2)).permute(1, 0, 2)
    return ta.output_projection(x.mean(dim=1))


def test_reference_pose_branch_matches_torch_transformer_encoder() -> None:
    model = small_model()
    poses = make_poses(6, seed=3)
    with torch.no_grad():
        oracle = _torch_reference_pose(model, poses)
        ours = model.encode_pose(poses)
        oracle1 = _torch_reference_pose(model, poses[:2])
        ours1 = model.encode_pose(poses[:2])
    torch.testing.assert_close(ours, oracle, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours1, oracle1, rtol=0, atol=1e-5)


def test_training_mode_uses_pose_dropout() -> None:
    model = small_model().train()
    poses = make_poses(3)
    torch.manual_seed(1)
    a = model.encode_pose(poses)
    b = model.encode_pose(poses)
    assert not torch.allclose(a, b)
    a.sum().backward()
    assert model.temporal_attention.input_projection.weight.grad is not None
    assert model.positional_embedding.grad is None  # frozen


# ----------------------------------------------------------------------------- OpenAI CLIP oracle


def _openai_clip_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.find_spec("clip")
    assert spec is not None and spec.origin, "dev dependency clip-anytorch==2.6.0 is missing"
    path = Path(spec.origin).with_name("model.py")
    mod_spec = importlib.util.spec_from_file_location("openai_clip_model", path)
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


def test_matches_openai_clip_code() -> None:
    clip_model = _openai_clip_module()
    torch.manual_seed(0)
    # OpenAI's CLIP with a 248-token context; our model then sees positional_embedding_res ==
    # positional_embedding, so both compute the same text tower.
    ref = clip_model.CLIP(64, 32, 2, 128, 8, 248, 49408, 128, 2, 2).eval()
    randomize(ref, seed=5)
    sd = dict(ref.state_dict())
    sd["positional_embedding_res"] = sd["positional_embedding"].clone()
    ours = build_model(SMALL)
    missing, unexpected = ours.load_state_dict(sd, strict=False)
    assert not unexpected
    assert all(k.startswith(("temporal_attention.", "projection.")) for k in missing)
    ours.eval()
    images = torch.randn(3, 3, 32, 32)
    tokens = make_tokens([4, 77, 200])
    with torch.no_grad():
        img_diff = (ours.encode_image(images) - ref.encode_image(images)).abs().max().item()
        txt_diff = (ours.encode_text_features(tokens) - ref.encode_text(tokens)).abs().max().item()
    assert img_diff <= 1e-5
    assert txt_diff <= 1e-5


# ----------------------------------------------------------------------------- export contract


def test_three_export_paths_trace_to_onnx(tmp_path: Path) -> None:
    """The exporter wraps visual, encode_text_features and encode_pose+fuse as separate graphs:
    they must trace without warnings and keep a dynamic batch axis (reference mode included)."""
    model = small_model()

    class Image(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m.visual(x)

    class Text(Image):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m.encode_text_features(x)

    class Query(Image):
        def forward(self, t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return self.m.fuse(t, self.m.encode_pose(p))

    cases = [
        (Image(), (torch.randn(2, 3, 32, 32),), (torch.randn(5, 3, 32, 32),)),
        (Text(), (make_tokens([3, 9]),), (make_tokens([4, 60, 5, 247, 10], seed=1),)),
        (Query(), (torch.randn(2, 64), make_poses(2)), (torch.randn(5, 64), make_poses(5, seed=4))),
    ]
    for i, (wrapper, example, probe) in enumerate(cases):
        wrapper.eval()
        names = [f"in{j}" for j in range(len(example))]
        path = tmp_path / f"g{i}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("error", torch.jit.TracerWarning)
            torch.onnx.export(wrapper, example, str(path), dynamo=False, opset_version=17,
                              input_names=names, output_names=["out"],
                              dynamic_axes={n: {0: "batch"} for n in names})  # fmt: skip
        wrapper.eval()  # export restores the wrapper's (training) mode on exit
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = session.run(None, {n: t.numpy() for n, t in zip(names, probe, strict=True)})[0]
        with torch.no_grad():
            expected = wrapper(*probe).numpy()
        assert np.abs(out - expected).max() <= 1e-4, f"graph {i}"
