"""Torch-free SPARTAN inference with ONNX Runtime over an exported model directory.

A model directory (written by ``spartan-export``) holds three graphs and the fusion weights:

- ``image.onnx``: pixels float32 ``[N, 3, R, R]`` -> ``features`` ``[N, E]``;
- ``text.onnx``: ``tokens`` int64 ``[B, 248]`` -> ``text_features`` ``[B, E]`` (before fusion);
- ``pose_fusion.onnx``: ``text_features`` ``[B, E]`` + relative ``poses`` ``[B, T, 8]`` ->
  ``query`` ``[B, E]`` and ``pose_features`` ``[B, E]``;
- ``fusion.safetensors``: ``projection.weight`` ``[E, 2E]`` and ``projection.bias`` ``[E]``,
  from which ``runtime.scoring.FusionHead`` scores stored segments exactly;
- ``model.json``: configuration, checks and the sha256 of every file.

Optional variants (``image.fp16.onnx``, ``text.fp16.onnx``, ``image.int8.onnx``) are chosen with
``precision``. ``model_hash`` covers the graphs actually loaded plus the fusion weights, so a
memory written with one precision is not silently mixed with features of another.

Everything is checked when the engine loads (missing file, bad field, unsupported version, sha256
mismatch, unreadable graph, wrong graph inputs): the error is a ``ModelLoadError`` that names the
file and what is wrong. Nothing on this module's import path imports torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from safetensors import SafetensorError
from safetensors.numpy import load_file

from spartan_ros.poses import CONVENTIONS, relative_window, resample_window
from spartan_ros.preprocess import CLIP_MEAN, CLIP_STD, FITS, preprocess_image
from spartan_ros.runtime.lru import LruCache
from spartan_ros.runtime.scoring import FusionHead
from spartan_ros.tokenizer import tokenize

FORMAT_NAME = "spartan_ros.onnx"
# 2: model.json says how frames are fitted to the square input (``image_fit``); 1 is "crop".
FORMAT_VERSION = 2
MODEL_JSON = "model.json"
MODES = ("reference", "corrected")
ROLES = ("image", "text", "pose_fusion")
PRECISIONS = ("float32", "float16", "int8")
# Text features of this many recent token sequences are kept: planners ask the same questions
# again and again, and the text graph is most of a query's time on a CPU.
TEXT_CACHE_SIZE = 256
FUSION_WEIGHT = "projection.weight"
FUSION_BIAS = "projection.bias"
# Friendly names accepted in `providers` (the node's `execution_providers` parameter).
PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
CPU = "CPUExecutionProvider"

# Graph interface: role -> (inputs, outputs) as (name, onnx type, shape with None = any size).
# "E", "R", "T" and "L" are filled in from model.json.
_IO: dict[str, tuple[tuple[tuple[str, str, tuple[Any, ...]], ...], tuple[str, ...]]] = {
    "image": ((("pixels", "tensor(float)", (None, 3, "R", "R")),), ("features",)),
    "text": ((("tokens", "tensor(int64)", (None, "L")),), ("text_features",)),
    "pose_fusion": (
        (
            ("text_features", "tensor(float)", (None, "E")),
            ("poses", "tensor(float)", (None, "T", 8)),
        ),
        ("query", "pose_features"),
    ),
}


class ModelLoadError(ValueError):
    """An exported model directory is missing, incomplete, corrupt or unsupported."""


# --------------------------------------------------------------------------- hashing


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def compute_model_hash(graph_sha256: Mapping[str, str], fusion_sha256: str) -> str:
    """The model identity: sha256 over the three graphs' and the fusion file's sha256, in a fixed
    order. Independent of file names, directory and model.json (which holds timestamps)."""
    missing = [r for r in ROLES if r not in graph_sha256]
    if missing:
        raise ValueError(f"graph sha256 missing for {missing}")
    text = "".join(f"{r}:{graph_sha256[r]}\n" for r in ROLES) + f"fusion:{fusion_sha256}\n"
    return hashlib.sha256(text.encode("ascii")).hexdigest()


# --------------------------------------------------------------------------- providers


def resolve_providers(
    names: Iterable[str], available: Sequence[str] | None = None
) -> tuple[list[str], list[str]]:
    """(providers to use, requested but unavailable) for names like "cuda", "cpu" or full ORT
    provider names. CPU always ends the list: ORT runs nodes other providers reject there."""
    available = list(ort.get_available_providers() if available is None else available)
    chosen: list[str] = []
    unavailable: list[str] = []
    for name in names:
        full = PROVIDER_NAMES.get(str(name).lower(), str(name))
        if full not in PROVIDER_NAMES.values():
            raise ValueError(
                f"unknown execution provider {name!r}; use one of {sorted(PROVIDER_NAMES)}"
            )
        if full not in available:
            unavailable.append(full)
        elif full not in chosen:
            chosen.append(full)
    if CPU in chosen:
        chosen.remove(CPU)
    return chosen + [CPU], unavailable


# --------------------------------------------------------------------------- model.json


def _fail(path: Path, what: str) -> ModelLoadError:
    return ModelLoadError(f"{path}: {what}")


def _field(meta: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    if key not in meta:
        raise _fail(path, f"missing field {key!r}")
    value = meta[key]
    bad_bool = isinstance(value, bool) and kind is not bool
    if bad_bool or not isinstance(value, kind):
        raise _fail(path, f"field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _positive_int(meta: Mapping[str, Any], key: str, path: Path) -> int:
    value = _field(meta, key, int, path)
    if value <= 0:
        raise _fail(path, f"field {key!r} must be a positive integer, got {value}")
    return int(value)


def _file_entry(entry: Any, where: str, path: Path) -> dict[str, str]:
    if not isinstance(entry, dict):
        raise _fail(path, f"field {where!r} must be an object with 'file' and 'sha256'")
    for key in ("file", "sha256"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise _fail(path, f"field {where}.{key} is missing or not a string")
    name = entry["file"]
    if Path(name).name != name:
        raise _fail(path, f"field {where}.file must be a plain file name, got {name!r}")
    return {"file": name, "sha256": entry["sha256"]}


def read_model_json(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed, validated model.json of an exported model directory (files not checked)."""
    directory = Path(model_dir)
    path = directory / MODEL_JSON
    if not directory.is_dir():
        raise ModelLoadError(f"{directory}: model directory does not exist")
    meta = _load_json_object(path)
    if meta.get("format") != FORMAT_NAME:
        raise _fail(path, f"field 'format' is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    version = _field(meta, "format_version", int, path)
    if not 1 <= version <= FORMAT_VERSION:
        raise _fail(
            path,
            f"unsupported format_version {version}; this code reads 1..{FORMAT_VERSION} "
            "(re-export the model with this version of spartan-export)",
        )
    _check_sizes_and_choices(meta, version, path)
    _check_normalization(meta, path)
    _check_graphs(meta, path)
    return meta


def _load_json_object(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise _fail(path, "missing (not an exported model directory? run spartan-export)") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(path, f"unreadable ({e})") from e
    if not isinstance(meta, dict):
        raise _fail(path, "expected a JSON object")
    return meta


# model.json fields with a fixed set of values: (field, allowed values, first format version).
_CHOICE_FIELDS = (("mode", MODES, 1), ("pose_convention", CONVENTIONS, 1), ("image_fit", FITS, 2))


def _check_sizes_and_choices(meta: dict[str, Any], version: int, path: Path) -> None:
    for key in ("embed_dim", "image_resolution", "context_length", "window"):
        _positive_int(meta, key, path)
    rate = _field(meta, "window_rate_hz", (int, float), path)
    if not (math.isfinite(rate) and rate > 0):
        raise _fail(path, f"field 'window_rate_hz' must be positive, got {rate}")
    for key, allowed, since in _CHOICE_FIELDS:
        if version >= since and _field(meta, key, str, path) not in allowed:
            raise _fail(path, f"field {key!r} is {meta[key]!r}, expected one of {allowed}")


def _check_normalization(meta: dict[str, Any], path: Path) -> None:
    norm = _field(meta, "normalization", dict, path)
    for key, ours in (("mean", CLIP_MEAN), ("std", CLIP_STD)):
        values = norm.get(key)
        ok = isinstance(values, list) and len(values) == 3
        if not ok or not np.allclose(np.asarray(values, dtype=np.float64), ours, atol=1e-7):
            # the engine preprocesses with spartan_ros.preprocess; another normalisation would
            # silently give other features
            raise _fail(path, f"field normalization.{key} is {values!r}, preprocess uses {ours}")


def _check_graphs(meta: dict[str, Any], path: Path) -> None:
    """The graph files of each precision (float32 complete), the fusion file and the hashes."""
    _field(meta, "model_hash", str, path)
    graphs = _field(meta, "graphs", dict, path)
    base = graphs.get("float32")
    if not isinstance(base, dict):
        raise _fail(path, "field 'graphs.float32' is missing or not an object")
    for precision, entries in graphs.items():
        if precision not in PRECISIONS:
            raise _fail(path, f"field 'graphs' has unknown precision {precision!r}")
        if not isinstance(entries, dict):
            raise _fail(path, f"field 'graphs.{precision}' must be an object")
        for role, entry in entries.items():
            if role not in ROLES:
                raise _fail(path, f"field 'graphs.{precision}' has unknown graph {role!r}")
            entries[role] = _file_entry(entry, f"graphs.{precision}.{role}", path)
    for role in ROLES:
        if role not in base:
            raise _fail(path, f"field 'graphs.float32.{role}' is missing")
    meta["fusion"] = _file_entry(_field(meta, "fusion", dict, path), "fusion", path)
    hashes = _field(meta, "model_hashes", dict, path)
    for precision in graphs:
        if not isinstance(hashes.get(precision), str):
            raise _fail(path, f"field 'model_hashes.{precision}' is missing")
    if meta["model_hash"] != hashes["float32"]:
        raise _fail(path, "field 'model_hash' differs from 'model_hashes.float32'")


def graph_set(meta: Mapping[str, Any], precision: str) -> dict[str, dict[str, str]]:
    """role -> {file, sha256} for a precision: its own graphs, float32 for the rest."""
    if precision not in meta["graphs"]:
        have = sorted(meta["graphs"])
        raise ModelLoadError(
            f"{MODEL_JSON}: this export has no {precision!r} graphs (it has {have}; "
            f"re-export with --fp16 / --int8)"
        )
    return {**meta["graphs"]["float32"], **meta["graphs"][precision]}


def _verified_file(directory: Path, entry: Mapping[str, str]) -> Path:
    path = directory / entry["file"]
    if not path.is_file():
        raise _fail(path, f"missing (listed in {MODEL_JSON})")
    try:
        digest = file_sha256(path)
    except OSError as e:
        raise _fail(path, f"unreadable ({e})") from e
    if digest != entry["sha256"]:
        raise _fail(
            path,
            f"sha256 mismatch: file has {digest}, {MODEL_JSON} says {entry['sha256']} "
            "(truncated, edited or from another export)",
        )
    return path


def _check_io(session: ort.InferenceSession, role: str, sizes: Mapping[str, int], path: Path):
    inputs, outputs = _IO[role]
    got = {i.name: i for i in session.get_inputs()}
    if sorted(got) != sorted(name for name, _, _ in inputs):
        raise _fail(path, f"graph inputs are {sorted(got)}, a {role} graph takes "
                          f"{[name for name, _, _ in inputs]}")  # fmt: skip
    for name, kind, shape in inputs:
        arg = got[name]
        want = [sizes.get(s, s) if isinstance(s, str) else s for s in shape]
        ok = arg.type == kind and len(arg.shape) == len(want)
        ok = ok and all(w is None or d == w for w, d in zip(want, arg.shape, strict=False))
        if not ok:
            raise _fail(path, f"input {name!r} is {arg.type} {arg.shape}, expected {kind} "
                              f"{['N' if w is None else w for w in want]}")  # fmt: skip
    out_names = [o.name for o in session.get_outputs()]
    if sorted(out_names) != sorted(outputs):
        raise _fail(path, f"graph outputs are {out_names}, expected {list(outputs)}")


# --------------------------------------------------------------------------- the engine


# Texts up to this many characters are cached by their own bytes (a planner's questions);
# longer ones only by their (truncated) tokens.
TEXT_KEY_MAX_CHARS = 1024


def _text_key(text: str) -> bytes | None:
    if len(text) > TEXT_KEY_MAX_CHARS:
        return None
    return b"text:" + text.encode("utf-8", "surrogatepass")


class FeatureCache:
    """Recently computed feature vectors by byte key, with hit counts. Copies in and copies out,
    so no caller can change what another gets."""

    def __init__(self, size: int) -> None:
        self._lru: LruCache[bytes, np.ndarray] = LruCache(size)
        self._count_lock = threading.Lock()  # the counts stay exact with concurrent queries
        self.hits = self.misses = 0

    @property
    def size(self) -> int:
        return self._lru.size

    def get(self, key: bytes, out: np.ndarray) -> bool:
        """Copy the features of ``key`` into ``out``; False when they are not kept."""
        found = self._lru.get(key)
        with self._count_lock:
            if found is None:
                self.misses += 1
            else:
                self.hits += 1
        if found is None:
            return False
        out[...] = found
        return True

    def put(self, key: bytes | None, features: np.ndarray) -> None:
        if key is not None:  # None: not worth keeping
            self._lru.put(key, np.array(features, copy=True))

    def keys(self) -> list[bytes]:
        return self._lru.keys()


def _session_options(
    given: ort.SessionOptions | None, threads: int | None, text_threads: int | None,
    spinning: bool,
) -> tuple[ort.SessionOptions, ort.SessionOptions]:
    """(options of the image and pose graphs, options of the text graph)."""
    options = given or ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    text_options = options
    if text_threads is not None:  # queries: one thread each, side by side in a pool
        text_options = ort.SessionOptions()
        text_options.graph_optimization_level = options.graph_optimization_level
        text_options.intra_op_num_threads = int(text_threads)
    if not spinning:  # idle ONNX Runtime threads sleep: other threads want the cores
        for opts in {id(options): options, id(text_options): text_options}.values():
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options, text_options


class Engine:
    """Image, text, pose and query encoders of one exported SPARTAN model (numpy in and out).

    All features are unnormalised, as the PyTorch model returns them. The engine keeps no state
    between calls; sliding video windows live in ``spartan_ros.ingest.window.SlidingWindow``.

    In ``mode="reference"`` the pose branch attends across the batch (docs/model.md 11, Q1, Q2):
    the pose feature of one window depends on the other windows passed in the same call, so
    ``encode_pose`` / ``encode_query`` run each call as one batch, never split.

    For timing, ``run_image`` / ``run_text`` / ``run_pose_fusion`` run one graph on ready inputs
    (``preprocess`` and ``tokenizer.tokenize`` make them), and ``precision`` picks the variant.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        providers: Sequence[str] = ("cuda", "cpu"),
        logger: logging.Logger | None = None,
        *,
        precision: str = "float32",
        batch_size: int = 16,
        session_options: ort.SessionOptions | None = None,
        threads: int | None = None,
        text_threads: int | None = None,
        text_cache: int = TEXT_CACHE_SIZE,
        spinning: bool = True,
    ) -> None:
        self.log = logger or logging.getLogger(__name__)
        if isinstance(providers, str):
            providers = (providers,)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model_dir = Path(model_dir)
        self.precision = precision
        self.batch_size = batch_size
        self._read_meta(read_model_json(self.model_dir))
        paths, fusion_path = self._verified_files(precision)
        self.fusion_head = self._load_fusion(fusion_path)

        wanted, unavailable = resolve_providers(providers)
        options, text_options = _session_options(session_options, threads, text_threads,
                                                 spinning)  # fmt: skip
        self.sessions = {role: self._session(paths[role], role, wanted,
                                             text_options if role == "text" else options)
                         for role in ROLES}
        self._text_cache = FeatureCache(text_cache)
        self.providers: list[str] = list(self.sessions["image"].get_providers())
        self._report_providers(list(providers), wanted, unavailable)
        self._check_fusion(fusion_path)
        self.log.info(
            "loaded %s (%s, mode %s, pose convention %s, E=%d, R=%d, T=%d) hash %s on %s",
            self.model_dir, precision, self.mode, self.pose_convention, self.embed_dim,
            self.image_resolution, self.window, self.model_hash[:12], ", ".join(self.providers),
        )  # fmt: skip

    # ----------------------------------------------------------------- loading helpers
    def _read_meta(self, meta: dict[str, Any]) -> None:
        self.meta = meta
        self.name = str(meta.get("name", self.model_dir.name))
        self.embed_dim = int(meta["embed_dim"])
        self.image_resolution = int(meta["image_resolution"])
        self.image_fit = str(meta.get("image_fit", "crop"))  # format 1 had only the crop
        self.context_length = int(meta["context_length"])
        self.window = int(meta["window"])
        self.window_rate_hz = float(meta["window_rate_hz"])
        self.mode = str(meta["mode"])
        self.pose_convention = str(meta["pose_convention"])
        if meta.get("pose_branch_trained") is False:
            self.log.warning(
                "%s: the pose branch and fusion of this model were never trained "
                "(exported from a CLIP / Long-CLIP checkpoint): query scores are meaningless",
                self.model_dir,
            )

    def _verified_files(self, precision: str) -> tuple[dict[str, Path], Path]:
        """(graph path per role, fusion path), every file hashed before anything is parsed;
        sets ``model_hash`` and checks it against the one model.json declares."""
        meta = self.meta
        entries = graph_set(meta, precision)
        paths = {role: _verified_file(self.model_dir, entries[role]) for role in ROLES}
        fusion_path = _verified_file(self.model_dir, meta["fusion"])
        shas = {role: entries[role]["sha256"] for role in ROLES}
        self.model_hash = compute_model_hash(shas, meta["fusion"]["sha256"])
        declared = meta["model_hashes"][precision]
        if declared != self.model_hash:
            raise _fail(
                self.model_dir / MODEL_JSON,
                f"model_hashes.{precision} is {declared}, but the files give {self.model_hash}",
            )
        return paths, fusion_path

    def _load_fusion(self, path: Path) -> FusionHead:
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise _fail(path, f"cannot read safetensors file ({e})") from e
        dim = self.embed_dim
        for key, shape in ((FUSION_WEIGHT, (dim, 2 * dim)), (FUSION_BIAS, (dim,))):
            if key not in tensors:
                raise _fail(path, f"missing tensor {key!r}")
            if tensors[key].shape != shape:
                raise _fail(path, f"tensor {key!r} has shape {list(tensors[key].shape)}, "
                                  f"expected {list(shape)}")  # fmt: skip
        try:
            return FusionHead.from_projection(tensors[FUSION_WEIGHT], tensors[FUSION_BIAS])
        except ValueError as e:
            raise _fail(path, str(e)) from e

    def _session(
        self, path: Path, role: str, providers: list[str], options: ort.SessionOptions
    ) -> ort.InferenceSession:
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as e:  # ORT raises its own exception types for corrupt graphs
            raise _fail(path, f"ONNX Runtime cannot load this graph ({e})") from e
        sizes = {"E": self.embed_dim, "R": self.image_resolution, "T": self.window,
                 "L": self.context_length}  # fmt: skip
        _check_io(session, role, sizes, path)
        graph_meta = session.get_modelmeta().custom_metadata_map
        stamped = graph_meta.get("spartan_ros.graph")
        if stamped is not None and stamped != role:
            raise _fail(path, f"this is a {stamped!r} graph, listed as {role!r}")
        return session

    def _report_providers(
        self, requested: list[str], wanted: list[str], unavailable: list[str]
    ) -> None:
        failed = [p for p in wanted if p not in self.providers]  # available but would not start
        missing = unavailable + failed
        accelerated = [p for p in self.providers if p != CPU]
        if missing and not accelerated:
            self.log.warning(
                "execution providers %s not usable (this onnxruntime offers %s): falling back to "
                "CPUExecutionProvider", missing, ort.get_available_providers(),
            )  # fmt: skip
        elif missing:
            self.log.warning("execution providers %s not usable; using %s", missing, accelerated)
        self.log.info(
            "execution providers: requested %s, using %s", requested, ", ".join(self.providers)
        )

    def _check_fusion(self, fusion_path: Path) -> None:
        """The fusion weights must be the projection inside pose_fusion.onnx: the fast scorer
        uses the file, the query path the graph, and both must give the same query."""
        rng = np.random.default_rng(0)
        t = rng.standard_normal((2, self.embed_dim)).astype(np.float32)
        poses = np.zeros((2, self.window, 8), dtype=np.float32)
        poses[:, :, 0] = np.arange(self.window) / self.window_rate_hz
        poses[:, :, 1] = poses[:, :, 0] * np.array([[5.0], [10.0]])
        poses[:, :, 7] = 1.0
        query, pose = self.run_pose_fusion(t, poses)
        expected = self.fusion_head.fuse(t, pose)
        err = float(np.abs(query - expected).max())
        if not err <= 1e-4 * (1.0 + float(np.abs(expected).max())):
            raise _fail(
                fusion_path,
                f"projection weights do not match pose_fusion.onnx (max difference {err:.3g})",
            )

    # ----------------------------------------------------------------- raw graph runs
    def run_image(self, pixels: np.ndarray) -> np.ndarray:
        """The image graph on preprocessed pixels float32 ``[N, 3, R, R]`` -> ``[N, E]``."""
        out = self.sessions["image"].run(["features"], {"pixels": pixels})[0]
        return np.asarray(out, dtype=np.float32)

    def run_text(self, tokens: np.ndarray) -> np.ndarray:
        """The text graph on token ids int64 ``[B, 248]`` -> text features ``[B, E]``."""
        out = self.sessions["text"].run(["text_features"], {"tokens": tokens})[0]
        return np.asarray(out, dtype=np.float32)

    def run_pose_fusion(
        self, text_features: np.ndarray, poses: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The pose+fusion graph on ``[B, E]`` text features and relative ``[B, T, 8]`` poses ->
        (query ``[B, E]``, pose features ``[B, E]``)."""
        feeds = {
            "text_features": np.ascontiguousarray(text_features, dtype=np.float32),
            "poses": np.ascontiguousarray(poses, dtype=np.float32),
        }
        query, pose = self.sessions["pose_fusion"].run(["query", "pose_features"], feeds)
        return np.asarray(query, dtype=np.float32), np.asarray(pose, dtype=np.float32)

    # ----------------------------------------------------------------- encoders
    def preprocess(self, images: Sequence[np.ndarray] | np.ndarray, color: str = "rgb"):
        """uint8 frames -> float32 ``[N, 3, R, R]`` exactly as the library preprocesses them."""
        if isinstance(images, np.ndarray) and images.ndim != 4:
            raise ValueError(
                f"images must be a list of [H, W, 3] frames or one [N, H, W, 3] array, "
                f"got an array of shape {images.shape}"
            )
        r = self.image_resolution
        out = np.empty((len(images), 3, r, r), dtype=np.float32)
        for i, image in enumerate(images):
            try:
                out[i] = preprocess_image(image, r, color, self.image_fit)
            except ValueError as e:
                raise ValueError(f"image {i}: {e}") from e
        return out

    def encode_frames(
        self, images: Sequence[np.ndarray] | np.ndarray, color: str = "rgb"
    ) -> np.ndarray:
        """uint8 ``[H, W, 3]`` frames (a list, or one ``[N, H, W, 3]`` array) -> ``[N, E]``
        frame features, run in batches of ``batch_size``. ``color="bgr"`` for bgr8 frames."""
        n = len(images)
        out = np.empty((n, self.embed_dim), dtype=np.float32)
        for lo in range(0, n, self.batch_size):
            out[lo : lo + self.batch_size] = self.run_image(
                self.preprocess(images[lo : lo + self.batch_size], color)
            )
        return out

    def encode_text(self, texts: str | Sequence[str]) -> np.ndarray:
        """Texts -> Long-CLIP text features ``[B, E]`` (before fusion with a pose). Texts (or
        tokens) encoded recently come from a cache (the same tokens, the same features)."""
        items = [texts] if isinstance(texts, str) else list(texts)
        out = np.empty((len(items), self.embed_dim), dtype=np.float32)
        # A text asked again skips the tokenizer too (its cleaning costs more than the lookup);
        # texts too long to be worth a key are looked up by their tokens only.
        by_text = [_text_key(t) for t in items]
        missed = [i for i, key in enumerate(by_text)
                  if key is None or not self._text_cache.get(key, out[i])]
        if not missed:
            return out
        tokens = tokenize([items[i] for i in missed], context_length=self.context_length)
        keys = [row.tobytes() for row in tokens]
        todo = []
        for j, i in enumerate(missed):
            if self._text_cache.get(keys[j], out[i]):
                self._text_cache.put(by_text[i], out[i])
            else:
                todo.append(j)
        for lo in range(0, len(todo), self.batch_size):
            rows = todo[lo : lo + self.batch_size]
            feats = self.run_text(tokens[rows])
            for j, feat in zip(rows, feats, strict=True):
                i = missed[j]
                out[i] = feat
                self._text_cache.put(keys[j], feat)
                self._text_cache.put(by_text[i], feat)
        return out

    def relative_windows(self, windows_abs: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Absolute TUM windows ``[B, T, 8]`` -> relative float32 windows in the model's
        pose convention (``spartan_ros.poses.relative_window`` per window)."""
        arr = np.asarray(windows_abs)
        if arr.ndim == 2:
            raise ValueError(
                f"windows must be [B, {self.window}, 8]; wrap a single [T, 8] window as [window]"
            )
        if arr.ndim != 3 or arr.shape[1:] != (self.window, 8):
            raise ValueError(
                f"windows must have shape [B, {self.window}, 8] (T = {self.window} poses at "
                f"{self.window_rate_hz:g} Hz; use resample_window for other lengths), "
                f"got {list(arr.shape)}"
            )
        out = np.empty(arr.shape, dtype=np.float32)
        for b in range(arr.shape[0]):
            try:
                out[b] = relative_window(arr[b], self.pose_convention)
            except ValueError as e:
                raise ValueError(f"window {b}: {e}") from e
        return out

    def encode_pose(self, windows_abs: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Absolute TUM windows ``[B, T, 8]`` -> pose features ``[B, E]`` (one batch, see the
        class docstring for why that matters in reference mode)."""
        rel = self.relative_windows(windows_abs)
        zeros = np.zeros((rel.shape[0], self.embed_dim), dtype=np.float32)
        return self.run_pose_fusion(zeros, rel)[1]

    def encode_query(
        self, texts: str | Sequence[str], windows_abs: np.ndarray | Sequence[np.ndarray]
    ) -> np.ndarray:
        """SPARTAN's fused query ``[B, E]`` of texts and absolute pose windows ``[B, T, 8]``.
        One text is paired with every window."""
        rel = self.relative_windows(windows_abs)
        t = self.encode_text(texts)
        if len(t) == 1 and len(rel) > 1:
            t = np.repeat(t, len(rel), axis=0)
        if len(t) != len(rel):
            raise ValueError(f"got {len(t)} texts for {len(rel)} pose windows")
        return self.run_pose_fusion(t, rel)[0]

    def video_feature(self, frame_feats: np.ndarray) -> np.ndarray:
        """Clip feature ``[E]`` = mean of its frame features ``[T, E]`` (unnormalised, docs/model.md
        4). Accumulated in float64, as ``SlidingWindow`` does."""
        f = np.asarray(frame_feats)
        if f.ndim != 2 or f.shape[0] == 0 or f.shape[1] != self.embed_dim:
            raise ValueError(f"frame features must be [T, {self.embed_dim}], got {list(f.shape)}")
        return f.mean(axis=0, dtype=np.float64).astype(np.float32)

    def resample_window(
        self,
        rows: np.ndarray,
        frames: int | None = None,
        rate_hz: float | None = None,
        align: str = "center",
    ) -> np.ndarray:
        """A request trajectory ``[N, 8]`` of any length / rate -> ``[T, 8]`` absolute rows at
        the model's window rate (``spartan_ros.poses.resample_window``)."""
        return resample_window(
            rows,
            self.window if frames is None else frames,
            self.window_rate_hz if rate_hz is None else rate_hz,
            align,
        )
