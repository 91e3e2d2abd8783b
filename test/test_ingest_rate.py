"""Ingest at camera rates without ROS: CDR reading, encode_every, fast-camera bags, restamping."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ros_graph import QUAT, START_NS, drive_image, drive_position, tiny_model
from rosbags.typesys import Stores, get_typestore

from spartan_ros.bag.play import shifted
from spartan_ros.ingest import SlidingWindow
from spartan_ros.ingest.cdr import compressed_fields, image_fields, stamp_ns
from spartan_ros.ingest.images import ImageError, decode_compressed, image_view, to_rgb
from spartan_ros.memory.service import MemoryService, ServiceConfig
from spartan_ros.memory.store import SegmentStore
from spartan_ros.node import parameters as params
from spartan_ros.runtime.engine import Engine

TYPES = get_typestore(Stores.ROS2_KILTED)


def header(stamp: int, frame_id: str = "camera"):
    t = TYPES.types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9)
    return TYPES.types["std_msgs/msg/Header"](stamp=t, frame_id=frame_id)


def image_bytes(rgb: np.ndarray, stamp: int, little_endian: bool = True, frame_id: str = "cam",
                encoding: str = "rgb8", pad: int = 0) -> bytes:
    h, w = rgb.shape[:2]
    rows = np.zeros((h, w * 3 + pad), dtype=np.uint8)
    rows[:, : w * 3] = rgb.reshape(h, -1)
    msg = TYPES.types["sensor_msgs/msg/Image"](
        header=header(stamp, frame_id), height=h, width=w, encoding=encoding, is_bigendian=0,
        step=w * 3 + pad, data=rows.reshape(-1))
    return bytes(TYPES.serialize_cdr(msg, "sensor_msgs/msg/Image", little_endian=little_endian))


# -- CDR ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("little_endian", [True, False])
@pytest.mark.parametrize("frame_id", ["", "c", "camera_optical_frame"])
def test_image_fields_read_from_cdr_bytes(little_endian: bool, frame_id: str) -> None:
    rgb = drive_image(3, width=7, height=5)  # odd sizes: every alignment case
    stamp = START_NS + 123_456_789
    raw = image_bytes(rgb, stamp, little_endian, frame_id, pad=2)
    assert stamp_ns(raw) == stamp
    msg = image_fields(raw)
    assert (msg.stamp_ns, msg.frame_id, msg.height, msg.width, msg.encoding, msg.step) == (
        stamp, frame_id, 5, 7, "rgb8", 23)
    pixels, encoding = image_view(msg)
    assert np.shares_memory(pixels, np.frombuffer(raw, dtype=np.uint8))  # a view, no copy
    np.testing.assert_array_equal(to_rgb(pixels, encoding), rgb)


def test_compressed_fields_and_decoding() -> None:
    import io

    from PIL import Image

    rgb = drive_image(5)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    msg = TYPES.types["sensor_msgs/msg/CompressedImage"](
        header=header(START_NS), format="png",
        data=np.frombuffer(buf.getvalue(), dtype=np.uint8))
    raw = bytes(TYPES.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))
    fields = compressed_fields(raw)
    assert fields.stamp_ns == START_NS and fields.format == "png"
    np.testing.assert_array_equal(decode_compressed(fields.data), rgb)


def test_truncated_or_foreign_bytes_are_refused() -> None:
    raw = image_bytes(drive_image(0, 8, 6), START_NS)
    for cut in (3, 11, 20, 40, len(raw) - 1):
        with pytest.raises(ImageError):
            image_view(image_fields(raw[:cut]))
    with pytest.raises(ImageError, match="not a CDR message"):
        stamp_ns(b"\x07\x07\x00\x00" + bytes(20))


def test_shifted_moves_only_the_stamp() -> None:
    raw = image_bytes(drive_image(1, 8, 6), START_NS + 999_999_999)
    moved = shifted(raw, 2_000_000_001)
    assert stamp_ns(moved) == START_NS + 3_000_000_000
    assert moved[12:] == raw[12:] and len(moved) == len(raw)


# -- encode_every ---------------------------------------------------------------------------------


def test_window_mean_over_encoded_frames_only() -> None:
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((30, 4)).astype(np.float32)
    pose = np.array([0, 0, 0, 0, 0, 0, 0, 1.0])
    every, full = SlidingWindow(6, 3, 10.0), SlidingWindow(6, 3, 10.0)
    out_every, out_full = [], []
    for i, f in enumerate(feats):
        out_every.append(every.push(i * 100, f if i % 2 == 0 else None, pose))
        out_full.append(full.push(i * 100, f, pose))
    got = [w for w in out_every if w is not None]
    want = [w for w in out_full if w is not None]
    assert [w.start_ns for w in got] == [w.start_ns for w in want] and len(got) == 9
    for w in got:
        first = w.start_ns // 100
        expect = feats[first : first + 6][(np.arange(first, first + 6) % 2) == 0].mean(axis=0)
        np.testing.assert_allclose(w.video_feat, expect, rtol=1e-6, atol=1e-6)
        assert w.encoded == 3
    assert all(w.encoded == 6 for w in want)
    # a window whose frames were never encoded is not emitted
    blind = SlidingWindow(3, 3, 10.0)
    assert [blind.push(i * 100, None, pose) for i in range(3)] == [None] * 3
    assert blind.counts["dropped: window without an encoded frame"] == 1


class Counting:
    """A frame source that counts how often it was decoded."""

    calls = 0

    def __init__(self, index: int) -> None:
        self.index = index

    def __call__(self) -> np.ndarray:
        Counting.calls += 1
        return drive_image(self.index)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(tiny_model(tmp_path_factory.getbasetemp() / "models"), providers=("cpu",))


def run_drive(engine: Engine, encode_every: int, seconds: float = 4.0):
    store = SegmentStore(None, engine.model_hash, engine.embed_dim, head=engine.fusion_head)
    svc = MemoryService(engine, store, ServiceConfig(encode_every=encode_every))
    for i in range(int(seconds * 10) + 1):  # 10 Hz camera and odometry: every frame is taken
        stamp = START_NS + i * 100_000_000
        svc.add_odometry(stamp, drive_position(stamp), QUAT, "odom")
        svc.add_frame(stamp, Counting(i))
        svc.process()
    svc.flush()
    return svc


def test_encode_every_encodes_and_decodes_every_kth_frame(engine: Engine) -> None:
    Counting.calls = 0
    full = run_drive(engine, 1)
    assert Counting.calls == 41 and full.stats()["counts"]["frames encoded"] == 41
    Counting.calls = 0
    half = run_drive(engine, 2)
    counts = half.stats()["counts"]
    assert Counting.calls == 21 and counts["frames encoded"] == 21  # the others never decoded
    assert counts["frames not encoded (encode_every)"] == 20
    a, b = full.store.get_many(full.store.all_ids()), half.store.get_many(half.store.all_ids())
    assert [s.start_ns for s in a] == [s.start_ns for s in b] and len(a) == 3
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.poses, y.poses)  # poses stay at the full rate
        first = (y.start_ns - START_NS) // 100_000_000
        idx = [i for i in range(first, first + 24) if i % 2 == 0]
        want = engine.encode_frames([drive_image(i) for i in idx]).mean(axis=0)
        np.testing.assert_allclose(y.video_feat, want, rtol=1e-4, atol=1e-5)
    # k = 1 is exactly the service without the option
    store = SegmentStore(None, engine.model_hash, engine.embed_dim, head=engine.fusion_head)
    with pytest.raises(ValueError, match="encode_every"):
        MemoryService(engine, store, ServiceConfig(encode_every=25))


def test_encode_every_parameter_is_validated() -> None:
    assert params.BY_NAME["encode_every"].default == 1
    assert params.validate({"encode_every": 4}) == []
    assert any("encode_every=0" in p for p in params.validate({"encode_every": 0}))
    assert any("larger than window_frames" in p
               for p in params.validate({"encode_every": 30, "window_frames": 24}))


# -- fast-camera bags ----------------------------------------------------------------------------


def test_write_a_30hz_camera_upscaled(tmp_path) -> None:
    from spartan_train.bag.write import WriteConfig, write_bag
    from spartan_train.data.synth.generate import main as synth_main

    from spartan_ros.bag.play import open_bag

    data = tmp_path / "drive"
    assert synth_main(["--out", str(data), "--sequences", "1", "--frames", "24", "--width", "32",
                       "--height", "24", "--val-fraction", "0", "--quiet"]) == 0
    seq = sorted(p.name for p in (data / "images").iterdir())[0]
    out = tmp_path / "bag"
    summary = write_bag(WriteConfig(data=data, seqs=[seq], out=out, odom_rate=100.0,
                                    frame_rate=30.0, size=(64, 48), compressed="jpeg",
                                    raw=False, progress=False))
    topic = "/camera/image_raw/compressed"
    assert summary.counts == {"/odom": 231, topic: 70}  # 2.3 s of data at 100 Hz and 30 Hz
    reader = open_bag(out)
    try:
        conns = [c for c in reader.connections if c.topic == topic]
        stamps, sizes = [], set()
        for _, _, raw in reader.messages(connections=conns):
            fields = compressed_fields(raw)
            stamps.append(fields.stamp_ns)
            sizes.add(decode_compressed(fields.data).shape)
    finally:
        reader.close()
    assert np.all(np.diff(stamps) >= 33_333_333) and np.all(np.diff(stamps) <= 33_333_334)
    assert sizes == {(48, 64, 3)}
    doc = json.loads((out / "captions.json").read_text())
    assert len(doc["sequences"][0]["frame_ns"]) == 24  # the data frames, as before
    with pytest.raises(ValueError, match="compressed format"):
        write_bag(WriteConfig(data=data, seqs=[seq], out=tmp_path / "b2", raw=False))


# -- static int8 ---------------------------------------------------------------------------------


def test_static_int8_export_loads_and_matches_float32(tmp_path) -> None:
    import torch
    from spartan_train.export.onnx_export import export_model, min_cosine, sample_images
    from spartan_train.model import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model("tiny")
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    out = tmp_path / "model"
    meta = export_model(ckpt, out, int8=True, int8_method="static", model=model,
                        log=lambda _line: None)
    assert [c for c in meta["checks"] if c["precision"] == "int8"][0]["min_cosine"] >= 0.99
    e32 = Engine(out, providers=("cpu",))
    e8 = Engine(out, providers=("cpu",), precision="int8")
    pixels = sample_images(4, e32.image_resolution, seed=7)
    assert min_cosine(e8.run_image(pixels), e32.run_image(pixels)) >= 0.99
    with pytest.raises(Exception, match="int8 method"):
        export_model(ckpt, tmp_path / "m2", int8=True, int8_method="fast", model=model,
                     log=lambda _line: None)
