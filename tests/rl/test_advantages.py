"""Advantages, DAPO's group filter and Video-R1's temporal bonus against NumPy and hand values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlmm_jax.rl import dynamic_sampling_mask, group_advantages, temporal_bonus


def np_advantages(rewards, G, scale="group", eps=1e-4):
    """TRL / Video-R1: (r - group mean) / (torch.std + eps), torch.std being unbiased."""
    r = np.asarray(rewards, np.float64).reshape(-1, G)
    centred = r - r.mean(axis=1, keepdims=True)
    if scale == "group":
        centred = centred / (r.std(axis=1, ddof=1, keepdims=True) + eps)
    elif scale == "batch":
        centred = centred / (r.std(ddof=1) + eps)
    return centred.reshape(-1)


REWARDS = np.array([1.0, 0.0, 1.0, 1.0, 0.5, 0.2, 0.9, 0.0, 1.0, 1.0, 1.0, 1.0])


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_matches_numpy(scale):
    got = group_advantages(jnp.asarray(REWARDS), 4, scale=scale)
    np.testing.assert_allclose(got, np_advantages(REWARDS, 4, scale), rtol=1e-5, atol=1e-6)
    grouped = group_advantages(jnp.asarray(REWARDS).reshape(3, 4), scale=scale)
    assert grouped.shape == (3, 4)
    np.testing.assert_allclose(grouped.reshape(-1), got, rtol=1e-6)


def test_hand_values():
    # Group [1, 0, 0, 0]: mean 0.25, unbiased std 0.5.
    got = group_advantages(jnp.array([1.0, 0.0, 0.0, 0.0]), 4, eps=0.0)
    np.testing.assert_allclose(got, [1.5, -0.5, -0.5, -0.5], rtol=1e-6)
    # The last group has equal rewards: zero advantage, not nan.
    assert np.all(np.asarray(group_advantages(jnp.asarray(REWARDS), 4))[8:] == 0)


def test_single_completion_groups_get_zero_advantage():
    assert np.all(np.asarray(group_advantages(jnp.array([0.3, 0.7]), 1)) == 0)


def test_jit_and_eps():
    fn = jax.jit(group_advantages, static_argnums=1, static_argnames=("scale", "eps"))
    np.testing.assert_allclose(
        fn(jnp.asarray(REWARDS), 4, eps=0.5), np_advantages(REWARDS, 4, eps=0.5), rtol=1e-5
    )


_jit_advantages = jax.jit(group_advantages, static_argnums=1)


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 4).flatmap(
        lambda n: st.lists(
            st.floats(-5, 5, allow_nan=False, width=32), min_size=4 * n, max_size=4 * n
        )
    )
)
def test_group_properties(rewards):
    adv = np.asarray(_jit_advantages(jnp.asarray(rewards, jnp.float32), 4)).reshape(-1, 4)
    np.testing.assert_allclose(adv.sum(1), 0.0, atol=1e-3)
    spread = np.asarray(rewards).reshape(-1, 4).std(1, ddof=1)
    big = spread > 1e-1  # where eps is negligible, the group has unit std
    np.testing.assert_allclose(adv[big].std(1, ddof=1), 1.0, rtol=2e-3)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="num_generations"):
        group_advantages(jnp.zeros(6))
    with pytest.raises(ValueError, match="multiple"):
        group_advantages(jnp.zeros(6), 4)
    with pytest.raises(ValueError, match="G=3"):
        group_advantages(jnp.zeros((2, 3)), 4)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(jnp.zeros(4), 4, scale="global")


def test_dynamic_sampling_mask():
    keep = dynamic_sampling_mask(jnp.asarray(REWARDS), 4)
    np.testing.assert_array_equal(keep, [True, True, False])
    np.testing.assert_array_equal(
        dynamic_sampling_mask(jnp.array([[1.0, 1.0], [0.0, 0.05]]), atol=0.1), [False, False]
    )
    np.testing.assert_array_equal(
        dynamic_sampling_mask(jnp.array([[0.0, 0.0], [0.0, 0.05]])), [False, True]
    )


def np_temporal_bonus(ordered, shuffled, alpha=0.3, mu=0.8, threshold=0.1):
    """Video-R1: if mean(acc) >= mu * mean(shuffled acc), acc[acc > threshold] += alpha."""
    out = np.zeros_like(ordered)
    for i, (o, s) in enumerate(zip(ordered, shuffled, strict=True)):
        if o.mean() >= mu * s.mean():
            out[i, o > threshold] = alpha
    return out


def test_temporal_bonus():
    ordered = np.array(
        [
            [1.0, 0.0, 1.0, 0.0],  # p = 0.5 >= 0.8 * 0.5: bonus to the two correct ones
            [1.0, 0.0, 0.0, 0.0],  # p = 0.25 < 0.8 * 1.0: none
            [0.0, 0.0, 0.0, 0.0],  # p = 0 >= 0: condition holds, but nobody is correct
            [0.1, 0.11, 0.0, 0.5],  # p = 0.1775 >= 0.8 * 0.2: 0.1 is not > threshold
            [1.0, 1.0, 0.0, 0.0],  # p = 0.5 == 0.8 * 0.625: equality counts
        ]
    )
    shuffled = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.4], [0.25, 1.0]])
    bonus, applied = temporal_bonus(jnp.asarray(ordered), jnp.asarray(shuffled))
    np.testing.assert_allclose(bonus, np_temporal_bonus(ordered, shuffled))
    np.testing.assert_array_equal(applied, [True, False, True, True, True])
    np.testing.assert_allclose(bonus[0], [0.3, 0.0, 0.3, 0.0])
    np.testing.assert_allclose(bonus[3], [0.0, 0.3, 0.0, 0.3])
    np.testing.assert_allclose(bonus[4], [0.3, 0.3, 0.0, 0.0])


def test_temporal_bonus_one_group_and_options():
    bonus, applied = temporal_bonus(
        jnp.array([1.0, 0.0, 0.0, 0.0]), jnp.array([1.0, 0.0]), alpha=0.5, mu=0.5
    )
    assert applied.shape == () and bool(applied)
    np.testing.assert_allclose(bonus, [0.5, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="temporal_bonus"):
        temporal_bonus(jnp.zeros((2, 4)), jnp.zeros((3, 2)))
