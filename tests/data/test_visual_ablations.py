"""Visual ablations keep the sample's shapes and change exactly its pixels."""

import numpy as np
import pytest

from vlmm_jax.data.visual_ablations import CannotAblate, ablate


def video_sample(seed, grid=(4, 2, 2)):
    t, h, w = grid
    pixels = np.random.default_rng(seed).normal(size=(t * h * w, 6)).astype(np.float32)
    return {
        "id": f"v{seed}",
        "input_ids": np.arange(10),
        "pixel_values_videos": pixels,
        "video_grid_thw": np.array([grid]),
    }


def test_blank_zeroes_every_patch_and_keeps_the_rest():
    s = video_sample(0)
    out = ablate(s, "blank", np.random.default_rng(0))
    assert out["pixel_values_videos"].shape == s["pixel_values_videos"].shape
    assert not out["pixel_values_videos"].any()
    assert out["input_ids"] is s["input_ids"] and s["pixel_values_videos"].any()  # no mutation
    image = {"id": "i", "pixel_values": np.ones((8, 6)), "image_grid_thw": np.array([[1, 2, 4]])}
    assert not ablate(image, "blank", np.random.default_rng(0))["pixel_values"].any()


def test_shuffled_frames_permute_whole_temporal_slices():
    s = video_sample(1)
    out = ablate(s, "shuffled_frames", np.random.default_rng(3))["pixel_values_videos"]
    slices = s["pixel_values_videos"].reshape(4, 4, 6)
    got = out.reshape(4, 4, 6)
    perm = [next(j for j in range(4) if np.array_equal(got[i], slices[j])) for i in range(4)]
    assert sorted(perm) == [0, 1, 2, 3] and perm != [0, 1, 2, 3]
    with pytest.raises(CannotAblate, match="two or more temporal slices"):
        ablate(video_sample(2, grid=(1, 2, 2)), "shuffled_frames", np.random.default_rng(0))


def test_swapped_takes_the_other_video_of_the_same_grid():
    s, other = video_sample(4), video_sample(5)
    out = ablate(s, "swapped", np.random.default_rng(0), other=other)
    np.testing.assert_array_equal(out["pixel_values_videos"], other["pixel_values_videos"])
    assert out["id"] == s["id"] and out["input_ids"] is s["input_ids"]
    with pytest.raises(CannotAblate, match="grid"):
        ablate(s, "swapped", np.random.default_rng(0), other=video_sample(6, grid=(2, 2, 2)))


def test_bad_input():
    with pytest.raises(ValueError, match="unknown visual ablation"):
        ablate(video_sample(0), "inverted", np.random.default_rng(0))
    with pytest.raises(CannotAblate, match="no image or video"):
        ablate({"id": "text"}, "blank", np.random.default_rng(0))
