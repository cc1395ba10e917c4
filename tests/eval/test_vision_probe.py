"""The vision probe: token labels from pixels by hand, the ridge classifier on separable and on
collapsed features, and the probe of a tiny model's tower."""

import jax
import numpy as np
import pytest

from tests.inference.conftest import tiny_config
from vlmm_jax.data.synthetic import COLORS
from vlmm_jax.eval.vision_probe import BACKGROUND, probe, ridge_probe, token_colours
from vlmm_jax.models import Qwen2_5_VL, init_params


def test_token_colours_by_hand():
    config = tiny_config()  # 14 px patches merged 2x2: a merged token is 28x28 px of 2 frames
    frames = np.zeros((4, 56, 56, 3), np.uint8)
    frames[0:2, 0:28, 0:28] = COLORS["red"]  # fills token (t0, row 0, col 0)
    frames[0:2, 30:34, 30:34] = COLORS["blue"]  # 2% of token (t0, 1, 1): background
    frames[2:4, 28:56, 0:20] = COLORS["green"]  # 71% of token (t1, 1, 0)
    frames[3, 0:28, 28:56] = COLORS["white"]  # one frame of two: 50% of token (t1, 0, 1)
    labels = token_colours(frames, (2, 4, 4), config)
    bg = BACKGROUND
    assert labels == ["red", bg, bg, bg, bg, "white", "green", bg]
    with pytest.raises(ValueError, match="do not match the patch grid"):
        token_colours(frames, (2, 4, 2), config)


def test_ridge_probe_reads_separable_features_only():
    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    y = rng.choice(classes, 300)
    centres = {"a": [3.0, 0.0], "b": [0.0, 3.0], "c": [-3.0, -3.0]}
    x = np.array([centres[c] for c in y]) + rng.normal(size=(300, 2))
    pred = ridge_probe(x[:150], y[:150], x[150:], classes)
    assert (pred == y[150:]).mean() > 0.95
    noise = rng.normal(size=(300, 2))  # features that carry no label: chance
    pred = ridge_probe(noise[:150], y[:150], noise[150:], classes)
    assert (pred == y[150:]).mean() < 0.5


class _Record:
    def __init__(self, frames):
        self.frames = frames


def test_probe_of_a_tiny_tower():
    config = tiny_config()
    model = Qwen2_5_VL(config)
    params = init_params(model, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    records = []
    for _ in range(8):
        frames = np.full((4, 56, 56, 3), 20, np.uint8)
        for t in range(2):
            for i in range(2):
                for j in range(2):
                    colour = list(COLORS.values())[rng.integers(len(COLORS))]
                    frames[2 * t : 2 * t + 2, 28 * i : 28 * i + 28, 28 * j : 28 * j + 20] = colour
        records.append(_Record(frames))

    def sample(record):  # normalised patches in the processor's layout
        from vlmm_jax.data.vision_processing import process_video

        pixels, grid = process_video(record.frames, min_pixels=56 * 56, max_pixels=56 * 56)
        return {"pixel_values_videos": pixels, "video_grid_thw": grid}

    samples = [sample(r) for r in records]
    out = probe(model, params, records, samples)
    assert out["object_tokens"] == 32  # every token of the 4 held-out videos holds an object
    assert out["object_accuracy"] > 2 * out["chance"]  # a random tower keeps colour linear
    assert 0 < out["mean_cosine"] < 1 and out["visual_norm"] > 0 and out["text_norm"] > 0
    collapsed = jax.tree.map(np.asarray, params)
    collapsed["visual"]["merger"]["fc2"] = np.zeros_like(collapsed["visual"]["merger"]["fc2"])
    collapsed["visual"]["merger"]["fc2_bias"] = np.ones_like(
        collapsed["visual"]["merger"]["fc2_bias"]
    )
    out = probe(model, collapsed, records, samples)
    assert out["mean_cosine"] == pytest.approx(1.0)
    assert out["object_accuracy"] <= 0.5
