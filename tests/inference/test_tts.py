"""Test-time scaling: votes, IoU votes and stopping rules on scripted completions (hand
computations), then every strategy end to end on the tiny model, and the report."""

import copy
import dataclasses
import math

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.inference.conftest import (
    SINGLE_SPEC,
    TTS_NEW_TOKENS,
    TTS_SAMPLES,
    tiny_config,
    video_prompts,
)
from vlmm_jax import rewards
from vlmm_jax.inference.tts import (
    AdaptiveConsistency,
    BeamSearchStrategy,
    BestOfN,
    Completion,
    MeanLogProb,
    ModelGenerator,
    Question,
    RewardScorer,
    SelfConsistency,
    SparseToDense,
    Spent,
    VerifierScorer,
    beta_confidence,
    evaluate,
    extract_answer,
    report,
    smaller_budgets,
    vote,
    vote_counts,
)
from vlmm_jax.policy import Policy
from vlmm_jax.rewards import accuracy, accuracy_lenient

MC = {
    "problem_type": "multiple choice",
    "options": ["A. red", "B. blue", "C. green", "D. white"],
    "solution": "<answer>B</answer>",
}
GROUNDING = {"problem_type": "temporal grounding", "solution": [1.0, 9.0], "duration": 30.0}


# ----------------------------------------------------------------------------- votes by hand
def test_choice_vote():
    texts = ["<answer>B</answer>", "The answer is (C)", "B.", "no idea", "<answer>C</answer>", "b"]
    answers = [extract_answer(t, MC, lenient=True) for t in texts]
    assert answers == ["B", "C", "B", None, "C", "B"]
    assert vote(answers, "choice") == ("B", 0)
    assert vote_counts(answers, "choice") == ("B", 3, 2)
    strict = [extract_answer(t, MC) for t in texts]  # what `accuracy` reads: tags or nothing
    assert strict == ["B", None, None, None, "C", None]
    assert extract_answer("<answer> (B) </answer>", MC) == "(B)"
    assert extract_answer("<answer>  </answer>", MC) is None
    assert vote(["C", "B", "B", "C"], "choice") == ("C", 0)  # a tie goes to the first seen
    assert vote([None, None], "choice") == (None, None)


def test_number_and_text_answers():
    num, ocr = {"problem_type": "numerical"}, {"problem_type": "OCR"}
    assert extract_answer("<answer>3.14159</answer>", num, lenient=True) == 3.14
    assert extract_answer("it is about 2 m", num, lenient=True) == 2.0
    text = "<answer>  Hello   World </answer>"
    assert extract_answer(text, ocr, lenient=True) == "hello world"
    # Strict keys: Video-R1's decimal-point rule is part of a numerical key.
    assert extract_answer("<answer>3.14159</answer>", num) == (True, 3.14)
    assert extract_answer("<answer>1,000</answer>", num) == (True, 1000.0)
    assert extract_answer("<answer>4</answer>", num) == (False, 4.0)
    assert extract_answer("it is about 2 m", num) is None
    assert extract_answer("<answer>3.14159</answer>", {"problem_type": "regression"}) == 3.14159
    assert extract_answer(text, ocr) == "Hello   World"
    assert extract_answer(None, num) is None


def test_interval_vote_is_the_iou_medoid():
    texts = [
        "<answer>0 to 10</answer>",
        "<answer>2 to 10</answer>",
        "<think>x</think><answer>1 to 9</answer>",
        "<answer>20 to 30</answer>",
        "nothing",
    ]
    answers = [extract_answer(t, GROUNDING) for t in texts]
    assert answers == [(0.0, 10.0), (2.0, 10.0), (1.0, 9.0), (20.0, 30.0), None]
    # Mean IoU to the others: a (.8 + .8 + 0) / 3 = .533; b (.8 + 7/9 + 0) / 3 = .526;
    # c (.8 + 7/9 + 0) / 3 = .526; d 0. The medoid is a; b and c overlap it by .8 >= .5.
    assert vote(answers, "interval") == ((0.0, 10.0), 0)
    assert vote_counts(answers, "interval") == ((0.0, 10.0), 3, 1)


def test_box_vote():
    boxes = [(0, 0, 10, 10), (50, 50, 60, 60), (0, 0, 10, 8), (1, 0, 10, 10)]
    # IoU: a-c .8, a-d .9, c-d 72/98; b overlaps nothing. a has the highest mean.
    assert vote(boxes, "box") == ((0, 0, 10, 10), 0)


