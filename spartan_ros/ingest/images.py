"""sensor_msgs/Image and CompressedImage -> RGB numpy frames (no cv_bridge needed).

``image_view`` only checks the header fields and wraps the message's bytes (no copy), so it is
cheap enough for a subscription callback; ``to_rgb`` and ``decode_compressed`` do the real work
and run in the encoder thread.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image as PILImage

# encoding -> channels. 8-bit only: what cameras publish and the model reads.
CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


class ImageError(ValueError):
    """A message that is not a usable image; the message says which field is wrong."""


def image_view(msg) -> tuple[np.ndarray, str]:  # sensor_msgs/Image
    """``(pixels [H, W, C] uint8 view of msg.data, encoding)``; ImageError when malformed."""
    enc = msg.encoding
    if enc not in CHANNELS:
        raise ImageError(f"unsupported encoding {enc!r} (supported: {', '.join(CHANNELS)})")
    h, w, step, c = int(msg.height), int(msg.width), int(msg.step), CHANNELS[enc]
    if h == 0 or w == 0:
        raise ImageError(f"empty image ({w}x{h})")
    if step < w * c:
        raise ImageError(f"step {step} is smaller than width {w} x {c} bytes per pixel")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != step * h:
        raise ImageError(f"data has {data.size} bytes, expected step {step} x height {h} = "
                         f"{step * h}")
    return data.reshape(h, step)[:, : w * c].reshape(h, w, c), enc


def to_rgb(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """A contiguous RGB uint8 [H, W, 3] copy of a view from ``image_view``."""
    if encoding in ("rgb8", "rgba8"):
        out = pixels[..., :3]
    elif encoding in ("bgr8", "bgra8"):
        out = pixels[..., 2::-1]
    elif encoding == "mono8":
        out = np.repeat(pixels, 3, axis=2)
    else:
        raise ImageError(f"unsupported encoding {encoding!r}")
    return np.ascontiguousarray(out)


def decode_compressed(data: bytes | bytearray | memoryview) -> np.ndarray:
    """JPEG / PNG bytes (sensor_msgs/CompressedImage.data) -> RGB uint8 [H, W, 3]."""
    try:
        with PILImage.open(io.BytesIO(bytes(data))) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as exc:  # PIL raises many types for bad bytes
        raise ImageError(f"cannot decode the compressed image: {exc}") from exc
