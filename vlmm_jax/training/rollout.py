"""Policy log-probabilities of sampled completions: the shared-prefix path and the naive one.

Shared prefix (what GRPO trains with): each prompt (video included) is prefilled once, its KV
cache is repeated for the G completions of its group, and the completions run as one cached
chunk that attends to it. Gradients flow back through the repeat into the single prompt pass,
so the vision tower and the prompt's decoder layers run once per group instead of G times.

Naive (the reference): every prompt is repeated G times and each prompt + completion sequence
runs through the whole model.

Shapes: B prompts, G completions per prompt, R = B * G rows (prompt-major), T prompt length,
N completion length, V vocab.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vlmm_jax.inference.sampler import VISION_KEYS, fan_out, repeat_prompts
from vlmm_jax.models import Qwen2_5_VL, init_cache


def _token_logp(logits, tokens, temperature, with_entropy=False):
    """log softmax(logits / temperature) at `tokens`: `[R, N, V]`, `[R, N]` -> `[R, N]`.

    With `with_entropy`, also the entropy `[R, N]` of each position's distribution.
    """
    logp_all = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, -1)
    logp = jnp.take_along_axis(logp_all, tokens[..., None], -1)[..., 0]
    if not with_entropy:
        return logp
    return logp, -jnp.sum(jnp.exp(logp_all) * logp_all, -1)


def shared_prefix_logp(
    params,
    model: Qwen2_5_VL,
    prompts: dict,
    layout,
    completions,
    group: int,
    temperature=1.0,
    with_entropy=False,
):
    """`[R, N]` log-probs of `completions [R, N]` with one prompt pass per group.

    With `with_entropy`, returns `(logp, entropy)`, both `[R, N]`.

    Args:
      prompts: device inputs of the B left-padded prompts (`input_ids`, `attention_mask`, the
        flat vision arrays); `layout` their vision layout.
      group: G, completions per prompt.
    """
    ids = prompts["input_ids"]
    b, t = ids.shape
    n = completions.shape[1]
    vision = {k: prompts[k] for k in VISION_KEYS if prompts.get(k) is not None}
    cache = init_cache(model.config, b, t + n, jnp.dtype(model.config.dtype))
    out = model.apply(
        {"params": params},
        ids,
        prompts["attention_mask"],
        cache=cache,
        vision_layout=layout,
        return_logits=False,
        **vision,
    )
    last = model.apply({"params": params}, out.hidden_states[:, -1:], method=Qwen2_5_VL.logits)
    cont = model.apply(
        {"params": params},
        completions,
        cache=fan_out(out.cache, group),
        rope_deltas=jnp.repeat(out.rope_deltas, group, axis=0),
    )
    logits = jnp.concatenate([jnp.repeat(last, group, axis=0), cont.logits[:, :-1]], axis=1)
    return _token_logp(logits, completions, temperature, with_entropy)


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


def shuffle_video_patches(pixels: np.ndarray, grids: np.ndarray, rng: np.random.Generator):
    """Permutes the temporal patches of every video (T-GRPO's shuffled-frame rollouts).

    Patch rows are grouped by temporal slice (`t` groups of `h * w` rows per video); the slices
    of each video are permuted, so frame order is destroyed while every frame pair is kept.
    """
    out, start = [], 0
    for t, h, w in np.asarray(grids).reshape(-1, 3):
        block = pixels[start : start + t * h * w].reshape(t, h * w, -1)
        out.append(block[rng.permutation(t)].reshape(t * h * w, -1))
        start += t * h * w
    return np.concatenate(out)
