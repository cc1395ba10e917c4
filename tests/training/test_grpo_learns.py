"""GRPO learns a toy task with every loss type: a tiny policy rewarded for emitting token X.

The prompts are text only (rows layout, no video), completions one token long, the vocabulary
16 tokens (12 sampleable), so the reward starts near chance (1/12) and the group-relative
advantage of the rare correct samples must drive it above 0.9.
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vlmm_jax import rewards
from vlmm_jax.config_dicts import grpo_defaults
from vlmm_jax.models import Qwen2_5_VL, init_params
from vlmm_jax.models.config import tiny
from vlmm_jax.policy import Policy
from vlmm_jax.training.grpo import GRPO
from vlmm_jax.training.state import TrainState

TARGET = 3
VOCAB = 16


@rewards.register("emits_target_test", overwrite=True)
def emits_target(completion: str, example) -> float:
    """1 when the completion's first token is the example's target."""
    return float(completion.split()[:1] == [str(example["target"])])


class DigitTokenizer:
    """Token ids as space-separated digits; no EOS (completions run to max_new_tokens)."""

    pad_id = 0

    def decode(self, ids):
        return " ".join(str(int(i)) for i in ids)

    def generation_kwargs(self):
        return {"eos_ids": (), "pad_id": 0, "suppress_ids": tuple(range(VOCAB - 4, VOCAB))}


def prompt_batch(b: int, t: int = 4) -> dict:
    """`b` text-only prompts in the rows layout (positions 0..t-1 on the 3 M-RoPE axes)."""
    ids = np.random.default_rng(0).integers(1, VOCAB - 5, (b, t)).astype(np.int32)
    example = types.SimpleNamespace(to_reward_example=lambda: {"target": TARGET})
    return {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "position_ids": np.broadcast_to(np.arange(t, dtype=np.int32), (3, b, t)).copy(),
        "rope_deltas": np.zeros((b, 1), np.int32),
        "examples": [example] * b,
    }


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_reward_rises_from_chance(loss_type):
    model = Qwen2_5_VL(tiny(vocab_size=VOCAB))
    params = init_params(model, jax.random.key(0))
    tx = optax.adam(3e-2)
    state = TrainState(
        step=jnp.int32(0), params=params, opt_state=tx.init(params), rng=jax.random.key(1)
    )
    cfg = grpo_defaults().grpo
    cfg.rewards = {"emits_target_test": 1.0}
    cfg.correctness = "emits_target_test"
    cfg.loss_type, cfg.group_size, cfg.max_new_tokens, cfg.temporal = loss_type, 8, 1, False
    policy = Policy(model=model)
    grpo = GRPO(policy, tx, DigitTokenizer(), cfg)
    batch = prompt_batch(4)
    curve = []
    for step in range(40):
        rollout = grpo.rollout(policy.with_params(state.params), batch, jax.random.key(step))
        curve.append(rollout.figures["reward"])
        if rollout.kept:  # dynamic sampling: groups of equal rewards carry no signal
            state, figures = grpo.update(state, [rollout], None)
            assert not figures["skipped"]
        if np.mean(curve[-3:]) > 0.95:
            break
    assert np.mean(curve[:2]) < 0.3, curve  # about chance (1/12) at the start
    assert np.mean(curve[-3:]) > 0.9, curve
