"""Logit parity with transformers' Qwen3VLForConditionalGeneration (fp32, max abs <= 1e-4).

A tiny random Qwen3-VL (3 vision blocks with DeepStack after blocks 0 and 1, 3 decoder layers,
interleaved M-RoPE, q/k norms, a 4x4 learned position table interpolated to every grid) is built
with transformers and saved locally. Videos are prompted as Qwen3-VL's processor writes them:
each temporal grid its own `<t seconds><|vision_start|><|video_pad|>...<|vision_end|>` group.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from tests.models.conftest import (
    IMAGE,
    VEND,
    VIDEO,
    VOCAB,
    VSTART,
    Prompt,
    batch_inputs,
    hf_logits,
    randomize,
)
from tests.models.test_hf_parity import assert_close, ours
from vlmm_jax.models import from_pretrained, save_pretrained
from vlmm_jax.models.config import tiny_qwen3, to_hf_dict

PATCH = 16


def hf_config(tie: bool = False) -> transformers.Qwen3VLConfig:
    """transformers' config of `tiny_qwen3()` (written by hand, not by `to_hf_dict`)."""
    return transformers.Qwen3VLConfig(
        text_config=dict(
            vocab_size=VOCAB,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            rms_norm_eps=1e-6,
            rope_parameters={
                "rope_type": "default",
                "mrope_section": [2, 3, 3],
                "mrope_interleaved": True,
                "rope_theta": 1e4,
            },
            max_position_embeddings=4096,
            eos_token_id=VOCAB - 5,
            pad_token_id=0,
        ),
        vision_config=dict(
            depth=3,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            num_position_embeddings=16,
            deepstack_visual_indexes=[0, 1],
        ),
        image_token_id=IMAGE,
        video_token_id=VIDEO,
        vision_start_token_id=VSTART,
        vision_end_token_id=VEND,
        tie_word_embeddings=tie,
    )


