"""``spartan-export CHECKPOINT OUT_DIR``: a SPARTAN checkpoint -> ONNX graphs for the runtime.

Writes ``image.onnx``, ``text.onnx``, ``pose_fusion.onnx``, ``fusion.safetensors`` and
``model.json`` (layout in ``spartan_ros.runtime.engine``); ``--fp16`` adds half-precision image
and text graphs for GPUs, ``--int8`` a dynamically quantised image graph for CPU-only vehicles.

Graphs are exported with ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript, the
supported path); ``--exporter torchscript`` selects the deprecated TorchScript exporter instead
(docs/export.md compares the two). Every graph is run with ONNX Runtime (CPU) on random inputs and
compared with the PyTorch model before anything is written: float32 must agree to ``--atol`` (max
abs, default 1e-4), float16 to cosine >= 0.999, int8 to cosine >= 0.99. Everything is built in a
temporary directory beside OUT_DIR, which only takes its place once all checks pass.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import functools
import io
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from safetensors.numpy import save_file
from torch import nn

from spartan_ros.poses import relative_window
from spartan_ros.preprocess import CLIP_MEAN, CLIP_STD, preprocess_batch
from spartan_ros.runtime.engine import (
    FORMAT_NAME,
    FUSION_BIAS,
    FUSION_WEIGHT,
    MODEL_JSON,
    ROLES,
    compute_model_hash,
    file_sha256,
)
from spartan_train.model import CheckpointError, SpartanModel, load_checkpoint, sha256

EXPORTER_VERSION = "1.0.0"
DEFAULT_OPSET = 18
MIN_OPSET = 17  # LayerNormalization; the TorchScript exporter only
MIN_DYNAMO_OPSET = 18  # the dynamo exporter writes opset 18 ops (Split with num_outputs, ...)
WINDOW_RATE_HZ = 10.0  # the dataset's frame rate (docs/model.md 5.1): T = 24 poses span 2.3 s
FUSION_FILE = "fusion.safetensors"
FP16_MIN_COSINE = 0.999
INT8_MIN_COSINE = 0.99
# dynamic: activation ranges per call (the default); static: QDQ, calibrated once at export.
INT8_METHODS = ("dynamic", "static")
SOT, EOT = 49406, 49407
EXPORTERS = ("dynamo", "torchscript")  # the first is the default

Log = Callable[[str], None]


class ExportError(RuntimeError):
    """The export could not be completed (bad arguments, a failed parity check, ...)."""


# --------------------------------------------------------------------------- graph wrappers


class ImageGraph(nn.Module):
    def __init__(self, model: SpartanModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.visual(pixels).float()  # float32 out whatever the weights' dtype


class TextGraph(ImageGraph):
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.model.encode_text_features(tokens).float()


class PoseFusionGraph(ImageGraph):
    def forward(  # type: ignore[override]
        self, text_features: torch.Tensor, poses: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pose = self.model.encode_pose(poses)
        return self.model.fuse(text_features, pose), pose


@dataclass
class GraphSpec:
    role: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    wrap: Callable[[SpartanModel], nn.Module]


SPECS = {
    "image": GraphSpec("image", ("pixels",), ("features",), ImageGraph),
    "text": GraphSpec("text", ("tokens",), ("text_features",), TextGraph),
    "pose_fusion": GraphSpec(
        "pose_fusion", ("text_features", "poses"), ("query", "pose_features"), PoseFusionGraph
    ),
}


# --------------------------------------------------------------------------- random inputs


def sample_images(batch: int, resolution: int, seed: int, fit: str = "crop") -> np.ndarray:
    """Preprocessed float32 [N, 3, R, R] of smooth random pictures (gradients, blocks, noise),
    so the check sees the value range real frames give, not N(0, 1) pixels."""
    rng = np.random.default_rng(seed)
    h, w = resolution + 2 * (seed % 7), resolution + 3 * (seed % 11)
    frames = []
    for _ in range(batch):
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        wave = 0.5 + 0.5 * np.sin(rng.uniform(1, 9) * (xx + yy))
        base = rng.uniform(0, 255, 3) * wave[..., None]
        noise = rng.normal(0, rng.uniform(5, 40), (h, w, 3))
        frames.append(np.clip(base + noise, 0, 255).astype(np.uint8))
    return preprocess_batch(frames, resolution, fit=fit)


def sample_tokens(batch: int, context: int, seed: int) -> np.ndarray:
    """int64 [B, context]: SOT, random ids, EOT, zero padding; lengths 2 .. the full context."""
    rng = np.random.default_rng(seed)
    lengths = [2, context, *rng.integers(3, context, max(batch - 2, 0))][:batch]
    tokens = np.zeros((batch, context), dtype=np.int64)
    for b, n in enumerate(lengths):
        tokens[b, 0] = SOT
        tokens[b, 1 : n - 1] = rng.integers(1, SOT, n - 2)
        tokens[b, n - 1] = EOT
    return tokens


def sample_windows(batch: int, frames: int, convention: str, seed: int) -> np.ndarray:
    """Relative float32 [B, T, 8] windows of random drives (speed, turn rate, start pose)."""
    rng = np.random.default_rng(seed)
    out = np.empty((batch, frames, 8), dtype=np.float32)
    dt = 1.0 / WINDOW_RATE_HZ
    for b in range(batch):
        yaw = rng.uniform(-math.pi, math.pi) + np.cumsum(np.full(frames, rng.normal(0, 0.05)))
        speed = rng.uniform(0, 15)
        xy = rng.uniform(-200, 200, 2) + np.cumsum(
            speed * dt * np.stack([np.cos(yaw), np.sin(yaw)], axis=1), axis=0
        )
        rows = np.zeros((frames, 8))
        rows[:, 0] = rng.uniform(0, 1000) + dt * np.arange(frames)
        rows[:, 1:3] = xy
        rows[:, 3] = rng.normal(0, 0.05, frames).cumsum()
        rows[:, 6], rows[:, 7] = np.sin(yaw / 2), np.cos(yaw / 2)
        out[b] = relative_window(rows, convention)
    return out


def sample_inputs(model: SpartanModel, role: str, batch: int, seed: int) -> list[np.ndarray]:
    cfg = model.config
    if role == "image":
        return [sample_images(batch, cfg.image_resolution, seed, cfg.image_fit)]
    if role == "text":
        return [sample_tokens(batch, cfg.context_length, seed)]
    rng = np.random.default_rng(seed)
    t = rng.standard_normal((batch, cfg.embed_dim)).astype(np.float32)
    return [t, sample_windows(batch, cfg.num_frames, cfg.pose_convention, seed)]


# --------------------------------------------------------------------------- helpers


def half_copy(model: SpartanModel) -> SpartanModel:
    """A float16 copy for GPU graphs, with every LayerNorm kept in float32: CLIP's LayerNorm
    normalises in float32 and casts back, as the reference's mixed-precision path does."""
    half = copy.deepcopy(model).half()
    for module in half.modules():
        if isinstance(module, nn.LayerNorm):
            module.float()
    return half.eval()


