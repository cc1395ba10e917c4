"""GRPO's rollout and update in the configurations that broke silently before:

* T-GRPO on a batch of image and video prompts: only the video groups get the temporal bonus;
* an update split into micro-batches equals the one-piece update (`data.micro_batches`);
* a non-finite step changes nothing and is counted; the run stops after too many in a row.
"""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.inference.conftest import random_params, tiny_config
from tests.rows import rows_from_flat
from vlmm_jax import rewards
from vlmm_jax.config_dicts import grpo_defaults
from vlmm_jax.models import Qwen2_5_VL
from vlmm_jax.policy import Policy
from vlmm_jax.training.grpo import GRPO
from vlmm_jax.training.state import TrainState

CONFIG = tiny_config()
MODEL = Qwen2_5_VL(CONFIG)


@rewards.register("always_right_test", overwrite=True)
def always_right(completion, example):
    return 1.0


@rewards.register("length_test", overwrite=True)
def length(completion, example):
    return float(len(completion.split()))


class Tokenizer:
    pad_id = 0

    def decode(self, ids):
        return " ".join(str(int(i)) for i in ids if i != CONFIG.eos_token_id)

    def generation_kwargs(self):
        return {"eos_ids": (CONFIG.eos_token_id,), "pad_id": 0, "suppress_ids": ()}


class Example:
    def to_reward_example(self):
        return {"problem_type": "free-form", "solution": "<answer>x</answer>"}


def image_and_video_batch(seed=0):
    """Row 0: text + an image (1 x 4 x 4 patches); row 1: text + a video (2 x 4 x 4)."""
    rng = np.random.default_rng(seed)
    c = CONFIG
    rows = [
        [5, 6, c.vision_start_token_id, *[c.image_token_id] * 4, c.vision_end_token_id, 7],
        [5, c.vision_start_token_id, *[c.video_token_id] * 8, c.vision_end_token_id, 8, 9],
    ]
    length = max(map(len, rows))
    ids = np.array([[0] * (length - len(r)) + r for r in rows], np.int32)  # left padding
    flat = {
        "input_ids": ids,
        "attention_mask": (np.arange(length) >= length - np.array([[len(r)] for r in rows])).astype(
            np.int32
        ),
        "pixel_values": rng.normal(size=(16, c.vision.patch_dim)).astype(np.float32),
        "image_grid_thw": np.array([[1, 4, 4]]),
        "pixel_values_videos": rng.normal(size=(32, c.vision.patch_dim)).astype(np.float32),
        "video_grid_thw": np.array([[2, 4, 4]]),
        "second_per_grid_ts": np.array([1.0], np.float32),
    }
    batch = rows_from_flat(flat, c)
    batch["row_items"] = [[("image", 0, (1, 4, 4))], [("video", 0, (2, 4, 4))]]
    batch["examples"] = [Example(), Example()]
    return batch


def grpo(tx=None, **overrides):
    cfg = grpo_defaults().grpo
    cfg.group_size, cfg.max_new_tokens, cfg.dynamic_sampling = 4, 6, False
    cfg.update(overrides)
    return GRPO(Policy(model=MODEL), tx or optax.adam(1e-2), Tokenizer(), cfg)


def state_of(params, tx):
    """A fresh state on copies of `params` (the update donates its state)."""
    params = jax.tree.map(jnp.copy, params)
    return TrainState(
        step=jnp.int32(0), params=params, opt_state=tx.init(params), rng=jax.random.key(0)
    )


def test_temporal_bonus_only_for_video_prompts():
    """Every completion is correct on ordered and on shuffled frames, so Video-R1's condition
    holds for both groups; the image group still gets no bonus (Video-R1 gates per sample)."""
    g = grpo(rewards={"always_right_test": 1.0}, correctness="always_right_test")
    policy = Policy(model=MODEL, params=random_params(CONFIG))
    r = g.rollout(policy, image_and_video_batch(), jax.random.key(0))
    np.testing.assert_allclose(r.rewards, [[1.0] * 4, [1.3] * 4])
    assert r.figures["temporal_bonus_applied"] == 1.0 and r.figures["shuffled_accuracy"] == 1.0


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "bnpo"])
def test_micro_batches_change_nothing(loss_type):
    """Two micro-batches of one group each == one piece of both groups (loss and update);
    bnpo averages the pieces' token means, which for equal token counts is the same."""
    sgd = optax.sgd(1.0)  # params move by the gradient itself (Adam amplifies ~0 gradients)
    one, two = grpo(sgd, loss_type=loss_type), grpo(sgd, loss_type=loss_type)
    two.micro_batches = 2
    params = random_params(CONFIG)
    policy = Policy(model=MODEL, params=params)
    cfg = {"rewards": {"length_test": 1.0}, "correctness": "length_test", "temporal": False}
    r = grpo(**cfg).rollout(policy, image_and_video_batch(), jax.random.key(1))
    r.mask[:] = 1.0  # equal token counts per piece: bnpo's per-piece mean is then the mean
    out = {}
    for name, g in (("one", one), ("two", two)):
        state, figures = g.update(state_of(params, g.tx), [copy.deepcopy(r)], None)
        out[name] = (state, figures)
    np.testing.assert_allclose(out["two"][1]["loss"], out["one"][1]["loss"], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(out["two"][1]["grad_norm"], out["one"][1]["grad_norm"], rtol=1e-5)
    leaves = zip(
        jax.tree.leaves(out["one"][0].params), jax.tree.leaves(out["two"][0].params), strict=True
    )
    for a, b in leaves:
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_non_finite_step_changes_nothing():
    g = grpo(rewards={"length_test": 1.0}, correctness="length_test", temporal=False)
    params = random_params(CONFIG)
    r = g.rollout(Policy(model=MODEL, params=params), image_and_video_batch(), jax.random.key(2))
    bad = jax.tree.map(lambda x: x, params)
    bad["decoder"]["norm"]["scale"] = bad["decoder"]["norm"]["scale"].at[0].set(jnp.nan)
    before = jax.tree.map(np.asarray, bad)
    state, figures = g.update(state_of(bad, g.tx), [r], None)
    assert figures["skipped"] == 1 and int(state.step) == 1
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(before), strict=True):
        np.testing.assert_array_equal(a, b)


def test_run_stops_after_consecutive_non_finite_steps(tmp_path):
    from tests.training.grpo_worker import (
        completion_parity,  # noqa: F401  (the reward)
        config,
        prepare,
    )
    from vlmm_jax.models import init_params, save_pretrained
    from vlmm_jax.session import Session
    from vlmm_jax.training.grpo_loop import train_grpo

    data = str(tmp_path / "data")
    prepare(data)
    c = config(data, steps=6)
    c.train.max_consecutive_nan = 2
    model = Session(c, str(tmp_path / "probe")).model
    params = init_params(model, jax.random.key(0))
    params["decoder"]["norm"]["scale"] = params["decoder"]["norm"]["scale"].at[0].set(jnp.nan)
    save_pretrained(model, params, str(tmp_path / "nan_model"))
    c.init_from = str(tmp_path / "nan_model")
    with pytest.raises(FloatingPointError, match="2 consecutive non-finite"):
        train_grpo(c, str(tmp_path / "run"))
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all('"skipped": 1' in x for x in lines)
