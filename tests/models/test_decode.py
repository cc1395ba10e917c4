"""The KV-cache path (prefill, then one token at a time) equals the full forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models.conftest import Prompt, batch_inputs
from vlmm_jax.models import Qwen2_5_VL, init_cache, init_params, vision_layout
from vlmm_jax.models.config import tiny

NEW_TOKENS = 16


@pytest.mark.parametrize("scan_layers", [False, True])
def test_greedy_decode_equals_teacher_forced_argmax(scan_layers):
    config = tiny().replace(scan_layers=scan_layers)
    model = Qwen2_5_VL(config)
    params = init_params(model, jax.random.key(0))
    # Two left-padded video prompts of different lengths.
    inputs = batch_inputs(
        [
            Prompt(0).text(3).video(4, 4, 6, seconds_per_grid=1.0).text(2),
            Prompt(1).text(1).video(2, 4, 4, seconds_per_grid=0.5).text(3),
        ]
    )
    layout = vision_layout(inputs["video_grid_thw"], config.vision)
    vision = dict(
        pixel_values_videos=jnp.asarray(inputs["pixel_values_videos"]),
        video_grid_thw=jnp.asarray(inputs["video_grid_thw"]),
        second_per_grid_ts=jnp.asarray(inputs["second_per_grid_ts"]),
        vision_layout=layout,
    )
    ids, mask = jnp.asarray(inputs["input_ids"]), jnp.asarray(inputs["attention_mask"])
    b, prompt_len = ids.shape

    @jax.jit
    def prefill(params, ids, mask):
        cache = init_cache(config, b, prompt_len + NEW_TOKENS)
        return model.apply({"params": params}, ids, mask, cache=cache, **vision)

    @jax.jit
    def step(params, token, cache, deltas):
        return model.apply(
            {"params": params}, token, jnp.ones_like(token), cache=cache, rope_deltas=deltas
        )

    out = prefill(params, ids, mask)
    cache, deltas = out.cache, out.rope_deltas
    token = jnp.argmax(out.logits[:, -1], -1)[:, None]
    generated, step_logits = [token], [out.logits[:, -1]]
    for _ in range(NEW_TOKENS - 1):
        o = step(params, token, cache, deltas)
        cache, token = o.cache, jnp.argmax(o.logits[:, -1], -1)[:, None]
        generated.append(token)
        step_logits.append(o.logits[:, -1])
    generated = jnp.concatenate(generated, 1)

    @jax.jit
    def full(params, ids, mask):
        return model.apply({"params": params}, ids, mask, **vision).logits

    seq = jnp.concatenate([ids, generated], 1)
    full_mask = jnp.concatenate([mask, jnp.ones_like(generated)], 1)
    logits = full(params, seq, full_mask)
    teacher_forced = jnp.argmax(logits[:, prompt_len - 1 : -1], -1)
    np.testing.assert_array_equal(np.asarray(generated), np.asarray(teacher_forced))
    np.testing.assert_allclose(
        np.stack(step_logits, 1), np.asarray(logits[:, prompt_len - 1 : -1]), atol=1e-4
    )
    assert int(cache["index"]) == prompt_len + NEW_TOKENS - 1


def test_per_row_visual_pixels_equal_flat_inputs():
    """The batched vision path (per-row padded pixels) gives the flat path's logits."""
    from vlmm_jax.models.positions import rope_index, row_vision_inputs

    config = tiny()
    model = Qwen2_5_VL(config)
    params = init_params(model, jax.random.key(1))
    prompts = [
        Prompt(0).text(2).video(2, 4, 6, seconds_per_grid=0.5).text(2).image(4, 4).text(1),
        Prompt(1).text(3).image(6, 4).text(2),
    ]
    inputs = batch_inputs(prompts)
    flat = model.apply(
        {"params": params},
        jnp.asarray(inputs["input_ids"]),
        jnp.asarray(inputs["attention_mask"]),
        pixel_values=jnp.asarray(inputs["pixel_values"]),
        image_grid_thw=inputs["image_grid_thw"],
        pixel_values_videos=jnp.asarray(inputs["pixel_values_videos"]),
        video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs["second_per_grid_ts"],
    ).logits
    # Row 0: video then image; row 1: image. Slice the flat pixel arrays per item.
    img, vid = inputs["pixel_values"], inputs["pixel_values_videos"]
    rows = [[(vid[:48], (2, 4, 6)), (img[:16], (1, 4, 4))], [(img[16:40], (1, 6, 4))]]
    pixels, layout = row_vision_inputs(rows, config.vision, num_patches=80)
    positions, _ = rope_index(
        jnp.asarray(inputs["input_ids"]),
        config,
        attention_mask=jnp.asarray(inputs["attention_mask"]),
        image_grid_thw=jnp.asarray(inputs["image_grid_thw"]),
        video_grid_thw=jnp.asarray(inputs["video_grid_thw"]),
        second_per_grid_ts=jnp.asarray(inputs["second_per_grid_ts"]),
    )
    batched = model.apply(
        {"params": params},
        jnp.asarray(inputs["input_ids"]),
        jnp.asarray(inputs["attention_mask"]),
        position_ids=positions,
        visual_pixels=jnp.asarray(pixels),
        vision_layout=jax.tree.map(jnp.asarray, layout),
    ).logits
    mask = inputs["attention_mask"].astype(bool)
    np.testing.assert_allclose(np.asarray(batched)[mask], np.asarray(flat)[mask], atol=1e-5)


