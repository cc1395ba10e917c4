"""Plug-in rewards (`register`), never-raising batch scoring (`batch_scores`) and the example
check (`check_example`): hand cases against NumPy expectations."""

import copy
import logging
import math

import numpy as np
import pytest

from vlmm_jax import rewards

MC = {"problem_type": "multiple choice", "solution": "<answer>B</answer>"}


@pytest.fixture(autouse=True)
def fresh_registries(monkeypatch):
    """Each test registers into copies, so names never leak between tests."""
    for name in ("REGISTRY", "GROUP_REGISTRY", "_BATCHED", "_WARNED"):
        monkeypatch.setattr(rewards, name, copy.copy(getattr(rewards, name)))


# ----------------------------------------------------------------------------- register
def test_register_per_sample_and_use_in_weighted_sum():
    @rewards.register("says_b")
    def says_b(completion, example):
        return float("B" in completion)

    assert rewards.REGISTRY["says_b"] is says_b and not rewards.is_batched("says_b")
    fn = rewards.weighted_sum({"says_b": 2.0, "accuracy": 1.0})
    assert fn("<answer>B</answer>", MC) == 3.0
    scores, errors = rewards.batch_scores("says_b", ["B", "C"], [MC, MC])
    np.testing.assert_array_equal(scores, [1.0, 0.0])
    assert errors == 0 and scores.dtype == np.float64


def test_register_duplicates_and_names():
    with pytest.raises(ValueError, match="'accuracy' is already in REGISTRY"):
        rewards.register("accuracy")(lambda c, e: 0.0)
    with pytest.raises(ValueError, match="'length' is already in GROUP_REGISTRY"):
        rewards.register("length", group=True)(lambda **kw: [])

    @rewards.register("accuracy", overwrite=True)
    def stricter(completion, example):
        return 0.0

    assert rewards.REGISTRY["accuracy"] is stricter
    for bad in ("", "my reward", "3d", "a-b", None, "x.y"):
        with pytest.raises(ValueError, match="reward name"):
            rewards.register(bad)
    with pytest.raises(ValueError, match="batched"):
        rewards.register("both", batched=True, group=True)
    with pytest.raises(ValueError, match="unknown reward"):
        rewards.is_batched("nope")


def test_register_group_reward():
    @rewards.register("first_bonus", group=True)
    def first_bonus(*, accuracies, lengths, bonus=1.0):
        return [bonus if i == 0 else 0.0 for i in range(len(lengths))]

    assert "first_bonus" not in rewards.REGISTRY
    group = rewards.GROUP_REGISTRY["first_bonus"](accuracies=[1, 0], lengths=[3, 4], bonus=0.5)
    assert group == [0.5, 0.0]


def test_batched_reward_is_called_once_and_wrapped_per_sample():
    calls = []

    @rewards.register("judge", batched=True)
    def judge(completions, examples):
        """Scores the length of each completion, as a judge model would score a batch."""
        calls.append(len(completions))
        return [len(c) / 10 for c in completions]

    assert rewards.is_batched("judge")
    texts = ["a", "bb", "ccc", "dddd"]
    scores, errors = rewards.batch_scores("judge", texts, [MC] * 4)
    np.testing.assert_allclose(scores, [0.1, 0.2, 0.3, 0.4])
    assert errors == 0 and calls == [4]
    per_sample = rewards.REGISTRY["judge"]
    assert per_sample("abcde", MC) == 0.5 and calls == [4, 1]
    assert per_sample.__name__ == "judge" and "judge model" in per_sample.__doc__

    @rewards.register("judge", overwrite=True)  # back to a per-sample reward
    def plain(completion, example):
        return 1.0

    assert not rewards.is_batched("judge")
    assert rewards.batch_scores("judge", texts, [MC] * 4)[0].tolist() == [1.0] * 4


# ----------------------------------------------------------------------------- batch_scores
def test_batch_scores_counts_raising_and_nan_samples(caplog):
    @rewards.register("flaky")
    def flaky(completion, example):
        if completion == "raise":
            raise RuntimeError("judge server down")
        return math.nan if completion == "nan" else 0.75

    texts = ["ok", "raise", "nan", "ok", "raise"]
    with caplog.at_level(logging.WARNING, logger="vlmm_jax.rewards"):
        scores, errors = rewards.batch_scores("flaky", texts, [MC] * 5)
        np.testing.assert_array_equal(scores, [0.75, 0.0, 0.0, 0.75, 0.0])
        assert errors == 3
        again, errors = rewards.batch_scores("flaky", ["nan"], [MC])
    assert again.tolist() == [0.0] and errors == 1
    warnings = [r for r in caplog.records if "flaky" in r.getMessage()]
    assert len(warnings) == 1  # once per reward name
    assert "judge server down" in warnings[0].getMessage()
    assert "3 of 5" in warnings[0].getMessage()


def test_batch_scores_malformed_example_and_bad_return_types():
    bad = {"problem_type": "numerical", "solution": "<answer>abc</answer>"}
    scores, errors = rewards.batch_scores("accuracy", ["<answer>B</answer>"] * 2, [MC, bad])
    assert scores.tolist() == [1.0, 0.0] and errors == 1
    rewards.register("returns_none")(lambda c, e: None)
    rewards.register("returns_inf")(lambda c, e: -math.inf)
    for name in ("returns_none", "returns_inf"):
        assert rewards.batch_scores(name, ["x", "y"], [MC, MC])[1] == 2


