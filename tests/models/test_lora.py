"""LoRA: only adapters train, b = 0 starts at the base, merged export == base + adapters."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlmm_jax.config_dicts import optimizer_defaults
from vlmm_jax.models import Qwen2_5_VL, abstract_params, from_pretrained, save_pretrained
from vlmm_jax.models.config import tiny
from vlmm_jax.models.lora import (
    TRAIN_ONLY,
    abstract_with_lora,
    add_lora,
    base_params,
    effective_params,
    merge,
)
from vlmm_jax.policy import Policy
from vlmm_jax.training.batches import pad_batch, random_sample
from vlmm_jax.training.optimizer import make_optimizer, path_str
from vlmm_jax.training.sft import train_step
from vlmm_jax.training.state import TrainState

CONFIG = tiny()
MODEL = Qwen2_5_VL(CONFIG)
TARGETS = r"^decoder/layers.*/(q|k|v|o|mlp/(gate|up|down))$"


def _init(config, seed=0):
    """Random params as the model initialises them (norms 1, biases 0, kernels N(0, 0.02)),
    drawn with NumPy from the abstract shapes: much cheaper on CPU than compiling `init`."""
    rng = np.random.default_rng(seed)

    def draw(path, x):
        name = path_str(path)
        if name.endswith("scale"):
            return jnp.ones(x.shape, x.dtype)
        if name.endswith("bias"):
            return jnp.zeros(x.shape, x.dtype)
        return jnp.asarray(rng.normal(0.0, 0.02, x.shape), x.dtype)

    return jax.tree_util.tree_map_with_path(draw, nn.meta.unbox(abstract_params(config)))


@pytest.fixture(scope="module")
def params():
    return _init(CONFIG)


@pytest.fixture(scope="module")
def batch():
    samples = [random_sample(CONFIG, i, text=16 + 4 * i) for i in range(2)]
    return jax.tree.map(jnp.asarray, pad_batch(samples, CONFIG))


def _with_random_b(p, seed=1):
    """Adapters with non-zero b, so merged and base differ."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(p["lora"])
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [
        0.05 * jax.random.normal(k, x.shape) if path_str(path).endswith("/b") else x
        for (path, x), k in zip(leaves, keys, strict=True)
    ]
    return {**p, "lora": jax.tree_util.tree_unflatten(treedef, new)}


@functools.partial(jax.jit, static_argnums=0)
def _logits(model, p, batch):
    b = jax.tree.map(lambda x: x[0], batch)
    return model.apply(
        {"params": p},
        b["input_ids"],
        segment_ids=b["segment_ids"],
        position_ids=b["position_ids"],
        visual_pixels=b["visual_pixels"],
        vision_layout=b["vision_layout"],
    ).logits


def test_layout_and_zero_init(params):
    p = add_lora(params, targets=TARGETS, rank=4, alpha=8.0, rng=jax.random.key(1))
    layer = p["lora"]["decoder"]["layers_0"]
    assert layer["q"]["a"].shape == (64, 4) and layer["q"]["b"].shape == (4, 4 * 16)  # D | N*H
    assert layer["k"]["b"].shape == (4, 2 * 16)  # K*H
    assert layer["o"]["a"].shape == (4 * 16, 4) and layer["o"]["b"].shape == (4, 64)  # N*H | D
    assert layer["mlp"]["down"]["a"].shape == (128, 4)
    assert float(layer["q"]["scale"]) == 2.0
    assert "visual" not in p["lora"] and "q_bias" not in layer
    assert base_params(p)["decoder"] is params["decoder"]  # the reference model: no copy
    for a, b in zip(jax.tree.leaves(effective_params(p)), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)  # b = 0: exactly the base model


