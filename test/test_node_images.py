"""sensor_msgs/Image and CompressedImage -> RGB frames, and the messages that must be refused."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image as PILImage
from sensor_msgs.msg import Image

from spartan_ros.ingest.images import ImageError, decode_compressed, image_view, to_rgb

RGB = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def message(pixels: np.ndarray, encoding: str, pad: int = 0) -> Image:
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1)
    data = np.concatenate([rows, np.full((h, pad), 9, np.uint8)], axis=1)  # row padding
    return Image(height=h, width=w, encoding=encoding, step=data.shape[1],
                 data=data.tobytes())


@pytest.mark.parametrize("encoding, pixels", [
    ("rgb8", RGB),
    ("bgr8", RGB[..., ::-1]),
    ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)])),
    ("bgra8", np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 7, np.uint8)])),
])
def test_every_colour_encoding_gives_the_same_rgb(encoding, pixels):
    for pad in (0, 3):
        view, enc = image_view(message(np.ascontiguousarray(pixels), encoding, pad))
        out = to_rgb(view, enc)
        assert out.flags.c_contiguous and out.dtype == np.uint8
        np.testing.assert_array_equal(out, RGB)


def test_mono8_is_repeated_into_three_channels():
    grey = RGB[..., 0]
    out = to_rgb(*image_view(message(grey[..., None], "mono8", pad=1)))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))


def test_malformed_images_are_refused_with_the_field_named():
    good = message(RGB, "rgb8")
    cases = [
        ({"encoding": "nv21"}, "unsupported encoding 'nv21' \\(supported: rgb8, "),
        ({"encoding": "32FC1"}, "unsupported encoding"),
        ({"encoding": "mono16", "step": 13}, "step 13 is smaller than width 7 x 2"),
        ({"step": 7 * 3 - 1}, "step 20 is smaller than width 7 x 3"),
        ({"data": bytes(good.data)[:-1]}, "data has 104 bytes, expected step 21 x height 5"),
        ({"data": bytes(good.data) + b"\0"}, "data has 106 bytes"),
        ({"height": 0, "data": b""}, "empty image"),
    ]
    for fields, text in cases:
        msg = message(RGB, "rgb8")
        for name, value in fields.items():
            setattr(msg, name, value)
        with pytest.raises(ImageError, match=text):
            image_view(msg)


def test_compressed_png_and_jpeg_decode_and_garbage_is_refused():
    buf = io.BytesIO()
    PILImage.fromarray(RGB).save(buf, format="PNG")
    np.testing.assert_array_equal(decode_compressed(buf.getvalue()), RGB)
    buf = io.BytesIO()
    PILImage.fromarray(RGB).convert("L").save(buf, format="JPEG")
    assert decode_compressed(buf.getvalue()).shape == (5, 7, 3)
    with pytest.raises(ImageError, match="cannot decode"):
        decode_compressed(b"definitely not a picture")


# -- camera encodings converted with OpenCV -------------------------------------------------

COLOUR = (200, 90, 30)  # a uniform colour: every demosaic / chroma method must give it back


@pytest.mark.parametrize("encoding, first_rows", [
    ("bayer_rggb8", ("RG", "GB")),
    ("bayer_bggr8", ("BG", "GR")),
    ("bayer_gbrg8", ("GB", "RG")),
    ("bayer_grbg8", ("GR", "BG")),
])
def test_bayer_patterns_demosaic_to_the_right_colours(encoding, first_rows):
    h, w = 8, 10
    channel = {"R": 0, "G": 1, "B": 2}
    mosaic = np.zeros((h, w), np.uint8)
    for y in range(h):
        for x in range(w):
            mosaic[y, x] = COLOUR[channel[first_rows[y % 2][x % 2]]]
    msg = Image(height=h, width=w, encoding=encoding, step=w, data=mosaic.tobytes())
    out = to_rgb(*image_view(msg))
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.broadcast_to(COLOUR, (h, w, 3)))


@pytest.mark.parametrize("encoding, order", [
    ("yuv422", "UYVY"), ("uyvy", "UYVY"), ("yuv422_yuy2", "YUYV"), ("yuyv", "YUYV")])
def test_yuv422_encodings(encoding, order):
    h, w = 4, 6
    r, g, b = COLOUR  # cameras send video-range BT.601, which OpenCV's 4:2:2 codes expect
    y = round(16 + 0.257 * r + 0.504 * g + 0.098 * b)
    u = round(128 - 0.148 * r - 0.291 * g + 0.439 * b)
    v = round(128 + 0.439 * r - 0.368 * g - 0.071 * b)
    pair = {"UYVY": [u, y, v, y], "YUYV": [y, u, y, v]}[order]
    data = np.tile(np.array(pair, np.uint8), (h, w // 2)).tobytes()
    out = to_rgb(*image_view(Image(height=h, width=w, encoding=encoding, step=2 * w,
                                   data=data)))
    assert out.shape == (h, w, 3)
    assert np.abs(out.astype(int) - COLOUR).max() <= 2  # rounded to 8 bits twice
    with pytest.raises(ImageError, match="needs an even width, got 5"):
        image_view(Image(height=h, width=5, encoding=encoding, step=10, data=bytes(40)))


def test_16_bit_grey_and_opencv_channel_order():
    grey = np.array([[0x0000, 0x1234, 0xFF7F, 0xFFFF]], dtype=np.uint16)
    for encoding in ("mono16", "16UC1"):
        for big in (False, True):
            data = grey.astype(">u2" if big else "<u2").tobytes()
            msg = Image(height=1, width=4, encoding=encoding, step=8, data=data,
                        is_bigendian=big)
            out = to_rgb(*image_view(msg))
            np.testing.assert_array_equal(out[0, :, 0], [0, 0x12, 0xFF, 0xFF])
            assert (out == out[..., :1]).all()
    bgr = np.ascontiguousarray(RGB[..., ::-1])
    np.testing.assert_array_equal(to_rgb(*image_view(message(bgr, "8UC3"))), RGB)
    np.testing.assert_array_equal(to_rgb(*image_view(message(RGB[..., :1], "8UC1"))),
                                  np.repeat(RGB[..., :1], 3, axis=2))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` and whose pixels are a few bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_sizes_are_bounded_before_pixels_are_spent():
    # A 661-byte PNG of a 600000 x 1 strip once cost 16 GB downstream: refused from its header.
    strip = io.BytesIO()
    PILImage.new("RGB", (600_000, 1)).save(strip, format="PNG")
    assert len(strip.getvalue()) < 4000
    with pytest.raises(ImageError, match="600000x1 is thinner than 1:16"):
        decode_compressed(strip.getvalue())
    with pytest.raises(ImageError, match="8000x8000 has more than 40000000 pixels"):
        decode_compressed(png_header_only(8000, 8000))
    with pytest.raises(ImageError, match="has more than 40000000 pixels"):
        decode_compressed(png_header_only(60_000, 60_000))
    with pytest.raises(ImageError, match="cannot decode the compressed PNG image"):
        decode_compressed(png_header_only(640, 480))  # header fine, pixels missing
    # raw images: huge sizes with small data, thin strips
    cases = [
        ({"height": 2**32 - 1, "width": 2**32 - 1, "step": 2**32 - 1}, "more than 40000000"),
        ({"height": 1, "width": 100_000, "step": 300_000, "data": bytes(300_000)}, "thinner"),
        ({"height": 5, "width": 7, "step": 2**32 - 1}, "data has 105 bytes, expected step"),
    ]
    for fields, text in cases:
        msg = message(RGB, "rgb8")
        for name, value in fields.items():
            setattr(msg, name, value)
        with pytest.raises(ImageError, match=text):
            image_view(msg)