def test_beta_confidence_by_hand():
    # P(x > 1/2), x ~ Beta(v1 + 1, v2 + 1) = sum_{j <= v1} C(v1 + v2 + 1, j) / 2^(v1 + v2 + 1)
    assert beta_confidence(0, 0) == 0.5
    assert beta_confidence(3, 0) == 15 / 16
    assert beta_confidence(4, 0) == 31 / 32
    assert beta_confidence(4, 1) == 57 / 64
    assert beta_confidence(3, 1) == 26 / 32
    assert beta_confidence(7, 1) == 502 / 512


# Completions built from fragments that make keys collide: tags, letters, numbers that round
# alike, intervals, boxes, words that differ only in case.
FRAGMENTS = ["<answer>", "</answer>", "<think>", "</think>", " ", "\n", "B", "(B)", "b", "C."]
FRAGMENTS += ["3.5", "3.50", "3.504", "3.001", "3", "1,000", "1000", "10", "10.0", "nan", "-"]
FRAGMENTS += ["1 to 9", "1.0 and 9", "1 - 9", "[0, 0, 5, 5]", "[0, 0, 10, 10]", "(0, 0, 5, 5)"]
FRAGMENTS += ["stop", "Stop", "here", "the cat", "runs", ".", ","]
BODIES = [f for f in FRAGMENTS if "<" not in f]


@st.composite
def fragment_texts(draw):
    """Mostly `[prefix]<answer>[1-2 fragments]</answer>[suffix]`, so that keys collide often."""
    if draw(st.integers(0, 3)) == 0:
        return "".join(draw(st.lists(st.sampled_from(FRAGMENTS), max_size=12)))
    body = "".join(draw(st.lists(st.sampled_from(BODIES), min_size=1, max_size=2)))
    prefix = draw(st.sampled_from(["", "<think>x</think>", " ", "B "]))
    suffix = draw(st.sampled_from(["", "\n", "<answer>C</answer>", " 2 to 8", "</answer>"]))
    return f"{prefix}<answer>{body}</answer>{suffix}"


KEY_EXAMPLES = [
    MC,
    {"problem_type": "multiple choice", "solution": "B"},  # tagless: Video-R1 compares with ""
    {"problem_type": "numerical", "solution": "<answer>3.5</answer>"},
    {"problem_type": "numerical", "solution": "<answer>10</answer>"},
    {"problem_type": "regression", "solution": "<answer>3.5</answer>"},
    {"problem_type": "OCR", "solution": "<answer>stop here</answer>"},
    {"problem_type": "free-form", "solution": "<answer>the cat runs</answer>"},
    GROUNDING,
    {"problem_type": "spatial grounding", "solution": [0, 0, 10, 10]},
]


def _groups(texts, example, lenient):
    groups = {}
    for text in texts:
        groups.setdefault(extract_answer(text, example, lenient=lenient), []).append(text)
    return groups


@settings(max_examples=150, deadline=None)
@given(st.lists(fragment_texts(), min_size=2, max_size=16))
def test_equal_strict_keys_score_equal_accuracy(texts):
    for example in KEY_EXAMPLES:
        for key, group in _groups(texts, example, lenient=False).items():
            scores = {accuracy(t, example) for t in group}
            assert len(scores) == 1, (example, key, group, scores)


@settings(max_examples=150, deadline=None)
@given(st.lists(fragment_texts(), min_size=2, max_size=16))
def test_equal_lenient_keys_score_equal_accuracy_lenient(texts):
    for example in KEY_EXAMPLES:
        # Regression numbers that round alike share a key: scores within 0.01 / |gt|.
        tol = 0.01 / 3.5 if example["problem_type"] == "regression" else 0.0
        for key, group in _groups(texts, example, lenient=True).items():
            scores = [accuracy_lenient(t, example) for t in group]
            assert max(scores) - min(scores) <= tol, (example, key, group, scores)