def test_abstract_with_lora_matches_add_lora():
    boxed = abstract_with_lora(abstract_params(CONFIG), targets=TARGETS, rank=4, alpha=8.0)
    q = boxed["lora"]["decoder"]["layers_0"]["q"]
    assert q["a"].names == ("embed", "lora_rank") and q["b"].names == ("lora_rank", "heads")
    o = boxed["lora"]["decoder"]["layers_0"]["o"]
    assert o["a"].names == ("heads", "lora_rank") and o["b"].names == ("lora_rank", "embed")
    plain = nn.meta.unbox(abstract_params(CONFIG))
    shapes = jax.eval_shape(
        functools.partial(add_lora, targets=TARGETS, rank=4, alpha=8.0, rng=jax.random.key(0)),
        plain,
    )
    got = jax.tree.map(lambda x: (x.shape, x.dtype), nn.meta.unbox(boxed))
    assert got == jax.tree.map(lambda x: (x.shape, x.dtype), shapes)


def test_trains_only_adapters(params, batch):
    p = add_lora(params, targets=TARGETS, rank=4, alpha=8.0, rng=jax.random.key(1))
    opt = optimizer_defaults(
        learning_rate=1e-2, warmup_steps=0, total_steps=10, schedule="constant"
    )
    tx = make_optimizer(opt, p, train_only=TRAIN_ONLY)
    state = TrainState(step=jnp.int32(0), params=p, opt_state=tx.init(p), rng=jax.random.key(0))
    step = jax.jit(functools.partial(train_step, policy=Policy(model=MODEL), tx=tx))
    losses = []
    for _ in range(4):
        state, m = step(state, batch)
        losses.append(float(m["loss_sum"] / m["tokens"]))
    assert losses[-1] < losses[0] - 1e-3, losses
    new = state.params
    for a, b in zip(jax.tree.leaves(base_params(new)), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)  # the base: bit-identical
    for path, x in jax.tree_util.tree_leaves_with_path(new["lora"]):
        old = p["lora"]
        for k in path:
            old = old[k.key]
        if path_str(path).endswith("scale"):
            assert float(x) == float(old)
        else:
            assert not np.allclose(x, old), path_str(path)  # a moves once b != 0


@pytest.mark.parametrize("scan", [False, True])
def test_merged_export_equals_base_plus_adapters(params, batch, scan, tmp_path):
    config = dataclasses.replace(CONFIG, scan_layers=scan)
    model = Qwen2_5_VL(config)
    base = _init(config) if scan else params
    p = _with_random_b(add_lora(base, targets=TARGETS, rank=4, alpha=8.0, rng=jax.random.key(1)))
    merged = merge(p)
    # by hand, for the first layer's o [(L,) N, H, D]: in = N*H, out = D; stacked: [L, in, r]
    layer = "layers" if scan else "layers_0"
    first = (lambda x: np.asarray(x)[0]) if scan else np.asarray  # noqa: E731
    ab, w = p["lora"]["decoder"][layer]["o"], first(base["decoder"][layer]["o"])
    assert ab["a"].shape == ((2,) if scan else ()) + (64, 4)
    expected = w + 2.0 * (first(ab["a"]) @ first(ab["b"])).reshape(w.shape)
    got = first(merged["decoder"][layer]["o"])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)

    save_pretrained(model, merged, str(tmp_path))
    loaded_model, loaded = from_pretrained(str(tmp_path), dtype=jnp.float32)
    want = _logits(model, effective_params(p), batch)
    assert not np.allclose(want, _logits(model, base, batch), atol=1e-4)  # adapters matter
    # the loaded config is the unscanned tiny one (its dtypes spelled differently): run it with
    # MODEL, whose forward is already compiled
    assert (loaded_model.config.text, loaded_model.config.vision) == (CONFIG.text, CONFIG.vision)
    np.testing.assert_allclose(_logits(MODEL, loaded, batch), want, rtol=1e-5, atol=1e-5)


def test_bad_regex_lists_paths(params):
    with pytest.raises(ValueError, match=r"matches none.*decoder/layers_0/q"):
        add_lora(params, targets=r"^decoder/attn/", rank=4, alpha=8.0, rng=jax.random.key(0))
