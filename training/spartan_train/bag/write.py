"""Write synthetic (or DrivingScenePTX) drives into a rosbag2 with the ``rosbags`` library, no ROS.

Per sequence the bag gets, on one time line:

- ``sensor_msgs/msg/Image`` on the image topic, one per frame, stamped
  ``seq_start + (t_r - t_0)`` where ``t_r`` is the frame's pose time (10 Hz in the data); with
  ``frame_rate`` the camera runs at that rate instead (each image shows the latest data frame at
  its stamp, as a faster camera would between two recorded frames), and with ``size`` every
  image is upscaled to that size (to replay a vehicle camera's data volume from small frames);
- optionally ``sensor_msgs/msg/CompressedImage`` (png or jpeg) on ``<image topic>/compressed``;
- ``nav_msgs/msg/Odometry`` at ``odom_rate`` Hz: position interpolated linearly and orientation with
  slerp between the 10 Hz pose rows (``spartan_ros.poses.interpolate_pose``), twist by finite
  differences expressed in the child frame (``base_link``, as nav_msgs/Odometry specifies).

Sequences follow each other: the next one starts ``gap_s`` after the last stamp of the previous.
The bag's log time of every message equals its header stamp. Odometry is written before an image
with the same stamp, so a consumer always has the pose bracket when the frame arrives.

The ground truth travels with the bag in ``<bag>/captions.json`` (rosbag2 readers ignore extra
files in the bag folder): every listed 24-frame window of the written sequences with its stamps,
and, for generated sets, what is in view and what the car does in every frame (``facts``: the
ground truth of free-text questions, ``evaluate.questions``).
"""

from __future__ import annotations

import io
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from spartan_ros.poses import interpolate_pose, quat_conjugate, quat_multiply, quat_rotate
from spartan_train.data.dataset import load_pose_file
from spartan_train.data.layout import (
    WINDOW,
    DatasetError,
    frame_name,
    image_path,
    pose_path,
    read_list,
)

STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
ENCODINGS = ("rgb8", "bgr8")
COMPRESSED_FORMATS = ("png", "jpeg")
CAPTIONS_FILE = "captions.json"
SPLITS = ("train", "val")  # config/<split>.txt

# What a live publisher of this data would offer: reliable matches reliable and best-effort readers.
_OFFERED_QOS = Qos(
    QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.VOLATILE,
    QosTime(0, 0), QosTime(0, 0), QosLiveliness.AUTOMATIC, QosTime(0, 0), False,
)  # fmt: skip

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
ODOMETRY = "nav_msgs/msg/Odometry"


@dataclass
class WriteConfig:
    data: Path  # dataset root (images/, poses/, config/)
    seqs: list[str]
    out: Path  # bag folder to create; must not exist
    storage: str = "sqlite3"  # sqlite3 | mcap
    image_topic: str = "/camera/image_raw"
    odom_topic: str = "/odom"
    odom_rate: float = 50.0  # Hz
    encoding: str = "rgb8"  # rgb8 | bgr8 (byte order of the raw Image data)
    start_time_ns: int = 1_700_000_000 * 10**9  # stamp of the first frame of the first sequence
    gap_s: float = 5.0  # silence between consecutive sequences
    compressed: str | None = None  # None, "png" or "jpeg": also write <image_topic>/compressed
    jpeg_quality: int = 90
    frame_rate: float | None = None  # Hz of the camera; None = one image per data frame
    size: tuple[int, int] | None = None  # (width, height) to resize every image to
    raw: bool = True  # write the raw Image topic (False: only <image_topic>/compressed)
    camera_frame: str = "camera"
    odom_frame: str = "odom"
    base_frame: str = "base_link"
    progress: bool = True


@dataclass
class SequencePlan:
    """One sequence placed on the bag's time line."""

    seq: str
    poses: np.ndarray  # float64 [n, 8] as in the pose file
    start_ns: int  # stamp of frame 0
    frame_ns: np.ndarray  # int64 [n] stamps of the frames
    odom_ns: np.ndarray  # int64 [m] stamps of the odometry samples
    odom: np.ndarray  # float64 [m, 8] interpolated TUM rows (t = pose-file time)
    linear: np.ndarray  # float64 [m, 3] body-frame velocity (m/s)
    angular: np.ndarray  # float64 [m, 3] body-frame angular velocity (rad/s)
    camera_ns: np.ndarray | None = None  # int64 [c] camera stamps (None: the frames' own)
    camera_frame: np.ndarray | None = None  # int64 [c] data frame each camera image shows

    @property
    def end_ns(self) -> int:
        last_image = self.frame_ns[-1] if self.camera_ns is None else self.camera_ns[-1]
        return int(max(last_image, self.odom_ns[-1]))

    def camera(self) -> tuple[np.ndarray, np.ndarray]:
        """(stamps, data frame index) of every camera image written."""
        if self.camera_ns is None or self.camera_frame is None:
            return self.frame_ns, np.arange(len(self.frame_ns))
        return self.camera_ns, self.camera_frame