# ----------------------------------------------------------------------------- scripted runs
class Scripted:
    """A generator replaying fixed completions; a prompt is `{"frames": F}`."""

    def __init__(self, by_frames, logprobs=None, verifier=None):
        self.queues = {f: list(texts) for f, texts in by_frames.items()}
        self.logprobs = logprobs or {}
        self.verifier = verifier or {}

    def sample(self, inputs, n, rng):
        f = inputs["frames"]
        texts, self.queues[f] = self.queues[f][:n], self.queues[f][n:]
        done = [Completion(t, (1,) * len(t), self.logprobs.get(t, -1.0) * len(t)) for t in texts]
        return done, Spent(n, sum(len(t) for t in texts), f, 1)

    def sample_many(self, prompts, n, rngs):
        return [self.sample(p, n, r) for p, r in zip(prompts, rngs, strict=True)]

    def next_token_logprobs(self, prompts):
        rows = [
            np.log([0.5, self.verifier[p["text"]], 0.5 - self.verifier[p["text"]]]) for p in prompts
        ]
        return np.asarray(rows), Spent(frames=len(prompts), prefills=len(prompts))


class Keyed:
    """A generator whose samples depend only on (question, frames, key, sample index), as the
    model generator's do: question q answers from its own letter distribution `mix[q]`, and
    more frames make it more decided. Counts its calls, to see them batched."""

    def __init__(self, mix):
        self.mix, self.calls = mix, []

    def _texts(self, prompt, n, rng):
        seed = [int(x) for x in np.asarray(jax.random.key_data(rng)).ravel()]
        draw = np.random.default_rng([prompt["q"], prompt["frames"], *seed])
        p = np.asarray(self.mix[prompt["q"]], float) ** (prompt["frames"] / 4)
        return _tagged(draw.choice(list("ABCD"), size=n, p=p / p.sum()))

    def sample_many(self, prompts, n, rngs):
        self.calls.append(len(prompts))
        out = []
        for prompt, rng in zip(prompts, rngs, strict=True):
            texts = self._texts(prompt, n, rng)
            done = [Completion(t, (1,) * len(t), -0.5 * len(t) - t.count("A")) for t in texts]
            out.append((done, Spent(n, sum(len(t) for t in texts), prompt["frames"], 1)))
        return out

    def beam_many(self, prompts, width, *, alpha, penalty):
        self.calls.append(len(prompts))
        return [
            ([Completion(t) for t in self._texts(p, width, jax.random.key(0))], Spent(width))
            for p in prompts
        ]


def _question(example=MC, frames=4, lenient=False):
    return Question(example, lambda f: {"frames": f}, frames, lenient=lenient)


def _tagged(letters):
    return [f"<answer>{x}</answer>" for x in letters]


def test_strict_vote_returns_a_completion_that_scores_like_its_votes():
    """Answers (B), B, B against gold B. The strict vote is "B", read as `accuracy` reads it; the
    lenient vote is the letter B, and its first completion, "(B)", scores with
    `accuracy_lenient`."""
    texts = _tagged(["(B)", "B", "B"])
    strict = SelfConsistency(n=3)(_question(), Scripted({4: texts}), jax.random.key(0))
    assert (strict.answer, strict.completion) == ("B", "<answer>B</answer>")
    assert accuracy(strict.completion, MC) == 1.0
    lenient = SelfConsistency(n=3)(_question(lenient=True), Scripted({4: texts}), None)
    assert (lenient.answer, lenient.completion) == ("B", "<answer>(B)</answer>")
    assert accuracy_lenient(lenient.completion, MC) == 1.0
    assert accuracy(lenient.completion, MC) == 0.0  # why the vote must read like the score


def test_adaptive_consistency_stops_when_decisive():
    key = jax.random.key(0)
    easy = Scripted({4: _tagged("A" * 16)})
    r = AdaptiveConsistency(round_size=4, max_samples=16)(_question(), easy, key)
    assert (r.answer, r.spent.samples, r.info["rounds"]) == ("A", 4, 1)  # 4-0: 31/32 >= .95
    script = _tagged("AABA" + "A" * 4)  # 3-1: 26/32 < .95, go on; 7-1: 502/512 stop
    for rule in ("beta", "margin"):  # margin 3: 3-1 is 2, go on; 7-1 is 6, stop
        r = AdaptiveConsistency(round_size=4, max_samples=16, stopping=rule)(
            _question(), Scripted({4: script}), key
        )
        assert (r.answer, r.spent.samples, r.info["rounds"], r.info["votes"]) == ("A", 8, 2, (7, 1))
    untagged = Scripted({4: ["A"] * 8})  # strict: no answer block, no vote, never decisive
    r = AdaptiveConsistency(round_size=4, max_samples=8)(_question(), untagged, key)
    assert (r.answer, r.spent.samples) == (None, 8)
    hard = Scripted({4: _tagged("AB" * 8)})
    r = AdaptiveConsistency(round_size=4, max_samples=12)(_question(), hard, key)
    assert (r.answer, r.spent.samples, r.info["rounds"]) == ("A", 12, 3)  # 6-6 never decisive


