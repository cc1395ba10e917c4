"""Logit parity with transformers' Qwen2_5_VLForConditionalGeneration (fp32, max abs <= 1e-4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch  # noqa: E402
import transformers  # noqa: E402  (the conftest skips the module when it is missing)

from tests.models.conftest import Prompt, batch_inputs, hf_logits
from vlmm_jax.models import from_pretrained, save_pretrained

TOL = 1e-4


def ours(model, params, inputs):
    """Our logits, jitted: grids are closed over as constants (they fix the window layout)."""
    arrays = {
        k: jnp.asarray(v)
        for k, v in inputs.items()
        if k.startswith(("input", "attention", "pixel"))
    }
    static = {k: v for k, v in inputs.items() if k not in arrays}
    fn = jax.jit(lambda p, a: model.apply({"params": p}, **a, **static).logits)
    return np.asarray(fn(params, arrays))


def assert_close(a, b, mask):
    diff = np.abs(a - b)[mask.astype(bool)]
    assert diff.max() <= TOL, f"max abs logit diff {diff.max():.2e} > {TOL}"


# Inputs where transformers 5 and Qwen's own position rule agree (see config.VisionPositionAdvance):
# a video's scaled time extent (t-1) * tokens_per_second * seconds_per_grid stays below max(h, w)/2.
CASES = {
    "text": lambda: [Prompt(0).text(12)],
    # 6x8 patches = 3x4 merged tokens: 2x2 windows do not divide the grid evenly.
    "image": lambda: [Prompt(1).text(3).image(6, 8).text(4)],
    # 3 temporal slices of 4x6 patches, windows ragged on both axes, one full-attention block.
    "video": lambda: [Prompt(2).text(2).video(3, 4, 6, seconds_per_grid=0.5).text(3)],
    "image_and_video": lambda: [Prompt(3).text(2).image(4, 4).text(2).video(2, 6, 4).text(2)],
    "left_padded_batch": lambda: [
        Prompt(4).text(2).video(2, 4, 4, seconds_per_grid=0.5).text(5),
        Prompt(5).text(1).video(3, 4, 6, seconds_per_grid=0.5).text(2).image(4, 6).text(1),
    ],
}


@pytest.fixture(scope="module")
def loaded(hf_dir):
    return from_pretrained(hf_dir)


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(case, loaded, hf_model):
    model, params = loaded
    inputs = batch_inputs(CASES[case]())
    assert_close(ours(model, params, inputs), hf_logits(hf_model, inputs), inputs["attention_mask"])


def test_scan_and_remat_give_the_same_logits(hf_dir, hf_model):
    model, params = from_pretrained(hf_dir, scan_layers=True, remat_policy="full")
    assert params["decoder"]["layers"]["q"].shape[0] == 2  # stacked on the layer axis
    inputs = batch_inputs(CASES["image_and_video"]())
    assert_close(ours(model, params, inputs), hf_logits(hf_model, inputs), inputs["attention_mask"])


def test_transformers5_position_rule(hf_dir, hf_model):
    """A video whose time extent exceeds its spatial extent: the two rules differ, and the
    'spatial' rule reproduces transformers 5 while Qwen's 'max' rule does not."""
    inputs = batch_inputs([Prompt(6).text(2).video(4, 4, 4, seconds_per_grid=1.0).text(4)])
    reference = hf_logits(hf_model, inputs)
    mask = inputs["attention_mask"]
    model, params = from_pretrained(hf_dir, vision_position_advance="spatial")
    assert_close(ours(model, params, inputs), reference, mask)
    model_max, _ = from_pretrained(hf_dir)
    after_video = np.abs(ours(model_max, params, inputs) - reference)[0, -4:]
    assert after_video.max() > 1e-3  # text after the video sits at other positions


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_export_round_trip(tmp_path, loaded, dtype):
    model, params = loaded
    save_pretrained(model, params, str(tmp_path), dtype=dtype, max_shard_bytes=200_000)
    assert (tmp_path / "model.safetensors.index.json").exists()  # several shards
    torch_dtype = getattr(torch, dtype)
    hf = (
        transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(
            str(tmp_path), attn_implementation="eager", dtype=torch_dtype
        )
        .float()
        .eval()
    )
    inputs = batch_inputs(CASES["image_and_video"]())
    reloaded, reloaded_params = from_pretrained(str(tmp_path), dtype="float32")
    ours_f32 = ours(reloaded, reloaded_params, inputs)
    assert_close(ours_f32, hf_logits(hf, inputs), inputs["attention_mask"])
    if dtype == "float32":
        assert_close(ours_f32, ours(model, params, inputs), inputs["attention_mask"])


def test_tied_embeddings(tmp_path):
    from tests.models.conftest import build_hf_model

    hf = build_hf_model(tie=True, seed=3)
    hf.save_pretrained(tmp_path)
    model, params = from_pretrained(str(tmp_path))
    assert model.config.text.tie_word_embeddings and "lm_head" not in params
    inputs = batch_inputs(CASES["image"]())
    assert_close(ours(model, params, inputs), hf_logits(hf, inputs), inputs["attention_mask"])
