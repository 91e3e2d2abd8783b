"""Model configuration: one plain dataclass plus the named configurations.

Sizes follow docs/model.md sections 1.1, 2 and 5.3. ``mode`` selects how the pose branch computes
(see ``pose.py``); ``pose_convention`` records how the poses fed to ``encode_pose`` were made
relative (the conversion itself lives in ``spartan_ros.poses``, the model takes relative poses).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from spartan_ros.preprocess import FITS

MODES = ("reference", "corrected")
POSE_CONVENTIONS = ("reference", "heading")

# Long-CLIP's text context: 4 * 77 - 3 * 20 (docs/model.md 2.2). The forward pass needs exactly
# this.
CONTEXT_LENGTH = 248
# Positions below this use `positional_embedding`, the rest `positional_embedding_res`
# (docs/model.md 2.1).
KEEP_POSITIONS = 20
# CLIP heads are always 64 wide (docs/model.md 1.1, 1.4).
HEAD_WIDTH = 64


@dataclass
class ModelConfig:
    # joint embedding
    embed_dim: int = 512
    # image tower (ViT)
    image_resolution: int = 224
    image_fit: str = "crop"  # how a frame becomes square (spartan_ros.preprocess.FITS)
    vision_patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    # text tower (Long-CLIP)
    context_length: int = CONTEXT_LENGTH
    vocab_size: int = 49408
    text_width: int = 512
    text_layers: int = 12
    # pose branch (`temporal_attention`, docs/model.md 5.3)
    use_fft: bool = True
    pose_width: int = 128
    pose_layers: int = 4
    pose_heads: int = 8
    pose_max_len: int = 5000
    pose_dropout: float = 0.1
    num_frames: int = 24
    # behaviour
    mode: str = "reference"
    pose_convention: str = "reference"

    def __post_init__(self) -> None:
        self.validate()

    @property
    def vision_heads(self) -> int:
        return self.vision_width // HEAD_WIDTH

    @property
    def text_heads(self) -> int:
        return self.text_width // HEAD_WIDTH

    @property
    def pose_input_dim(self) -> int:
        # raw pose (8) | Re FFT (8) | Im FFT (8) with FFT features, raw pose only without
        return 24 if self.use_fft else 8

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"ModelConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.pose_convention not in POSE_CONVENTIONS:
            raise ValueError(
                f"ModelConfig.pose_convention must be one of {POSE_CONVENTIONS}, "
                f"got {self.pose_convention!r}"
            )
        if self.image_fit not in FITS:
            raise ValueError(f"ModelConfig.image_fit must be one of {FITS}, got {self.image_fit!r}")
        if self.context_length != CONTEXT_LENGTH:
            raise ValueError(
                f"ModelConfig.context_length must be {CONTEXT_LENGTH} (Long-CLIP), "
                f"got {self.context_length}"
            )
        positive = (
            "embed_dim",
            "image_resolution",
            "vision_patch_size",
            "vision_width",
            "vision_layers",
            "vocab_size",
            "text_width",
            "text_layers",
            "pose_width",
            "pose_layers",
            "pose_heads",
            "pose_max_len",
            "num_frames",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.image_resolution % self.vision_patch_size:
            raise ValueError(
                f"ModelConfig.image_resolution ({self.image_resolution}) must be a multiple of "
                f"vision_patch_size ({self.vision_patch_size})"
            )
        for name in ("vision_width", "text_width"):
            if getattr(self, name) % HEAD_WIDTH:
                raise ValueError(f"ModelConfig.{name} must be a multiple of {HEAD_WIDTH}")
        if self.pose_width % self.pose_heads:
            raise ValueError("ModelConfig.pose_width must be a multiple of pose_heads")
        if self.num_frames > self.pose_max_len:
            raise ValueError("ModelConfig.num_frames must not exceed pose_max_len")
        if not 0.0 <= self.pose_dropout < 1.0:
            raise ValueError(f"ModelConfig.pose_dropout must be in [0, 1), got {self.pose_dropout}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """From a dict (e.g. config.json): unknown fields are an error, missing ones default."""
        if not isinstance(data, dict):
            raise ValueError(f"model config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config field(s): {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


# `tiny` trains on a 2-core CPU in minutes: 64 px images in 8 px patches (8x8 grid + class token),
# 4-layer 128-wide towers, 128-d joint space. The pose branch keeps the reference width (128,
# 8 heads) but uses 2 layers: it is cheap either way and a shallower encoder fits small data better.
CONFIGS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(
        embed_dim=128,
        image_resolution=64,
        vision_patch_size=8,
        vision_width=128,
        vision_layers=4,
        text_width=128,
        text_layers=4,
        pose_layers=2,
    ),
    "B/16": ModelConfig(),
    "L/14": ModelConfig(
        embed_dim=768,
        image_resolution=224,
        vision_patch_size=14,
        vision_width=1024,
        vision_layers=24,
        text_width=768,
        text_layers=12,
    ),
}


def get_config(name: str) -> ModelConfig:
    """A fresh copy of a named configuration (`tiny`, `B/16`, `L/14`)."""
    key = name.replace("ViT-", "")
    if key not in CONFIGS:
        raise ValueError(f"unknown model name {name!r}; choose one of {sorted(CONFIGS)}")
    return CONFIGS[key].replace()  # a new instance: callers may edit it freely
