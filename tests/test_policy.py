"""The Policy boundary: the chunked LM head, LoRA applied in one place, both prompt layouts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.inference.conftest import PROMPT_SPECS, random_params, tiny_config, video_prompts
from tests.rows import rows_from_flat
from vlmm_jax.inference.sampler import Sampler, device_inputs
from vlmm_jax.inference.sampling import Greedy
from vlmm_jax.models import Qwen2_5_VL
from vlmm_jax.models.lora import add_lora
from vlmm_jax.policy import Policy
from vlmm_jax.training.rollout import naive_logp

CONFIG = tiny_config()
MODEL = Qwen2_5_VL(CONFIG)
G, N = 3, 5


@pytest.fixture(scope="module")
def params():
    return random_params(CONFIG)


@pytest.fixture(scope="module")
def lora_params(params):
    """Adapters on the decoder's q and v with non-zero `b` (the policy has moved)."""
    out = add_lora(params, targets=r"^decoder/.*/(q|v)$", rank=2, alpha=4.0, rng=jax.random.key(1))
    keys = iter(jax.random.split(jax.random.key(2), 64))
    out["lora"] = jax.tree_util.tree_map_with_path(
        lambda path, x: (
            x + 0.3 * jax.random.normal(next(keys), x.shape)
            if jax.tree_util.keystr(path).endswith("['b']")
            else x
        ),
        out["lora"],
    )
    return out


def _reference_stats(logits, targets, temperature):
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(-1, keepdims=True)
    logp_all = z - np.log(np.exp(z).sum(-1, keepdims=True))
    logp = np.take_along_axis(logp_all, targets[..., None], -1)[..., 0]
    entropy = -(np.exp(logp_all) * logp_all).sum(-1)
    return logp, entropy, z.argmax(-1) == targets


def test_token_stats_chunks_equal_one_pass(params):
    """Chunked LM head == NumPy log-softmax of the full logits, at any chunk size (padding the
    last chunk included), and the checkpointed chunks give the one-pass gradient."""
    rng = np.random.default_rng(0)
    hidden = jnp.asarray(rng.normal(size=(2, 7, CONFIG.text.hidden_size)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, CONFIG.text.vocab_size, (2, 7)), jnp.int32)
    base = Policy(model=MODEL, params=params)
    logp, entropy, correct = _reference_stats(base.logits(hidden), np.asarray(targets), 0.7)
    grads = {}
    for chunk in (1, 3, 7, 16):
        policy = Policy(model=MODEL, params=params, logits_chunk=chunk)
        stats = policy.token_stats(hidden, targets, temperature=0.7)
        np.testing.assert_allclose(stats["logp"], logp, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(stats["entropy"], entropy, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(stats["correct"], correct)

        def loss(h, policy=policy):
            s = policy.token_stats(h, targets, temperature=0.7)
            return jnp.sum(s["logp"]) + 0.1 * jnp.sum(s["entropy"])

        grads[chunk] = jax.grad(loss)(hidden)
    for chunk in (1, 3, 16):
        np.testing.assert_allclose(grads[chunk], grads[7], rtol=1e-4, atol=1e-6)


def test_completion_stats_rows_and_flat_equal_naive(params):
    """The shared-prefix pass on flat and on rows-layout prompts == the naive full forward."""
    flat = video_prompts(CONFIG, PROMPT_SPECS)
    rows = jax.tree.map(jnp.asarray, rows_from_flat(flat, CONFIG))
    completions = jnp.asarray(np.random.default_rng(0).integers(1, 50, (2 * G, N)), jnp.int32)
    policy = Policy(model=MODEL, params=params)
    naive = naive_logp(params, MODEL, flat, completions, G, temperature=0.7)
    for prompts in (device_inputs(flat, MODEL), rows):
        stats = policy.completion_stats(prompts, completions, group=G, temperature=0.7)
        np.testing.assert_allclose(stats["logp"], naive, atol=2e-5)


def test_lora_runs_through_the_policy(params, lora_params):
    """Adapters change the model the policy runs; `merged()` is that model as a plain tree;
    `reference()` is the base (the same arrays, no copy); gradients reach only the adapters."""
    inputs = device_inputs(video_prompts(CONFIG, PROMPT_SPECS), MODEL)
    adapted = Policy(model=MODEL, params=lora_params)
    base = Policy(model=MODEL, params=params)
    logits = adapted.apply(**inputs).logits
    assert np.abs(np.asarray(logits - base.apply(**inputs).logits)).max() > 1e-2
    merged = Policy(model=MODEL, params=adapted.merged())
    np.testing.assert_allclose(merged.apply(**inputs).logits, logits, rtol=1e-5, atol=1e-5)
    ref = adapted.reference()
    assert "lora" not in ref.params
    assert all(
        a is b for a, b in zip(jax.tree.leaves(ref.params), jax.tree.leaves(params), strict=True)
    )
    with pytest.raises(ValueError, match="no reference"):
        base.reference()

    def loss(p):
        return jnp.sum(adapted.with_params(p).apply(**inputs).logits[:, -1] ** 2)

    grads = jax.grad(loss)(lora_params)
    assert all(
        not np.any(g) for g in jax.tree.leaves({k: v for k, v in grads.items() if k != "lora"})
    )
    assert all(np.any(g) for g in jax.tree.leaves(grads["lora"]) if g.ndim)


def test_sampler_decodes_the_adapted_policy(params, lora_params):
    """Rollouts of a policy with non-zero adapters are the merged model's, not the base's."""
    flat = video_prompts(CONFIG, PROMPT_SPECS)
    sampler = Sampler(MODEL, max_new_tokens=8, eos_ids=())
    adapted = sampler(Policy(model=MODEL, params=lora_params), flat, method=Greedy()).tokens
    merged = sampler(
        Policy(model=MODEL, params=Policy(model=MODEL, params=lora_params).merged()),
        flat,
        method=Greedy(),
    ).tokens
    base = sampler(params, flat, method=Greedy()).tokens
    np.testing.assert_array_equal(adapted, merged)
    assert not np.array_equal(adapted, base)
