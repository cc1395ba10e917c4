"""SFT loss: masking and normalisation by hand, packed == padded, accumulation == one batch."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vlmm_jax.config_dicts import optimizer_defaults
from vlmm_jax.models import Qwen2_5_VL, init_params
from vlmm_jax.models.config import tiny
from vlmm_jax.models.positions import row_vision_inputs
from vlmm_jax.policy import Policy
from vlmm_jax.training.batches import pad_batch, random_sample
from vlmm_jax.training.optimizer import make_optimizer
from vlmm_jax.training.sft import micro_batch_sums, target_weights, train_step
from vlmm_jax.training.state import TrainState

CONFIG = tiny()
MODEL = Qwen2_5_VL(CONFIG)
POLICY = Policy(model=MODEL)


@pytest.fixture(scope="module")
def params():
    return init_params(MODEL, jax.random.key(0))


def test_target_weights_by_hand():
    batch = {
        "input_ids": jnp.array([[5, 6, 7, 8, 9, 3, 4, 0]]),
        "loss_mask": jnp.array([[0, 0, 1, 1, 0, 0, 1, 0]]),
        "segment_ids": jnp.array([[1, 1, 1, 1, 2, 2, 2, 0]]),
    }
    # targets are tokens 1..7; token 4 starts sample 2 (no target across the boundary), 7 is pad
    np.testing.assert_array_equal(target_weights(batch)[0], [0, 1, 1, 0, 0, 1, 0])
    on_prompt = target_weights(batch, train_on_prompt=True, visual_token_ids=(3,))
    np.testing.assert_array_equal(on_prompt[0], [1, 1, 1, 0, 0, 1, 0])


def test_loss_sums_by_hand(params):
    """CE and argmax hits summed over the target tokens, from the model's own logits (NumPy)."""
    batch = jax.tree.map(lambda x: jnp.asarray(x)[0], pad_batch([random_sample(CONFIG, 2)], CONFIG))
    ce, aux = micro_batch_sums(params, batch, policy=POLICY, train_on_prompt=False)
    logits = MODEL.apply(
        {"params": params},
        batch["input_ids"],
        position_ids=batch["position_ids"],
        visual_pixels=batch["visual_pixels"],
        vision_layout=batch["vision_layout"],
    ).logits[0, :-1]
    z = np.asarray(logits, np.float64)
    logp = z - z.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    targets, w = np.asarray(batch["input_ids"][0, 1:]), np.asarray(batch["loss_mask"][0, 1:])
    np.testing.assert_allclose(ce, -(logp[np.arange(len(targets)), targets] * w).sum(), rtol=1e-5)
    assert aux["tokens"] == w.sum()
    assert aux["correct"] == ((z.argmax(-1) == targets) * w).sum()


def _packed(samples):
    """Both samples in one row: segment ids 1 and 2, positions restart per sample."""
    ids = np.concatenate([s["input_ids"] for s in samples])[None]
    mask = np.concatenate([s["loss_mask"] for s in samples])[None]
    seg = np.concatenate([np.full(len(s["input_ids"]), i + 1) for i, s in enumerate(samples)])[None]
    pos = np.concatenate([s["position_ids"] for s in samples], axis=1)[:, None]
    pixels, layout = row_vision_inputs([[(s["pixels"], s["grid"]) for s in samples]], CONFIG.vision)
    batch = {
        "input_ids": ids,
        "loss_mask": mask,
        "segment_ids": seg,
        "position_ids": pos,
        "visual_pixels": pixels,
        "vision_layout": layout,
    }
    return jax.tree.map(lambda x: jnp.asarray(x)[None], batch)  # M = 1