@dataclass
class WriteSummary:
    out: Path
    storage: str
    counts: dict[str, int] = field(default_factory=dict)  # messages per topic
    start_ns: int = 0
    end_ns: int = 0
    windows: int = 0  # captioned windows in captions.json
    captions: Path | None = None


def check_config(cfg: WriteConfig) -> None:
    if cfg.storage not in STORAGES:
        raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {cfg.storage!r}")
    if cfg.encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {cfg.encoding!r}")
    if cfg.compressed is not None and cfg.compressed not in COMPRESSED_FORMATS:
        raise ValueError(f"compressed must be one of {COMPRESSED_FORMATS}, got {cfg.compressed!r}")
    if cfg.frame_rate is not None and not (cfg.frame_rate > 0 and math.isfinite(cfg.frame_rate)):
        raise ValueError(f"frame rate must be a positive number of Hz, got {cfg.frame_rate}")
    if cfg.size is not None and (len(cfg.size) != 2 or min(cfg.size) < 1):
        raise ValueError(f"size must be WIDTH x HEIGHT in pixels, got {cfg.size}")
    if not cfg.raw and cfg.compressed is None:
        raise ValueError("without the raw image topic, a compressed format must be given")
    if not (cfg.odom_rate > 0 and math.isfinite(cfg.odom_rate)):
        raise ValueError(f"odom rate must be a positive number of Hz, got {cfg.odom_rate}")
    if not (cfg.gap_s >= 0 and math.isfinite(cfg.gap_s)):
        raise ValueError(f"gap must be >= 0 s, got {cfg.gap_s}")
    if cfg.start_time_ns < 0:
        raise ValueError(f"start time must be >= 0, got {cfg.start_time_ns} ns")
    if not cfg.seqs:
        raise ValueError("no sequence given (--seq)")
    if len(set(cfg.seqs)) != len(cfg.seqs):
        raise ValueError(f"a sequence is listed twice: {cfg.seqs}")
    for topic in (cfg.image_topic, cfg.odom_topic):
        if not topic.startswith("/") or topic.endswith("/") or " " in topic:
            raise ValueError(f"topic {topic!r} must be an absolute ROS name like /camera/image_raw")
    if cfg.image_topic == cfg.odom_topic:
        raise ValueError("image and odometry topics must differ")
    if Path(cfg.out).exists():
        raise ValueError(f"output bag {cfg.out} exists already; remove it or choose another --out")


def load_sequence_poses(root: Path, seq: str) -> np.ndarray:
    """The pose table of ``seq`` checked for what the writer needs (finite, time increasing)."""
    path = pose_path(root, seq)
    poses = load_pose_file(path)
    if len(poses) == 0:
        raise DatasetError(f"pose file {path} has no rows")
    finite = np.isfinite(poses).all(axis=1)
    if not finite.all():
        raise DatasetError(f"pose file {path}: row {int(np.argmin(finite))} is not finite")
    steps = np.diff(poses[:, 0])
    if np.any(steps <= 0):
        row = int(np.argmax(steps <= 0)) + 1
        raise DatasetError(f"pose file {path}: time does not increase at row {row}")
    norms = np.linalg.norm(poses[:, 4:8], axis=1)
    if np.any(norms < 1e-6):
        raise DatasetError(f"pose file {path}: row {int(np.argmin(norms))} has a zero quaternion")
    for frame in range(len(poses)):
        if not image_path(root, seq, frame).is_file():
            raise DatasetError(
                f"{image_path(root, seq, frame)} is missing ({path} has {len(poses)} rows)"
            )
    return poses


def _rotation_vector(q: np.ndarray) -> np.ndarray:
    """Axis * angle of unit quaternion(s) ``[..., 4]`` (xyzw), taking the short way (w >= 0)."""
    q = np.where(q[..., 3:4] < 0, -q, q)
    v, w = q[..., :3], q[..., 3]
    s = np.linalg.norm(v, axis=-1)
    angle = 2.0 * np.arctan2(s, w)
    # angle / s -> 2 / w as s -> 0; use the limit where the division would lose precision.
    scale = np.where(s > 1e-12, angle / np.where(s > 1e-12, s, 1.0), 2.0 / np.maximum(w, 1e-12))
    return v * scale[..., None]


