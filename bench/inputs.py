"""Timing helpers and synthetic inputs (camera frames, a drive) for the benchmark."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from spartan_train.model import ModelConfig

from spartan_ros.poses import quat_from_yaw


@dataclass
class Timing:
    """Seconds per call of one measured function."""

    times: np.ndarray

    @property
    def p50(self) -> float:
        return float(np.percentile(self.times, 50))

    @property
    def p99(self) -> float:
        return float(np.percentile(self.times, 99))

    @property
    def best(self) -> float:
        return float(self.times.min())

    @property
    def runs(self) -> int:
        return int(self.times.size)

    def summary(self) -> dict[str, float]:
        return {"p50_s": self.p50, "p99_s": self.p99, "best_s": self.best, "runs": self.runs}


def time_calls(
    fn: Callable[[], object],
    *,
    min_time: float,
    min_runs: int,
    max_runs: int = 100_000,
    warmup: int = 1,
) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then until both ``min_runs`` calls and ``min_time``
    seconds are done (or ``max_runs``); each call is timed on its own."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (
        len(times) < min_runs or time.perf_counter() - start < min_time
    ):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return Timing(np.asarray(times))


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    min_time: float,
    min_runs: int,
    max_runs: int = 100_000,
    warmup: int = 1,
) -> dict[str, Timing]:
    """Time several functions in turns, one call each per round, so that a change of machine
    load during the run hits all of them alike (their ratios are what the table reports). Stops
    after ``min_runs`` rounds once ``min_time`` seconds per function have passed in total."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < max_runs:
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        rounds += 1
        if rounds >= min_runs and time.perf_counter() - start >= min_time * len(fns):
            break
    return {name: Timing(np.asarray(t)) for name, t in times.items()}


def vit_flops(cfg: ModelConfig) -> float:
    """FLOPs (2 per multiply-add) of one image through the image tower, counted from the config.

    Counted: the patch convolution; per layer the q/k/v projection, the attention products QKᵀ
    and AV, the output projection and the two MLP matmuls (width -> 4 width -> width); the final
    projection of the class token. LayerNorm, softmax, GELU and residual adds are left out: they
    are a few percent of the total and memory-bound rather than compute-bound.
    """
    w, p, r, e = cfg.vision_width, cfg.vision_patch_size, cfg.image_resolution, cfg.embed_dim
    patches = (r // p) ** 2
    n = patches + 1  # + class token
    macs = patches * (3 * p * p) * w
    per_layer = n * w * (3 * w) + 2 * n * n * w + n * w * w + 2 * n * w * (4 * w)
    macs += cfg.vision_layers * per_layer + w * e
    return 2.0 * macs


def synthetic_frames(count: int, height: int, width: int, seed: int) -> list[np.ndarray]:
    """RGB uint8 camera-like frames: smooth gradients, a few blocks, sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for _ in range(count):
        wave = 0.5 + 0.5 * np.sin(rng.uniform(1, 9) * (xx + yy) / max(height, width))
        img = rng.uniform(40, 220, 3).astype(np.float32) * wave[..., None]
        for _ in range(4):
            y0, x0 = rng.integers(0, height), rng.integers(0, width)
            img[y0 : y0 + height // 5, x0 : x0 + width // 6] = rng.uniform(0, 255, 3)
        img += rng.normal(0, 8, img.shape).astype(np.float32)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


def drive_rows(count: int, rate_hz: float = 10.0, t0: float = 1000.0, seed: int = 0) -> np.ndarray:
    """Absolute TUM rows ``[count, 8]`` of a vehicle at ~8 m/s weaving gently."""
    rng = np.random.default_rng(seed)
    t = t0 + np.arange(count) / rate_hz
    yaw = rng.uniform(-math.pi, math.pi) + 0.3 * np.sin(0.2 * (t - t0))
    step = 8.0 / rate_hz
    rows = np.zeros((count, 8))
    rows[:, 0] = t
    rows[:, 1] = 100.0 + np.cumsum(step * np.cos(yaw))
    rows[:, 2] = -50.0 + np.cumsum(step * np.sin(yaw))
    rows[:, 4:8] = quat_from_yaw(yaw)
    return rows
