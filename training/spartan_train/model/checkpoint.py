"""Checkpoint loading, saving and format detection.

Formats, detected from the file itself (docs/model.md 7):

- ``openai``: OpenAI CLIP (TorchScript archive or plain state dict, 77-row text positional table).
  The table is stretched to 248 rows with Long-CLIP's knowledge-preserving interpolation
  (docs/model.md 2.2); the pose branch and fusion are freshly initialised.
- ``longclip``: Long-CLIP state dict (248 rows, no pose keys); pose branch and fusion fresh.
- ``spartan``: SPARTAN training checkpoint (every key), possibly saved from CUDA, possibly inside a
  ``.zip`` that holds the ``.pt``.
- ``spartan_ros``: ours, a directory with ``model.safetensors`` + ``config.json``.

Reference files load in reference mode. Torch files are read with ``weights_only=True`` (tensors
only, never arbitrary objects); TorchScript archives with ``torch.jit.load``, which does not
unpickle Python objects either. Anything wrong gives a ``CheckpointError`` naming file and key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .clip import Attention
from .config import CONTEXT_LENGTH, KEEP_POSITIONS, ModelConfig
from .spartan import SpartanModel

log = logging.getLogger(__name__)

FORMAT_NAME = "spartan_ros.model"  # the on-disk format name (kept when the code moved)
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

FORMATS = ("openai", "longclip", "spartan", "spartan_ros")
# OpenAI TorchScript archives carry these non-weight entries (docs/model.md 1.4).
_JIT_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
_POSE_PREFIXES = ("temporal_attention.", "projection.")
# Keys every CLIP-family checkpoint has; they drive the size inference.
_CORE_KEYS = (
    "visual.conv1.weight",
    "visual.positional_embedding",
    "visual.proj",
    "text_projection",
    "token_embedding.weight",
    "ln_final.weight",
    "positional_embedding",
)
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
OPENAI_CONTEXT = 77


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, not a checkpoint, or does not fit the model."""


# --------------------------------------------------------------------------- hashing


def sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a checkpoint file. For our directory format: of model.safetensors followed
    by config.json (the mode in the config changes the outputs, so it is part of the identity)."""
    p = Path(path)
    files = [p / WEIGHTS_FILE, p / CONFIG_FILE] if p.is_dir() else [p]
    h = hashlib.sha256()
    for f in files:
        try:
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        except OSError as e:
            raise CheckpointError(f"{f}: cannot read ({e})") from e
    return h.hexdigest()


# --------------------------------------------------------------------------- reading raw tensors


def _ours_paths(p: Path) -> tuple[Path, Path] | None:
    """(weights, config) when `p` is our format (a directory, or its model.safetensors)."""
    if p.is_dir():
        return p / WEIGHTS_FILE, p / CONFIG_FILE
    if p.suffix == ".safetensors" and (p.parent / CONFIG_FILE).is_file():
        return p, p.parent / CONFIG_FILE
    return None


def _zip_names(p: Path) -> list[str] | None:
    if not zipfile.is_zipfile(p):
        return None
    try:
        with zipfile.ZipFile(p) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{p}: corrupt zip archive ({e})") from e


def _is_torchscript(names: list[str]) -> bool:
    return any("/code/" in n or n.endswith("constants.pkl") for n in names)


def _is_torch_archive(names: list[str]) -> bool:
    return any(n == "data.pkl" or n.endswith("/data.pkl") for n in names)


def _unwrap_state_dict(obj: Any, label: str) -> dict[str, torch.Tensor]:
    """The tensor dict inside what torch.load returned (plain, or under a 'state_dict'/'model' key;
    a DistributedDataParallel 'module.' prefix is removed)."""
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{label}: not a checkpoint (expected a state dict of tensors)")
    sd: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        if not isinstance(k, str):
            raise CheckpointError(f"{label}: not a state dict (key {k!r} is not a string)")
        if k in _JIT_EXTRA_KEYS:
            continue
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{label}: key {k!r} holds a {type(v).__name__}, not a tensor")
        sd[k] = v
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _torch_load(p: Path, label: str, mmap: bool) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # truncated, random bytes, pickled objects, ...
        raise CheckpointError(f"{label}: cannot read as a torch checkpoint ({e})") from e
    return _unwrap_state_dict(obj, label)


def _jit_load(p: Path, label: str) -> dict[str, torch.Tensor]:
    try:
        module = torch.jit.load(str(p), map_location="cpu")
    except Exception as e:
        raise CheckpointError(f"{label}: cannot read TorchScript archive ({e})") from e
    return _unwrap_state_dict(dict(module.state_dict()), label)


def _safetensors_load(p: Path, label: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{label}: cannot read safetensors file ({e})") from e


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Raw tensors of any supported checkpoint file, as stored (no conversion, no checks)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or directory")
    ours = _ours_paths(p)
    if ours is not None:
        if not ours[0].is_file():
            raise CheckpointError(f"{p}: directory has no {WEIGHTS_FILE}")
        return _safetensors_load(ours[0], str(ours[0]))
    if p.suffix == ".safetensors":
        return _safetensors_load(p, str(p))
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: empty file")
    names = _zip_names(p)
    if names is None:
        # legacy (non-zip) torch.save pickle, or not a checkpoint at all
        return _torch_load(p, str(p), mmap=False)
    if _is_torchscript(names):
        return _jit_load(p, str(p))
    if _is_torch_archive(names):
        return _torch_load(p, str(p), mmap=True)
    # an ordinary zip holding the checkpoint (e.g. SPARTAN's 9-0.972-longclip.zip)
    inner = [n for n in names if n.lower().endswith(_CHECKPOINT_SUFFIXES) and "__MACOSX" not in n]
    if len(inner) != 1:
        what = "no checkpoint file" if not inner else f"several checkpoint files {inner}"
        raise CheckpointError(
            f"{p}: zip archive holds {what} (expected one {_CHECKPOINT_SUFFIXES})"
        )
    with tempfile.TemporaryDirectory(prefix="spartan_ckpt_") as tmp:
        try:
            with zipfile.ZipFile(p) as zf:
                extracted = Path(zf.extract(inner[0], tmp))
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as e:
            raise CheckpointError(f"{p}: cannot extract {inner[0]!r} ({e})") from e
        sd = read_state_dict(extracted)
        # own the memory: nothing may point into the temporary file once it is gone
        return {k: v.clone() for k, v in sd.items()}


# --------------------------------------------------------------------------- format detection


def _classify(sd: dict[str, torch.Tensor], label: str) -> str:
    if not any(k in sd for k in _CORE_KEYS):
        raise CheckpointError(
            f"{label}: not a CLIP / Long-CLIP / SPARTAN checkpoint "
            f"(none of the keys {list(_CORE_KEYS)} present)"
        )
    if "visual.proj" not in sd and any(k.startswith("visual.layer1.") for k in sd):
        raise CheckpointError(f"{label}: ResNet CLIP checkpoints are not supported (ViT only)")
    for key in _CORE_KEYS:
        if key not in sd:
            raise CheckpointError(f"{label}: missing key {key!r}")
    if any(k.startswith(_POSE_PREFIXES) for k in sd):
        return "spartan"
    rows = sd["positional_embedding"].shape[0]
    if rows == CONTEXT_LENGTH or "positional_embedding_res" in sd:
        return "longclip"
    if rows == OPENAI_CONTEXT:
        return "openai"
    raise CheckpointError(
        f"{label}: key 'positional_embedding' has {rows} rows; expected "
        f"{OPENAI_CONTEXT} (OpenAI CLIP) or {CONTEXT_LENGTH} (Long-CLIP)"
    )


def detect_format(path: str | os.PathLike[str]) -> str:
    """One of FORMATS for a checkpoint path (reads the file)."""
    p = Path(path)
    if _ours_paths(p) is not None:
        return "spartan_ros"
    return _classify(read_state_dict(p), str(p))


# --------------------------------------------------------------------------- config inference


def _indices(sd: dict[str, torch.Tensor], prefix: str) -> set[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return {int(m.group(1)) for k in sd if (m := pattern.match(k))}


def _dim(sd: dict[str, torch.Tensor], key: str, ndim: int, label: str) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"{label}: missing key {key!r}")
    shape = tuple(sd[key].shape)
    if len(shape) != ndim:
        raise CheckpointError(f"{label}: key {key!r} has shape {list(shape)}, expected {ndim} dims")
    return shape


def infer_config(
    sd: dict[str, torch.Tensor], label: str = "checkpoint", **overrides: Any
) -> ModelConfig:
    """Model sizes from tensor shapes, as the reference's build_model does (docs/model.md 1.4), plus
    the pose branch: use_fft from input_projection's input width (24 = FFT, 8 = none)."""
    conv = _dim(sd, "visual.conv1.weight", 4, label)
    vpos = _dim(sd, "visual.positional_embedding", 2, label)
    grid = round(math.sqrt(vpos[0] - 1))
    if grid * grid + 1 != vpos[0]:
        raise CheckpointError(
            f"{label}: key 'visual.positional_embedding' has {vpos[0]} rows, "
            f"not a square grid plus a class token"
        )
    values: dict[str, Any] = dict(
        embed_dim=_dim(sd, "text_projection", 2, label)[1],
        image_resolution=conv[-1] * grid,
        vision_patch_size=conv[-1],
        vision_width=conv[0],
        vision_layers=sum(
            1 for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")
        ),
        vocab_size=_dim(sd, "token_embedding.weight", 2, label)[0],
        text_width=_dim(sd, "ln_final.weight", 1, label)[0],
        text_layers=len(_indices(sd, "transformer.resblocks.")),
        mode="reference",
    )
    key = "temporal_attention.input_projection.weight"
    if key in sd:
        width, inputs = _dim(sd, key, 2, label)
        if inputs not in (8, 24):
            raise CheckpointError(
                f"{label}: key {key!r} has {inputs} input columns; "
                f"expected 24 (FFT variant) or 8 (no FFT)"
            )
        values.update(
            use_fft=inputs == 24,
            pose_width=width,
            pose_layers=len(_indices(sd, "temporal_attention.transformer_encoder.layers.")),
        )
        pos_key = "temporal_attention.positional_encoding"
        if pos_key in sd:
            values["pose_max_len"] = _dim(sd, pos_key, 3, label)[1]
    values.update(overrides)
    try:
        return ModelConfig(**values)
    except ValueError as e:
        raise CheckpointError(f"{label}: unsupported model sizes ({e})") from e


