"""The trainer's group rewards: weighted per-group calls of `rewards.GROUP_REGISTRY`."""

import numpy as np
import pytest

from vlmm_jax.rewards import length_bonus, soft_overlong_penalty
from vlmm_jax.training.grpo import group_reward_fn


def test_group_rewards_are_weighted_per_group():
    acc = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    lengths = np.array([[400, 100, 400], [400, 130, 90]])
    fn = group_reward_fn(
        {
            "length": {"weight": 2.0, "min_tokens": 320, "max_tokens": 512, "bonus": 0.2},
            "overlong": {"weight": 1.0, "max_length": 128, "cache_length": 32},
        }
    )
    total, means = fn(acc, lengths)
    # By hand: group 0 has two correct answers, one of them in the length range; group 1 has
    # one correct answer (no bonus). Overlong: 0 up to 96 tokens, linear to -1 at 128, -1 beyond.
    length = np.array([[0.2, 0.0, 0.0], [0.0, 0.0, 0.0]])
    over = np.array([[-1.0, -4 / 32, -1.0], [-1.0, -1.0, 0.0]])
    np.testing.assert_allclose(total, 2.0 * length + over)
    assert means == pytest.approx({"reward_length": length.mean(), "reward_overlong": over.mean()})
    assert length[0].tolist() == length_bonus(accuracies=acc[0], lengths=lengths[0])
    assert soft_overlong_penalty(100, max_length=128, cache_length=32) == -4 / 32


def test_group_reward_config_errors():
    assert group_reward_fn({})(np.ones((1, 2)), np.ones((1, 2)))[0].tolist() == [[0.0, 0.0]]
    with pytest.raises(ValueError, match="unknown reward"):
        group_reward_fn({"lenght": {"weight": 1.0}})
    with pytest.raises(ValueError, match="weight"):
        group_reward_fn({"length": {"bonus": 0.2}})
