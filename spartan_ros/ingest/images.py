"""sensor_msgs/Image and CompressedImage -> RGB numpy frames (no cv_bridge needed).

``image_view`` only checks the header fields and wraps the message's bytes (no copy), so it is
cheap enough for a subscription callback; ``to_rgb`` and ``decode_compressed`` do the real work
and run in the encoder thread. Colour conversions of camera encodings (YUV 4:2:2, Bayer) are
OpenCV's ``cvtColor``, as cv_bridge does them.

Sizes are checked before any memory is spent on pixels: a frame must have at most
``MAX_PIXELS`` pixels and a side ratio of at most ``MAX_ASPECT`` (a compressed image is checked
on the dimensions in its header, before it is decoded).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image as PILImage

# 8K UHD is 33 Mpx: anything larger from a vehicle camera is a corrupt header.
MAX_PIXELS = 40_000_000
# Wider than a stitched 360-degree panorama strip (8:1) by a margin; thinner is not a camera.
MAX_ASPECT = 16


class ImageError(ValueError):
    """A message that is not a usable image; the message says which field is wrong."""


def _first3(px: np.ndarray) -> np.ndarray:
    return px[..., :3]


def _reverse3(px: np.ndarray) -> np.ndarray:
    return px[..., 2::-1]


def _grey(px: np.ndarray) -> np.ndarray:
    return np.repeat(px, 3, axis=2)


def _grey16(px: np.ndarray) -> np.ndarray:
    # The high byte, rounded (OpenCV's convertTo with scale 1/256): 16-bit grey to 8-bit.
    return _grey(cv2.convertScaleAbs(px[..., 0], alpha=1.0 / 256.0)[..., None])


def _cv(code: int) -> Callable[[np.ndarray], np.ndarray]:
    def convert(px: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(np.ascontiguousarray(px), code)

    return convert


@dataclass(frozen=True)
class Encoding:
    """How to read one ``sensor_msgs/Image`` encoding: bytes per pixel, as ``channels`` values
    of ``dtype``, and the conversion of the [H, W, channels] array to RGB uint8."""

    channels: int
    dtype: type
    to_rgb: Callable[[np.ndarray], np.ndarray]
    even_width: bool = False  # YUV 4:2:2 shares chroma between pixel pairs


# OpenCV names a Bayer pattern by the second row's first two pixels: ROS's bayer_rggb8 (first
# row R G) is OpenCV's BayerBG, as in cv_bridge.
ENCODINGS: dict[str, Encoding] = {
    "rgb8": Encoding(3, np.uint8, _first3),
    "rgba8": Encoding(4, np.uint8, _first3),
    "bgr8": Encoding(3, np.uint8, _reverse3),
    "bgra8": Encoding(4, np.uint8, _reverse3),
    "8UC3": Encoding(3, np.uint8, _reverse3),  # OpenCV's own order: BGR
    "8UC4": Encoding(4, np.uint8, _reverse3),
    "mono8": Encoding(1, np.uint8, _grey),
    "8UC1": Encoding(1, np.uint8, _grey),
    "mono16": Encoding(1, np.uint16, _grey16),
    "16UC1": Encoding(1, np.uint16, _grey16),
    "yuv422": Encoding(2, np.uint8, _cv(cv2.COLOR_YUV2RGB_UYVY), even_width=True),  # U Y V Y
    "uyvy": Encoding(2, np.uint8, _cv(cv2.COLOR_YUV2RGB_UYVY), even_width=True),
    "yuv422_yuy2": Encoding(2, np.uint8, _cv(cv2.COLOR_YUV2RGB_YUY2), even_width=True),
    "yuyv": Encoding(2, np.uint8, _cv(cv2.COLOR_YUV2RGB_YUY2), even_width=True),
    "bayer_rggb8": Encoding(1, np.uint8, _cv(cv2.COLOR_BayerBG2RGB)),
    "bayer_bggr8": Encoding(1, np.uint8, _cv(cv2.COLOR_BayerRG2RGB)),
    "bayer_gbrg8": Encoding(1, np.uint8, _cv(cv2.COLOR_BayerGR2RGB)),
    "bayer_grbg8": Encoding(1, np.uint8, _cv(cv2.COLOR_BayerGB2RGB)),
}


def check_size(width: int, height: int) -> None:
    """ImageError unless a ``width`` x ``height`` frame is within the size and aspect bounds."""
    if width <= 0 or height <= 0:
        raise ImageError(f"empty image ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise ImageError(f"image of {width}x{height} has more than {MAX_PIXELS} pixels")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(f"image of {width}x{height} is thinner than 1:{MAX_ASPECT}")


def image_view(msg) -> tuple[np.ndarray, str]:  # sensor_msgs/Image
    """``(pixels [H, W, C] view of msg.data, encoding)``; ImageError when malformed."""
    enc = msg.encoding
    spec = ENCODINGS.get(enc)
    if spec is None:
        raise ImageError(f"unsupported encoding {enc!r} (supported: {', '.join(ENCODINGS)})")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    check_size(w, h)
    if spec.even_width and w % 2:
        raise ImageError(f"{enc} needs an even width, got {w}")
    itemsize = np.dtype(spec.dtype).itemsize
    row_bytes = w * spec.channels * itemsize
    if step < row_bytes:
        raise ImageError(f"step {step} is smaller than width {w} x {spec.channels * itemsize} "
                         "bytes per pixel")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != step * h:
        raise ImageError(f"data has {data.size} bytes, expected step {step} x height {h} = "
                         f"{step * h}")
    rows = data.reshape(h, step)[:, :row_bytes]
    if itemsize == 1:
        return rows.reshape(h, w, spec.channels), enc
    big_endian = bool(getattr(msg, "is_bigendian", False))
    dtype = np.dtype(spec.dtype).newbyteorder(">" if big_endian else "<")
    return rows.view(dtype).reshape(h, w, spec.channels), enc


def to_rgb(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """A contiguous RGB uint8 [H, W, 3] copy of a view from ``image_view``."""
    spec = ENCODINGS.get(encoding)
    if spec is None:
        raise ImageError(f"unsupported encoding {encoding!r}")
    if not pixels.dtype.isnative:  # a big-endian 16-bit message
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    return np.ascontiguousarray(spec.to_rgb(pixels))


def decode_compressed(data: bytes | bytearray | memoryview) -> np.ndarray:
    """JPEG / PNG bytes (sensor_msgs/CompressedImage.data) -> RGB uint8 [H, W, 3].

    The header's dimensions are checked (``check_size``) before the pixels are decoded."""
    try:
        img = PILImage.open(io.BytesIO(bytes(data)))
    except PILImage.DecompressionBombError as exc:  # Pillow's own, far larger, bound
        raise ImageError(f"compressed image has more than {MAX_PIXELS} pixels ({exc})") from exc
    except Exception as exc:  # PIL raises many types for bad bytes
        raise ImageError(f"cannot decode the compressed image: {exc}") from exc
    with img:
        width, height = img.size
        check_size(width, height)
        try:
            return np.asarray(img.convert("RGB"))
        except Exception as exc:
            raise ImageError(f"cannot decode the compressed {img.format} image: {exc}") from exc