def test_packed_equals_padded(params):
    samples = [
        random_sample(CONFIG, 0, text=20, video=(2, 4, 4)),
        random_sample(CONFIG, 1, text=12, video=(2, 6, 4)),
    ]
    padded = jax.tree.map(jnp.asarray, pad_batch(samples, CONFIG))
    packed = _packed(samples)
    # Jitted: op by op, each primitive of the model compiles on its own (two minutes).
    fn = jax.jit(functools.partial(micro_batch_sums, policy=POLICY, train_on_prompt=False))
    grad = jax.jit(jax.grad(lambda p, b: fn(p, jax.tree.map(lambda x: x[0], b))[0]))
    (ce_pad, aux_pad) = fn(params, jax.tree.map(lambda x: x[0], padded))
    (ce_pack, aux_pack) = fn(params, jax.tree.map(lambda x: x[0], packed))
    assert aux_pad["tokens"] == aux_pack["tokens"] == 16
    np.testing.assert_allclose(ce_pack, ce_pad, rtol=1e-5)
    g_pad, g_pack = grad(params, padded), grad(params, packed)
    for a, b in zip(jax.tree.leaves(g_pad), jax.tree.leaves(g_pack), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _opt():
    return optimizer_defaults(
        learning_rate=1e-2, warmup_steps=0, total_steps=10, schedule="constant", weight_decay=0.0
    )


def test_accumulation_equals_one_batch_and_nan_skips(params):
    samples = [random_sample(CONFIG, i, text=16 + 4 * i) for i in range(4)]
    tx = optax.sgd(1.0)  # params move by the gradient itself: compares the accumulated gradients
    state = TrainState(
        step=jnp.int32(0), params=params, opt_state=tx.init(params), rng=jax.random.PRNGKey(0)
    )
    step = jax.jit(functools.partial(train_step, policy=POLICY, tx=tx))
    one = jax.tree.map(jnp.asarray, pad_batch(samples, CONFIG, micro_batches=1))
    four = jax.tree.map(jnp.asarray, pad_batch(samples, CONFIG, micro_batches=4))
    s1, m1 = step(state, one)
    s4, m4 = step(state, four)
    np.testing.assert_allclose(
        m1["loss_sum"] / m1["tokens"], m4["loss_sum"] / m4["tokens"], rtol=1e-5
    )
    np.testing.assert_allclose(m1["grad_norm"], m4["grad_norm"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s4.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    bad = jax.tree.map(lambda x: x, state.params)
    bad["decoder"]["norm"]["scale"] = bad["decoder"]["norm"]["scale"].at[0].set(jnp.nan)
    s_bad, m_bad = step(state.replace(params=bad), one)
    assert int(m_bad["skipped"]) == 1 and int(s_bad.step) == 1
    for a, b in zip(jax.tree.leaves(s_bad.params), jax.tree.leaves(bad), strict=True):
        np.testing.assert_array_equal(a, b)  # no update applied


def test_frozen_vision_gets_no_update(params):
    cfg = _opt()
    cfg.freeze = ("vision", "merger")
    tx = make_optimizer(cfg, params)
    state = TrainState(
        step=jnp.int32(0), params=params, opt_state=tx.init(params), rng=jax.random.PRNGKey(0)
    )
    batch = jax.tree.map(jnp.asarray, pad_batch([random_sample(CONFIG, 0)], CONFIG))
    new, _ = jax.jit(functools.partial(train_step, policy=POLICY, tx=tx))(state, batch)
    for a, b in zip(
        jax.tree.leaves(new.params["visual"]), jax.tree.leaves(params["visual"]), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(
        new.params["decoder"]["norm"]["scale"], params["decoder"]["norm"]["scale"]
    )


def test_run_stops_after_consecutive_non_finite_steps(tmp_path):
    """Every step of a model with a NaN weight is skipped; the run stops after N in a row."""
    from vlmm_jax.config_dicts import sft_defaults
    from vlmm_jax.models import save_pretrained
    from vlmm_jax.training.trainer import train_sft

    params = init_params(MODEL, jax.random.key(3))
    params["decoder"]["norm"]["scale"] = params["decoder"]["norm"]["scale"].at[0].set(jnp.nan)
    save_pretrained(MODEL, params, str(tmp_path / "nan_model"))
    config = sft_defaults("tiny")
    config.init_from = str(tmp_path / "nan_model")
    config.data.batch_size = 2
    config.train.steps, config.train.eval_every, config.train.eval_batches = 10, 0, 0
    config.train.max_consecutive_nan = 3
    with pytest.raises(FloatingPointError, match="3 consecutive non-finite"):
        train_sft(config, str(tmp_path / "run"))
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all('"skipped": 1' in x for x in lines)
