"""Offline training (``spartan-train``): the contrastive loss, the LR schedule, the data path and
the trainer. Imports torch, so nothing on the runtime path imports this package."""

from spartan_train.train.loss import (
    LOSS_KINDS,
    LossConfig,
    LossParts,
    contrastive_loss,
    gather,
    pca,
)
from spartan_train.train.schedule import WarmupCosine, lr_at

__all__ = [
    "LOSS_KINDS",
    "LossConfig",
    "LossParts",
    "WarmupCosine",
    "contrastive_loss",
    "gather",
    "lr_at",
    "pca",
]
