"""Helpers for the fleet tests: random segments and a Milvus Lite server in its own process."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import numpy as np

from spartan_ros.memory.store import Segment
from spartan_ros.runtime.scoring import FusionHead, random_head

T0 = 1_700_000_000_000_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_milvus_server(tmp_path: Path, env: dict[str, str], data_dir: Path,
                        port: int | None = None, name: str = "milvus"):
    """`milvus-lite server` (the same gRPC API as a Milvus server) as a child process; returns
    (process, uri). Stop it with ``process.stop()``; restart it on the same port and data."""
    from spartan_train.processes import Process

    port = port or free_port()
    proc = Process([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data_dir),
                    "--host", "127.0.0.1", "--port", str(port)], env, tmp_path / f"{name}.log")
    proc.wait_for_output("listening on", timeout=60)
    return proc, f"http://127.0.0.1:{port}"


def restart_milvus_server(tmp_path: Path, env: dict[str, str], uri: str, data_dir: Path):
    """The server of ``uri`` started again on its port and data (after ``stop()``)."""
    port = int(uri.rsplit(":", 1)[1])
    proc, _ = start_milvus_server(tmp_path, env, data_dir, port, name="milvus-restarted")
    return proc


def random_segments(n: int, embed_dim: int, seed: int = 0,
                    head: FusionHead | None = None) -> tuple[FusionHead, list[Segment]]:
    """Segments with clustered video features (places seen again) along random drives."""
    rng = np.random.default_rng(seed)
    head = head or random_head(embed_dim, seed)
    centres = rng.standard_normal((max(n // 20, 4), embed_dim))
    segments = []
    for i in range(n):
        video = centres[rng.integers(len(centres))] + 0.7 * rng.standard_normal(embed_dim)
        pose = rng.standard_normal(embed_dim)
        start = T0 + i * 600_000_000 + int(rng.integers(0, 1000))
        origin = rng.uniform(-500, 500, size=2)
        path = origin + np.cumsum(rng.normal(0, 1.5, size=(24, 2)), axis=0)
        poses = np.zeros((24, 8))
        poses[:, 0] = start * 1e-9 + 0.1 * np.arange(24)
        poses[:, 1:3] = path
        poses[:, 7] = 1.0
        segments.append(Segment.build(head, start, start + 2_300_000_000, "map", poses,
                                      video.astype(np.float32), pose.astype(np.float32)))
    return head, segments


def text_queries(head: FusionHead, segments: list[Segment], count: int, seed: int = 1
                 ) -> list[np.ndarray]:
    """Text features that resemble some stored segments (high scores) plus pure noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        seg = segments[int(rng.integers(len(segments)))]
        t = head.w_text.T @ seg.terms.video_unit * 40.0 + rng.standard_normal(head.embed_dim)
        out.append(t.astype(np.float32))
    out.append(rng.standard_normal(head.embed_dim).astype(np.float32))
    return out


def drive_memory(engine, path: Path, seconds: float, offset=(0.0, 0.0), image_shift: int = 0,
                 vehicle_id: str = ""):
    """A real drive's memory: a synthetic drive (images 20 Hz, odometry 50 Hz) fed through
    MemoryService and the exported model into a SQLite file; returns the closed file's path."""
    from ros_graph import QUAT, START_NS, drive_image, drive_position

    from spartan_ros.memory.service import MemoryService, ServiceConfig
    from spartan_ros.memory.store import SegmentStore

    store = SegmentStore(path, engine.model_hash, engine.embed_dim, head=engine.fusion_head,
                         vehicle_id=vehicle_id)
    svc = MemoryService(engine, store, ServiceConfig(max_pending_frames=10_000))
    events = [(START_NS + i * 50_000_000, 1, i) for i in range(int(seconds * 20) + 1)]
    events += [(START_NS + j * 20_000_000, 0, j) for j in range(int(seconds * 50) + 1)]
    for stamp, kind, k in sorted(events):
        if kind == 0:
            x, y, z = drive_position(stamp)
            svc.add_odometry(stamp, (x + offset[0], y + offset[1], z), QUAT, "odom")
        else:
            svc.add_frame(stamp, drive_image(k + image_shift))
    svc.flush()
    store.close()
    return path