def test_sparse_to_dense_re_encodes_only_on_disagreement():
    strategy = SparseToDense(frames=(4, 8, 16), n=4)
    easy = Scripted({4: ["C"] * 4})
    r = strategy(_question(lenient=True), easy, jax.random.key(0))  # bare letters: lenient
    assert (r.answer, r.spent.frames, r.info["levels"]) == ("C", 4, 1)
    hard = Scripted({4: ["A", "B", "A", "A"], 8: ["D", "D", "D", "D"]})
    r = strategy(_question(lenient=True), hard, jax.random.key(0))
    assert (r.answer, r.spent.frames, r.spent.samples, r.info["frames_used"]) == ("D", 12, 8, 8)


def test_best_of_n_scorers():
    texts = ["<answer>A</answer>", "<think>ok</think><answer>B</answer>", "<answer>C</answer>"]
    gen = lambda: Scripted(  # noqa: E731
        {4: texts},
        logprobs={texts[2]: -0.1},
        verifier=dict(zip(texts, [0.1, 0.2, 0.4], strict=True)),
    )
    q = _question()
    fmt = BestOfN(n=3, scorer=RewardScorer("format"))(q, gen(), jax.random.key(0))
    assert fmt.answer == "B" and fmt.info["scores"] == [0.0, 1.0, 0.0]
    lp = BestOfN(n=3, scorer=MeanLogProb())(q, gen(), jax.random.key(0))
    assert lp.answer == "C"
    verifier = VerifierScorer(lambda q, text: {"text": text, "frames": 1}, yes_id=1, no_id=2)
    v = BestOfN(n=3, scorer=verifier)(q, gen(), jax.random.key(0))
    assert v.answer == "C" and v.spent.prefills == 1 + 3
    np.testing.assert_allclose(v.info["scores"], np.log([0.1 / 0.5, 0.2 / 0.5, 0.4 / 0.5]))


@pytest.fixture
def fresh_registries(monkeypatch):
    for name in ("REGISTRY", "_BATCHED", "_WARNED"):
        monkeypatch.setattr(rewards, name, copy.copy(getattr(rewards, name)))


def test_reward_scorer_calls_a_batched_reward_once(fresh_registries):
    calls = []

    @rewards.register("tts_judge", batched=True)
    def judge(completions, examples):
        calls.append(len(completions))
        return [float("B" in c) - (math.nan if "C" in c else 0.0) for c in completions]

    texts = _tagged("ABC")
    r = BestOfN(n=3, scorer=RewardScorer("tts_judge"))(_question(), Scripted({4: texts}), None)
    assert calls == [3] and r.answer == "B"
    assert r.info["scores"] == [0.0, 1.0, 0.0]  # the NaN scored 0 (and was logged)


# ----------------------------------------------------------------------------- smaller budgets
def test_smaller_budgets():
    assert smaller_budgets(16) == [1, 2, 4, 8]
    assert smaller_budgets(16, 2) == [2, 4, 8]
    assert (
        smaller_budgets(5) == [1, 2, 4] and smaller_budgets(1) == [] and smaller_budgets(2) == [1]
    )


def test_self_consistency_budgets_vote_on_prefixes_by_hand():
    """Votes C | C B | C B B A | C B B A A A A A: C, C (a tie goes to the first), B, A; gold B."""
    texts = _tagged("CBBAAAAA")
    gold = dict(MC, solution="<answer>B</answer>")
    (r,) = evaluate(
        [SelfConsistency(n=8)], [_question(gold)], Scripted({4: texts}), jax.random.key(0)
    )["self_consistency@8"]
    assert r.answer == "A" and r.score == 0.0
    assert {k: (v.answer, v.score) for k, v in r.at_budget.items()} == {
        1: ("C", 0.0),
        2: ("C", 0.0),
        4: ("B", 1.0),
    }
    for k, v in r.at_budget.items():  # what k samples cost: their tokens, one shared prefill
        assert v.spent == Spent(k, sum(len(t) for t in texts[:k]), 4, 1)