@contextlib.contextmanager
def _quiet_torch_onnx() -> Iterator[None]:
    """The dynamo exporter logs a warning per torchvision op it skips (torchvision is not a
    dependency) and prints its progress; keep both out of the export's own output."""
    names = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx.experimental")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_graph(
    spec: GraphSpec,
    model: SpartanModel,
    example: Sequence[np.ndarray],
    path: Path,
    opset: int,
    exporter: str = EXPORTERS[0],
) -> None:
    """Write one graph with a dynamic batch dimension on every input and output."""
    wrapper = spec.wrap(model).eval()
    args = tuple(torch.from_numpy(x) for x in example)
    inputs, outputs = list(spec.inputs), list(spec.outputs)
    with warnings.catch_warnings(), torch.no_grad(), _quiet_torch_onnx():
        warnings.simplefilter("ignore")  # deprecation notices of torch internals
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(
                wrapper, args, str(path), dynamo=True, opset_version=opset,
                dynamic_shapes=tuple({0: batch} for _ in spec.inputs),
                external_data=False,  # one self-contained file per graph, as model.json lists
                optimize=True, input_names=inputs, output_names=outputs,
            )  # fmt: skip
        elif exporter == "torchscript":
            torch.onnx.export(
                wrapper, args, str(path), dynamo=False, opset_version=opset,
                dynamic_axes={name: {0: "batch"} for name in spec.inputs + spec.outputs},
                do_constant_folding=True, input_names=inputs, output_names=outputs,
            )  # fmt: skip
        else:
            raise ExportError(f"unknown exporter {exporter!r}; use one of {EXPORTERS}")


