"""spartan-bag write / play: real bag files (sqlite3 and mcap) and real processes over DDS."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from ros_graph import REPO, Process, ros_env
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore
from spartan_train.bag import CAPTIONS_FILE, WriteConfig, read_captions, write_bag
from spartan_train.data.layout import DatasetError, read_list

from spartan_ros.bag.cli import main as bag_main
from spartan_ros.poses import interpolate_pose, quat_from_yaw

START_NS = 1_700_000_000_123_456_789
GAP_S = 0.5
SEQ_FRAMES = {"synth_00": 30, "synth_01": 26}
IMAGE_HW = (24, 32)
TYPESTORE = get_typestore(Stores.ROS2_KILTED)


# --- a tiny dataset in the generator's layout --------------------------------------------------


def frame_pixels(seq_index: int, frame: int) -> np.ndarray:
    h, w = IMAGE_HW
    y, x = np.mgrid[0:h, 0:w]
    channels = [(x * 7 + y * 3 + frame * 11 + seq_index * 50 + c * 80) % 256 for c in range(3)]
    return np.stack(channels, axis=-1).astype(np.uint8)


def seq_poses(seq_index: int, n: int) -> np.ndarray:
    """An arc at 8 m/s turning at 0.3 rad/s; the second sequence's clock does not start at 0."""
    t = 0.1 * np.arange(n) + (0.0 if seq_index == 0 else 100.0)
    tr = t - t[0]
    yaw = 0.3 * tr
    radius = 8.0 / 0.3
    x = radius * np.sin(0.3 * tr) + 5.0 * seq_index
    y = radius * (1 - np.cos(0.3 * tr))
    z = np.full(n, 1.5)
    return np.column_stack([t, x, y, z, quat_from_yaw(yaw)])


def make_dataset(root: Path) -> Path:
    for k, (seq, n) in enumerate(SEQ_FRAMES.items()):
        (root / "images" / seq).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(frame_pixels(k, i)).save(root / "images" / seq / f"{i:06d}.png")
        (root / "poses").mkdir(exist_ok=True)
        np.save(root / "poses" / f"{seq}_poses.npy", seq_poses(k, n))
        (root / "meta").mkdir(exist_ok=True)
        (root / "meta" / f"{seq}.json").write_text(json.dumps({"seq": seq, "frames": n}))
    (root / "config").mkdir()
    (root / "config" / "train.txt").write_text(
        "synth_00/000000.png *** A video of a car turning left past a red house.\n"
        "synth_00/000004.png *** A video of a car still turning left.\n"
        "synth_01/000000.png *** A video of a car on a curve near a park.\n"
        "other_99/000000.png *** A sequence that is not written.\n"
    )
    (root / "config" / "val.txt").write_text(
        "synth_01/000002.png *** A video of a car in the curve, seen later.\n"
    )
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


def write(dataset: Path, out: Path, **kw) -> None:
    cfg = WriteConfig(data=dataset, seqs=list(SEQ_FRAMES), out=out, start_time_ns=START_NS,
                      gap_s=GAP_S, progress=False, **kw)  # fmt: skip
    write_bag(cfg)


def read_bag(path: Path) -> dict[str, list[tuple[int, Any]]]:
    """topic -> [(log time, decoded message)] in bag order."""
    out: dict[str, list[tuple[int, Any]]] = {}
    with Reader(path) as reader:
        for conn, ts, raw in reader.messages():
            msg = TYPESTORE.deserialize_cdr(raw, conn.msgtype)
            out.setdefault(conn.topic, []).append((ts, msg))
    return out


def stamp_ns(msg) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


