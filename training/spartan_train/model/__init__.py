"""PyTorch SPARTAN / Long-CLIP model and its checkpoints (see docs/model.md)."""

from .checkpoint import (
    FORMATS,
    CheckpointError,
    detect_format,
    infer_config,
    load_checkpoint,
    read_state_dict,
    save_checkpoint,
    sha256,
    stretch_positional_embedding,
)
from .config import CONFIGS, MODES, POSE_CONVENTIONS, ModelConfig, get_config
from .spartan import SpartanModel, build_model

__all__ = [
    "CONFIGS",
    "FORMATS",
    "MODES",
    "POSE_CONVENTIONS",
    "CheckpointError",
    "ModelConfig",
    "SpartanModel",
    "build_model",
    "detect_format",
    "get_config",
    "infer_config",
    "load_checkpoint",
    "read_state_dict",
    "save_checkpoint",
    "sha256",
    "stretch_positional_embedding",
]