def stamp_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Replace the graph's metadata_props (shown by Netron, read back by the engine)."""
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name, proto.producer_version = "spartan-export", EXPORTER_VERSION
    onnx.save(proto, str(path))


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization logs advice through the root logger (and would install a
    handler on it via basicConfig); keep that out of the caller's logging set-up."""
    root, null = logging.getLogger(), logging.NullHandler()
    root.addHandler(null)
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
        root.removeHandler(null)


def quantize_image(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation (int8 weights, activations quantised per call) of the MatMuls,
    i.e. the image tower's transformer; the patch Conv stays float (ConvInteger is slow on CPU).

    ``reduce_range`` (7-bit weights): x86 CPUs without VNNI multiply uint8 activations by int8
    weights with 16-bit saturating adds, which costs accuracy at full range (cosine ~0.99 instead
    of ~0.9997 measured on a random B/16 tower); it was also the fastest variant measured here.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_root_logger():
        quantize_dynamic(src, dst, op_types_to_quantize=["MatMul", "Gemm"],
                         weight_type=QuantType.QInt8, reduce_range=True)  # fmt: skip


def quantize_image_static(src: Path, dst: Path, calibration: np.ndarray) -> None:
    """Static int8 quantisation (QDQ, per-channel int8 weights, uint8 activations with scales
    calibrated once on ``calibration`` pixels ``[N, 3, R, R]``) of the MatMuls and Gemms.

    Unlike the dynamic graph, no activation range is computed per call; whether that pays on a
    CPU depends on its int8 kernels (``make bench``, section ``quant``, measures both).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Pixels(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([calibration[i : i + 1] for i in range(len(calibration))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {"pixels": np.ascontiguousarray(batch)}

    with _quiet_root_logger():
        quantize_static(src, dst, _Pixels(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)


def cpu_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_torch(spec: GraphSpec, model: SpartanModel, inputs: Sequence[np.ndarray]) -> list:
    with torch.no_grad():
        out = spec.wrap(model).eval()(*(torch.from_numpy(x) for x in inputs))
    outs = out if isinstance(out, tuple) else (out,)
    return [o.float().numpy() for o in outs]


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    num = (a64 * b64).sum(axis=-1)
    den = np.linalg.norm(a64, axis=-1) * np.linalg.norm(b64, axis=-1)
    return float(np.min(num / np.maximum(den, 1e-30)))


@dataclass
class Check:
    graph: str
    precision: str
    batches: list[int]
    max_abs: float
    min_cos: float
    passed: bool
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"  {self.graph:<12} {self.precision:<8} batches {self.batches}: max|diff| "
            f"{self.max_abs:.3g}, min cosine {self.min_cos:.7f}  {verdict}"
        )

    def as_record(self) -> dict[str, Any]:
        """The entry of model.json's "checks"."""
        return {"graph": self.graph, "precision": self.precision, "batches": self.batches,
                "max_abs": self.max_abs, "min_cosine": self.min_cos,
                "seconds": round(self.seconds, 2)}  # fmt: skip


def check_graph(
    spec: GraphSpec,
    model: SpartanModel,
    path: Path,
    precision: str,
    atol: float,
    batches: Sequence[int] = (1, 5),
) -> Check:
    """Run the graph with ONNX Runtime (CPU) against the float32 PyTorch model."""
    session = cpu_session(path)
    worst_abs, worst_cos = 0.0, 1.0
    for i, batch in enumerate(batches):
        inputs = sample_inputs(model, spec.role, batch, seed=100 + i)
        got = session.run(list(spec.outputs), dict(zip(spec.inputs, inputs, strict=True)))
        want = run_torch(spec, model, inputs)
        for g, w in zip(got, want, strict=True):
            if g.shape != w.shape or g.dtype != np.float32:
                raise ExportError(
                    f"{path.name}: output {g.dtype} {list(g.shape)}, expected float32 "
                    f"{list(w.shape)}"
                )
            worst_abs = max(worst_abs, float(np.abs(g - w).max()))
            worst_cos = min(worst_cos, min_cosine(g, w))
    if precision == "float32":
        passed = worst_abs <= atol
    elif precision == "float16":
        passed = worst_cos >= FP16_MIN_COSINE
    else:
        passed = worst_cos >= INT8_MIN_COSINE
    return Check(spec.role, precision, list(batches), worst_abs, worst_cos, passed)


def graph_file(role: str, precision: str) -> str:
    suffix = {"float32": "", "float16": ".fp16", "int8": ".int8"}[precision]
    return f"{role}{suffix}.onnx"


def base_metadata(model: SpartanModel, name: str, source: Path, source_sha: str, opset: int):
    cfg = model.config
    # The oldest format that describes the model, so that older runtimes read what they can.
    fit = {} if cfg.image_fit == "crop" else {"image_fit": cfg.image_fit}
    return {
        "format": FORMAT_NAME,
        "format_version": 2 if fit else 1,
        "name": name,
        "exporter_version": EXPORTER_VERSION,
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "source": {
            "path": str(source.resolve()),
            "sha256": source_sha,
            "format": model.source_format,
        },
        "torch_version": torch.__version__,
        "onnx_opset": opset,
        "config": cfg.to_dict(),
        "mode": cfg.mode,
        "pose_convention": cfg.pose_convention,
        "use_fft": cfg.use_fft,
        "embed_dim": cfg.embed_dim,
        "image_resolution": cfg.image_resolution,
        **fit,
        "context_length": cfg.context_length,
        "window": cfg.num_frames,
        "window_rate_hz": WINDOW_RATE_HZ,
        "normalization": {
            "mean": [float(x) for x in CLIP_MEAN],
            "std": [float(x) for x in CLIP_STD],
        },
        "pose_branch_trained": bool(model.pose_branch_trained),
    }


def graph_metadata(meta: dict[str, Any], role: str, precision: str) -> dict[str, str]:
    """String key/values for a graph's metadata_props (its own sha256 cannot be inside it).

    These bytes are part of the model hash, so only what defines the model goes in: not the
    cosmetic name nor the export time (both stay in model.json)."""
    keys = ("format", "format_version", "exporter_version", "mode", "pose_convention",
            "embed_dim", "image_resolution", "context_length", "window", "window_rate_hz",
            "onnx_opset")  # fmt: skip
    out = {f"spartan_ros.{k}": str(meta[k]) for k in keys}
    if "image_fit" in meta:  # format 2 only (base_metadata)
        out["spartan_ros.image_fit"] = str(meta["image_fit"])
    out.update({
        "spartan_ros.graph": role,
        "spartan_ros.precision": precision,
        "spartan_ros.config": json.dumps(meta["config"], sort_keys=True),
        "spartan_ros.normalization": json.dumps(meta["normalization"]),
        "spartan_ros.source_sha256": meta["source"]["sha256"],
    })  # fmt: skip
    return out


def _install(tmp: Path, out: Path, overwrite: bool) -> None:
    """Put the finished temp dir in place of OUT_DIR (a rename on the same file system)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise ExportError(f"{out}: exists and is not empty (use --overwrite)")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
    else:
        os.replace(tmp, out)  # renaming onto an empty directory is allowed
    # mkdtemp made the directory private and safetensors writes 0600: use the usual modes
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(out, 0o777 & ~mask)
    for f in out.iterdir():
        os.chmod(f, 0o666 & ~mask)


# --------------------------------------------------------------------------- export


def _build(
    spec: GraphSpec,
    model: SpartanModel,
    path: Path,
    precision: str,
    atol: float,
    log: Log,
    make: Callable[[], None],
    metadata: dict[str, str],
) -> Check:
    """Write one graph with ``make``, stamp its metadata, and check it against ``model``."""
    t0 = time.perf_counter()
    try:
        make()
    except Exception as e:
        raise ExportError(f"{path.name}: export failed ({e})") from e
    stamp_metadata(path, metadata)
    seconds = time.perf_counter() - t0
    try:
        check = check_graph(spec, model, path, precision, atol)
    except ExportError:
        raise
    except Exception as e:  # ORT rejects the graph: an exporter bug, reported in one line
        raise ExportError(f"{path.name}: ONNX Runtime cannot run the exported graph ({e})") from e
    check.seconds = seconds
    log(f"{check.line()}  ({seconds:.1f} s, {path.stat().st_size / 1e6:.1f} MB)")
    return check


def export_model(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    fp16: bool = False,
    int8: bool = False,
    int8_method: str = "dynamic",
    opset: int = DEFAULT_OPSET,
    name: str | None = None,
    overwrite: bool = False,
    atol: float = 1e-4,
    log: Log = print,
    model: SpartanModel | None = None,
    exporter: str = EXPORTERS[0],
) -> dict[str, Any]:
    """Export, check and install a model directory; returns the model.json content.

    ``exporter``: "dynamo" (``torch.onnx.export(dynamo=True)``) or "torchscript" (the deprecated
    route, kept for comparison and as a fallback).

    ``model`` skips loading when the caller already holds the checkpoint's model (it must be the
    one stored at ``checkpoint``: the source sha256 is read from the file).
    """
    _check_options(opset, int8_method, exporter)
    source, out = Path(checkpoint), Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ExportError(f"{out}: exists and is not empty (use --overwrite)")
    t_start = time.perf_counter()
    try:
        source_sha = sha256(source)
        model = model if model is not None else load_checkpoint(source)
    except CheckpointError as e:
        raise ExportError(str(e)) from e
    model = model.float().eval()
    name = name or (source.stem if source.is_file() else source.name) or "spartan"
    cfg = model.config
    log(f"spartan-export: {source} ({model.source_format}, E={cfg.embed_dim}, "
        f"R={cfg.image_resolution}, mode {cfg.mode}, pose convention {cfg.pose_convention}) "
        f"-> {out}")  # fmt: skip
    meta = base_metadata(model, name, source, source_sha, opset)
    meta["exporter"] = exporter

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        build = _GraphBuilder(model, meta, tmp, opset, exporter, atol, log)
        build.all_graphs(fp16, int8, int8_method)
        build.raise_on_failed_checks()
        fusion_sha = _write_fusion(model, tmp)
        meta.update(_file_hashes(build.graphs, tmp, fusion_sha),
                    checks=[c.as_record() for c in build.checks],
                    export_seconds=round(time.perf_counter() - t_start, 2))  # fmt: skip
        text = json.dumps(meta, indent=2) + "\n"
        (tmp / MODEL_JSON).write_text(text, encoding="utf-8")
        _install(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {out} in {meta['export_seconds']:.1f} s: model_hash {meta['model_hash']}")
    return meta


def _check_options(opset: int, int8_method: str, exporter: str) -> None:
    if opset < MIN_OPSET:
        raise ExportError(f"--opset must be >= {MIN_OPSET} (LayerNormalization), got {opset}")
    if int8_method not in INT8_METHODS:
        raise ExportError(f"int8 method must be one of {INT8_METHODS}, got {int8_method!r}")
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; use one of {', '.join(EXPORTERS)}")
    if exporter == "dynamo" and opset < MIN_DYNAMO_OPSET:
        raise ExportError(f"--opset {opset} needs --exporter torchscript: the dynamo exporter "
                          f"writes opset >= {MIN_DYNAMO_OPSET}")


def _parity_bar(precision: str, atol: float) -> str:
    """What a precision's parity check asks of a graph (the failure message names it)."""
    return {"float32": f"max|diff| <= {atol:g}", "float16": f"cosine >= {FP16_MIN_COSINE}",
            "int8": f"cosine >= {INT8_MIN_COSINE}"}[precision]  # fmt: skip