# --------------------------------------------------------------------------- conversions


def stretch_positional_embedding(old: torch.Tensor, keep: int = KEEP_POSITIONS) -> torch.Tensor:
    """Long-CLIP's knowledge-preserving stretch of CLIP's [L, W] table to [4L - 3*keep, W].

    Rows < keep are copied; row keep + 4i + r interpolates old rows keep+i and keep+i+1 with
    weights (4-r)/4 and r/4; the last 4 rows extrapolate past the end. Done in float16 with the
    reference's operation order, so a conversion reproduces Long-CLIP's tables bit for bit
    (docs/model.md 2.2). Returns float32.
    """
    if old.dim() != 2 or old.shape[0] < keep + 2:
        raise ValueError(f"cannot stretch a positional table of shape {list(old.shape)}")
    a = old.detach().to(torch.float16)
    n = a.shape[0]
    new = torch.zeros(4 * n - 3 * keep, a.shape[1], dtype=torch.float16)
    new[:keep] = a[:keep]
    lo, hi = a[keep : n - 1], a[keep + 1 : n]
    rows = keep + 4 * torch.arange(n - 1 - keep)
    new[rows] = lo
    new[rows + 1] = 3 * lo / 4 + 1 * hi / 4
    new[rows + 2] = 2 * lo / 4 + 2 * hi / 4
    new[rows + 3] = 1 * lo / 4 + 3 * hi / 4
    last, step = a[n - 1], a[n - 1] - a[n - 2]
    for r in range(4):
        new[4 * n - 3 * keep - 4 + r] = last + r * step / 4
    return new.float()


def round_like_reference_fp16(model: SpartanModel) -> None:
    """Round the weights the reference's convert_weights holds in fp16 (docs/model.md 6.1).

    The reference's loaders for CLIP / Long-CLIP files build an fp16 model, load into it, then
    call .float(): Linear/Conv weights and biases, attention in_proj, text_projection and
    visual.proj pass through fp16; LayerNorms, embeddings and positional tables do not.
    """
    with torch.no_grad():
        params: list[torch.Tensor] = [model.text_projection, model.visual.proj]
        for m in model.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                params += [m.weight] + ([m.bias] if m.bias is not None else [])
            elif isinstance(m, Attention):
                params += [m.in_proj_weight, m.in_proj_bias]
        for t in params:
            t.copy_(t.half().float())


# --------------------------------------------------------------------------- strict loading


def _all_finite(t: torch.Tensor) -> bool:
    # min/max propagate NaN and expose +-Inf, and are much faster than isfinite(t).all()
    if t.numel() == 0:
        return True
    lo, hi = torch.aminmax(t.detach().reshape(-1))
    return math.isfinite(float(lo)) and math.isfinite(float(hi))


def skeleton(config: ModelConfig) -> SpartanModel:
    """A model with allocated but uninitialised parameters, for loading weights into: skips the
    random init (about 1.5 s for B/16). Constant buffers are computed as usual."""
    with torch.device("meta"):
        model = SpartanModel(config)
    model.to_empty(device="cpu")
    model.reset_buffers()
    return model


