"""Tests for spartan_ros.preprocess against a plain Pillow pipeline (the reference transform)."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from spartan_ros.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    center_crop_offsets,
    preprocess_batch,
    preprocess_image,
    resized_size,
)

SIZES_HW = [(480, 640), (640, 480), (224, 224), (1080, 1920), (100, 300), (300, 100), (225, 224)]


def scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A frame with smooth gradients, hard edges and fine noise: resampling differences show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 255 * x / max(width - 1, 1)
    g = 255 * y / max(height - 1, 1)
    b = 127.5 + 127.5 * np.sin(x / 7.0) * np.cos(y / 11.0)
    img = np.stack([r, g, b], axis=-1)
    img[(x // 16 + y // 16) % 2 == 0] *= 0.6  # checkerboard edges
    img += rng.normal(0, 20, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def pillow_reference(image_rgb: np.ndarray, resolution: int) -> np.ndarray:
    """Resize(R, BICUBIC) -> CenterCrop(R) -> ToTensor -> Normalize, written out with Pillow."""
    pil = Image.fromarray(image_rgb)
    w, h = pil.size
    scale = resolution / min(w, h)
    if w <= h:
        size = (resolution, int(resolution * h / w))
    else:
        size = (int(resolution * w / h), resolution)
    assert abs(size[0] - w * scale) < 1 and abs(size[1] - h * scale) < 1
    pil = pil.resize(size, Image.Resampling.BICUBIC)
    left = int(round((size[0] - resolution) / 2.0))
    top = int(round((size[1] - resolution) / 2.0))
    pil = pil.crop((left, top, left + resolution, top + resolution)).convert("RGB")
    x = np.asarray(pil, dtype=np.float32) / 255.0
    mean = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
    std = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
    return ((x - mean) / std).transpose(2, 0, 1)


@pytest.mark.parametrize("hw", SIZES_HW)
@pytest.mark.parametrize("resolution", [224, 32])
def test_matches_pillow_pipeline_rgb_and_bgr(hw, resolution):
    img = scene(*hw, seed=hw[0] + hw[1])
    expect = pillow_reference(img, resolution)
    rgb = preprocess_image(img, resolution, "rgb")
    bgr = preprocess_image(np.ascontiguousarray(img[..., ::-1]), resolution, "bgr")
    for out in (rgb, bgr):
        assert out.shape == (3, resolution, resolution) and out.dtype == np.float32
        assert out.flags["C_CONTIGUOUS"]
        assert np.abs(out - expect).max() <= 1e-6
    # A non-contiguous BGR view (e.g. a flipped buffer) works too.
    np.testing.assert_array_equal(preprocess_image(img[..., ::-1], resolution, "bgr"), rgb)
    # Default colour order is RGB.
    np.testing.assert_array_equal(preprocess_image(img, resolution), rgb)


def test_size_and_crop_arithmetic_follow_torchvision():
    # Longer side truncated, not rounded: 224 * 1920 / 1080 = 398.2, 224 * 300 / 100 = 672.
    assert resized_size(1080, 1920, 224) == (224, 398)
    assert resized_size(480, 640, 224) == (224, 298)  # 298.67 -> 298
    assert resized_size(640, 480, 224) == (298, 224)
    assert resized_size(100, 300, 224) == (224, 672)
    assert resized_size(224, 224, 224) == (224, 224)
    assert resized_size(225, 224, 224) == (225, 224)
    # Crop offsets use Python round(): 0.5 -> 0, 1.5 -> 2, 37.0 -> 37.
    assert center_crop_offsets(225, 224, 224) == (0, 0)
    assert center_crop_offsets(227, 224, 224) == (2, 0)
    assert center_crop_offsets(224, 298, 224) == (0, 37)
    assert center_crop_offsets(224, 398, 224) == (0, 87)


def test_crop_offset_half_pixel_goes_to_even():
    # A 225-row (and a 227-row) image with constant rows: the crop start shows in the output.
    for height, top in ((225, 0), (227, 2)):
        img = np.repeat((np.arange(height, dtype=np.uint8) * 1)[:, None, None], 224, axis=1)
        img = np.repeat(img, 3, axis=2)
        out = preprocess_image(img, 224)
        first_row = out[0, 0, 0] * CLIP_STD[0] + CLIP_MEAN[0]
        assert round(float(first_row) * 255) == top


def test_normalisation_matches_torch_arithmetic():
    import torch  # only the test uses torch, as the arithmetic oracle

    img = scene(224, 224, seed=5)
    t = torch.from_numpy(img).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    mean = torch.as_tensor(CLIP_MEAN.tolist(), dtype=torch.float32).view(-1, 1, 1)
    std = torch.as_tensor(CLIP_STD.tolist(), dtype=torch.float32).view(-1, 1, 1)
    expect = t.sub(mean).div(std).numpy()
    np.testing.assert_array_equal(preprocess_image(img, 224), expect)


def test_opencv_cubic_differs_from_pillow():
    # Why Pillow: on downscaling Pillow's bicubic filter antialiases, OpenCV's INTER_CUBIC does not.
    img = scene(1080, 1920, seed=7)
    ours = preprocess_image(img, 224)
    new_h, new_w = resized_size(1080, 1920, 224)
    resized = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_CUBIC)
    top, left = center_crop_offsets(new_h, new_w, 224)
    crop = resized[top : top + 224, left : left + 224].astype(np.float32) / 255.0
    opencv = ((crop - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1)
    diff = np.abs(opencv - ours)
    assert diff.max() > 0.5 and diff.mean() > 0.05


def test_batch():
    imgs = [scene(480, 640, seed=1), scene(1080, 1920, seed=2), scene(224, 224, seed=3)]
    out = preprocess_batch(imgs, 224, "rgb")
    assert out.shape == (3, 3, 224, 224) and out.dtype == np.float32
    for i, img in enumerate(imgs):
        np.testing.assert_array_equal(out[i], preprocess_image(img, 224))
    stacked = np.stack([scene(120, 160, seed=s) for s in range(4)])
    out_bgr = preprocess_batch(stacked[..., ::-1], 32, "bgr")
    np.testing.assert_array_equal(out_bgr, preprocess_batch(list(stacked), 32))
    assert preprocess_batch([], 224).shape == (0, 3, 224, 224)


def test_errors():
    good = scene(64, 80)
    cases = [
        (good.astype(np.float32), "dtype uint8"),
        (good.astype(np.uint16), "dtype uint8"),
        (good[..., 0], r"shape \[H, W, 3\].*grey"),
        (np.concatenate([good, good[..., :1]], axis=2), r"shape \[H, W, 3\].*alpha"),
        (good[..., :2], r"shape \[H, W, 3\]"),
        (good[None], r"shape \[H, W, 3\]"),
        (np.zeros((0, 80, 3), np.uint8), "empty"),
        (np.zeros((64, 0, 3), np.uint8), "empty"),
        (good.tolist(), "numpy array"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            preprocess_image(bad, 224)  # type: ignore[arg-type]
    for resolution in (0, -5, 2.5, True, "224"):
        with pytest.raises(ValueError, match="resolution"):
            preprocess_image(good, resolution)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="color"):
        preprocess_image(good, 224, "rgba")
    with pytest.raises(ValueError, match="image 1 must have dtype uint8"):
        preprocess_batch([good, good.astype(np.float64)], 32)
    with pytest.raises(ValueError, match=r"batch array must have shape \[N, H, W, 3\]"):
        preprocess_batch(good, 32)
    # numpy integer resolutions are fine.
    assert preprocess_image(good, np.int64(16)).shape == (3, 16, 16)


def test_squash_keeps_the_whole_frame():
    """fit="squash": the whole frame resized to R x R with Pillow's bicubic filter; the sides a
    centre crop drops are in the picture."""
    frame = scene(120, 160, seed=5)
    frame[:, :20] = (255, 0, 0)  # a red band on the left, outside the centre square
    squash = preprocess_image(frame, 32, fit="squash")
    want = np.asarray(Image.fromarray(frame).resize((32, 32), Image.Resampling.BICUBIC),
                      dtype=np.float32) / np.float32(255.0)
    np.testing.assert_array_equal(squash, ((want - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1))
    red = (np.float32(1.0) - CLIP_MEAN[0]) / CLIP_STD[0]
    assert np.isclose(squash[0, :, 0], red, atol=0.05).all()  # the band, at the left edge
    assert not np.isclose(preprocess_image(frame, 32)[0, :, 0], red, atol=0.05).any()
    np.testing.assert_array_equal(preprocess_batch([frame[..., ::-1]], 32, "bgr", fit="squash")[0],
                                  squash)
    with pytest.raises(ValueError, match="fit must be one of"):
        preprocess_image(frame, 32, fit="pad")


def test_module_does_not_import_torch():
    code = (
        "import sys, numpy as np, spartan_ros.preprocess as p, spartan_ros.poses;"
        "p.preprocess_image(np.zeros((8, 8, 3), np.uint8), 4);"
        "assert 'torch' not in sys.modules and 'cv2' not in sys.modules"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, timeout=60, cwd=Path(__file__).parents[1]
    )


def test_thin_strips_are_cropped_before_they_are_resized():
    """A 1 x 600000 strip resized first would be 224 x 134 million pixels (90 GB): in a
    process limited to 3 GB of address space it must take R x R."""
    code = (
        "import resource, numpy as np\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
        "from spartan_ros.preprocess import preprocess_image\n"
        "for shape in ((1, 600_000, 3), (600_000, 1, 3), (2, 70_000, 3)):\n"
        "    assert preprocess_image(np.zeros(shape, np.uint8), 224).shape == (3, 224, 224)\n"
    )
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).parents[1], env=env)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize("hw", [(17 * 20, 20), (30, 30 * 40), (2, 5000)])
def test_thin_strips_keep_the_reference_crop(hw):
    """Past 1:16 the crop is resampled alone: the same part of the frame, the same filter,
    filter positions equal up to float rounding (a few grey levels at most)."""
    img = scene(*hw, seed=1)
    diff = np.abs(preprocess_image(img, 32) - pillow_reference(img, 32))
    assert diff.max() * CLIP_STD.max() * 255 <= 8 and diff.mean() * 255 * CLIP_STD.max() < 1
