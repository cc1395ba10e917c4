"""Scoring a rollout: weighted rewards and group rewards by hand, correctness, never raising."""

import numpy as np
import pytest

from vlmm_jax import rewards
from vlmm_jax.rewards import length_bonus, soft_overlong_penalty
from vlmm_jax.training.scoring import RolloutScorer

GOLD = {"problem_type": "multiple choice", "solution": "<answer>A</answer>", "options": []}


def answers(letters):
    return [f"<think>.</think><answer>{x}</answer>" for x in letters]


def test_rewards_and_group_rewards_are_weighted_per_group():
    texts = answers("AABABB")  # 2 groups of 3: correct = [1, 1, 0], [1, 0, 0]
    lengths = np.array([400, 100, 400, 400, 130, 90])
    scorer = RolloutScorer(
        {"accuracy": 1.0, "format": 0.5},
        {
            "length": {"weight": 2.0, "min_tokens": 320, "max_tokens": 512, "bonus": 0.2},
            "overlong": {"weight": 1.0, "max_length": 128, "cache_length": 32},
        },
    )
    s = scorer(texts, [GOLD] * 6, lengths, group=3)
    acc = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # By hand: group 0 has two correct answers, one of them in the length range; group 1 has
    # one correct answer (no bonus). Overlong: 0 up to 96 tokens, linear to -1 at 128, -1 beyond.
    length = np.array([[0.2, 0.0, 0.0], [0.0, 0.0, 0.0]])
    over = np.array([[-1.0, -4 / 32, -1.0], [-1.0, -1.0, 0.0]])
    np.testing.assert_array_equal(s.correct, acc)
    np.testing.assert_allclose(s.total, acc + 0.5 + 2.0 * length + over)
    np.testing.assert_allclose(s.parts["length"], length)
    assert s.errors == 0
    assert length[0].tolist() == length_bonus(accuracies=acc[0], lengths=lengths[:3])
    assert soft_overlong_penalty(100, max_length=128, cache_length=32) == -4 / 32


def test_correctness_is_the_configured_reward():
    """A grounding recipe counts `tiou_v2` as correctness (its group rewards read it)."""
    gold = {"problem_type": "temporal grounding", "solution": [2.0, 4.0], "duration": 10.0}
    texts = answers(["2 to 4", "3 to 4"])
    s = RolloutScorer({"tiou": 1.0}, correctness="tiou_v2")(texts, [gold] * 2, np.ones(2), 2)
    np.testing.assert_allclose(s.correct, [[1.0, 0.5 * 0.9 * 1.0]])
    np.testing.assert_allclose(s.total, [[1.0, 0.5]])


@rewards.register("flaky_test", overwrite=True)
def flaky(completion, example):
    if "B" in completion:
        raise RuntimeError("judge timed out")
    return 1.0


def test_a_failing_reward_scores_zero_and_is_counted():
    s = RolloutScorer({"flaky_test": 1.0})(answers("AB"), [GOLD] * 2, np.ones(2), 2)
    np.testing.assert_array_equal(s.total, [[1.0, 0.0]])
    assert s.errors == 1


def test_scorer_config_errors():
    assert RolloutScorer({})(answers("A"), [GOLD], np.ones(1), 1).total.tolist() == [[0.0]]
    with pytest.raises(ValueError, match="unknown reward"):
        RolloutScorer({"acuracy": 1.0})
    with pytest.raises(ValueError, match="unknown reward"):
        RolloutScorer({}, {"lenght": {"weight": 1.0}})
    with pytest.raises(ValueError, match="weight"):
        RolloutScorer({}, {"length": {"bonus": 0.2}})
    with pytest.raises(ValueError, match="group_rewards.overlong"):
        RolloutScorer({}, {"overlong": {"weight": 1.0, "max_len": 128}})
    with pytest.raises(ValueError, match="unknown reward"):
        RolloutScorer({}, correctness="tiou_v3")