def build_hf_model(tie: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    model = transformers.Qwen3VLForConditionalGeneration._from_config(
        hf_config(tie), attn_implementation="eager", dtype=torch.float32
    )
    return randomize(model)


class Qwen3Prompt(Prompt):
    def video(self, t, h, w, seconds_per_grid=1.0):
        """`t` temporal grids, each after two timestamp text tokens, in its own group."""
        del seconds_per_grid  # Qwen3-VL's timestamps are text, not positions
        self.videos.append((t, h, w))
        for _ in range(t):
            self.text(2)
            self._vision(VIDEO, (1, h, w))
        return self


CASES = {
    "text": lambda: [Qwen3Prompt(0).text(12)],
    "image": lambda: [Qwen3Prompt(1).text(3).image(6, 8).text(4)],
    "video": lambda: [Qwen3Prompt(2).text(2).video(3, 4, 6).text(3)],
    "image_and_video": lambda: [Qwen3Prompt(3).text(2).image(4, 4).text(2).video(2, 6, 4).text(2)],
    "left_padded_batch": lambda: [
        Qwen3Prompt(4).text(2).video(2, 4, 4).text(5),
        Qwen3Prompt(5).text(1).video(3, 4, 6).text(2).image(4, 6).text(1),
    ],
    # a grid wider than the 4x4 table and one narrower: both interpolate it
    "large_image": lambda: [Qwen3Prompt(6).text(1).image(10, 2).text(1).image(2, 12).text(2)],
}


def inputs_of(case):
    inputs = batch_inputs(CASES[case](), patch=PATCH)
    inputs.pop("second_per_grid_ts", None)
    return inputs


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_qwen3_tiny")
    build_hf_model().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def hf_model(hf_dir):
    return transformers.Qwen3VLForConditionalGeneration.from_pretrained(
        hf_dir, attn_implementation="eager", dtype=torch.float32
    ).eval()


@pytest.fixture(scope="module")
def loaded(hf_dir):
    return from_pretrained(hf_dir)


def test_config_reads_as_the_tiny_preset(loaded):
    model, _ = loaded
    preset = tiny_qwen3()
    assert model.config == preset.replace(bos_token_id=model.config.bos_token_id)


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(case, loaded, hf_model):
    model, params = loaded
    inputs = inputs_of(case)
    assert_close(ours(model, params, inputs), hf_logits(hf_model, inputs), inputs["attention_mask"])


def test_deepstack_matters(loaded, hf_model):
    """Zeroing a DeepStack merger changes the logits of the text after the image: the features
    really enter the decoder (a parity test alone would pass with DeepStack off only if
    transformers' were off too)."""
    model, params = loaded
    inputs = inputs_of("image")
    cut = {
        **params,
        "visual": {
            **params["visual"],
            "deepstack_merger_1": jax.tree.map(
                jnp.zeros_like, params["visual"]["deepstack_merger_1"]
            ),
        },
    }
    diff = np.abs(ours(model, cut, inputs) - hf_logits(hf_model, inputs))[0, -4:]
    assert diff.max() > 1e-3


def test_scan_and_remat_give_the_same_logits(hf_dir, hf_model):
    model, params = from_pretrained(hf_dir, scan_layers=True, remat_policy="full")
    assert params["visual"]["blocks"]["qkv"].shape[0] == 3  # stacked on the layer axis
    inputs = inputs_of("image_and_video")
    assert_close(ours(model, params, inputs), hf_logits(hf_model, inputs), inputs["attention_mask"])


def test_export_round_trip(tmp_path, loaded):
    model, params = loaded
    save_pretrained(model, params, str(tmp_path), max_shard_bytes=200_000)
    written = to_hf_dict(model.config)
    assert written["model_type"] == "qwen3_vl"
    hf = transformers.Qwen3VLForConditionalGeneration.from_pretrained(
        str(tmp_path), attn_implementation="eager", dtype=torch.float32
    ).eval()
    inputs = inputs_of("left_padded_batch")
    reference = hf_logits(hf, inputs)
    assert_close(ours(model, params, inputs), reference, inputs["attention_mask"])
    reloaded, reloaded_params = from_pretrained(str(tmp_path))
    assert_close(ours(reloaded, reloaded_params, inputs), reference, inputs["attention_mask"])


def test_tied_embeddings(tmp_path):
    hf = build_hf_model(tie=True, seed=3)
    hf.save_pretrained(tmp_path)
    model, params = from_pretrained(str(tmp_path))
    assert model.config.text.tie_word_embeddings and "lm_head" not in params
    inputs = inputs_of("video")
    assert_close(ours(model, params, inputs), hf_logits(hf, inputs), inputs["attention_mask"])


def test_export_has_every_eos_and_generate_stops_there(tmp_path, loaded):
    """`generation_config.json` carries both EOS ids; transformers' `generate` on a video prompt
    stops at the second one when the model makes it the greedy choice."""
    model, params = loaded
    two_eos = (VOCAB - 5, VOCAB - 6)
    model = type(model)(model.config.replace(eos_token_id=two_eos))
    forced = {**params, "lm_head": params["lm_head"].at[:, VOCAB - 6].add(100.0)}
    save_pretrained(model, forced, str(tmp_path))
    generation = transformers.GenerationConfig.from_pretrained(str(tmp_path))
    assert list(generation.eos_token_id) == list(two_eos)
    hf = transformers.Qwen3VLForConditionalGeneration.from_pretrained(
        str(tmp_path), attn_implementation="eager", dtype=torch.float32
    ).eval()
    inputs = inputs_of("video")
    kw = {k: torch.from_numpy(v) for k, v in inputs.items()}
    ids = inputs["input_ids"]
    kw["mm_token_type_ids"] = torch.from_numpy((ids == VIDEO).astype(np.int32) * 2)
    with torch.no_grad():
        out = hf.generate(**kw, max_new_tokens=6, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 1 and int(out[0, -1]) == VOCAB - 6


def test_sampler_greedy_equals_transformers_generate(loaded, hf_model):
    """Our jitted sampler (prefill with DeepStack, shared prefix, KV cache, decode positions
    from the rope deltas) continues a left-padded batch of video prompts exactly as
    transformers' greedy `generate` does."""
    from vlmm_jax.inference import Greedy, Sampler

    model, params = loaded
    new = 6
    inputs = inputs_of("left_padded_batch")
    never = VOCAB + 7  # no EOS: both run the full length
    ours_out = Sampler(model, max_new_tokens=new)(
        params, inputs, method=Greedy(), eos_ids=(never,), stop_sequences=[(never, never)]
    )
    kw = {k: torch.from_numpy(v) for k, v in inputs.items()}
    ids = inputs["input_ids"]
    kw["mm_token_type_ids"] = torch.from_numpy(
        np.where(ids == IMAGE, 1, np.where(ids == VIDEO, 2, 0)).astype(np.int32)
    )
    with torch.no_grad():
        reference = hf_model.generate(
            **kw, max_new_tokens=new, min_new_tokens=new, do_sample=False, eos_token_id=None
        )
    np.testing.assert_array_equal(np.asarray(ours_out.tokens), reference[:, ids.shape[1] :].numpy())


def test_every_parameter_gets_a_gradient(loaded):
    """Each tensor (the position table, both DeepStack mergers, q/k norms, ...) reaches the
    logits of a batch holding an image and a video: none is computed and then dropped."""
    model, params = loaded
    inputs = inputs_of("image_and_video")
    arrays = {k: jnp.asarray(v) for k, v in inputs.items() if not k.endswith("grid_thw")}
    grids = {k: v for k, v in inputs.items() if k.endswith("grid_thw")}

    def loss(p):
        logits = model.apply({"params": p}, **arrays, **grids).logits
        return jnp.sum(jnp.sin(logits))  # not a mean: every logit's gradient differs

    grads = jax.jit(jax.grad(loss))(params)
    flat = jax.tree_util.tree_leaves_with_path(grads)
    dead = [jax.tree_util.keystr(p) for p, g in flat if not np.any(np.asarray(g))]
    assert not dead, f"parameters without a gradient: {dead}"
