"""Metrics against transcriptions of the published formulas, hand computations and properties."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlmm_jax.eval import metrics

WORDS = st.lists(st.sampled_from(["a", "b", "c", "cat", "cats", "run"]), max_size=8)
finite = st.floats(-1e6, 1e6, allow_nan=False)
anything = st.one_of(st.floats(), st.none())


def vsi_bench_mra(pred, target, start=0.5, end=0.95, interval=0.05):
    """thinking-in-space lmms-eval vsibench `mean_relative_accuracy` (target > 0 there)."""
    num_pts = (end - start) / interval + 2
    conf_intervs = np.linspace(start, end, int(num_pts))
    accuracy = abs(pred - target) / target <= 1 - conf_intervs
    return accuracy.mean()


def video_r1_wer(reference, hypothesis):
    """tulerfeng/Video-R1 src/r1-v/src/open_r1/grpo.py `wer`."""
    ref_words, hyp_words = reference.split(), hypothesis.split()
    m, n = len(ref_words), len(hyp_words)
    d = [[0] * (n + 1) for _ in range(m + 1)]
    for i in range(m + 1):
        d[i][0] = i
    for j in range(n + 1):
        d[0][j] = j
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            if ref_words[i - 1] == hyp_words[j - 1]:
                d[i][j] = d[i - 1][j - 1]
            else:
                d[i][j] = 1 + min(d[i - 1][j], d[i][j - 1], d[i - 1][j - 1])
    return d[m][n] / max(1, m)


def time_r1_iou(pred, gt):
    """xiaomi-research/time-r1 src/vllm_inference/eval_all.py `compute_IoU`, one pair."""
    pred, gt = np.array([pred]), np.array([gt])
    inter = np.maximum(0.0, np.minimum(pred[:, 1], gt[:, 1]) - np.maximum(pred[:, 0], gt[:, 0]))
    union = np.maximum(0.0, np.maximum(pred[:, 1], gt[:, 1]) - np.minimum(pred[:, 0], gt[:, 0]))
    return float((inter / union)[0])


def videochat_r1_iou(box1, box2):
    """OpenGVLab/VideoChat-R1 reward_funcs.py `calculate_iou`."""
    iw = max(0, min(box1[2], box2[2]) - max(box1[0], box2[0]))
    ih = max(0, min(box1[3], box2[3]) - max(box1[1], box2[1]))
    inter = iw * ih
    a1 = (box1[2] - box1[0]) * (box1[3] - box1[1])
    a2 = (box2[2] - box2[0]) * (box2[3] - box2[1])
    union = a1 + a2 - inter
    return 0.0 if union == 0 else inter / union


def test_mra_thresholds_are_vsi_bench():
    assert metrics.MRA_THRESHOLDS == pytest.approx(np.linspace(0.5, 0.95, 10))


@settings(max_examples=300, deadline=None)
@given(finite, st.floats(1e-3, 1e6))
def test_mra_matches_vsi_bench(pred, target):
    assert metrics.mean_relative_accuracy(pred, target) == pytest.approx(
        vsi_bench_mra(pred, target)
    )


def test_mra_cases():
    assert metrics.mean_relative_accuracy(10.0, 10.0) == 1.0
    # Relative error 0.25 against bounds 1 - t = 0.5, 0.45, ..., 0.25 (exact in binary), 0.2, ...
    assert metrics.mean_relative_accuracy(12.5, 10.0) == pytest.approx(0.6)
    assert metrics.mean_relative_accuracy(12.5, 10.0, inclusive=False) == pytest.approx(0.5)
    assert metrics.mean_relative_accuracy(20.0, 10.0) == 0.0
    assert metrics.mean_relative_accuracy(0.0, 0.0) == 1.0
    assert metrics.mean_relative_accuracy(0.1, 0.0) == 0.0
    assert metrics.mean_relative_accuracy(-12.5, -10.0) == pytest.approx(0.6)
    for bad in (None, math.nan, math.inf):
        assert metrics.mean_relative_accuracy(bad, 10.0) == 0.0


@settings(max_examples=300, deadline=None)
@given(WORDS, WORDS, st.sampled_from([" ", "\n", "  ", "\t "]))
def test_wer_matches_video_r1(ref, hyp, sep):
    reference, hypothesis = sep.join(ref), sep.join(hyp)
    assert metrics.word_error_rate(reference, hypothesis) == pytest.approx(
        video_r1_wer(reference, hypothesis)
    )


def test_wer_cases():
    assert metrics.word_error_rate("the cat sat", "the cat sat") == 0.0
    assert metrics.word_error_rate("the cat sat", "the dog sat") == pytest.approx(1 / 3)
    assert metrics.word_error_rate("a b", "") == 1.0
    assert metrics.word_error_rate("", "x y z") == 3.0
    assert metrics.word_error_rate("", "") == 0.0


def test_rouge_hand_computed():
    scores = metrics.rouge_f("the cat sat on the mat", "the cat sat on the mat")
    assert scores == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    # Stemming: "cats running" -> "cat run"; unigrams 2/2, bigram 1/1, LCS 2.
    assert metrics.rouge_f("cat run", "cats running")["rouge2"] == pytest.approx(1.0)
    # ref "a b c d", hyp "a b x": P1 = 2/3, R1 = 2/4 -> F1 = 4/7; bigram "a b": P 1/2, R 1/3 -> 2/5.
    s = metrics.rouge_f("alpha beta gamma delta", "alpha beta chi")
    assert s["rouge1"] == pytest.approx(4 / 7)
    assert s["rouge2"] == pytest.approx(2 / 5)
    assert s["rougeL"] == pytest.approx(4 / 7)
    assert metrics.rouge_f("", "x") == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_choice_and_numerical():
    assert metrics.choice_accuracy("b", "B") == 1.0
    assert metrics.choice_accuracy(None, "B") == 0.0
    assert metrics.numerical_match(3.141, 3.14) == 1.0
    assert metrics.numerical_match(3.15, 3.14) == 0.0
    assert metrics.numerical_match(math.nan, math.nan) == 0.0
    assert metrics.numerical_match(None, 1.0) == 0.0


interval = st.tuples(st.floats(0, 100), st.floats(0, 100)).map(sorted)


@settings(max_examples=300, deadline=None)
@given(interval, interval)
def test_temporal_iou_matches_time_r1(pred, gt):
    expected = time_r1_iou(pred, gt) if max(pred[1], gt[1]) > min(pred[0], gt[0]) else 0.0
    assert metrics.temporal_iou(pred, gt) == pytest.approx(expected)


def test_temporal_iou_cases():
    assert metrics.temporal_iou((0, 10), (5, 15)) == pytest.approx(5 / 15)
    assert metrics.temporal_iou((0, 5), (5, 10)) == 0.0
    assert metrics.temporal_iou((3, 3), (3, 3)) == 0.0  # zero union: Time-R1 crashes
    assert metrics.temporal_iou((10, 0), (0, 10)) == 0.0  # reversed
    assert metrics.temporal_iou(None, (0, 1)) == 0.0
    assert metrics.temporal_iou((math.nan, 1), (0, 1)) == 0.0


box = st.tuples(interval, interval).map(lambda xy: (xy[0][0], xy[1][0], xy[0][1], xy[1][1]))


@settings(max_examples=300, deadline=None)
@given(box, box)
def test_box_iou_matches_videochat_r1(a, b):
    assert metrics.box_iou(a, b) == pytest.approx(videochat_r1_iou(a, b))


def test_box_iou_cases():
    assert metrics.box_iou((0, 0, 10, 10), (5, 5, 15, 15)) == pytest.approx(25 / 175)
    assert metrics.box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert metrics.box_iou((10, 10, 0, 0), (0, 0, 10, 10)) == 0.0
    assert metrics.box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    assert metrics.box_iou((0, 0, 1), (0, 0, 1, 1)) == 0.0
    assert metrics.mean_box_iou([(0, 0, 1, 1), (0, 0, 2, 2)], [(0, 0, 1, 1), (0, 0, 1, 1)]) == (
        pytest.approx((1 + 0.25) / 2)
    )
    assert metrics.mean_box_iou([(0, 0, 1, 1)], [(0, 0, 1, 1), (0, 0, 1, 1)]) == 0.0


def test_grounding_metrics_both_comparisons():
    ious = [0.5, 0.7, 0.2, 0.0]
    strict = metrics.summarize(metrics.grounding_metrics(ious))
    assert strict == pytest.approx({"mIoU": 0.35, "R@0.3": 0.5, "R@0.5": 0.25, "R@0.7": 0.0})
    inclusive = metrics.summarize(metrics.grounding_metrics(ious, inclusive=True))
    assert inclusive == pytest.approx({"mIoU": 0.35, "R@0.3": 0.5, "R@0.5": 0.5, "R@0.7": 0.25})


def test_average_adds_and_summarizes():
    a = metrics.Average.of([1.0, 0.0])
    b = metrics.Average().add(1.0)
    assert (a + b) == metrics.Average(2.0, 3)
    assert (a + b).value == pytest.approx(2 / 3)
    assert math.isnan(metrics.Average().value)


@settings(max_examples=200, deadline=None)
@given(anything, anything, anything, anything, st.text(max_size=200), st.text(max_size=200))
def test_metrics_never_raise_and_stay_in_range(x, y, z, w, s, t):
    for value in (
        metrics.mean_relative_accuracy(x, 1.0 if y is None else y),
        metrics.numerical_match(x, 0.0 if y is None else y),
        metrics.temporal_iou(None if x is None else (x, 0.0 if y is None else y), (0.0, 1.0)),
        metrics.box_iou((x or 0.0, y or 0.0, z or 0.0, w or 0.0), (0.0, 0.0, 1.0, 1.0)),
        *metrics.rouge_f(s, t).values(),
        metrics.choice_accuracy(s, "A"),
    ):
        assert 0.0 <= value <= 1.0
    assert metrics.word_error_rate(s, t) >= 0.0