def test_adaptive_budgets_are_caps_on_the_same_rounds():
    """AABA is 3-1 (go on), AABAAAAA 7-1 (stop at 8): a cap of 4 stops after round 1."""
    r = AdaptiveConsistency(round_size=4, max_samples=16)(
        _question(), Scripted({4: _tagged("AABA" + "A" * 4)}), jax.random.key(0)
    )
    assert sorted(r.at_budget) == [4, 8] and r.spent.samples == 8
    tokens = len(_tagged("A")[0])
    assert r.at_budget[4].answer == "A" and r.at_budget[4].spent == Spent(4, 4 * tokens, 4, 1)
    assert r.at_budget[8].answer == "A" and r.at_budget[8].spent == r.spent  # it stopped at 8


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from("ABCD"), min_size=16, max_size=16), st.randoms())
def test_a_smaller_budget_is_the_strategy_run_at_that_budget(letters, random):
    """The independent reference: the same strategy built with the smaller budget, replaying
    the same samples, gives the same answer and completion."""
    texts = _tagged(letters)
    logprobs = {t: -random.random() for t in set(texts)}
    cases = [
        (SelfConsistency(n=16), lambda k: SelfConsistency(n=k)),
        (BestOfN(n=16, scorer=MeanLogProb()), lambda k: BestOfN(n=k, scorer=MeanLogProb())),
        (
            AdaptiveConsistency(round_size=2, max_samples=16),
            lambda k: AdaptiveConsistency(round_size=2, max_samples=k),
        ),
    ]
    for big, small in cases:
        r = big(_question(), Scripted({4: texts}, logprobs), jax.random.key(0))
        for k, at in r.at_budget.items():
            ref = small(k)(_question(), Scripted({4: texts}, logprobs), jax.random.key(0))
            assert (at.answer, at.completion) == (ref.answer, ref.completion), (big, k)
            assert at.spent.samples == ref.spent.samples
            assert at.spent.prefills == ref.spent.prefills


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.lists(st.floats(0.05, 1.0), min_size=4, max_size=4), min_size=1, max_size=6),
    st.integers(1, 4),
)
def test_batched_questions_get_what_each_gets_alone(mix, batch_size):
    """`evaluate(batch_size=b)` batches each strategy's generation (one call per chunk, per
    round, per frame level) and changes no question's result: the reference is every question
    run alone with its key, `strategy(question, generator, fold_in(rng, q))`."""
    questions = [
        Question(dict(MC), lambda f, q=q: {"q": q, "frames": f}, 4) for q in range(len(mix))
    ]
    strategies = [
        SelfConsistency(n=4),
        BestOfN(n=4, scorer=MeanLogProb()),
        AdaptiveConsistency(round_size=2, max_samples=8),
        SparseToDense(frames=(4, 8, 16), n=3, agreement=1.0),
        BeamSearchStrategy(width=2),
    ]
    rng = jax.random.key(7)
    for strategy in strategies:
        gen = Keyed(mix)
        (batched,) = evaluate([strategy], questions, gen, rng, batch_size=batch_size).values()
        alone = [
            strategy(q, Keyed(mix), jax.random.fold_in(rng, i)) for i, q in enumerate(questions)
        ]
        assert [dataclasses.replace(r, score=None, at_budget={}) for r in batched] == [
            dataclasses.replace(r, at_budget={}) for r in alone
        ], strategy
        for b, a in zip(batched, alone, strict=True):
            assert {k: (v.answer, v.spent) for k, v in b.at_budget.items()} == {
                k: (v.answer, v.spent) for k, v in a.at_budget.items()
            }
        if isinstance(strategy, (SelfConsistency, BestOfN, BeamSearchStrategy)):
            assert gen.calls == [
                len(questions[i : i + batch_size]) for i in range(0, len(mix), batch_size)
            ]
        assert sum(gen.calls) >= len(questions) and max(gen.calls) <= batch_size