@pytest.fixture(scope="module")
def bags(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bags")
    out = {}
    for storage in ("sqlite3", "mcap"):
        out[storage] = root / f"drive_{storage}"
        write(dataset, out[storage], storage=storage)
    return out


# --- write ---------------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_write_reads_back(bags: dict[str, Path], dataset: Path, storage: str) -> None:
    bag = bags[storage]
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["storage_identifier"] == storage and info["version"] == 9
    with Reader(bag) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == {
            "/camera/image_raw": "sensor_msgs/msg/Image",
            "/odom": "nav_msgs/msg/Odometry",
        }
        times = [ts for _, ts, _ in reader.messages()]
    assert times == sorted(times)
    assert times[0] == START_NS

    msgs = read_bag(bag)
    images, odom = msgs["/camera/image_raw"], msgs["/odom"]
    assert len(images) == sum(SEQ_FRAMES.values())
    # Log time == header stamp; stamps strictly increasing on each topic.
    for topic in (images, odom):
        assert all(ts == stamp_ns(m) for ts, m in topic)
        stamps = np.array([ts for ts, _ in topic])
        assert np.all(np.diff(stamps) > 0)

    seq_start = START_NS
    i_img = i_odom = 0
    for k, n in enumerate(SEQ_FRAMES.values()):
        poses = seq_poses(k, n)
        rel = poses[:, 0] - poses[0, 0]
        # Images: stamp = sequence start + pose time, pixels and layout as written.
        for frame in range(n):
            ts, img = images[i_img + frame]
            assert ts == seq_start + round(rel[frame] * 1e9)
            assert (img.height, img.width, img.encoding, img.step) == (24, 32, "rgb8", 96)
            assert img.header.frame_id == "camera" and img.is_bigendian == 0
            assert np.array_equal(img.data.reshape(24, 32, 3), frame_pixels(k, frame))
        i_img += n
        # Odometry at exactly 50 Hz from the first to the last frame of the sequence.
        count = int(round(rel[-1] * 50)) + 1
        seq_odom = odom[i_odom : i_odom + count]
        i_odom += count
        stamps = np.array([ts for ts, _ in seq_odom])
        assert stamps[0] == seq_start and stamps[-1] == seq_start + round(rel[-1] * 1e9)
        assert np.all(np.diff(stamps) == 20_000_000)
        expected = interpolate_pose(poses[0, 0] + (stamps - seq_start) * 1e-9, poses)
        got = np.array([[m.pose.pose.position.x, m.pose.pose.position.y, m.pose.pose.position.z,
                         m.pose.pose.orientation.x, m.pose.pose.orientation.y,
                         m.pose.pose.orientation.z, m.pose.pose.orientation.w]
                        for _, m in seq_odom])  # fmt: skip
        np.testing.assert_allclose(got, expected[:, 1:], atol=1e-9)
        # Twist in base_link: 8 m/s forward, 0.3 rad/s about z (finite differences on an arc).
        lin = np.array([[m.twist.twist.linear.x, m.twist.twist.linear.y] for _, m in seq_odom])
        ang = np.array([m.twist.twist.angular.z for _, m in seq_odom])
        np.testing.assert_allclose(lin[:, 0], 8.0, rtol=1e-3)
        # Sideways: positions run along 10 Hz chords while the heading slerps, so the velocity is
        # off the heading by up to yaw rate * 0.05 s: 8 m/s * 0.015 rad = 0.12 m/s.
        np.testing.assert_allclose(lin[:, 1], 0.0, atol=0.125)
        np.testing.assert_allclose(ang, 0.3, rtol=1e-3)
        m0 = seq_odom[0][1]
        assert (m0.header.frame_id, m0.child_frame_id) == ("odom", "base_link")
        seq_start = int(stamps[-1]) + round(GAP_S * 1e9)
    assert i_odom == len(odom)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_captions_side_file(bags: dict[str, Path], dataset: Path, storage: str) -> None:
    doc = read_captions(bags[storage])
    assert (bags[storage] / CAPTIONS_FILE).exists()
    images = read_bag(bags[storage])["/camera/image_raw"]
    frame_stamp = {}
    i = 0
    for seq, n in SEQ_FRAMES.items():
        for frame in range(n):
            frame_stamp[(seq, frame)] = images[i][0]
            i += 1
    listed = []
    for split in ("train", "val"):
        for e in read_list(dataset / "config" / f"{split}.txt"):
            if e.seq in SEQ_FRAMES:
                listed.append((e.seq, e.start, e.caption, split))
    windows = doc["windows"]
    assert sorted((w["seq"], w["start"], w["caption"], w["split"]) for w in windows) == sorted(
        listed
    )
    assert [w["start_ns"] for w in windows] == sorted(w["start_ns"] for w in windows)
    for w in windows:
        assert w["start_ns"] == frame_stamp[(w["seq"], w["start"])]
        assert w["end_ns"] == frame_stamp[(w["seq"], w["start"] + 23)]
        assert abs(w["end_ns"] - w["start_ns"] - 2_300_000_000) <= 1
    seqs = {s["seq"]: s for s in doc["sequences"]}
    assert seqs["synth_01"]["frame_ns"] == [frame_stamp[("synth_01", f)] for f in range(26)]


def test_write_cli_bgr_compressed(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "bag"
    rc = bag_main(["write", "--data", str(dataset), "--seq", "synth_01", "--out", str(out),
                   "--storage", "mcap", "--encoding", "bgr8", "--odom-rate", "20",
                   "--start-time", "1700000000.000000001", "--compressed", "jpeg", "--quiet"])
    assert rc == 0
    msgs = read_bag(out)
    assert len(msgs["/camera/image_raw"]) == len(msgs["/camera/image_raw/compressed"]) == 26
    assert len(msgs["/odom"]) == 2.5 * 20 + 1
    ts, img = msgs["/camera/image_raw"][3]
    assert img.encoding == "bgr8"
    assert np.array_equal(img.data.reshape(24, 32, 3), frame_pixels(1, 3)[:, :, ::-1])
    assert msgs["/odom"][0][0] == 1_700_000_000_000_000_001
    cts, comp = msgs["/camera/image_raw/compressed"][3]
    assert cts == ts and comp.format == "bgr8; jpeg compressed bgr8"
    decoded = np.asarray(Image.open(io.BytesIO(comp.data.tobytes())).convert("RGB"))
    assert np.abs(decoded.astype(int) - frame_pixels(1, 3)).mean() < 12  # lossy, but the image


def test_write_from_generator(tmp_path: Path) -> None:
    """A set written by the synthetic generator (spartan-synth) goes into a bag as it is."""
    from spartan_train.data.synth.generate import main as synth_main

    data = tmp_path / "synth"
    assert synth_main(["--out", str(data), "--sequences", "2", "--frames", "40", "--width", "64",
                       "--height", "48", "--quiet"]) == 0  # fmt: skip
    seqs = sorted(p.name for p in (data / "images").iterdir())
    out = tmp_path / "bag"
    assert bag_main(["write", "--data", str(data), "--out", str(out), "--storage", "mcap",
                     "--compressed", "--quiet", *[a for s in seqs for a in ("--seq", s)]]) == 0
    msgs = read_bag(out)
    assert len(msgs["/camera/image_raw"]) == 80
    assert msgs["/camera/image_raw"][0][1].width == 64
    # PNG frames go into CompressedImage unchanged (no re-encoding).
    _, comp = msgs["/camera/image_raw/compressed"][5]
    assert comp.format == "rgb8; png compressed bgr8"
    assert comp.data.tobytes() == (data / "images" / seqs[0] / "000005.png").read_bytes()
    listed = [e for split in ("train", "val") for e in read_list(data / "config" / f"{split}.txt")]
    windows = read_captions(out)["windows"]
    assert len(windows) == len(listed) > 0
    assert {(w["seq"], w["start"], w["caption"]) for w in windows} == {
        (e.seq, e.start, e.caption) for e in listed
    }


def test_write_errors(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DatasetError, match="nope_poses.npy"):
        write_bag(WriteConfig(data=dataset, seqs=["nope"], out=tmp_path / "a", progress=False))
    assert not (tmp_path / "a").exists()
    # A listed window running past the end of its sequence names the list file and line.
    bad = tmp_path / "bad"
    bad.mkdir()
    for sub in ("images", "poses"):
        os.symlink(dataset / sub, bad / sub)
    (bad / "config").mkdir()
    (bad / "config" / "val.txt").write_text("synth_01/000000.png *** ok\n"
                                            "synth_01/000010.png *** too late\n")
    with pytest.raises(DatasetError, match=r"val.txt:2"):
        write_bag(WriteConfig(data=bad, seqs=["synth_01"], out=tmp_path / "b", progress=False))
    assert not (tmp_path / "b").exists()
    # The CLI turns the same errors into one line and exit code 1; existing output is refused.
    (tmp_path / "exists").mkdir()
    rc = bag_main(["write", "--data", str(dataset), "--seq", "synth_00", "--out",
                   str(tmp_path / "exists"), "--quiet"])
    assert rc == 1
    assert "exists already" in capsys.readouterr().err


# --- play into a live graph ----------------------------------------------------------------

LISTENER = r"""
import hashlib, json, sys, time
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from nav_msgs.msg import Odometry
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image

want_images, want_odom, want_clock_ns, timeout = map(float, sys.argv[1:5])
rclpy.init()
node = rclpy.create_node("bag_listener")
reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
best_effort = QoSProfile(depth=1000, reliability=ReliabilityPolicy.BEST_EFFORT)
images, odom, clock, best = [], [], [], {"image": 0, "odom": 0}

def ns(t):
    return t.sec * 1_000_000_000 + t.nanosec

def on_image(m):
    images.append([ns(m.header.stamp), m.header.frame_id, m.height, m.width, m.encoding,
                   m.is_bigendian, m.step, hashlib.sha256(bytes(m.data)).hexdigest()])

def on_odom(m):
    p, t = m.pose.pose, m.twist.twist
    odom.append([ns(m.header.stamp), m.header.frame_id, m.child_frame_id,
                 p.position.x, p.position.y, p.position.z,
                 p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w,
                 t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z])

def count(key):
    def cb(m):
        best[key] += 1
    return cb

node.create_subscription(Image, "/camera/image_raw", on_image, reliable)
node.create_subscription(Image, "/camera/image_raw", count("image"), best_effort)
node.create_subscription(Odometry, "/odom", on_odom, reliable)
node.create_subscription(Odometry, "/odom", count("odom"), best_effort)
node.create_subscription(Clock, "/clock", lambda m: clock.append(ns(m.clock)), reliable)
print("READY", flush=True)

def done():
    return (len(images) >= want_images and len(odom) >= want_odom
            and (want_clock_ns == 0 or (clock and clock[-1] >= want_clock_ns)))

deadline = time.monotonic() + timeout
while not done() and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.1)
# Best-effort copies may still be queued: give them a short bounded chance.
extra = time.monotonic() + 1.0
while (best["image"] < len(images) or best["odom"] < len(odom)) and time.monotonic() < extra:
    rclpy.spin_once(node, timeout_sec=0.05)
print(json.dumps({"images": images, "odom": odom, "clock": clock, "best": best}), flush=True)
node.destroy_node()
rclpy.shutdown()
"""


def bag_env() -> dict[str, str]:
    env = ros_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def expected_messages(bag: Path, start_ns: int = 0) -> tuple[list[list], list[list]]:
    """What the listener should record, decoded from the bag with rosbags."""
    msgs = read_bag(bag)
    images = [[stamp_ns(m), m.header.frame_id, m.height, m.width, m.encoding, m.is_bigendian,
               m.step, hashlib.sha256(m.data.tobytes()).hexdigest()]
              for ts, m in msgs["/camera/image_raw"] if ts >= start_ns]  # fmt: skip
    odom = []
    for ts, m in msgs["/odom"]:
        if ts < start_ns:
            continue
        p, t = m.pose.pose, m.twist.twist
        odom.append([stamp_ns(m), m.header.frame_id, m.child_frame_id,
                     p.position.x, p.position.y, p.position.z,
                     p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w,
                     t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z])
    return images, odom


def play_into_listener(tmp_path: Path, bag: Path, *play_args: str, start_ns: int = 0,
                       clock_until_ns: int = 0) -> tuple[dict, dict]:  # fmt: skip
    images, odom = expected_messages(bag, start_ns)
    env = bag_env()
    script = tmp_path / "listener.py"
    script.write_text(LISTENER)
    listener = Process([sys.executable, str(script), str(len(images)), str(len(odom)),
                        str(clock_until_ns), "40"], env, tmp_path / "listener.log")  # fmt: skip
    try:
        listener.wait_for_output("READY", timeout=60)
        # Two subscriptions per topic (reliable + best effort): wait for both to match.
        play = subprocess.run(
            [sys.executable, "-m", "spartan_ros.bag", "play", str(bag), "--json",
             "--wait-for-subscribers", "2", "--wait-timeout", "30", *play_args],
            env=env, capture_output=True, text=True, timeout=120, start_new_session=True,
        )
        assert play.returncode == 0, f"{play.stdout}\n{play.stderr}"
        summary = json.loads(play.stdout.strip().splitlines()[-1])
        listener.popen.wait(60)
        got = json.loads(listener.output().strip().splitlines()[-1])
    finally:
        listener.stop()
    assert summary["counts"] == {"/camera/image_raw": len(images), "/odom": len(odom)}
    assert summary["matched"] == {"/camera/image_raw": 2, "/odom": 2}
    # Every message arrives on the reliable subscriptions, decoded equal to the bag's.
    assert got["images"] == images
    assert got["odom"] == odom
    # The default reliable publisher also serves the best-effort (sensor-data) subscribers.
    assert got["best"]["image"] > 0 and got["best"]["odom"] > 0
    return summary, got


def test_play_all_messages_with_clock(bags: dict[str, Path], tmp_path: Path) -> None:
    bag = bags["mcap"]
    with Reader(bag) as r:
        start, end = r.start_time, r.end_time - 1  # rosbags' end_time is exclusive
    summary, got = play_into_listener(tmp_path, bag, "--clock", "20", clock_until_ns=end)
    assert summary["loops"] == 1 and not summary["interrupted"]
    span = (end - start) * 1e-9
    assert span * 0.9 < summary["wall_s"] < span + 3.0  # real time (loose: shared CPU)
    clock = np.array(got["clock"])
    assert len(clock) >= 10
    assert np.all(np.diff(clock) > 0)
    assert clock[-1] == end and clock[0] >= start


def test_play_rate_and_offset(bags: dict[str, Path], tmp_path: Path) -> None:
    bag = bags["sqlite3"]
    with Reader(bag) as r:
        start, end = r.start_time, r.end_time
    offset = 1.0
    summary, _ = play_into_listener(tmp_path, bag, "--rate", "5", "--start-offset", str(offset),
                                    start_ns=start + int(offset * 1e9))  # fmt: skip
    span = (end - start) * 1e-9 - offset
    assert summary["bag_span_s"] == pytest.approx(span, abs=1e-3)
    # ~span / 5 of wall time: loose bounds, this is no benchmark.
    assert 0.7 * span / 5 < summary["wall_s"] < span / 5 + 1.5
    assert summary["wall_s"] < span / 2


def test_play_loop_stops_on_sigint(bags: dict[str, Path], tmp_path: Path) -> None:
    env = bag_env()
    player = Process([sys.executable, "-m", "spartan_ros.bag", "play", str(bags["sqlite3"]),
                      "--loop", "--rate", "20", "--wait-for-subscribers", "0", "--json"],
                     env, tmp_path / "player.log")  # fmt: skip
    try:
        player.wait_for_output("pass 2 done", timeout=60)  # a pass takes ~0.3 s at rate 20
        player.signal(signal.SIGINT)
        rc = player.popen.wait(20)
    finally:
        player.stop()
    output = player.log_path.read_text()
    assert rc == 0, output
    summary = json.loads(output.strip().splitlines()[-1])
    assert summary["interrupted"] is True
    assert summary["loops"] >= 2
    assert summary["counts"]["/camera/image_raw"] >= 2 * sum(SEQ_FRAMES.values())


def test_play_errors(bags: dict[str, Path], tmp_path: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert bag_main(["play", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert bag_main(["play", str(bags["mcap"]), "--topics", "/nope"]) == 1
    assert "/nope" in capsys.readouterr().err
    assert bag_main(["play", str(bags["mcap"]), "--rate", "0"]) == 1
    assert "rate" in capsys.readouterr().err
    assert bag_main(["play", str(bags["mcap"]), "--start-offset", "100"]) == 1
    assert "past the end" in capsys.readouterr().err


# --- camera-sized images, best effort, between processes ----------------------------------

COUNTER = r"""
import sys, time
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

rclpy.init()
node = rclpy.create_node("image_counter")
got = [0]
node.create_subscription(Image, "/camera/image_raw", lambda raw: got.__setitem__(0, got[0] + 1),
                         QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT),
                         raw=True)
print("READY", flush=True)
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.1)
    try:
        open(sys.argv[2]).close()
        break
    except FileNotFoundError:
        pass
end = time.monotonic() + 1.0  # what is still on its way
while time.monotonic() < end:
    rclpy.spin_once(node, timeout_sec=0.05)
print("RECEIVED", got[0], flush=True)
node.destroy_node()
rclpy.shutdown()
"""


def test_play_delivers_large_images_best_effort(dataset: Path, tmp_path: Path) -> None:
    """1280x720 rgb8 (2.8 MB, far above Fast DDS's default 512 KB shared-memory segment)
    played best effort, like a camera driver: with the package's Fast DDS profile, which
    `spartan-bag play` applies, the images reach another process."""
    bag = tmp_path / "hd"
    write_bag(WriteConfig(data=dataset, seqs=["synth_01"], out=bag, start_time_ns=START_NS,
                          size=(1280, 720), progress=False))
    env = bag_env()
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    script, done = tmp_path / "counter.py", tmp_path / "done"
    script.write_text(COUNTER)
    counter = Process([sys.executable, str(script), "60", str(done)], env,
                      tmp_path / "counter.log")
    try:
        counter.wait_for_output("READY", timeout=60)
        play = subprocess.run(
            [sys.executable, "-m", "spartan_ros.bag", "play", str(bag), "--json", "--qos",
             "sensor", "--topics", "/camera/image_raw", "--wait-timeout", "30"],
            env=env, capture_output=True, text=True, timeout=120, start_new_session=True)
        assert play.returncode == 0, f"{play.stdout}\n{play.stderr}"
        summary = json.loads(play.stdout.strip().splitlines()[-1])
        done.touch()
        counter.popen.wait(30)
        received = int(counter.output().split("RECEIVED")[-1].split()[0])
    finally:
        counter.stop()
    published = summary["counts"]["/camera/image_raw"]
    assert published == SEQ_FRAMES["synth_01"]
    assert received >= 0.9 * published, f"{received} of {published} images arrived"
    from spartan_ros import dds

    assert summary["dds_profile"] == str(dds.PROFILE)