def test_identical_items_run_as_a_batch():
    """Same-grid videos take the batched vision layout; logits equal the one-sequence layout."""
    config = tiny()
    model = Qwen2_5_VL(config)
    params = init_params(model, jax.random.key(2))
    inputs = batch_inputs(
        [Prompt(0).text(2).video(2, 4, 6).text(2), Prompt(1).text(3).video(2, 4, 6).text(1)]
    )
    grids = inputs["video_grid_thw"]
    batched = vision_layout(grids, config.vision)
    assert batched["patch_order"].shape == (2, 48)

    def logits(layout):
        return model.apply(
            {"params": params},
            jnp.asarray(inputs["input_ids"]),
            jnp.asarray(inputs["attention_mask"]),
            pixel_values_videos=jnp.asarray(inputs["pixel_values_videos"]),
            video_grid_thw=grids,
            second_per_grid_ts=inputs["second_per_grid_ts"],
            vision_layout=layout,
        ).logits

    single = logits(vision_layout(grids, config.vision, batch_items=False))
    mask = inputs["attention_mask"].astype(bool)
    np.testing.assert_allclose(
        np.asarray(logits(batched))[mask], np.asarray(single)[mask], atol=1e-5
    )


def test_one_query_attention_matches_numpy():
    """A decode step's attention (one query per row, the XLA decode form) against a NumPy
    transcription of masked softmax attention: left padding (segment 0), a row whose query
    segment matches no key (zeros out), causal slots after the query ignored, GQA."""
    from vlmm_jax.models.attention import attention

    rng = np.random.default_rng(0)
    b, s, n, kh, h = 3, 10, 4, 2, 8
    q = rng.normal(size=(b, 1, n, h)).astype(np.float32)
    k, v = rng.normal(size=(2, b, s, kh, h)).astype(np.float32)
    kv_seg = np.ones((b, s), np.int32)
    kv_seg[0, :3] = 0  # left padding
    q_seg = np.array([[1], [1], [2]], np.int32)  # row 2 sees no key of its segment
    q_pos = np.array([[7], [9], [9]], np.int32)  # row 0: slots 8 and 9 lie in its future
    kv_pos = np.broadcast_to(np.arange(s, dtype=np.int32), (b, s))
    got = attention(
        jnp.asarray(q),
        jnp.asarray(k),
        jnp.asarray(v),
        segment_ids=jnp.asarray(q_seg),
        kv_segment_ids=jnp.asarray(kv_seg),
        causal=True,
        q_positions=jnp.asarray(q_pos),
        kv_positions=jnp.asarray(kv_pos),
    )
    want = np.zeros_like(q)
    for r in range(b):
        visible = (kv_seg[r] == q_seg[r, 0]) & (kv_seg[r] != 0) & (kv_pos[r] <= q_pos[r, 0])
        for head in range(n):
            if not visible.any():
                continue
            kv_head = head // (n // kh)
            logits = k[r, visible, kv_head] @ q[r, 0, head] / np.sqrt(h)
            p = np.exp(logits - logits.max())
            want[r, 0, head] = (p / p.sum()) @ v[r, visible, kv_head]
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
    assert not want[2].any()


def test_backward_through_a_cached_chunk_keeps_each_layer_slice_once():
    """GRPO's update differentiates completions that attend to their prompt's KV cache. Through
    the layer scan, the backward pass must keep each layer's cache slice once: XLA's temporaries
    stay below the cache's own size. Carrying the stacked cache through the scan (as a decode
    step does) would keep all of it at every layer: 11x the cache for these 8 layers, the
    1.6 TB per chip that Qwen3-VL-8B's GRPO update asked for on a v5p-8."""
    import dataclasses

    base = tiny()
    text = dataclasses.replace(base.text, num_layers=8)
    config = base.replace(scan_layers=True, remat_policy="full", text=text)
    model = Qwen2_5_VL(config)
    params = init_params(model, jax.random.key(0))
    b, slots, prompt, chunk = 2, 2048, 1024, 16
    cache = init_cache(config, b, slots)
    cache["index"] = jnp.int32(prompt)
    cache["segment_ids"] = cache["segment_ids"].at[:, :prompt].set(1)
    ids = jnp.ones((b, chunk), jnp.int32)
    deltas = jnp.zeros((b, 1), jnp.int32)

    def loss(p):
        out = model.apply({"params": p}, ids, cache=cache, rope_deltas=deltas)
        return jnp.sum(jnp.sin(out.logits))

    mem = jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis()
    cache_bytes = cache["k"].nbytes + cache["v"].nbytes
    assert mem.temp_size_in_bytes < cache_bytes, mem.temp_size_in_bytes / cache_bytes
