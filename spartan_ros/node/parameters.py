"""Every parameter of the spartan node, as plain data.

One table serves three purposes: the node declares its parameters from it (with descriptors and
ranges), validates their values at configure time, and a test checks that config/spartan.yaml
lists exactly these names.
"""

from __future__ import annotations

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
    ParamSpec("image_topic", "image_raw", "sensor_msgs/Image topic (or CompressedImage, see "
              "image_transport)."),
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
    ParamSpec("autostart", True, "Walk the lifecycle to active at start-up (plain `ros2 run` "
              "works); false = wait for a lifecycle manager."),
)

BY_NAME = {p.name: p for p in PARAMETERS}


def validate(values: dict[str, Any]) -> list[str]:
    """Return readable problems with the given parameter values (empty = all good)."""
    problems = []
    for spec in PARAMETERS:
        value = values.get(spec.name, spec.default)
        if spec.min_value is not None and value < spec.min_value:
            problems.append(f"{spec.name}={value} is below its minimum {spec.min_value}")
        if spec.max_value is not None and value > spec.max_value:
            problems.append(f"{spec.name}={value} is above its maximum {spec.max_value}")
        if spec.choices is not None and value not in spec.choices:
            problems.append(f"{spec.name}={value!r} is not one of {', '.join(spec.choices)}")
    window = values.get("window_frames", BY_NAME["window_frames"].default)
    stride = values.get("stride_frames", BY_NAME["stride_frames"].default)
    if stride > window:
        problems.append(f"stride_frames={stride} is larger than window_frames={window}: "
                        "frames between windows would never be stored")
    return problems
