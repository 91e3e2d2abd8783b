"""Learning-rate schedule: linear warm-up then cosine decay, set per step (docs/model.md 8.1).

step < warmup:  lr = base * (step + 1) / warmup
otherwise:      lr = base * 0.5 * (1 + cos(pi * (step - warmup) / (total - warmup)))

``step`` counts optimizer steps from 0 and ``total`` is the number of steps of the whole run. The
schedule is a pure function of the step, so resuming needs only the step (and these three numbers).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch


def lr_at(step: int, base_lr: float, warmup: int, total: int) -> float:
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup:
        return base_lr * (step + 1) / warmup
    # past the end (or no room for decay) the cosine is clamped at its final value, 0
    span = max(total - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress)) * base_lr


@dataclass
class WarmupCosine:
    base_lr: float
    warmup: int
    total: int

    def __post_init__(self) -> None:
        if self.base_lr < 0 or self.warmup < 0 or self.total < 1:
            raise ValueError(
                f"bad schedule: base_lr={self.base_lr}, warmup={self.warmup}, total={self.total}"
            )

    def lr(self, step: int) -> float:
        return lr_at(step, self.base_lr, self.warmup, self.total)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set the learning rate of every parameter group for ``step``; returns it."""
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lr = float(state["base_lr"])
        self.warmup = int(state["warmup"])
        self.total = int(state["total"])
