"""sensor_msgs/Image and CompressedImage -> RGB frames, and the messages that must be refused."""

import io

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
        ({"encoding": "yuv422_yuy2"}, "unsupported encoding 'yuv422_yuy2'"),
        ({"encoding": "16UC1"}, "unsupported encoding"),
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
