"""A shape smoke test (job "demo"): a tiny random Video-LMM reads a rendered video, decodes.

It exercises the whole model path (pixels -> vision tower -> merged tokens -> decoder -> KV-cache
decoding) in seconds and prints the shapes; the main job is `vlmm_jax.pipeline`.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vlmm_jax.config_dicts import build_model_config
from vlmm_jax.data.vision_processing import process_video
from vlmm_jax.models import Qwen2_5_VL, init_cache, init_params, param_count, vision_layout
from vlmm_jax.results import write_stage_results


def moving_square_video(frames: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8 `[F, size, size, 3]`: a red square crossing a grey background left to right."""
    rng = np.random.default_rng(seed)
    video = np.full((frames, size, size, 3), 96, np.uint8)
    side = size // 4
    y = int(rng.integers(0, size - side))
    for f in range(frames):
        x = int(f * (size - side) / max(frames - 1, 1))
        video[f, y : y + side, x : x + side] = (220, 40, 40)
    return video


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    model_config = build_model_config(config.model)
    model = Qwen2_5_VL(model_config)
    params = init_params(model, jax.random.key(config.seed))
    video = moving_square_video(config.frames, config.frame_size, config.seed)
    pixels, grid = process_video(video, min_pixels=28 * 28, max_pixels=config.frame_size**2)
    n_visual = int(np.prod(grid)) // model_config.vision.merge_unit
    ids = np.concatenate(
        [
            [1, 2, 3, model_config.vision_start_token_id],
            np.full(n_visual, model_config.video_token_id),
            [model_config.vision_end_token_id, 4, 5],
        ]
    )[None].astype(np.int32)
    layout = vision_layout(grid, model_config.vision)
    batch, prompt_len = ids.shape
    max_len = prompt_len + config.new_tokens

    @jax.jit
    def prefill(params, ids, pixels):
        cache = init_cache(model_config, batch, max_len, jnp.dtype(model_config.dtype))
        return model.apply(
            {"params": params},
            ids,
            pixel_values_videos=pixels,
            video_grid_thw=grid,
            cache=cache,
            vision_layout=layout,
        )

    @jax.jit
    def step(params, token, cache, deltas):
        return model.apply({"params": params}, token, cache=cache, rope_deltas=deltas)

    start = time.perf_counter()
    out = prefill(params, jnp.asarray(ids), jnp.asarray(pixels))
    tokens = [jnp.argmax(out.logits[:, -1], -1)]
    cache = out.cache
    for _ in range(config.new_tokens - 1):
        o = step(params, tokens[-1][:, None], cache, out.rope_deltas)
        cache = o.cache
        tokens.append(jnp.argmax(o.logits[:, -1], -1))
    generated = np.asarray(jnp.stack(tokens, 1))
    seconds = time.perf_counter() - start
    figures = {
        "parameters": param_count(params),
        "video_frames": list(video.shape),
        "pixel_values_videos": list(pixels.shape),
        "video_grid_thw": grid.tolist(),
        "input_ids": list(ids.shape),
        "prefill_logits": list(out.logits.shape),
        "kv_cache_k": list(out.cache["k"].shape),
        "generated_tokens": generated.tolist(),
        "seconds": round(seconds, 3),
    }
    for k, v in figures.items():
        print(f"{k:>20}: {v}")
    print(f"results: {write_stage_results(workdir, 'demo', figures)}")
    return figures
