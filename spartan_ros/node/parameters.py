"""Every parameter of the spartan node, as plain data.

One table serves three purposes: the node declares its parameters from it (with descriptors and
ranges), validates their values at configure time, and a test checks that config/spartan.yaml
lists exactly these names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    min_value: float | None = None
    max_value: float | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = True  # most settings are fixed once the node is configured


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("model_dir", "", "Directory of the exported ONNX model (model.json + graphs). "
              "Empty = no model: the node runs and answers queries with 'memory is empty'."),
    ParamSpec("memory_path", "", "SQLite file of the segment memory; empty = keep it in RAM only."),
    ParamSpec("memory_synchronous", "full", "How hard each stored segment is pushed to disk: "
              "'full' survives a power cut (an fsync per segment), 'normal' survives a crash of "
              "the node but may lose the last segments to a power cut, and writes faster.",
              choices=("full", "normal")),
    ParamSpec("max_segments", 0, "Keep at most this many segments, evicting the oldest "
              "(0 = no limit).", min_value=0),
    ParamSpec("image_topic", "camera/image_raw", "sensor_msgs/Image topic (or CompressedImage, "
              "see image_transport); relative names follow the node's namespace."),
    ParamSpec("image_transport", "raw", "'raw' for sensor_msgs/Image on image_topic, "
              "'compressed' for sensor_msgs/CompressedImage (JPEG/PNG) on image_topic/compressed.",
              choices=("raw", "compressed")),
    ParamSpec("odom_topic", "odom", "nav_msgs/Odometry topic giving the vehicle pose."),
    ParamSpec("image_queue_depth", 50, "Images the subscription holds while the executor is busy "
              "(keep-last history depth): a deep queue absorbs stalls of a busy computer "
              "instead of overwriting frames.", min_value=1, max_value=1000),
    ParamSpec("input_reliability", "auto", "QoS reliability of the image and odometry "
              "subscriptions. 'auto': reliable (nothing lost in transport), and best effort, "
              "with a warning, when a best-effort publisher appears; 'reliable'; 'best_effort'.",
              choices=("auto", "reliable", "best_effort")),
    ParamSpec("sample_rate_hz", 10.0, "Frames are taken at this rate from the camera stream "
              "(the rate the model was trained at).", min_value=0.1, max_value=100.0),
    ParamSpec("window_frames", 24, "Frames per segment (the model's clip length).", min_value=2,
              max_value=256),
    ParamSpec("stride_frames", 6, "A new segment every this many taken frames.", min_value=1,
              max_value=256),
    ParamSpec("max_pose_gap_s", 0.25, "A frame is dropped when no odometry lies within this many "
              "seconds of its stamp.", min_value=0.0, max_value=10.0),
    ParamSpec("max_pending_frames", 64, "Frames waiting for the encoder beyond this are dropped, "
              "oldest first (64: about 6 s of camera at 10 Hz, so a busy computer catches up "
              "instead of dropping).", min_value=1, max_value=10000),
    ParamSpec("encode_batch_size", 8, "Frames encoded per inference call.", min_value=1,
              max_value=256),
    ParamSpec("encode_every", 1, "Encode every k-th taken frame (1 = every frame); a segment's "
              "video feature is the mean of the frames it encoded. Raise it when the model cannot "
              "keep up with sample_rate_hz on this computer: poses stay at the full rate.",
              min_value=1, max_value=256),
    ParamSpec("execution_providers", ["cuda", "cpu"], "ONNX Runtime providers in order of "
              "preference (tensorrt, cuda, cpu); unavailable ones are skipped with a log line."),
    ParamSpec("default_top_k", 5, "Segments returned when a request asks for top_k = 0.",
              min_value=1, max_value=10000, read_only=False),
    ParamSpec("input_timeout_s", 5.0, "Warn (throttled, and in diagnostics) when no image or no "
              "odometry arrived for this long while active.", min_value=0.5, max_value=3600.0,
              read_only=False),
    ParamSpec("diagnostics_period_s", 1.0, "Period of /diagnostics messages.", min_value=0.1,
              max_value=60.0),
    ParamSpec("publish_matches", True, "Publish the last query's results on ~/matches "
              "(visualization_msgs/MarkerArray).", read_only=False),
    ParamSpec("vehicle_id", "", "Name of this vehicle: stored segments carry it and fleet answers "
              "name it (needed with fleet_uri)."),
    ParamSpec("memory_backend", "sqlite", "Where segments live: 'sqlite' (memory_path, the "
              "default) or 'milvus' (milvus_uri).", choices=("sqlite", "milvus")),
    ParamSpec("milvus_uri", "", "With memory_backend milvus: a local file (Milvus Lite runs "
              "inside the node) or http(s)://host:19530 (a Milvus server or cluster)."),
    ParamSpec("fleet_uri", "", "Mirror every stored segment to this Milvus (URI or local Milvus "
              "Lite file) through a queue in memory_path, and answer fleet-scope queries from it; "
              "empty = off."),
    ParamSpec("milvus_token", "", "Milvus credentials ('user:password' or an API key) for "
              "milvus_uri and fleet_uri; empty = none."),
    ParamSpec("milvus_tls_ca", "", "CA certificate (PEM) of the Milvus server; set = use TLS."),
    ParamSpec("milvus_tls_cert", "", "Client certificate (PEM) for mutual TLS with Milvus."),
    ParamSpec("milvus_tls_key", "", "Client key (PEM) for mutual TLS with Milvus."),
    ParamSpec("milvus_tls_server_name", "", "Name in the Milvus server certificate, when it "
              "differs from the host in the URI."),
    ParamSpec("precision", "float32", "Graphs of the exported model to run: float32, float16 "
              "(GPU) or int8 (CPU-only vehicles); the export must contain them (spartan-export "
              "--fp16 / --int8). A memory file keeps the precision that wrote it.",
              choices=("float32", "float16", "int8")),
    ParamSpec("trajectory_speed", 5.0, "Speed in m/s at which a query trajectory without time "
              "stamps (all zero or all equal, as planners send paths) is timed along its length, "
              "when the request's trajectory_speed is 0.", min_value=0.1, max_value=100.0,
              read_only=False),
    ParamSpec("autostart", True, "Walk the lifecycle to active at start-up (plain `ros2 run` "
              "works); false = wait for a lifecycle manager."),
)

BY_NAME = {p.name: p for p in PARAMETERS}


_KINDS = {bool: "a boolean (true or false)", int: "an integer", float: "a double",
          str: "a string", list: "a list"}


def type_problem(spec: ParamSpec, value: Any) -> str | None:
    """One line when ``value`` does not have the parameter's type (ROS parameters are typed:
    ``10`` is an integer, ``10.0`` a double)."""
    want = type(spec.default)
    if isinstance(value, want) and isinstance(value, bool) == (want is bool):
        return None
    have = _KINDS.get(type(value), type(value).__name__)
    hint = ""
    if want is float and type(value) is int:
        hint = f": write {float(value)!r}"
    elif want is list and isinstance(value, str):
        hint = f": write [{value}]"
    return f"{spec.name}={value!r} is {have}, this parameter is {_KINDS[want]}{hint}"


def validate(values: dict[str, Any], names: tuple[str, ...] | None = None) -> list[str]:
    """Return readable problems with the given parameter values (empty = all good); ``names``
    limits the check to those parameters (default: all)."""
    problems = []
    for spec in PARAMETERS:
        if names is not None and spec.name not in names:
            continue
        value = values.get(spec.name, spec.default)
        wrong_type = type_problem(spec, value)
        if wrong_type is not None:
            problems.append(wrong_type)
            continue
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{spec.name}={value} is not a finite number")
            continue
        if spec.min_value is not None and value < spec.min_value:
            problems.append(f"{spec.name}={value} is below its minimum {spec.min_value}")
        if spec.max_value is not None and value > spec.max_value:
            problems.append(f"{spec.name}={value} is above its maximum {spec.max_value}")
        if spec.choices is not None and value not in spec.choices:
            problems.append(f"{spec.name}={value!r} is not one of {', '.join(spec.choices)}")
    if names is not None:
        return problems
    window = values.get("window_frames", BY_NAME["window_frames"].default)
    stride = values.get("stride_frames", BY_NAME["stride_frames"].default)
    if problems:  # the pair below is only compared when both are numbers in range
        return problems
    if stride > window:
        problems.append(f"stride_frames={stride} is larger than window_frames={window}: "
                        "frames between windows would never be stored")
    every = values.get("encode_every", BY_NAME["encode_every"].default)
    if every > window:
        problems.append(f"encode_every={every} is larger than window_frames={window}: "
                        "some segments would have no encoded frame")
    problems += _memory_problems(values)
    return problems


def _memory_problems(values: dict[str, Any]) -> list[str]:
    def get(name: str) -> Any:
        return values.get(name, BY_NAME[name].default)

    problems = []
    if get("memory_backend") == "milvus" and not get("milvus_uri"):
        problems.append("memory_backend=milvus needs milvus_uri (a file path for Milvus Lite, "
                        "or http://host:19530)")
    if get("fleet_uri"):
        if get("memory_backend") != "sqlite" or not get("memory_path"):
            problems.append("fleet_uri needs memory_backend=sqlite and a memory_path file: the "
                            "queue of segments to mirror lives in that file")
        if not get("vehicle_id"):
            problems.append("fleet_uri needs a vehicle_id: fleet segments are keyed by vehicle")
    return problems
