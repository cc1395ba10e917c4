"""Tiny video prompts for the inference tests (NumPy only, no transformers)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlmm_jax.models import Qwen2_5_VL, abstract_params
from vlmm_jax.models.config import tiny

VOCAB = 64  # small vocab: brute-force beam search and distinct samples stay cheap


def tiny_config():
    return tiny(VOCAB)


def video_prompts(config, specs, seed=0):
    """Left-padded prompts, one per `(text_before, (t, h, w), text_after, seconds_per_grid)`.

    Returns transformers-layout NumPy inputs (ids, mask, pixels, grids, seconds per grid).
    """
    rng = np.random.default_rng(seed)
    vs, ve, vid = config.vision_start_token_id, config.vision_end_token_id, config.video_token_id
    text_hi = config.vision_start_token_id - 1  # below the special ids (and the eos id)
    rows, grids, spg = [], [], []
    for before, grid, after, seconds in specs:
        n_vis = int(np.prod(grid)) // config.vision.merge_unit
        rows.append(
            [*rng.integers(1, text_hi - 1, before), vs, *[vid] * n_vis, ve]
            + rng.integers(1, text_hi - 1, after).tolist()
        )
        grids.append(grid)
        spg.append(seconds)
    length = max(map(len, rows))
    ids = np.zeros((len(rows), length), np.int32)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, length - len(row) :], mask[i, length - len(row) :] = row, 1
    grids = np.asarray(grids, np.int64)
    n_patches = int(np.prod(grids, axis=1).sum())
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values_videos": rng.normal(size=(n_patches, config.vision.patch_dim)).astype(
            np.float32
        ),
        "video_grid_thw": grids,
        "second_per_grid_ts": np.asarray(spg, np.float32),
    }


def random_params(config, seed=0):
    """Random parameters from the abstract shapes (NumPy: no init compile, a second or so).

    Norm scales are 1 + noise, everything else (biases included) N(0, 0.05^2), so that every
    tensor matters and logits are far from uniform.
    """
    rng = np.random.default_rng(seed)

    def draw(path, x):
        name = jax.tree_util.keystr(path)
        scale = 1.0 if "scale" in name else 0.0
        return jnp.asarray(scale + 0.05 * rng.standard_normal(x.shape), x.dtype)

    # Spread the logits: the tiny model's random weights alone give near-uniform next tokens.
    params = jax.tree_util.tree_map_with_path(draw, nn.meta.unbox(abstract_params(config)))
    params["lm_head"] = params["lm_head"] * 3.0
    return params


@pytest.fixture(scope="session")
def tiny_model():
    config = tiny_config()
    return Qwen2_5_VL(config), random_params(config)


# Two left-padded video prompts of different lengths (15 and 16 tokens).
PROMPT_SPECS = [(3, (2, 4, 4), 2, 1.0), (1, (2, 4, 6), 1, 0.5)]
# One prompt, 4 frames: the shape test_tts's questions have, so that test_sampler's shared-prefix
# call and the TTS generator share one compiled sampler (same method, n, N and stop shapes).
SINGLE_SPEC = [(3, (2, 4, 4), 2, 1.0)]
TTS_NEW_TOKENS, TTS_SAMPLES = 8, 4
NO_TOKEN = VOCAB  # an id the model never produces: stop criteria that never fire


@pytest.fixture(scope="session")
def prompts():
    return video_prompts(tiny_config(), PROMPT_SPECS)