class _GraphBuilder:
    """Writes each graph into the temporary folder and checks it against the PyTorch model."""

    def __init__(self, model: SpartanModel, meta: dict[str, Any], tmp: Path, opset: int,
                 exporter: str, atol: float, log: Log) -> None:  # fmt: skip
        self.model, self.meta, self.tmp = model, meta, tmp
        self.opset, self.exporter, self.atol, self.log = opset, exporter, atol, log
        self.checks: list[Check] = []
        self.graphs: dict[str, dict[str, dict[str, Any]]] = {}  # precision -> role -> entry

    def all_graphs(self, fp16: bool, int8: bool, int8_method: str) -> None:
        jobs: list[tuple[str, str, SpartanModel]] = [(r, "float32", self.model) for r in ROLES]
        if fp16:
            half = half_copy(self.model)
            jobs += [("image", "float16", half), ("text", "float16", half)]
        for role, precision, source_model in jobs:
            path = self.tmp / graph_file(role, precision)
            example = sample_inputs(self.model, role, 2, seed=0)  # batch 2: never traced as 1
            self._add(role, precision, path, functools.partial(
                export_graph, SPECS[role], source_model, example, path, self.opset,
                self.exporter))  # fmt: skip
        if int8:
            path = self.tmp / graph_file("image", "int8")
            self._add("image", "int8", path, self._int8_image(path, int8_method))

    def _int8_image(self, path: Path, method: str) -> Callable[[], None]:
        src = self.tmp / graph_file("image", "float32")
        if method == "static":  # activation ranges calibrated on sample pictures
            cfg = self.model.config
            calibration = sample_images(16, cfg.image_resolution, 1234, cfg.image_fit)
            return functools.partial(quantize_image_static, src, path, calibration)
        return functools.partial(quantize_image, src, path)

    def _add(self, role: str, precision: str, path: Path, make: Callable[[], None]) -> None:
        """``make`` writes the graph at ``path``; then it is checked and listed."""
        stamp = graph_metadata(self.meta, role, precision)
        self.checks.append(_build(SPECS[role], self.model, path, precision, self.atol, self.log,
                                  make, stamp))  # fmt: skip
        self.graphs.setdefault(precision, {})[role] = {"file": path.name}

    def raise_on_failed_checks(self) -> None:
        failed = [c for c in self.checks if not c.passed]
        if failed:
            what = "; ".join(f"{graph_file(c.graph, c.precision)} (needs "
                             f"{_parity_bar(c.precision, self.atol)})" for c in failed)
            raise ExportError(f"parity check failed, nothing written: {what}")


