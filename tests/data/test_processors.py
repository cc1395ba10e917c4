"""The per-family bound on patch rows (what the TPU fit check compiles for) holds for the videos
the family's processor produces under the same options, and is reached. Videos scaled up to the
pixel floor are the documented exception (`max_patches`)."""

from __future__ import annotations

import numpy as np
import pytest

from vlmm_jax.data import qwen3_vl_processing as q3
from vlmm_jax.data import vision_processing as q25
from vlmm_jax.data.processors import VisionOptions, processor

SMALL_IMAGES = {"image_max_pixels": 32 * 32}  # so that the video budget is the binding one
SIZES = [(480, 640), (1080, 1920), (1920, 1080), (333, 5000), (2000, 2000), (4000, 4000)]


def _rows_qwen3(f, h, w, o):
    rh, rw = q3.video_size(f, h, w, **processor("qwen3_vl").budget(o))
    t = -(-f // 2)  # odd counts repeat the last frame
    return t * (rh // 16) * (rw // 16)


def _rows_qwen2_5(f, h, w, o):
    p = processor("qwen2_5_vl")
    rh, rw = q25.video_size(f, h, w, **p.budget(o))
    return f // 2 * (rh // 14) * (rw // 14)


@pytest.mark.parametrize("frames", [4, 15, 16, 64])
@pytest.mark.parametrize(
    "family, options",
    [
        ("qwen3_vl", VisionOptions(max_pixels=16 * 128 * 28 * 28, **SMALL_IMAGES)),
        ("qwen3_vl", VisionOptions(**SMALL_IMAGES)),
        ("qwen2_5_vl", VisionOptions(max_pixels=128 * 28 * 28, **SMALL_IMAGES)),
        (
            "qwen2_5_vl",
            VisionOptions(min_pixels=16 * 28 * 28, total_pixels=3584 * 28 * 28, **SMALL_IMAGES),
        ),
    ],
)
def test_max_patches_bounds_every_video(family, options, frames):
    rows_of = _rows_qwen3 if family == "qwen3_vl" else _rows_qwen2_5
    bound = processor(family).max_patches(frames, options)
    rows = [rows_of(frames - frames % 2 or 2, h, w, options) for h, w in SIZES]
    assert max(rows) <= bound
    assert max(rows) >= 0.8 * bound  # tight: a wrong budget rule is off by 2x or more


def test_a_per_frame_reading_of_the_qwen3_budget_would_be_8x_too_big():
    """The bug this bound replaced: Qwen2.5-VL's per-frame rule applied to Qwen3-VL's budget."""
    o = VisionOptions(max_pixels=16 * 128 * 28 * 28, **SMALL_IMAGES)
    assert processor("qwen3_vl").max_patches(16, o) == 3136  # 16 frames x 100,352 px / 512
    per_frame_reading = 16 // 2 * (o.max_pixels // 16**2)
    assert per_frame_reading == 16 * processor("qwen3_vl").max_patches(16, o)
    assert np.isclose(_rows_qwen3(16, 1080, 1920, o), 3136, rtol=0.2)
