"""A model that learned to read the colour of a video beats its own blank-video ablation.

Eight prompts with the same text, each with a 2-frame video whose pixels are bright (+1) or dark
(-1) plus noise; the answer token says which. A tiny random model trained 40 steps on the answer
token reads the colour on new videos; with every video blanked (`visual_ablations.ablate`), all
prompts are identical, so it answers every one the same and scores exactly 1/2.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tests.inference.conftest import random_params, tiny_config, video_prompts
from vlmm_jax.data.visual_ablations import ablate
from vlmm_jax.models import Qwen2_5_VL

GRID = (2, 4, 4)
ANSWERS = (5, 6)  # the token for "dark", the token for "bright"


def colour_batch(config, labels, seed):
    inputs = video_prompts(config, [(3, GRID, 2, 1.0)] * len(labels), seed=0)
    inputs["input_ids"][:] = inputs["input_ids"][0]  # one text: only the video tells them apart
    rng = np.random.default_rng(seed)
    per = int(np.prod(GRID))
    samples = [
        {
            "id": str(i),
            "pixel_values_videos": (2.0 * c - 1.0)
            + 0.3 * rng.standard_normal((per, config.vision.patch_dim)).astype(np.float32),
            "video_grid_thw": np.array([GRID]),
        }
        for i, c in enumerate(labels)
    ]
    return inputs, samples


def with_pixels(inputs, samples):
    return {
        **inputs,
        "pixel_values_videos": np.concatenate([s["pixel_values_videos"] for s in samples]),
    }


def test_learned_colour_beats_the_blank_video():
    config = tiny_config()
    model = Qwen2_5_VL(config)
    params = random_params(config)
    labels = np.array([0, 1] * 4)
    targets = jnp.asarray(np.array(ANSWERS)[labels])
    train_inputs, train_samples = colour_batch(config, labels, seed=1)
    static = {k: v for k, v in train_inputs.items() if k != "pixel_values_videos"}

    def answer_logits(params, pixels):  # [B, V] at the last prompt position
        out = model.apply({"params": params}, **static, pixel_values_videos=pixels)
        return out.logits[:, -1]

    def loss(params, pixels):
        logp = jax.nn.log_softmax(answer_logits(params, pixels))
        return -jnp.mean(jnp.take_along_axis(logp, targets[:, None], axis=1))

    tx = optax.adam(3e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, pixels):
        value, grads = jax.value_and_grad(loss)(params, pixels)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, value

    pixels = jnp.asarray(with_pixels(train_inputs, train_samples)["pixel_values_videos"])
    for _ in range(40):
        params, opt, value = step(params, opt, pixels)
    assert float(value) < 0.1

    predict = jax.jit(lambda params, pixels: jnp.argmax(answer_logits(params, pixels), -1))
    _, test_samples = colour_batch(config, labels, seed=2)  # new videos, same colours
    rng = np.random.default_rng(0)
    real = np.asarray(
        predict(params, with_pixels(train_inputs, test_samples)["pixel_values_videos"])
    )
    blanked = [ablate(s, "blank", rng) for s in test_samples]
    blank = np.asarray(predict(params, with_pixels(train_inputs, blanked)["pixel_values_videos"]))
    correct = np.array(ANSWERS)[labels]
    assert np.mean(real == correct) >= 7 / 8
    assert len(set(blank.tolist())) == 1 and np.mean(blank == correct) == 0.5
