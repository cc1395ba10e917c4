"""One GRPO step (rollout + update): our shared-prefix paths against our naive ones.

`--prompts` video prompts of ~1k tokens (a 4-frame 112x112 video: 32 visual tokens, plus text),
G = `--group` completions each of exactly `--new-tokens` tokens (EOS disabled, temperature 1),
on a random `small()` model (4 decoder layers of width 256) with a reduced vision tower.

  * rollout: `Sampler(...)` with `shared_prefix=True` (vision tower + prefill once per prompt,
    KV cache fanned out to G rows) against `shared_prefix=False` (every prompt repeated G times
    through the whole model), same jitted decode loop; compile excluded (one warm-up call).
  * update: `jax.value_and_grad` of `rl.grpo_loss` with the policy log-probs from
    `Policy.completion_stats` (one prompt pass per group, gradients through the repeat)
    against `rollout.naive_logp` (G full prompt + completion passes); wall time of the jitted
    function and XLA's FLOP count from `compile().cost_analysis()`.

Prints JSON; every ratio is naive / shared, so > 1 means the shared prefix is better.

    python benchmarks/grpo_step.py [--prompts 1] [--group 8] [--new-tokens 128] [--text 990]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vlmm_jax.inference import RandomSampling, Sampler
from vlmm_jax.inference.sampler import device_inputs
from vlmm_jax.models import Qwen2_5_VL, abstract_params
from vlmm_jax.models.config import VisionConfig, small
from vlmm_jax.policy import Policy
from vlmm_jax.rl import grpo_loss
from vlmm_jax.training.rollout import naive_logp

VOCAB = 2048


def model_config():
    """`small()` with a 2-block vision tower of width 64 (the decoder is what is compared)."""
    vision = VisionConfig(
        depth=2,
        hidden_size=64,
        intermediate_size=128,
        num_heads=2,
        out_hidden_size=256,
        fullatt_block_indexes=(1,),
    )
    return small(VOCAB).replace(vision=vision)


def random_params(config, seed=0):
    """N(0, 0.05^2) weights, norm scales 1 (NumPy: no init compile)."""
    rng = np.random.default_rng(seed)

    def draw(path, x):
        scale = 1.0 if "scale" in jax.tree_util.keystr(path) else 0.0
        return jnp.asarray(scale + 0.05 * rng.standard_normal(x.shape), x.dtype)

    return jax.tree_util.tree_map_with_path(draw, nn.meta.unbox(abstract_params(config)))


def prompts(config, batch, text, frames=4, side=112, seed=0):
    """`batch` video prompts of the same length (no padding), transformers' layout, NumPy."""
    rng = np.random.default_rng(seed)
    grid = (frames // 2, side // 14, side // 14)
    n_vis = int(np.prod(grid)) // config.vision.merge_unit
    hi = config.eos_token_id - 1  # plain text ids, below the special ones
    rows = [
        np.concatenate(
            [
                rng.integers(1, hi, 16),
                [config.vision_start_token_id],
                np.full(n_vis, config.video_token_id),
                [config.vision_end_token_id],
                rng.integers(1, hi, text - 16),
            ]
        )
        for _ in range(batch)
    ]
    ids = np.stack(rows).astype(np.int32)
    grids = np.array([grid] * batch, np.int64)
    n_patches = int(np.prod(grids, 1).sum())
    return {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "pixel_values_videos": rng.normal(size=(n_patches, config.vision.patch_dim)).astype(
            np.float32
        ),
        "video_grid_thw": grids,
        "second_per_grid_ts": np.ones(batch, np.float32),
    }


def best_of(fn, repeats):
    """Minimum wall time of `repeats` calls of `fn` (after one warm-up call)."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return round(float(min(times)), 4)


def flops(jitted, *args) -> float:
    cost = jitted.lower(*args).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per device program
        cost = cost[0]
    return float(cost["flops"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=1)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--text", type=int, default=990)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    g, n = args.group, args.new_tokens
    config = model_config()
    model = Qwen2_5_VL(config)
    params = random_params(config)
    host = prompts(config, args.prompts, args.text)
    r = args.prompts * g

    # ---------------------------------------------------------------- rollout
    sampler = Sampler(model, max_new_tokens=n, eos_ids=())
    method = RandomSampling(temperature=1.0)
    rng = jax.random.key(0)

    def rollout(shared):
        return sampler(params, host, rng=rng, method=method, num_samples=g, shared_prefix=shared)

    out = rollout(True)
    rollout_shared = best_of(lambda: rollout(True).tokens, args.repeats)
    rollout_naive = best_of(lambda: rollout(False).tokens, args.repeats)
    same_tokens = bool(np.array_equal(np.asarray(out.tokens), np.asarray(rollout(False).tokens)))

    # ---------------------------------------------------------------- update
    # A random model samples the whole vocabulary, special ids included; the naive pass would
    # read a generated <|video_pad|> as a visual placeholder (the shared pass reads it as text),
    # so the update compares the two on the rollout's tokens with special ids made plain text.
    special = out.tokens >= min(config.eos_token_id, config.vision_start_token_id)
    completions = jnp.where(special, out.tokens - 16, out.tokens)  # [R, N]
    mask = out.mask.astype(jnp.float32)
    adv = jnp.asarray(np.random.default_rng(1).normal(size=r), jnp.float32)
    dev = device_inputs(host, model)
    loss_kw = dict(loss_type="grpo", max_completion_length=n)
    policy = Policy(model=model)

    def shared_loss(p, prompts_, tokens, adv_, mask_):
        logp = policy.with_params(p).completion_stats(prompts_, tokens, group=g)["logp"]
        return grpo_loss(logp, None, None, adv_, mask_, **loss_kw)[0]

    def naive_loss(p, tokens, adv_, mask_):
        # naive_logp repeats the prompts on the host: they are closed over (concrete).
        logp = naive_logp(p, model, host, tokens, g)
        return grpo_loss(logp, None, None, adv_, mask_, **loss_kw)[0]

    shared_grad = jax.jit(jax.value_and_grad(shared_loss))
    naive_grad = jax.jit(jax.value_and_grad(naive_loss))
    s_args = (params, dev, completions, adv, mask)
    n_args = (params, completions, adv, mask)
    update_shared = best_of(functools.partial(shared_grad, *s_args), args.repeats)
    update_naive = best_of(functools.partial(naive_grad, *n_args), args.repeats)
    (l_s, g_s), (l_n, g_n) = shared_grad(*s_args), naive_grad(*n_args)
    leaves = list(zip(jax.tree.leaves(g_s), jax.tree.leaves(g_n), strict=True))
    grad_diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in leaves)
    # per tensor, relative to its largest entry (summation order differs between the paths)
    grad_rel = max(
        float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30)) for a, b in leaves
    )
    flops_shared = flops(shared_grad, *s_args)
    flops_naive = flops(naive_grad, *n_args)

    step_shared = rollout_shared + update_shared
    step_naive = rollout_naive + update_naive
    print(
        json.dumps(
            {
                "benchmark": "grpo_step",
                "machine": f"{platform.machine()} {jax.devices()[0].device_kind} "
                f"{os.cpu_count()} cpus",
                "config": {
                    "decoder_layers": config.text.num_layers,
                    "width": config.text.hidden_size,
                    "vision_blocks": config.vision.depth,
                    "vision_width": config.vision.hidden_size,
                    "prompts": args.prompts,
                    "group": g,
                    "prompt_tokens": int(host["input_ids"].shape[1]),
                    "visual_tokens_per_prompt": int(
                        (host["input_ids"][0] == config.video_token_id).sum()
                    ),
                    "completion_tokens": n,
                    "dtype": str(config.dtype),
                },
                "rollout_s": {"shared_prefix": rollout_shared, "naive": rollout_naive},
                "update_s": {"shared_prefix": update_shared, "naive": update_naive},
                "update_gflops": {
                    "shared_prefix": round(flops_shared / 1e9, 2),
                    "naive": round(flops_naive / 1e9, 2),
                },
                "step_s": {"shared_prefix": round(step_shared, 4), "naive": round(step_naive, 4)},
                "ratios_naive_over_shared": {
                    "rollout_time": round(rollout_naive / rollout_shared, 3),
                    "update_time": round(update_naive / update_shared, 3),
                    "update_flops": round(flops_naive / flops_shared, 3),
                    "step_time": round(step_naive / step_shared, 3),
                },
                "checks": {
                    "same_rollout_tokens": same_tokens,
                    "special_tokens_replaced": int(special.sum()),
                    "loss_diff": abs(float(l_s) - float(l_n)),
                    "max_abs_grad_diff": grad_diff,
                    "max_rel_grad_diff": grad_rel,
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
