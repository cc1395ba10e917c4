"""The model with `attention_implementation="pallas"` (interpret mode on CPU) matches "xla"."""

import jax
import jax.numpy as jnp
import numpy as np

from tests.models.conftest import Prompt, batch_inputs
from vlmm_jax.models import Qwen2_5_VL, init_cache, init_params, vision_layout
from vlmm_jax.models.config import tiny


def test_pallas_logits_match_xla():
    config = tiny()
    params = init_params(Qwen2_5_VL(config), jax.random.key(0))
    inputs = batch_inputs(
        [
            Prompt(0).text(3).video(2, 4, 6, seconds_per_grid=0.5).text(2),
            Prompt(1).text(1).video(2, 4, 4).text(4),
        ]
    )
    layout = vision_layout(inputs["video_grid_thw"], config.vision)
    args = dict(
        input_ids=jnp.asarray(inputs["input_ids"]),
        attention_mask=jnp.asarray(inputs["attention_mask"]),
        pixel_values_videos=jnp.asarray(inputs["pixel_values_videos"]),
        video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs["second_per_grid_ts"],
        vision_layout=layout,
    )
    b, t = inputs["input_ids"].shape
    out = {}
    for impl in ("xla", "pallas"):
        model = Qwen2_5_VL(config.replace(attention_implementation=impl))
        prefill = model.apply({"params": params}, **args, cache=init_cache(config, b, t + 1))
        token = jnp.argmax(prefill.logits[:, -1], -1)[:, None]
        step = model.apply(
            {"params": params}, token, cache=prefill.cache, rope_deltas=prefill.rope_deltas
        )
        out[impl] = (prefill.logits, step.logits)
    mask = inputs["attention_mask"].astype(bool)
    np.testing.assert_allclose(
        np.asarray(out["pallas"][0])[mask], np.asarray(out["xla"][0])[mask], atol=2e-5
    )
    np.testing.assert_allclose(out["pallas"][1], out["xla"][1], atol=2e-5)
