"""CLIP image preprocessing with Pillow and numpy (no torch), matching the reference transform.

The reference (docs/model.md section 4, Q25) runs torchvision's ``Resize(R, BICUBIC)``,
``CenterCrop(R)``, ``ToTensor()`` and ``Normalize(CLIP_MEAN, CLIP_STD)`` on PIL images. Pillow's
bicubic filter antialiases when it shrinks; OpenCV's ``INTER_CUBIC`` does not, so it gives different
pixels and different embeddings. We therefore resize with Pillow and reproduce torchvision's size
and crop arithmetic exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
COLORS = ("rgb", "bgr")
# How a frame becomes R x R: "crop", the reference (shorter side to R, then the centre square,
# dropping the sides of a wide frame); "squash", the whole frame resized to R x R (nothing
# dropped, the aspect ratio not kept; a model must be trained for it).
FITS = ("crop", "squash")
# Frames up to this side ratio follow the reference transform bit for bit; thinner ones are
# cropped before they are resized, so that their cost stays R x R (see _preprocess).
EXACT_MAX_ASPECT = 16


def resized_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """``(new_height, new_width)`` of torchvision ``Resize(resolution)``: the shorter side becomes
    ``resolution``, the longer one ``int(resolution * long / short)`` (truncated)."""
    if width <= height:
        return int(resolution * height / width), resolution
    return resolution, int(resolution * width / height)


def center_crop_offsets(height: int, width: int, resolution: int) -> tuple[int, int]:
    """``(top, left)`` of torchvision ``CenterCrop``: Python's round(), i.e. halves go to even."""
    return int(round((height - resolution) / 2.0)), int(round((width - resolution) / 2.0))


def _check_image(image: np.ndarray, name: str = "image") -> None:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name} must have dtype uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        hint = ""
        if image.ndim == 3 and image.shape[2] == 4:
            hint = " (drop the alpha channel with image[..., :3], as the reference does)"
        elif image.ndim == 2:
            hint = " (grey image: stack it to three channels)"
        raise ValueError(f"{name} must have shape [H, W, 3], got {image.shape}{hint}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {image.shape}")


def _check_args(resolution: int, color: str, fit: str = "crop") -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, int | np.integer):
        raise ValueError(f"resolution must be an int, got {resolution!r}")
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    if color not in COLORS:
        raise ValueError(f"color must be one of {COLORS}, got {color!r}")
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")


def crop_box(height: int, width: int, resolution: int) -> tuple[float, float, float, float]:
    """The part of the source (left, top, right, bottom in source pixels) that ends up in the
    ``Resize(R)`` + ``CenterCrop(R)`` output: its output pixels, mapped back to the source."""
    new_h, new_w = resized_size(height, width, resolution)
    top, left = center_crop_offsets(new_h, new_w, resolution)
    sx, sy = width / new_w, height / new_h
    return (left * sx, top * sy, (left + resolution) * sx, (top + resolution) * sy)


def _preprocess(image: np.ndarray, resolution: int, color: str, fit: str = "crop") -> np.ndarray:
    if color == "bgr":
        image = image[..., ::-1]
    height, width = image.shape[:2]
    pil = Image.fromarray(np.ascontiguousarray(image))  # uint8 [H, W, 3] is mode RGB
    if fit == "squash":
        crop = np.asarray(pil.resize((resolution, resolution), Image.Resampling.BICUBIC))
    elif max(height, width) <= EXACT_MAX_ASPECT * min(height, width):
        # The reference: resize the whole frame, then crop (at most R x 16R pixels here).
        new_h, new_w = resized_size(height, width, resolution)
        resized = np.asarray(pil.resize((new_w, new_h), Image.Resampling.BICUBIC))
        top, left = center_crop_offsets(new_h, new_w, resolution)
        crop = resized[top : top + resolution, left : left + resolution]
    else:
        # A thin strip: resizing it first would make it R times longer (a 1 x 600000 strip
        # becomes 224 x 134 million). Pillow resamples only the box the crop keeps, with the
        # same filter; its float filter positions differ from the whole-frame ones in the
        # last bits, so some pixel values differ by a few grey levels.
        box = crop_box(height, width, resolution)
        crop = np.asarray(pil.resize((resolution, resolution), Image.Resampling.BICUBIC,
                                     box=box))
    # float32 throughout, in the same order as ToTensor (x / 255) and Normalize ((x - m) / s).
    x = crop.astype(np.float32) / np.float32(255.0)
    x = (x - CLIP_MEAN) / CLIP_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess_image(image: np.ndarray, resolution: int, color: str = "rgb",
                     fit: str = "crop") -> np.ndarray:
    """One uint8 ``[H, W, 3]`` frame -> normalised float32 ``[3, R, R]`` for the image encoder.

    ``color`` says the channel order of ``image`` (``"bgr"`` for OpenCV / ROS ``bgr8`` frames);
    ``fit`` how the frame becomes square (``FITS``: the model's own, from its model.json).
    Anything other than a non-empty uint8 ``[H, W, 3]`` array raises ValueError.
    """
    _check_args(resolution, color, fit)
    _check_image(image)
    return _preprocess(image, int(resolution), color, fit)


def preprocess_batch(
    images: Sequence[np.ndarray] | np.ndarray, resolution: int, color: str = "rgb",
    fit: str = "crop",
) -> np.ndarray:
    """Frames (a sequence, or one ``[N, H, W, 3]`` array) -> float32 ``[N, 3, R, R]``.

    Frames may differ in size; each is resized and cropped on its own.
    """
    _check_args(resolution, color, fit)
    if isinstance(images, np.ndarray) and images.ndim != 4:
        raise ValueError(f"a batch array must have shape [N, H, W, 3], got {images.shape}")
    out = np.empty((len(images), 3, resolution, resolution), dtype=np.float32)
    for i, image in enumerate(images):
        _check_image(image, name=f"image {i}")
        out[i] = _preprocess(image, int(resolution), color, fit)
    return out