def test_batched_failures_score_the_whole_batch_zero():
    rewards.register("dead", batched=True)(lambda cs, es: 1 / 0)
    rewards.register("short", batched=True)(lambda cs, es: [1.0] * (len(cs) - 1))
    rewards.register("partial", batched=True)(lambda cs, es: [1.0, math.nan, 0.5])
    for name, want, want_errors in [
        ("dead", [0.0, 0.0, 0.0], 3),
        ("short", [0.0, 0.0, 0.0], 3),
        ("partial", [1.0, 0.0, 0.5], 1),
    ]:
        scores, errors = rewards.batch_scores(name, ["a", "b", "c"], [MC] * 3)
        assert scores.tolist() == want and errors == want_errors, name


def test_batch_scores_caller_errors_raise():
    with pytest.raises(ValueError, match="unknown reward"):
        rewards.batch_scores("nope", ["a"], [MC])
    with pytest.raises(ValueError, match="2 completions but 1 examples"):
        rewards.batch_scores("accuracy", ["a", "b"], [MC])
    scores, errors = rewards.batch_scores("accuracy", [], [])
    assert scores.shape == (0,) and errors == 0


# ----------------------------------------------------------------------------- check_example
@pytest.mark.parametrize(
    "example, message",
    [
        ({"problem_type": "essay", "solution": "x"}, "unknown example 'problem_type' 'essay'"),
        ({"solution": "<answer>B</answer>"}, "problem_type"),
        ({"problem_type": "OCR"}, "solution"),
        ({"problem_type": "numerical", "solution": "<answer>abc</answer>"}, "no number: '<ans"),
        ({"problem_type": "regression", "solution": "<answer>nan</answer>"}, "no number"),
        ({"problem_type": "temporal grounding", "solution": [10, 5]}, r"start <= end.*\[10, 5\]"),
        ({"problem_type": "temporal grounding", "solution": "<answer>soon</answer>"}, "interval"),
        ({"problem_type": "temporal grounding", "timestamp": [0, math.inf]}, "finite"),
        ({"problem_type": "temporal grounding", "solution": "20 to 10"}, "'20 to 10'"),
        ({"problem_type": "spatial grounding", "solution": "<answer>left</answer>"}, "box"),
        ({"problem_type": "spatial grounding", "solution": [0, 0, 1]}, "x1, y1"),
        ({**MC, "duration": 0}, "'duration' must be finite and > 0, got 0"),
        ({**MC, "duration": "long"}, "'duration' must be a number"),
    ],
)
def test_check_example_rejects(example, message):
    with pytest.raises(ValueError, match=message):
        rewards.check_example(example)


@pytest.mark.parametrize(
    "example",
    [
        MC,
        {"problem_type": "multiple choice", "solution": "B"},  # tagless: scored as Video-R1 does
        {"problem_type": "numerical", "solution": "<answer>about 3 m</answer>"},
        {"problem_type": "regression", "solution": 4},
        {"problem_type": "temporal grounding", "solution": [1, 2], "duration": 30.0},
        {"problem_type": "temporal grounding", "solution": "<answer>1.5 to 2</answer>"},
        {"problem_type": "spatial grounding", "solution": "<answer>[0, 0, 5, 5]</answer>"},
        {**MC, "duration": None},
    ],
)
def test_check_example_accepts(example):
    assert rewards.check_example(example) is None


# ----------------------------------------------------------------------------- a judge
def test_batched_judge_reward_through_a_policy(tmp_path):
    """The README's judge: a batched reward that asks a model, through a `Policy`, whether each
    completion is right; its score is p("Yes") of the judge's next token (NumPy check)."""
    import jax

    from tests.inference.conftest import random_params
    from vlmm_jax.data.chat import tokenize_chat
    from vlmm_jax.data.tokenizer import train_tokenizer
    from vlmm_jax.inference import Sampler
    from vlmm_jax.inference.tts import collate
    from vlmm_jax.models import Qwen2_5_VL
    from vlmm_jax.models.config import tiny
    from vlmm_jax.policy import Policy

    tok = train_tokenizer(["Is the answer correct? Reply Yes or No."] * 20, 320, tmp_path)
    config = tiny(vocab_size=-(-tok.vocab_size // 64) * 64).replace(**tok.model_token_ids())
    model = Qwen2_5_VL(config)
    judge, sampler = (
        Policy(model=model, params=random_params(config)),
        Sampler(model, max_new_tokens=1),
    )
    yes = int(tok.encode("Yes")[0])

    def prompt(c, e):
        question = f"{e['problem']}\nAnswer: {c}\nIs the answer correct? Reply Yes or No."
        ids, _ = tokenize_chat(
            [{"role": "user", "content": question}], tok, add_generation_prompt=True
        )
        return {"input_ids": ids[None]}

    @rewards.register("judge", batched=True)
    def judge_reward(completions, examples):
        batch = collate(
            [prompt(c, e) for c, e in zip(completions, examples, strict=True)], pad_id=tok.pad_id
        )
        logp = sampler.next_token_logprobs(judge, batch)
        return np.exp(np.asarray(logp)[:, yes]).tolist()

    examples = [{"problem": "What colour?"}, {"problem": "How many?"}]
    scores, errors = rewards.batch_scores("judge", ["red", "three"], examples)
    assert errors == 0
    texts = ["red", "three"]
    for score, c, e in zip(scores, texts, examples, strict=True):
        ids = prompt(c, e)["input_ids"]
        logits = np.asarray(model.apply({"params": judge.params}, jax.numpy.asarray(ids)).logits)
        z = logits[0, -1].astype(np.float64)
        np.testing.assert_allclose(
            score, np.exp(z[yes] - np.log(np.exp(z - z.max()).sum()) - z.max()), rtol=1e-4
        )
