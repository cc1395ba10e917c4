"""Blind baselines and intervals against hand computations on fixtures whose answer
distribution is known."""

import numpy as np
import pytest

from vlmm_jax.data.records import Example
from vlmm_jax.eval import baselines
from vlmm_jax.eval.runner import score

COLOURS = ("red", "blue", "green", "white")


def choice(i, answer_text, letter):
    """A four-option question whose correct option `letter` reads `answer_text`."""
    others = [c for c in COLOURS if c != answer_text]
    texts = {}
    for k in "ABCD":
        texts[k] = answer_text if k == letter else others.pop(0)
    options = tuple(f"{k}. {texts[k]}" for k in "ABCD")
    return Example(
        id=f"q{i}",
        question="What colour is the ball?",
        answer=letter,
        problem_type="multiple choice",
        options=options,
        category="attribute",
    )


def test_choice_prior_prefers_the_answer_text_when_it_is_the_stronger_rule():
    # 10 training questions: "red" is right 7 times, at letters that vary; B is the majority
    # letter (4 times). Majority letter scores 4/10, majority text 7/10 on the training split.
    letters = "BBBBACDACD"
    texts = ["red"] * 7 + ["blue", "green", "white"]
    train = [choice(i, t, k) for i, (t, k) in enumerate(zip(texts, letters, strict=True))]
    priors = baselines.fit_priors(train)
    prior = priors["attribute"]
    assert prior.rule == "majority answer text" and prior.train_score == pytest.approx(0.7)
    # On new questions it answers the letter of "red" (wherever it sits), or B without "red".
    test = [choice(100, "red", "C"), choice(101, "blue", "D")]
    assert prior.answer(test[0]) == "C"
    assert prior.answer(test[1]) in "ABCD"
    records = baselines.prior_records(priors, test, score)
    assert [r["score"] for r in records] == [1.0, float(prior.answer(test[1]) == "D")]


def test_choice_prior_majority_letter():
    # The answer text is uniform; the letter is A 6 times in 10: the letter rule wins (0.6).
    letters = "AAAAAABCDB"
    train = [choice(i, COLOURS[i % 4], k) for i, k in enumerate(letters)]
    prior = baselines.fit_priors(train)["attribute"]
    assert prior.rule == "majority letter" and prior.train_score == pytest.approx(0.6)
    assert prior.answer(choice(200, "green", "D")) == "A"


def test_number_priors():
    counts = [
        Example(id=f"c{i}", question="How many?", answer=str(a), problem_type="numerical")
        for i, a in enumerate([3, 3, 3, 5, 9])
    ]
    prior = baselines.fit_priors(counts)["numerical"]
    assert prior.answer(counts[0]) == "3" and prior.train_score == pytest.approx(0.6)


def test_interval_iou_by_hand():
    got = baselines.interval_iou(np.array([[0.0, 2.0], [1.0, 3.0]]), np.array([[1.0, 2.0]]))
    np.testing.assert_allclose(got, [[0.5], [0.5]])
    got = baselines.interval_iou(np.array([[0.0, 1.0]]), np.array([[2.0, 3.0]]))
    np.testing.assert_allclose(got, [[0.0]])


def test_best_constant_interval_in_seconds_and_fractions():
    # Every event spans 20%..40% of its video; durations 10 s and 20 s. In seconds the spans
    # are (2, 4) and (4, 8); as fractions both are (0.2, 0.4), which the fraction rule hits.
    train = [
        Example(
            id=f"t{i}",
            question="When?",
            answer="x",
            problem_type="temporal grounding",
            timestamps=(0.2 * d, 0.4 * d),
            duration=d,
            solution="x",
        )
        for i, d in enumerate([10.0, 20.0] * 3)
    ]
    prior = baselines.fit_priors(train, reward="tiou")["temporal grounding"]
    assert prior.rule == "best constant interval (fraction)"
    assert prior.train_score == pytest.approx(1.0)
    new = Example(
        id="n",
        question="When?",
        answer="x",
        problem_type="temporal grounding",
        timestamps=(6.0, 12.0),
        duration=30.0,
        solution="x",
    )
    assert prior.answer(new) == "6.00 to 12.00"
    # Seconds only: the best of one grid search, checked against brute force on a fine grid.
    spans = np.array([[2.0, 4.0], [4.0, 8.0]])
    s, e = baselines.best_constant_interval(spans, 8.0)
    brute = max(
        ((a, b) for a in np.arange(0, 8.01, 0.16) for b in np.arange(0, 8.01, 0.16) if b > a),
        key=lambda ab: baselines.interval_iou(np.array([ab]), spans).mean(),
    )
    best = baselines.interval_iou(np.array([brute]), spans).mean()
    assert baselines.interval_iou(np.array([[s, e]]), spans).mean() == pytest.approx(best)


def test_best_constant_box_is_the_common_box():
    boxes = [(10, 10, 50, 50)] * 4 + [(60, 60, 100, 100)]
    train = [
        Example(
            id=f"b{i}",
            question="Where?",
            answer=str(list(b)),
            boxes=(b,),
            problem_type="spatial grounding",
        )
        for i, b in enumerate(boxes)
    ]
    prior = baselines.fit_priors(train)["spatial grounding"]
    assert prior.answer(train[0]) == "[10, 10, 50, 50]"
    np.testing.assert_allclose(
        baselines.box_iou_matrix(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 3, 3]])), [[1 / 7]]
    )


def test_bootstrap_interval_by_hand():
    # Scores [0, 0, 1]: the resampled mean is k/3, k ~ Binomial(3, 1/3), so
    # P(0) = 8/27, P(1/3) = 12/27, P(2/3) = 6/27, P(1) = 1/27. CDF at 2/3 is 26/27 = 0.963:
    # the 95% quantile is 2/3 (90% interval [0, 2/3]), the 97.5% quantile 1 (95%: [0, 1]).
    lo, hi = baselines.bootstrap_ci([0, 0, 1], level=0.90, resamples=20000)
    assert (lo, hi) == (0.0, pytest.approx(2 / 3))
    assert baselines.bootstrap_ci([0, 0, 1], level=0.95, resamples=20000) == (0.0, 1.0)
    assert baselines.bootstrap_ci([1, 1, 1]) == (1.0, 1.0)


def test_paired_bootstrap():
    a = {f"q{i}": float(i % 2) for i in range(40)}
    same = baselines.paired_bootstrap(a, dict(a))
    assert same["difference"] == 0.0 and same["ci"] == [0.0, 0.0] and not same["significant"]
    better = {k: 1.0 for k in a}  # right on every question a got wrong, and on the rest
    out = baselines.paired_bootstrap(better, a)
    assert out["difference"] == pytest.approx(0.5) and out["significant"] and out["ci"][0] > 0
    # Only the questions both answered count.
    assert baselines.paired_bootstrap({"x": 1.0, "y": 0.0}, {"x": 0.0})["questions"] == 1
    # Noise: a, b independent coin flips on 30 questions is not a significant difference.
    rng = np.random.default_rng(0)
    noise = baselines.paired_bootstrap(
        {f"q{i}": float(rng.random() < 0.5) for i in range(30)},
        {f"q{i}": float(rng.random() < 0.5) for i in range(30)},
    )
    assert noise["ci"][0] < noise["difference"] < noise["ci"][1]
