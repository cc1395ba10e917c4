"""The policy's shared-prefix pass equals the naive one: log-probs, loss, gradients (fp32); and
T-GRPO's frame shuffles."""

import jax
import jax.numpy as jnp
import numpy as np

from tests.models.conftest import Prompt, batch_inputs
from vlmm_jax.data.visual_ablations import shuffle_video_patches
from vlmm_jax.inference.sampler import device_inputs, repeat_prompts
from vlmm_jax.models import Qwen2_5_VL, init_params
from vlmm_jax.models.config import tiny
from vlmm_jax.policy import Policy
from vlmm_jax.rl import grpo_loss
from vlmm_jax.training.rollout import naive_logp, shuffle_video_frames

G, N = 3, 5


def test_shared_prefix_equals_naive():
    config = tiny()
    model = Qwen2_5_VL(config)
    params = init_params(model, jax.random.key(0))
    prompts = batch_inputs(
        [
            Prompt(0).text(3).video(2, 4, 6, seconds_per_grid=0.5).text(2),
            Prompt(1).text(1).video(4, 4, 4).text(4),
        ]
    )
    completions = jnp.asarray(np.random.default_rng(0).integers(1, 400, (2 * G, N)), jnp.int32)
    mask = jnp.asarray(np.random.default_rng(1).random((2 * G, N)) < 0.8, jnp.float32)
    adv = jnp.asarray(np.random.default_rng(2).normal(size=2 * G), jnp.float32)
    dev = device_inputs(prompts, model)
    policy = Policy(model=model)

    def loss(p, shared):
        logp = (
            policy.with_params(p).completion_stats(dev, completions, group=G, temperature=0.7)[
                "logp"
            ]
            if shared
            else naive_logp(p, model, prompts, completions, G, temperature=0.7)
        )
        return grpo_loss(logp, None, None, adv, mask, loss_type="dapo")[0], logp

    # Jitted: the same program op by op would compile each primitive on its own (minutes).
    grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (l_s, lp_s), g_s = grad(params, True)
    (l_n, lp_n), g_n = grad(params, False)
    np.testing.assert_allclose(lp_s, lp_n, atol=2e-5)
    np.testing.assert_allclose(l_s, l_n, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g_s), jax.tree.leaves(g_n), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_entropy_of_the_shared_prefix_pass():
    """The entropies equal -sum p log p of the naive full forward's distributions (NumPy)."""
    config = tiny()
    model = Qwen2_5_VL(config)
    params = init_params(model, jax.random.key(0))
    prompts = batch_inputs([Prompt(0).text(2).video(2, 4, 4).text(2)])
    completions = jnp.asarray(np.random.default_rng(0).integers(1, 400, (G, N)), jnp.int32)
    stats = jax.jit(
        lambda p, dev: Policy(model=model, params=p).completion_stats(
            dev, completions, group=G, temperature=0.5
        )
    )
    entropy = stats(params, device_inputs(prompts, model))["entropy"]
    rep = repeat_prompts(prompts, G, config)
    ids = np.concatenate([rep["input_ids"], np.asarray(completions)], 1)
    mask = np.concatenate([rep["attention_mask"], np.ones((G, N), np.int64)], 1)
    vision = {k: v for k, v in rep.items() if k not in ("input_ids", "attention_mask")}
    out = jax.jit(lambda p: model.apply({"params": p}, ids, mask, **vision))(params)
    t = prompts["input_ids"].shape[1]
    z = np.asarray(out.logits[:, t - 1 : -1], np.float64) / 0.5
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(entropy, -(p * np.log(p)).sum(-1), rtol=1e-4, atol=1e-5)


def test_shuffle_video_patches_permutes_temporal_slices():
    grids = np.array([[3, 2, 2], [2, 2, 4]])
    pixels = np.arange(12 + 16)[:, None].repeat(5, 1).astype(np.float32)
    out = shuffle_video_patches(pixels, grids, np.random.default_rng(0))
    assert sorted(out[:, 0]) == list(range(28))
    blocks = {tuple(b) for b in out[:12, 0].reshape(3, 4)}  # whole temporal slices move
    assert blocks == {(0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11)}
    assert {tuple(b) for b in out[12:, 0].reshape(2, 8)} == {
        tuple(range(12, 20)),
        tuple(range(20, 28)),
    }
    assert not np.array_equal(out, pixels)


def test_shuffle_video_frames_of_rows():
    """Rows layout: each row's video slices are permuted in place; images and padding stay."""
    pixels = np.arange(2 * 20)[:, None].reshape(2, 20, 1).repeat(3, 2).astype(np.float32)
    items = [[("image", 0, (1, 2, 2)), ("video", 4, (3, 2, 2))], [("video", 0, (2, 2, 4))]]
    rngs = [np.random.default_rng(s) for s in (0, 1)]
    out = shuffle_video_frames(pixels, items, rngs)
    np.testing.assert_array_equal(out[0, :4], pixels[0, :4])  # the image
    np.testing.assert_array_equal(out[0, 16:], pixels[0, 16:])  # padding
    np.testing.assert_array_equal(out[1, 16:], pixels[1, 16:])
    slices = {tuple(b) for b in out[0, 4:16, 0].reshape(3, 4)}
    assert slices == {tuple(range(4 + 4 * i, 8 + 4 * i)) for i in range(3)}
    assert not np.array_equal(out[0, 4:16], pixels[0, 4:16])
    assert {tuple(b) for b in out[1, :16, 0].reshape(2, 8)} == {
        tuple(range(20, 28)),
        tuple(range(28, 36)),
    }
