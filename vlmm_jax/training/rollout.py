"""Rollout helpers: the naive log-prob reference and T-GRPO's frame shuffles.

The shared-prefix pass GRPO trains with is `Policy.completion_stats`; `naive_logp` is the
reference it is checked against: every prompt is repeated G times and each prompt + completion
sequence runs through the whole model.

Shapes: B prompts, G completions per prompt, R = B * G rows (prompt-major), T prompt length,
N completion length, V vocab.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vlmm_jax.inference.sampler import VISION_KEYS, repeat_prompts
from vlmm_jax.models import Qwen2_5_VL


def _token_logp(logits, tokens, temperature):
    """log softmax(logits / temperature) at `tokens`: `[R, N, V]`, `[R, N]` -> `[R, N]`."""
    logp_all = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, -1)
    return jnp.take_along_axis(logp_all, tokens[..., None], -1)[..., 0]


def naive_logp(params, model: Qwen2_5_VL, prompts: dict, completions, group: int, temperature=1.0):
    """The reference: each prompt repeated G times, prompt + completion through the whole model.

    `prompts` are host arrays here (the repeat and the vision layout are computed on the host).
    """
    from vlmm_jax.inference.sampler import prompt_layout

    rep = repeat_prompts(prompts, group, model.config)
    t = rep["input_ids"].shape[1]
    ids = jnp.concatenate([jnp.asarray(rep["input_ids"]), completions], axis=1)
    mask = jnp.concatenate([jnp.asarray(rep["attention_mask"]), jnp.ones_like(completions)], axis=1)
    vision = {k: jnp.asarray(rep[k]) for k in VISION_KEYS if rep.get(k) is not None}
    grids = {k: np.asarray(rep[k]) for k in ("image_grid_thw", "video_grid_thw") if k in rep}
    out = model.apply(
        {"params": params},
        ids,
        mask,
        vision_layout=prompt_layout(rep, model),
        **{**vision, **grids},
    )
    return _token_logp(out.logits[:, t - 1 : -1], completions, temperature)


def shuffle_video_frames(
    pixels: np.ndarray, row_items: Sequence[Sequence[tuple]], rngs: Sequence[np.random.Generator]
) -> np.ndarray:
    """T-GRPO's shuffled frames in the rows layout: within every video item of every row of
    `pixels [B, P, C]`, the `t` temporal slices of `h * w` patch rows are permuted (frame order
    destroyed, every frame kept); images and padding stay. `row_items` as `collate_rows` gives
    them, one generator per row (so a row's shuffle does not depend on the batch it is in)."""
    out = np.array(pixels)
    for b, (items, rng) in enumerate(zip(row_items, rngs, strict=True)):
        for kind, start, (t, h, w) in items:
            if kind != "video":
                continue
            block = pixels[b, start : start + t * h * w].reshape(t, h * w, -1)
            out[b, start : start + t * h * w] = block[rng.permutation(t)].reshape(t * h * w, -1)
    return out
