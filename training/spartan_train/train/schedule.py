"""Learning-rate schedules: linear warm-up then cosine decay, set per step (docs/model.md 8.1).

step < warmup:  lr = base * (step + 1) / warmup
otherwise:      lr = base * 0.5 * (1 + cos(pi * progress))

``WarmupCosine``: progress = (step - warmup) / (total - warmup), ``total`` the number of steps of
the whole run. It is a pure function of the step, so resuming needs only the step (and these
three numbers).

``ClockCosine``: progress is the share of a wall-clock budget used since warm-up ended, so a run
budgeted in minutes decays fully whatever the machine's speed (a step count fixed for one
machine stops half-way on a slower one and idles at lr 0 on a faster one). The trainer tells it
how much of the budget is used after every step (``advance``), the same value on every rank.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch


def cosine(base_lr: float, progress: float) -> float:
    """The cosine's value at ``progress``, clamped to [0, 1] (past the end it stays at 0)."""
    progress = min(max(progress, 0.0), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress)) * base_lr


def lr_at(step: int, base_lr: float, warmup: int, total: int) -> float:
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(total - warmup, 1)  # no room for decay: the cosine ends at once
    return cosine(base_lr, (step - warmup) / span)


class Schedule:
    """A learning rate per step, set on an optimizer."""

    def lr(self, step: int) -> float:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set the learning rate of every parameter group for ``step``; returns it."""
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr


@dataclass
class WarmupCosine(Schedule):
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

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") == "clock":
            raise ValueError("the checkpoint's schedule follows the clock, not a step count")
        self.base_lr = float(state["base_lr"])
        self.warmup = int(state["warmup"])
        self.total = int(state["total"])


@dataclass
class ClockCosine(Schedule):
    """Warm-up in steps, then a cosine over the rest of a wall-clock budget.

    ``used`` is the share of the budget used so far (0 at the start, 1 at the deadline);
    ``warm_end`` the share used when warm-up ended (the cosine starts there). A resumed run
    continues the cosine from the checkpoint's ``used`` and ends it at its own deadline.
    """

    base_lr: float
    warmup: int
    used: float = 0.0
    warm_end: float | None = None
    carried: float = 0.0  # ``used`` when this run started (a resume), else 0

    def __post_init__(self) -> None:
        if self.base_lr < 0 or self.warmup < 0:
            raise ValueError(f"bad schedule: base_lr={self.base_lr}, warmup={self.warmup}")

    def advance(self, share_of_this_run: float) -> None:
        """Record that this run has used ``share_of_this_run`` of its own budget."""
        share = min(max(share_of_this_run, 0.0), 1.0)
        self.used = self.carried + (1.0 - self.carried) * share

    def lr(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if step < self.warmup:
            return self.base_lr * (step + 1) / self.warmup
        if self.warm_end is None:
            self.warm_end = self.used
        span = max(1.0 - self.warm_end, 1e-9)
        return cosine(self.base_lr, (self.used - self.warm_end) / span)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "clock", "base_lr": self.base_lr, "warmup": self.warmup,
                "used": self.used, "warm_end": self.warm_end}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "clock":
            raise ValueError("the checkpoint's schedule counts steps, not the clock")
        self.base_lr = float(state["base_lr"])
        self.warmup = int(state["warmup"])
        self.used = self.carried = float(state["used"])
        self.warm_end = None if state["warm_end"] is None else float(state["warm_end"])
