"""Per-part learning rates and clipping against Adam's first step by hand.

Adam's first update of a gradient g is -lr * g / (|g| + eps) (bias correction makes m = g and
v = g^2 at step 1), so with eps = 1 it shows both the learning rate a leaf got and the clipped
gradient it saw.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from vlmm_jax.config_dicts import optimizer_defaults
from vlmm_jax.training.optimizer import make_optimizer

LR = 0.1


def opt(**kw):
    cfg = optimizer_defaults()
    cfg.learning_rate, cfg.schedule, cfg.warmup_steps, cfg.weight_decay = LR, "constant", 0, 0.0
    cfg.eps, cfg.max_grad_norm = 1.0, 0.0
    cfg.update(kw)
    return cfg


def params_and_grads():
    params = {
        "visual": {"blocks": {"w": jnp.zeros(3)}, "merger": {"w": jnp.zeros(1)}},
        "decoder": {"w": jnp.zeros(2)},
    }
    grads = {
        "visual": {"blocks": {"w": jnp.full(3, 100.0)}, "merger": {"w": jnp.ones(1)}},
        "decoder": {"w": jnp.array([3.0, 4.0])},
    }
    return params, grads


def first_update(cfg):
    params, grads = params_and_grads()
    tx = make_optimizer(cfg, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    return updates


def adam1(g, lr):
    g = np.asarray(g)
    return -lr * g / (np.abs(g) + 1.0)


def test_lr_multipliers_scale_each_part():
    cfg = opt()
    cfg.lr_multipliers.vision = 10.0
    cfg.lr_multipliers["visual/merger/"] = 0.5  # a regex key, as a recipe may add
    u = first_update(cfg)
    np.testing.assert_allclose(u["visual"]["blocks"]["w"], adam1([100.0] * 3, 10 * LR), rtol=1e-6)
    np.testing.assert_allclose(u["visual"]["merger"]["w"], adam1([1.0], 0.5 * LR), rtol=1e-6)
    np.testing.assert_allclose(u["decoder"]["w"], adam1([3.0, 4.0], LR), rtol=1e-6)


def test_clipping_sees_only_the_trained_gradients():
    # Vision frozen: the global norm is that of merger + decoder = sqrt(1 + 9 + 16), not the
    # vision tower's 100 * sqrt(3); gradients are scaled by 1 / that norm (max norm 1).
    u = first_update(opt(max_grad_norm=1.0, freeze=("vision",)))
    norm = np.sqrt(26.0)
    np.testing.assert_array_equal(u["visual"]["blocks"]["w"], 0.0)
    np.testing.assert_allclose(u["decoder"]["w"], adam1(np.array([3.0, 4.0]) / norm, LR), rtol=1e-5)
    np.testing.assert_allclose(u["visual"]["merger"]["w"], adam1([1.0 / norm], LR), rtol=1e-5)


def test_multiplier_that_matches_nothing_is_named():
    cfg = opt()
    cfg.lr_multipliers["visiual/"] = 2.0
    with pytest.raises(ValueError, match="visiual/.*match no trained parameter"):
        first_update(cfg)
    frozen = opt(freeze=("vision",))
    frozen.lr_multipliers.vision = 10.0  # frozen: nothing left for it to scale
    with pytest.raises(ValueError, match="vision"):
        first_update(frozen)


@pytest.mark.parametrize("preset", ["tiny", "tiny_qwen3"])
@pytest.mark.parametrize("scan", [False, True])
def test_parts_and_decay_cover_every_parameter(preset, scan):
    """Every parameter of both families is in exactly one of vision / merger / llm, and weight
    decay reaches the matrices only: no norm scale and no bias, even split into heads
    (`q_bias [N, H]`, `qkv_bias [3, N, H]`) or stacked by the layer scan."""
    import re

    import flax.linen as nn
    import jax

    from vlmm_jax.models import PRESETS, abstract_params
    from vlmm_jax.training.optimizer import PARTS, _decay_mask, path_str

    params = nn.meta.unbox(abstract_params(PRESETS[preset]().replace(scan_layers=scan)))
    paths = {path_str(p): x for p, x in jax.tree_util.tree_leaves_with_path(params)}
    for name in paths:
        parts = [k for k in ("vision", "merger", "llm") if re.search(PARTS[k], name)]
        assert len(parts) == 1, f"{name} is in parts {parts}"
    decayed = {path_str(p): d for p, d in jax.tree_util.tree_leaves_with_path(_decay_mask(params))}
    for name, x in paths.items():
        stacked = scan and name.startswith(("decoder/layers/", "visual/blocks/"))
        matrix = x.ndim - stacked >= 2 and not name.endswith(("scale", "bias"))
        assert decayed[name] == matrix, name
    assert any(n.endswith("q_bias") or n.endswith("qkv_bias") for n in paths)