def test_evaluate_and_report(tmp_path):
    questions = [_question(dict(MC, solution=f"<answer>{s}</answer>")) for s in "AB"]
    results = evaluate(
        [SelfConsistency(n=2), SelfConsistency(n=4)],
        questions,
        Scripted({4: ["<answer>A</answer>"] * 12}),
        jax.random.key(0),
    )
    assert [r.score for r in results["self_consistency@2"]] == [1.0, 0.0]
    markdown, png = report(results, path=str(tmp_path / "tts.png"))
    assert "| self_consistency@4 | 2 | 0.500 | 4.0 |" in markdown
    assert png.startswith(b"\x89PNG") and (tmp_path / "tts.png").read_bytes() == png


# ----------------------------------------------------------------------------- tiny model
LETTERS = "ABCD"


def detokenize(ids):
    """A test double: the tokens as letters, the last one as the answer."""
    letters = [LETTERS[i % 4] for i in ids] or ["?"]
    return f"<think>{' '.join(letters)}</think><answer>{letters[-1]}</answer>"


def test_strategies_end_to_end_on_the_tiny_model(tiny_model, tmp_path):
    model, params = tiny_model
    config = tiny_config()
    generator = ModelGenerator(
        Policy(model=model, params=params), detokenize, max_new_tokens=TTS_NEW_TOKENS
    )

    def prompt(frames, seed):
        (before, (_, h, w), after, spg) = SINGLE_SPEC[0]
        return video_prompts(config, [(before, (frames // 2, h, w), after, spg)], seed=seed)

    def verifier_prompt(question, text):
        p = question.prompt(question.num_frames)
        extra = np.asarray([[len(text) % 40 + 1, 7]], np.int32)
        ids = np.concatenate([p["input_ids"], extra], 1)
        return dict(p, input_ids=ids, attention_mask=np.ones_like(ids))

    questions = [
        Question(dict(MC, solution=f"<answer>{s}</answer>"), lambda f, s=i: prompt(f, s), 4)
        for i, s in enumerate("BD")
    ]
    strategies = [
        SelfConsistency(n=TTS_SAMPLES),
        BestOfN(n=TTS_SAMPLES, scorer=MeanLogProb()),
        BestOfN(n=TTS_SAMPLES, scorer=VerifierScorer(verifier_prompt, yes_id=1, no_id=2)),
        BeamSearchStrategy(width=2),
        AdaptiveConsistency(round_size=TTS_SAMPLES, max_samples=2 * TTS_SAMPLES),
        SparseToDense(frames=(4, 8), n=TTS_SAMPLES),
    ]
    results = evaluate(strategies, questions, generator, jax.random.key(3))
    for name, rs in results.items():
        for r in rs:
            assert r.answer in set(LETTERS), (name, r)
            assert r.score in (0.0, 1.0)
            assert 0 < r.spent.tokens
    sc = results["self_consistency@4"][0]
    assert (sc.spent.samples, sc.spent.frames, sc.spent.prefills) == (4, 4, 1)
    assert sc.spent.tokens <= TTS_SAMPLES * TTS_NEW_TOKENS
    v = results["best_of_n[verifier]@4"][0]
    assert (v.spent.prefills, v.spent.frames) == (5, 4 + 4 * 4)
    beam = results["beam_search@2"][0]
    assert beam.spent.samples == 2 and beam.spent.tokens <= 2 * TTS_NEW_TOKENS
    for r in results["adaptive_consistency[beta]@8"]:
        assert r.spent.samples in (4, 8)
    for r in results["sparse_to_dense[4, 8]@4"]:
        assert (r.spent.frames, r.info["levels"]) in ((4, 1), (12, 2))
    # Same key per question: best-of-N picked among the very samples self-consistency voted on.
    for sc, bon in zip(
        results["self_consistency@4"], results["best_of_n[mean_logprob]@4"], strict=True
    ):
        assert bon.answer in sc.info["answers"]
    markdown, png = report(results, path=str(tmp_path / "tts.png"))
    assert markdown.count("\n") == 2 + len(strategies) and png.startswith(b"\x89PNG")
    # Both questions in one generation call per step of each strategy: the same answers and
    # completions (a beam search's steps run until every prompt of the batch has stopped).
    batched = evaluate(strategies, questions, generator, jax.random.key(3), batch_size=2)
    for name, rs in results.items():
        for r, b in zip(rs, batched[name], strict=True):
            assert (b.answer, b.completion, b.score) == (r.answer, r.completion, r.score), name
            if not name.startswith("beam"):
                assert b.spent == r.spent, name