def _write_fusion(model: SpartanModel, tmp: Path) -> str:
    """The fusion projection as safetensors; returns its sha256."""
    weight = model.projection.weight.detach().float().numpy()
    bias = model.projection.bias.detach().float().numpy()
    save_file({FUSION_WEIGHT: np.ascontiguousarray(weight), FUSION_BIAS: bias},
              str(tmp / FUSION_FILE), metadata={"format": FORMAT_NAME})  # fmt: skip
    return file_sha256(tmp / FUSION_FILE)


def _file_hashes(graphs: dict[str, dict[str, dict[str, Any]]], tmp: Path,
                 fusion_sha: str) -> dict[str, Any]:  # fmt: skip
    """model.json's file entries and hashes: each graph's sha256 and size, and one model hash
    per precision (its graphs, float32 where it has none, and the fusion)."""
    for entries in graphs.values():
        for entry in entries.values():
            entry["sha256"] = file_sha256(tmp / entry["file"])
            entry["bytes"] = (tmp / entry["file"]).stat().st_size
    hashes = {}
    for precision in graphs:
        chosen = {**graphs["float32"], **graphs[precision]}
        hashes[precision] = compute_model_hash({r: chosen[r]["sha256"] for r in ROLES}, fusion_sha)
    return {"model_hash": hashes["float32"], "model_hashes": hashes, "graphs": graphs,
            "fusion": {"file": FUSION_FILE, "sha256": fusion_sha}}


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="spartan-export",
        description="Export a SPARTAN checkpoint to ONNX graphs for the torch-free runtime.",
    )
    p.add_argument("checkpoint", help="checkpoint file or our checkpoint directory")
    p.add_argument("out_dir", help="model directory to write (model.json + graphs)")
    p.add_argument("--fp16", action="store_true", help="also write float16 image/text graphs")
    p.add_argument("--int8", action="store_true", help="also write an int8 image graph")
    p.add_argument("--int8-method", choices=INT8_METHODS, default="dynamic",
                   help="dynamic (activation ranges per call, default) or static (QDQ, "
                   "per-channel, calibrated once on sample pictures)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset (>= {MIN_OPSET}, default {DEFAULT_OPSET})")  # fmt: skip
    p.add_argument("--name", default=None, help="model name recorded in model.json")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    p.add_argument("--atol", type=float, default=1e-4,
                   help="float32 parity bar: max abs difference to PyTorch")  # fmt: skip
    p.add_argument("--exporter", choices=EXPORTERS, default=EXPORTERS[0],
                   help="torch.onnx.export route: dynamo (default, the supported one) or the "
                        "deprecated torchscript")  # fmt: skip
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        export_model(
            args.checkpoint, args.out_dir, fp16=args.fp16, int8=args.int8,
            int8_method=args.int8_method, opset=args.opset,
            name=args.name, overwrite=args.overwrite, atol=args.atol, exporter=args.exporter,
        )  # fmt: skip
    except ExportError as e:
        print(f"spartan-export: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