def _load_strict(model: SpartanModel, sd: dict[str, torch.Tensor], label: str) -> None:
    """load_state_dict(strict=True) after our own checks, which name the offending key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{label}: missing key {missing[0]!r}{more}")
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(f"{label}: unexpected key {unexpected[0]!r}{more}")
    for k, ref in expected.items():
        t = sd[k]
        if tuple(t.shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{label}: key {k!r} has shape {list(t.shape)}, expected {list(ref.shape)}"
            )
        if not t.is_floating_point():
            raise CheckpointError(f"{label}: key {k!r} has dtype {t.dtype}, expected floating")
        if not _all_finite(t):
            raise CheckpointError(f"{label}: key {k!r} contains NaN or Inf values")
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)


def _pose_state(model: SpartanModel) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.startswith(_POSE_PREFIXES)}


def _load_reference(sd: dict[str, torch.Tensor], label: str, **overrides: Any) -> SpartanModel:
    fmt = _classify(sd, label)
    sd = dict(sd)
    if fmt == "openai":
        stretched = stretch_positional_embedding(sd["positional_embedding"])
        sd["positional_embedding"] = stretched
        sd["positional_embedding_res"] = stretched.clone()
    if sd["positional_embedding"].shape[0] != CONTEXT_LENGTH:
        rows = sd["positional_embedding"].shape[0]
        raise CheckpointError(
            f"{label}: key 'positional_embedding' has {rows} rows, expected {CONTEXT_LENGTH}"
        )
    model = skeleton(infer_config(sd, label, **overrides))
    if fmt != "spartan":
        model.init_pose_branch()  # fresh pose branch + fusion (docs/model.md 5.5)
        sd.update(_pose_state(model))
    _load_strict(model, sd, label)
    if fmt != "spartan":
        # CLIP / Long-CLIP loaders go through an fp16 model (see round_like_reference_fp16)
        round_like_reference_fp16(model)
        model.pose_branch_trained = False
        log.warning(
            "%s: %s checkpoint has no pose branch; temporal_attention and projection are "
            "freshly initialised (train before using encode_text)",
            label,
            fmt,
        )
    model.source_format = fmt
    return model


def _read_config_json(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: missing (our checkpoint format needs it)") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable config ({e})") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path}: field 'format' is {meta.get('format')!r}, expected {FORMAT_NAME!r}"
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: field 'format_version' is {version!r}; this code reads "
            f"versions 1..{FORMAT_VERSION}"
        )
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path}: field 'config' is missing or not an object")
    return meta


def _load_ours(weights: Path, config_path: Path, **overrides: Any) -> SpartanModel:
    meta = _read_config_json(config_path)
    try:
        config = ModelConfig.from_dict(meta["config"]).replace(**overrides)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{config_path}: field 'config' is invalid ({e})") from e
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing (our checkpoint format needs it)")
    sd = _safetensors_load(weights, str(weights))
    model = skeleton(config)
    _load_strict(model, sd, str(weights))
    model.pose_branch_trained = bool(meta.get("pose_branch_trained", True))
    model.source_format = str(meta.get("source_format", "spartan_ros"))
    return model


def load_checkpoint(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    *,
    mode: str | None = None,
    pose_convention: str | None = None,
) -> SpartanModel:
    """Load any supported checkpoint as a float32 SpartanModel in eval mode.

    `mode` / `pose_convention` override what the file implies (reference files imply
    mode="reference", pose_convention="reference"; ours store both).
    """
    p = Path(path)
    overrides = {k: v for k, v in (("mode", mode), ("pose_convention", pose_convention)) if v}
    ours = _ours_paths(p)
    if ours is not None:
        model = _load_ours(ours[0], ours[1], **overrides)
    else:
        model = _load_reference(read_state_dict(p), str(p), **overrides)
    model.checkpoint_path = str(p)
    return model.float().eval().to(device)


# --------------------------------------------------------------------------- saving


def save_checkpoint(model: SpartanModel, out_dir: str | os.PathLike[str]) -> Path:
    """Write our format: out_dir/model.safetensors + out_dir/config.json. Returns out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "pose_branch_trained": bool(model.pose_branch_trained),
        "source_format": model.source_format,
    }
    # write next to the target, then rename: a crash never leaves a half-written checkpoint
    tmp_weights, tmp_config = out / f".{WEIGHTS_FILE}.tmp", out / f".{CONFIG_FILE}.tmp"
    header = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)}
    save_file(tensors, str(tmp_weights), metadata=header)
    tmp_config.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp_weights, out / WEIGHTS_FILE)
    os.replace(tmp_config, out / CONFIG_FILE)
    return out