def odometry_twist(times: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Body-frame linear and angular velocity ``[m, 3]`` of TUM rows by finite differences.

    Central differences inside, one-sided at the ends; all zero for a single sample.
    """
    m = len(rows)
    if m < 2:
        return np.zeros((m, 3)), np.zeros((m, 3))
    lo = np.maximum(np.arange(m) - 1, 0)
    hi = np.minimum(np.arange(m) + 1, m - 1)
    dt = (times[hi] - times[lo])[:, None]
    quat = rows[:, 4:8] / np.linalg.norm(rows[:, 4:8], axis=1, keepdims=True)
    world_v = (rows[hi, 1:4] - rows[lo, 1:4]) / dt
    linear = quat_rotate(quat_conjugate(quat), world_v)
    # q_lo^-1 q_hi is the rotation between the samples in the body frame.
    delta = quat_multiply(quat_conjugate(quat[lo]), quat[hi])
    angular = _rotation_vector(delta) / dt
    return linear, angular


def _grid_ns(span_s: float, rate: float) -> np.ndarray:
    """Offsets k / rate (ns) for k = 0.. up to ``span_s`` (a hair of tolerance for rounding)."""
    count = int(math.floor(span_s * rate + 1e-6)) + 1
    return np.round(np.arange(count, dtype=np.int64) * (1e9 / rate)).astype(np.int64)


def plan_sequence(seq: str, poses: np.ndarray, start_ns: int, odom_rate: float,
                  frame_rate: float | None = None) -> SequencePlan:  # fmt: skip
    """Stamps of frames and odometry of ``seq`` with frame 0 at ``start_ns``."""
    t = poses[:, 0]
    rel = t - t[0]
    frame_ns = start_ns + np.round(rel * 1e9).astype(np.int64)
    span = float(rel[-1])
    odom_rel_ns = _grid_ns(span, odom_rate)
    odom_ns = start_ns + odom_rel_ns
    query = np.minimum(t[0] + odom_rel_ns * 1e-9, t[-1])
    odom = interpolate_pose(query, poses)
    odom = odom.reshape(-1, 8)
    linear, angular = odometry_twist(odom_rel_ns * 1e-9, odom)
    plan = SequencePlan(seq, poses, start_ns, frame_ns, odom_ns, odom, linear, angular)
    if frame_rate is not None:
        plan.camera_ns = start_ns + _grid_ns(span, frame_rate)
        # the latest data frame at each camera stamp (1 us of tolerance for float stamps)
        plan.camera_frame = np.searchsorted(frame_ns, plan.camera_ns + 1000, side="right") - 1
    return plan


def caption_windows(root: Path, plans: list[SequencePlan]) -> list[dict[str, Any]]:
    """Listed windows of the written sequences with their stamps, sorted by time.

    Reads ``config/train.txt`` and ``config/val.txt`` (a missing file contributes nothing).
    """
    by_seq = {p.seq: p for p in plans}
    windows: list[dict[str, Any]] = []
    for split in SPLITS:
        path = Path(root) / "config" / f"{split}.txt"
        if not path.exists():
            continue
        for entry in read_list(path):
            plan = by_seq.get(entry.seq)
            if plan is None:
                continue
            last = entry.start + WINDOW - 1
            if last >= len(plan.frame_ns):
                raise DatasetError(
                    f"{entry.where}: window {entry.name} needs frames up to {last}, "
                    f"but {entry.seq} has {len(plan.frame_ns)}"
                )
            windows.append({
                "seq": entry.seq,
                "start": entry.start,
                "name": frame_name(entry.seq, entry.start),
                "start_ns": int(plan.frame_ns[entry.start]),
                "end_ns": int(plan.frame_ns[last]),
                "caption": entry.caption,
                "split": split,
            })  # fmt: skip
    windows.sort(key=lambda w: (w["start_ns"], w["split"]))
    return windows


def _header(types: Any, stamp_ns: int, frame_id: str) -> Any:
    time = types["builtin_interfaces/msg/Time"](
        sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000)
    )
    return types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)


def read_rgb(path: Path) -> tuple[np.ndarray, PILImage.Image]:
    """uint8 RGB ``[H, W, 3]`` of an image file and the opened Pillow image."""
    try:
        img = PILImage.open(path)
        img.load()
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read image {path}: {e}") from None
    return np.asarray(img.convert("RGB")), img


def image_message(types: Any, rgb: np.ndarray, stamp_ns: int, frame_id: str, encoding: str) -> Any:
    pixels = rgb if encoding == "rgb8" else rgb[:, :, ::-1]
    h, w = pixels.shape[:2]
    return types[IMAGE](
        header=_header(types, stamp_ns, frame_id),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=w * 3,
        data=np.ascontiguousarray(pixels).reshape(-1),
    )


def compressed_payload(path: Path, img: PILImage.Image, rgb: np.ndarray, cfg: WriteConfig) -> bytes:
    """The PNG or JPEG bytes of one frame (the file's own bytes when they already are that)."""
    if cfg.compressed == "png" and img.format == "PNG" and img.mode == "RGB":
        return path.read_bytes()
    buf = io.BytesIO()
    pil = PILImage.fromarray(rgb)
    if cfg.compressed == "png":
        pil.save(buf, format="PNG")
    else:
        pil.save(buf, format="JPEG", quality=cfg.jpeg_quality)
    return buf.getvalue()


def compressed_message(types: Any, payload: bytes, stamp_ns: int, cfg: WriteConfig) -> Any:
    # image_transport's convention: "<raw encoding>; <codec> compressed <decoded channel order>"
    # (OpenCV decodes colour files to bgr8).
    return types[COMPRESSED_IMAGE](
        header=_header(types, stamp_ns, cfg.camera_frame),
        format=f"{cfg.encoding}; {cfg.compressed} compressed bgr8",
        data=np.frombuffer(payload, dtype=np.uint8),
    )


def odometry_message(types: Any, plan: SequencePlan, i: int, cfg: WriteConfig) -> Any:
    row, lin, ang = plan.odom[i], plan.linear[i], plan.angular[i]
    vec3 = types["geometry_msgs/msg/Vector3"]
    pose = types["geometry_msgs/msg/Pose"](
        position=types["geometry_msgs/msg/Point"](x=row[1], y=row[2], z=row[3]),
        orientation=types["geometry_msgs/msg/Quaternion"](x=row[4], y=row[5], z=row[6], w=row[7]),
    )
    twist = types["geometry_msgs/msg/Twist"](
        linear=vec3(x=lin[0], y=lin[1], z=lin[2]), angular=vec3(x=ang[0], y=ang[1], z=ang[2])
    )
    zeros = np.zeros(36, dtype=np.float64)
    return types[ODOMETRY](
        header=_header(types, int(plan.odom_ns[i]), cfg.odom_frame),
        child_frame_id=cfg.base_frame,
        pose=types["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=zeros),
        twist=types["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=zeros),
    )


def plan_bag(cfg: WriteConfig) -> list[SequencePlan]:
    """Load and place every sequence on the time line (no file is written)."""
    plans = []
    start = cfg.start_time_ns
    gap_ns = int(round(cfg.gap_s * 1e9))
    for seq in cfg.seqs:
        poses = load_sequence_poses(Path(cfg.data), seq)
        plan = plan_sequence(seq, poses, start, cfg.odom_rate, cfg.frame_rate)
        plans.append(plan)
        start = plan.end_ns + gap_ns
    return plans


def write_bag(cfg: WriteConfig) -> WriteSummary:
    """Write the bag and ``<out>/captions.json``; on failure nothing is left at ``cfg.out``."""
    check_config(cfg)
    root = Path(cfg.data)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} is not a directory")
    plans = plan_bag(cfg)
    windows = caption_windows(root, plans)  # fail on a bad list before writing anything

    out = Path(cfg.out)
    try:
        counts = _write_messages(cfg, plans)
        captions = out / CAPTIONS_FILE
        _write_captions(captions, cfg, plans, windows)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # we created it: a half bag would block a rerun
        raise
    return WriteSummary(
        out=out,
        storage=cfg.storage,
        counts=counts,
        start_ns=int(plans[0].frame_ns[0]),
        end_ns=plans[-1].end_ns,
        windows=len(windows),
        captions=captions,
    )


def _write_messages(cfg: WriteConfig, plans: list[SequencePlan]) -> dict[str, int]:
    store = get_typestore(Stores.ROS2_KILTED)
    types = store.types
    root = Path(cfg.data)
    compressed_topic = f"{cfg.image_topic}/compressed"
    counts = {cfg.odom_topic: 0}
    if cfg.raw:
        counts[cfg.image_topic] = 0
    if cfg.compressed:
        counts[compressed_topic] = 0
    total = sum(len(p.camera()[0]) for p in plans)

    writer = Writer(cfg.out, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[cfg.storage])
    writer.set_custom_data("spartan_ros.captions", CAPTIONS_FILE)
    writer.set_custom_data("spartan_ros.sequences", ",".join(cfg.seqs))
    with writer, tqdm(total=total, unit="frame", disable=not cfg.progress, desc="bag") as bar:
        qos = [_OFFERED_QOS]
        odom_conn = writer.add_connection(
            cfg.odom_topic, ODOMETRY, typestore=store, offered_qos_profiles=qos
        )
        image_conn = None
        if cfg.raw:
            image_conn = writer.add_connection(
                cfg.image_topic, IMAGE, typestore=store, offered_qos_profiles=qos
            )
        comp_conn = None
        if cfg.compressed:
            comp_conn = writer.add_connection(
                compressed_topic, COMPRESSED_IMAGE, typestore=store, offered_qos_profiles=qos
            )
        for plan in plans:
            camera_ns, camera_frame = plan.camera()
            # Merge by stamp; kind 0 (odometry) sorts before kind 1 (image) at equal stamps.
            events = sorted(
                [(int(ns), 0, i) for i, ns in enumerate(plan.odom_ns)]
                + [(int(ns), 1, i) for i, ns in enumerate(camera_ns)]
            )
            shown = -1  # data frame of the last image: a fast camera repeats it
            payload: bytes | None = None
            for ns, kind, i in events:
                if kind == 0:
                    msg = odometry_message(types, plan, i, cfg)
                    writer.write(odom_conn, ns, store.serialize_cdr(msg, ODOMETRY))
                    counts[cfg.odom_topic] += 1
                    continue
                if camera_frame[i] != shown:
                    shown = int(camera_frame[i])
                    path = image_path(root, plan.seq, shown)
                    rgb, img = read_rgb(path)
                    size = None if cfg.size is None else (int(cfg.size[0]), int(cfg.size[1]))
                    if size is not None and (rgb.shape[1], rgb.shape[0]) != size:
                        img = img.convert("RGB").resize(size, PILImage.Resampling.BILINEAR)
                        rgb = np.asarray(img)  # (no format: encoded anew, not the file)
                    payload = None
                if image_conn is not None:
                    msg = image_message(types, rgb, ns, cfg.camera_frame, cfg.encoding)
                    writer.write(image_conn, ns, store.serialize_cdr(msg, IMAGE))
                    counts[cfg.image_topic] += 1
                if comp_conn is not None:
                    if payload is None:  # encoded once per data frame
                        payload = compressed_payload(path, img, rgb, cfg)
                    cmsg = compressed_message(types, payload, ns, cfg)
                    writer.write(comp_conn, ns, store.serialize_cdr(cmsg, COMPRESSED_IMAGE))
                    counts[compressed_topic] += 1
                bar.update(1)
    return counts


def _write_captions(
    path: Path, cfg: WriteConfig, plans: list[SequencePlan], windows: list[dict[str, Any]]
) -> None:
    doc = {
        "version": 1,
        "window": WINDOW,
        "image_topic": cfg.image_topic,
        "odom_topic": cfg.odom_topic,
        "sequences": [
            {
                "seq": p.seq,
                "frames": len(p.frame_ns),
                "start_ns": int(p.frame_ns[0]),
                "end_ns": p.end_ns,
                "pose_t0": float(p.poses[0, 0]),
                "frame_ns": [int(x) for x in p.frame_ns],
            }
            for p in plans
        ],
        "windows": windows,
    }
    facts = sequence_facts_of(Path(cfg.data), [p.seq for p in plans])
    if facts:
        doc["facts"] = facts
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def sequence_facts_of(root: Path, seqs: list[str]) -> dict[str, Any]:
    """Per sequence, what the generator recorded of every frame (``data.synth.facts``), for the
    ground truth of free-text questions; empty unless every sequence has ``meta/<seq>.json``
    holding the generator's per-frame records (sets not made by spartan-synth have none)."""
    from spartan_train.data.synth.facts import sequence_facts

    out = {}
    for seq in seqs:
        path = root / "meta" / f"{seq}.json"
        if not path.is_file():
            return {}
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(meta, dict) and "weather" in meta
                and isinstance(meta.get("frames"), list)):
            return {}  # another tool's metadata: no facts to score free text by
        out[seq] = sequence_facts(meta)
    return out


def read_captions(bag: str | Path) -> dict[str, Any]:
    """``<bag>/captions.json`` written by :func:`write_bag` (ValueError naming the file if bad)."""
    path = Path(bag) / CAPTIONS_FILE
    try:
        doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist (bags from `spartan-bag write` have it)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or "windows" not in doc or "sequences" not in doc:
        raise ValueError(f"{path} lacks 'windows' or 'sequences'")
    return doc
