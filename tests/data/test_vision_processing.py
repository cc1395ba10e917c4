"""Parity of the NumPy Qwen2-VL processor with transformers' processors.

transformers 5's default Qwen2-VL image/video processors import torchvision, which cannot be
installed beside the CPU torch here. So:
  * ``Qwen2VLImageProcessorPil`` (transformers' PIL backend, needs pillow) is run for real;
  * the torchvision processors are transcribed in torch below, citing the transformers functions
    (transformers 5.x ``models/qwen2_vl/image_processing_qwen2_vl.py`` and
    ``video_processing_qwen2_vl.py``, ``image_processing_backends.TorchvisionBackend``), and the
    video pixel budget from qwen_vl_utils ``vision_process.fetch_video``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as hf_pil

from vlmm_jax.data.vision_processing import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    VIDEO_MAX_PIXELS,
    patchify,
    process_images,
    process_video,
    resize_bicubic,
    smart_resize,
    video_max_pixels,
)

RNG = np.random.default_rng(0)


def _image(h: int, w: int, smooth: bool = False) -> np.ndarray:
    if not smooth:
        return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    checks = ((xx // 9 + yy // 7) % 2) * 200 + 20
    return np.stack([xx * 255 // w, yy * 255 // h, checks], -1).astype(np.uint8)


# --- transcriptions of the torchvision-backed transformers processors ----------------------------


def _tv_resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """torchvision ``resize(uint8, BICUBIC, antialias=True)`` (TorchvisionBackend.resize): float
    interpolation, clamp, round, back to uint8. x: uint8 [B, C, H, W]."""
    y = torch.nn.functional.interpolate(
        x.float(), size=(h, w), mode="bicubic", antialias=True, align_corners=False
    )
    return y.clamp(0, 255).round().to(torch.uint8)


def _tv_rescale_and_normalize(x: torch.Tensor) -> torch.Tensor:
    """TorchvisionBackend.rescale_and_normalize: fused mean/std * (1 / rescale_factor)."""
    mean = torch.tensor(OPENAI_CLIP_MEAN) * (1.0 / (1 / 255))
    std = torch.tensor(OPENAI_CLIP_STD) * (1.0 / (1 / 255))
    return (x.to(torch.float32) - mean[:, None, None]) / std[:, None, None]


def _tv_image_processor(images, min_pixels=56 * 56, max_pixels=28 * 28 * 1280, do_resize=True):
    """Qwen2VLImageProcessor._preprocess + patchify (patch 14, merge 2, temporal 2)."""
    rows, grids = [], []
    for image in images:
        x = torch.from_numpy(image).permute(2, 0, 1)[None]  # [1, C, H, W]
        if do_resize:
            h, w = hf_pil.smart_resize(*image.shape[:2], 28, min_pixels, max_pixels)
            x = _tv_resize(x, h, w)
        x = _tv_rescale_and_normalize(x)
        b, c, h, w = x.shape
        gh, gw = h // 14, w // 14
        p = x.reshape(b, c, gh // 2, 2, 14, gw // 2, 2, 14).permute(0, 2, 5, 3, 6, 1, 4, 7)
        p = p.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, 2, -1, -1)
        rows.append(p.reshape(b, gh * gw, c * 2 * 14 * 14)[0])
        grids.append([1, gh, gw])
    return torch.cat(rows).numpy(), np.asarray(grids)


def _tv_video_processor(video, min_pixels, max_pixels, total_pixels):
    """qwen_vl_utils fetch_video resize, then Qwen2VLVideoProcessor rescale/normalize + patchify."""
    f, h, w, _ = video.shape
    cap = max(min(VIDEO_MAX_PIXELS, total_pixels / f * 2), int(min_pixels * 1.05))
    cap = cap if max_pixels is None else min(max_pixels, cap)
    rh, rw = hf_pil.smart_resize(h, w, 28, min_pixels, cap)
    x = _tv_resize(torch.from_numpy(video).permute(0, 3, 1, 2), rh, rw)  # [F, C, H, W]
    x = _tv_rescale_and_normalize(x)[None]  # [1, F, C, H, W]
    if pad := -f % 2:
        x = torch.cat((x, x[:, -1:].expand(-1, pad, -1, -1, -1)), dim=1)
    b, t, c, h, w = x.shape
    gt, gh, gw = t // 2, h // 14, w // 14
    p = x.view(b, gt, 2, c, gh // 2, 2, 14, gw // 2, 2, 14).permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
    return p.reshape(gt * gh * gw, c * 2 * 14 * 14).numpy(), np.asarray([[gt, gh, gw]])


# --- smart_resize ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    h=st.integers(1, 5000),
    w=st.integers(1, 5000),
    min_pixels=st.sampled_from([56 * 56, 4 * 28 * 28, 128 * 28 * 28]),
    max_pixels=st.sampled_from([28 * 28 * 1280, 768 * 28 * 28, 16384 * 28 * 28, 12845056]),
)
def test_smart_resize_matches_transformers(h, w, min_pixels, max_pixels):
    kw = dict(factor=28, min_pixels=min_pixels, max_pixels=max_pixels)
    if max(h, w) / min(h, w) > 200:
        with pytest.raises(ValueError, match="aspect ratio"):
            smart_resize(h, w, **kw)
        return
    assert smart_resize(h, w, **kw) == hf_pil.smart_resize(h, w, **kw)


def test_smart_resize_by_hand():
    assert smart_resize(480, 640) == (476, 644)  # 17*28 x 23*28, inside the limits
    # 6e6 px > 1003520: beta = sqrt(6e6 / 1003520) = 2.445; floor(817.9 / 28), floor(1226.9 / 28)
    assert smart_resize(2000, 3000) == (812, 1204)
    assert smart_resize(10, 100) == (28, 196)  # below min_pixels: ceil after scaling up
    with pytest.raises(ValueError, match="10x2001"):
        smart_resize(10, 2001)


def test_video_max_pixels():
    total = int(128000 * 28 * 28 * 0.9)
    assert video_max_pixels(16) == VIDEO_MAX_PIXELS  # the per-frame cap binds
    assert video_max_pixels(768) == total / 768 * 2  # the whole-video budget binds
    assert video_max_pixels(10**6) == int(128 * 28 * 28 * 1.05)  # floor at 1.05 * min_pixels
    assert video_max_pixels(16, max_pixels=200_000) == 200_000


# --- resize ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "src,dst", [((50, 70), (56, 84)), ((300, 400), (252, 336)), ((31, 17), (252, 140))]
)
def test_resize_matches_torchvision(src, dst):
    x = np.stack([_image(*src), _image(*src, smooth=True)])  # [F, H, W, C]
    ours = resize_bicubic(x, *dst)
    ref = _tv_resize(torch.from_numpy(x).permute(0, 3, 1, 2), *dst).permute(0, 2, 3, 1).numpy()
    diff = np.abs(ours.astype(int) - ref)
    # Float32 rounding ties only: measured max 1 level on ~2e-5 of the values.
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-4


def test_resize_vs_pil():
    pil = pytest.importorskip("PIL.Image")
    x = _image(120, 170, smooth=True)
    for h, w in [(84, 112), (252, 336)]:
        ref = np.asarray(pil.fromarray(x).resize((w, h), pil.BICUBIC))
        # PIL rounds to uint8 (fixed point) between its two passes: 1 level at most here; on
        # white noise, whose first pass overshoots [0, 255], up to ~25 levels.
        assert np.abs(resize_bicubic(x, h, w).astype(int) - ref).max() <= 1


def test_resize_identity():
    x = _image(56, 84)
    np.testing.assert_array_equal(resize_bicubic(x, 56, 84), x)


# --- patch order ----------------------------------------------------------------------------------


def test_patch_rows_by_hand():
    """Row r of a 4x6 patch grid is patch (2*bh + mh, 2*bw + mw) for r = ((bh*3 + bw)*2 + mh)*2
    + mw: each 4 consecutive rows form one 2x2 merge group; a row holds (C, Tp, 14, 14)."""
    gh, gw = 4, 6
    ids = np.arange(gh * gw).reshape(gh, gw)  # patch id = row-major position
    frame = np.repeat(np.repeat(ids, 14, 0), 14, 1)[None, :, :, None] * np.ones((1, 1, 1, 3))
    frame[..., 1] += 1000  # channel marker
    rows, grid = patchify(np.concatenate([frame, frame + 10_000]))  # two frames: Tp = 2
    assert grid == (1, gh, gw) and rows.shape == (gh * gw, 3 * 2 * 14 * 14)
    r = rows.reshape(gh * gw, 3, 2, 14, 14)
    for bh in range(gh // 2):
        for bw in range(gw // 2):
            for mh in range(2):
                for mw in range(2):
                    row = ((bh * (gw // 2) + bw) * 2 + mh) * 2 + mw
                    pid = ids[2 * bh + mh, 2 * bw + mw]
                    assert (r[row, 0, 0] == pid).all() and (r[row, 1, 0] == pid + 1000).all()
                    assert (r[row, 0, 1] == pid + 10_000).all()


# --- full processors ------------------------------------------------------------------------------


def test_process_images_matches_torchvision_processor():
    images = [_image(56, 84), _image(112, 28, smooth=True)]  # already multiples of 28
    ours, grid = process_images(images)
    ref, ref_grid = _tv_image_processor(images, do_resize=False)
    np.testing.assert_array_equal(grid, ref_grid)
    np.testing.assert_array_equal(ours, ref)  # bit-exact given the same resized pixels
    images = [_image(50, 70), _image(300, 200, smooth=True), _image(20, 1000)]
    ours, grid = process_images(images)
    ref, ref_grid = _tv_image_processor(images)
    np.testing.assert_array_equal(grid, ref_grid)
    one_level = 1 / 255 / min(OPENAI_CLIP_STD) + 1e-5  # a resize tie
    diff = np.abs(ours - ref)
    assert diff.max() <= one_level and (diff > 1e-6).mean() < 1e-3


def test_process_images_matches_transformers_pil_processor():
    pytest.importorskip("PIL")
    processor = hf_pil.Qwen2VLImageProcessorPil()
    images = [_image(56, 84), _image(28, 140, smooth=True)]
    ref = processor(images=images, do_resize=False, return_tensors="np")
    ours, grid = process_images(images)
    np.testing.assert_array_equal(grid, ref["image_grid_thw"])
    # PIL backend rescales then normalises (unfused): float32 rounding differences only.
    np.testing.assert_allclose(ours, ref["pixel_values"], rtol=0, atol=2e-6)
    images = [_image(50, 70, smooth=True), _image(300, 200, smooth=True)]
    ref = processor(images=images, return_tensors="np")
    ours, grid = process_images(images)
    np.testing.assert_array_equal(grid, ref["image_grid_thw"])
    np.testing.assert_allclose(ours, ref["pixel_values"], rtol=0, atol=1 / 255 / 0.26)


@pytest.mark.parametrize(
    "frames,size,kw",
    [
        (5, (56, 84), {}),  # odd count: the last frame is repeated
        (4, (50, 70), {"min_pixels": 28 * 28}),
        (6, (300, 400), {"min_pixels": 28 * 28, "total_pixels": 3 * 28 * 28 * 6}),  # budget binds
        (2, (90, 60), {"max_pixels": 56 * 56}),
    ],
)
def test_process_video_matches_transcription(frames, size, kw):
    video = np.stack([_image(*size, smooth=i % 2 == 0) for i in range(frames)])
    ours, grid = process_video(video, **kw)
    kw = {"min_pixels": 128 * 28 * 28, "max_pixels": None, "total_pixels": 90316800} | kw
    ref, ref_grid = _tv_video_processor(video, **kw)
    np.testing.assert_array_equal(grid, ref_grid)
    assert grid[0, 0] == math.ceil(frames / 2)
    one_level = 1 / 255 / min(OPENAI_CLIP_STD) + 1e-5
    diff = np.abs(ours - ref)
    assert diff.max() <= one_level and (diff > 1e-6).mean() < 5e-3


def test_process_video_pads_with_last_frame():
    video = np.stack([_image(56, 56) for _ in range(3)])
    rows, grid = process_video(video, min_pixels=28 * 28)
    assert grid.tolist() == [[2, 4, 4]]
    r = rows.reshape(2, 16, 3, 2, 14, 14)  # [T, Gh*Gw, C, Tp, Ph, Pw]
    np.testing.assert_array_equal(r[1, :, :, 0], r[1, :, :, 1])  # frame 3 = repeated frame 2


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"images\[1\]"):
        process_images([_image(56, 56), _image(56, 56).astype(np.float32)])
    with pytest.raises(ValueError, match="F, H, W, 3"):
        process_video(_image(56, 56))
    with pytest.raises(ValueError, match="aspect ratio"):
        process_images([_image(2, 500)])


def test_resizing_a_few_frames_at_a_time_changes_nothing(monkeypatch):
    """Frames resized in chunks (bounded float32 memory) equal the whole stack at once."""
    from vlmm_jax.data import vision_processing

    frames = np.random.default_rng(0).integers(0, 256, (7, 30, 44, 3), np.uint8)
    whole = vision_processing.resize_bicubic(frames, 28, 56)
    monkeypatch.setattr(vision_processing, "_RESIZE_CHUNK_VALUES", 2 * 30 * 44 * 3)  # 2 frames
    np.testing.assert_array_equal(vision_processing.resize_bicubic(frames, 28, 56), whole)
