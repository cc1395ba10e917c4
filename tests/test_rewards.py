"""Rewards against transcriptions of the reference code, hand cases, and never-raise properties."""

import math
import re

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from vlmm_jax import rewards

# ----------------------------------------------------------------------------- references


def video_r1_accuracy(content, sol, question_type):
    """tulerfeng/Video-R1 src/r1-v/src/open_r1/grpo.py `accuracy_reward`, one completion."""

    def extract_answer(text):
        match = re.search(r"<answer>\s*(.*?)\s*</answer>", text, re.DOTALL)
        return match.group(1).strip() if match else ""

    def normalize_number(num_str):
        try:
            return float(num_str.replace(",", ""))
        except Exception:
            return None

    def wer(reference, hypothesis):
        r, h = reference.split(), hypothesis.split()
        d = np.zeros((len(r) + 1, len(h) + 1), dtype=int)
        d[:, 0], d[0, :] = np.arange(len(r) + 1), np.arange(len(h) + 1)
        for i in range(1, len(r) + 1):
            for j in range(1, len(h) + 1):
                sub = 0 if r[i - 1] == h[j - 1] else 1
                d[i, j] = min(d[i - 1, j - 1] + sub, d[i - 1, j] + 1, d[i, j - 1] + 1)
        return d[-1, -1] / max(1, len(r))

    try:
        output_ans, gt_ans = extract_answer(content), extract_answer(sol)
        if question_type == "multiple choice":
            return 1.0 if output_ans.strip() == gt_ans.strip() else 0.0
        if question_type == "numerical":
            if (("." in gt_ans) or ("," in gt_ans)) != (("." in output_ans) or ("," in output_ans)):
                return 0.0
            g, o = normalize_number(gt_ans), normalize_number(output_ans)
            if g is None or o is None:
                return 0.0
            return 1.0 if round(g, 2) == round(o, 2) else 0.0
        if question_type == "OCR":
            return max(0.0, min(1.0, 1 - wer(gt_ans, output_ans)))
        if question_type == "free-form":
            scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
            s = scorer.score(gt_ans, output_ans)
            score = (s["rouge1"].fmeasure + s["rouge2"].fmeasure + s["rougeL"].fmeasure) / 3
            return max(0.0, min(1.0, score))
        if question_type == "regression":
            g, o = normalize_number(gt_ans), normalize_number(output_ans)
            rel_diff = (abs(o - g) + 1e-9) / (abs(g) + 1e-9)
            return 1 - min(1.0, max(0.0, rel_diff))
    except Exception:
        return 0.0
    return 0.0


def video_r1_format(content):
    """tulerfeng/Video-R1 src/r1-v/src/open_r1/grpo.py `format_reward`, one completion."""
    pattern = r"<think>.*?</think>\s*<answer>.*?</answer>"
    return 1.0 if re.fullmatch(pattern, content, re.DOTALL) else 0.0


def time_r1_rewards(content, sol, duration):
    """xiaomi-research/time-r1 main.py `iou_timestamp_reward(_v2)` (where they do not crash)."""
    blocks = re.findall(r"<answer>(.*?)</answer>", content, re.DOTALL)
    matches = re.findall(r"(\d+\.?\d*) (to|and) (\d+\.?\d*)", blocks[-1] if blocks else "", re.I)
    if not matches:
        return 0.0, 0.0
    p_s, p_e = float(matches[-1][0]), float(matches[-1][2])
    s, e = sol
    inter = max(0, min(p_e, e) - max(p_s, s))
    union = max(p_e, e) - min(p_s, s)
    iou = inter / union
    v2 = iou * (1 - abs(s / duration - p_s / duration)) * (1 - abs(e / duration - p_e / duration))
    return iou, v2


def dapo_overlong(length, max_len, cache):
    """huggingface/trl trl/rewards/other_rewards.py `_SoftOverlongPunishment` (DAPO Eq. 13)."""
    if length <= max_len - cache:
        return 0.0
    if max_len - cache < length <= max_len:
        return (max_len - cache - length) / cache
    return -1.0


# ----------------------------------------------------------------------------- QA accuracy

NUMBER_TEXT = st.lists(st.sampled_from(list("0123456789.,-e ") + ["nan", "inf"]), max_size=8)
NUMBER_TEXT = NUMBER_TEXT.map("".join)
PHRASE = st.lists(st.sampled_from(["the", "cat", "cats", "runs", "running", "a", "B"]), max_size=6)
PHRASE = PHRASE.map(" ".join)


def _check_against_video_r1(problem_type, pred, gt):
    completion, solution = f"<think>x</think><answer>{pred}</answer>", f"<answer>{gt}</answer>"
    example = {"problem_type": problem_type, "solution": solution}
    assert rewards.accuracy(completion, example) == pytest.approx(
        video_r1_accuracy(completion, solution, problem_type)
    )


@settings(max_examples=150, deadline=None)
@given(NUMBER_TEXT, NUMBER_TEXT, st.sampled_from(["numerical", "regression"]))
def test_numeric_types_match_video_r1(pred, gt, problem_type):
    from vlmm_jax.eval.answers import extract_number

    assume(extract_number(gt) is not None)  # Otherwise the example is malformed and raises.
    for text in (pred, gt):  # The documented deviation: non-finite numbers score 0 here
        try:  # (e.g. gt "1.e310" overflows to inf: Video-R1's nan relative error scores 1).
            assume(math.isfinite(float(text.replace(",", ""))))
        except ValueError:
            pass
    _check_against_video_r1(problem_type, pred, gt)


@settings(max_examples=100, deadline=None)
@given(PHRASE, PHRASE, st.sampled_from(["multiple choice", "OCR", "free-form"]))
def test_text_types_match_video_r1(pred, gt, problem_type):
    _check_against_video_r1(problem_type, pred, gt)


def test_accuracy_hand_cases():
    mc = {"problem_type": "multiple choice", "solution": "<answer>B</answer>"}
    assert rewards.accuracy("<think>..</think><answer> B </answer>", mc) == 1.0
    assert rewards.accuracy("<answer>(B)</answer>", mc) == 0.0  # Video-R1: exact string
    assert rewards.accuracy("<answer>B</answer><answer>C</answer>", mc) == 1.0  # first block
    assert rewards.accuracy("B", mc) == 0.0  # no block
    num = {"problem_type": "numerical", "solution": "<answer>3.50</answer>"}
    assert rewards.accuracy("<answer>3.5</answer>", num) == 1.0
    assert rewards.accuracy("<answer>3.504</answer>", num) == 1.0
    assert rewards.accuracy("<answer>4</answer>", {**num, "solution": "4"}) == 0.0  # no tags
    assert rewards.accuracy_lenient("<answer>4</answer>", {**num, "solution": "4"}) == 1.0
    reg = {"problem_type": "regression", "solution": "<answer>10</answer>"}
    assert rewards.accuracy("<answer>8</answer>", reg) == pytest.approx(0.8)
    assert rewards.accuracy("<answer>30</answer>", reg) == 0.0
    for gamed in ("nan", "NaN", "inf", "-inf", "1e999"):
        assert rewards.accuracy(f"<answer>{gamed}</answer>", reg) == 0.0
    ocr = {"problem_type": "OCR", "solution": "<answer>stop here now</answer>"}
    assert rewards.accuracy("<answer>stop there now</answer>", ocr) == pytest.approx(2 / 3)
    assert rewards.accuracy("<answer>a b c d e f g</answer>", ocr) == 0.0
    free = {"problem_type": "free-form", "solution": "<answer>alpha beta gamma delta</answer>"}
    expected = (4 / 7 + 2 / 5 + 4 / 7) / 3
    assert rewards.accuracy("<answer>alpha beta chi</answer>", free) == pytest.approx(expected)


# Every completion below against every (problem_type, solution): tagged and tagless on both sides.
TABLE_SOLUTIONS = [
    ("multiple choice", "<answer>B</answer>"),
    ("multiple choice", "B"),  # no tags: Video-R1 compares with ""
    ("multiple choice", "<answer> (B) </answer>"),
    ("numerical", "<answer>3.5</answer>"),
    ("numerical", "<answer>4</answer>"),
    ("numerical", "<answer>1,000</answer>"),
    ("numerical", "4"),
    ("OCR", "<answer>stop here now</answer>"),
    ("OCR", "stop here now"),
    ("OCR", "<answer></answer>"),
    ("free-form", "<answer>the cat runs</answer>"),
    ("free-form", "the cat runs"),
    ("regression", "<answer>10</answer>"),
    ("regression", "<answer>0</answer>"),
    ("regression", "10"),
]
TABLE_COMPLETIONS = [
    "<think>r</think><answer>B</answer>",
    "<answer> (B) </answer>",
    "B",
    "",
    "<think>B</think>",
    "<answer>B</answer><answer>C</answer>",
    "<answer>B",
    "<answer></answer>",
    "<answer>3.5</answer>",
    "<answer>3.50</answer>",
    "<answer>4</answer>",
    "<answer>4.0</answer>",
    "<answer>1,000</answer>",
    "<answer>1000</answer>",
    "3.5",
    "4",
    "<answer>about 3.5</answer>",
    "<answer>8</answer>",
    "<answer>\n 10 \n</answer>",
    "<answer>inf</answer>",
    "<answer>stop here now</answer>",
    "<answer>Stop here</answer>",
    "stop here now",
    "<think>x</think><answer>the cat runs</answer>\n",
    "<answer>cats running</answer>",
]


@pytest.mark.parametrize("problem_type, solution", TABLE_SOLUTIONS)
def test_accuracy_table_matches_video_r1(problem_type, solution):
    example = {"problem_type": problem_type, "solution": solution}
    rewards.check_example(example)
    got = [rewards.accuracy(c, example) for c in TABLE_COMPLETIONS]
    want = [video_r1_accuracy(c, solution, problem_type) for c in TABLE_COMPLETIONS]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_tagless_solution_parity():
    # Video-R1 reads a solution without tags as "": only an answer-less completion matches it.
    mc = {"problem_type": "multiple choice", "solution": "B"}
    assert rewards.accuracy("B", mc) == 1.0 == video_r1_accuracy("B", "B", "multiple choice")
    assert rewards.accuracy("<answer>B</answer>", mc) == 0.0
    assert rewards.accuracy("<answer> </answer>", mc) == 1.0  # an empty block is "" too
    assert rewards.accuracy_lenient("<answer>B</answer>", mc) == 1.0  # the solution read whole
    assert rewards.accuracy_lenient("B", mc) == 1.0
    ocr = {"problem_type": "OCR", "solution": "stop here"}
    assert rewards.accuracy("<answer>stop here</answer>", ocr) == 0.0  # 2 insertions vs ""
    assert rewards.accuracy("no tags at all", ocr) == 1.0  # "" vs "": WER 0
    assert rewards.accuracy_lenient("<answer>Stop here</answer>", ocr) == 1.0
    reg = {"problem_type": "regression", "solution": "10"}
    assert rewards.accuracy("<answer>10</answer>", reg) == 0.0
    assert rewards.accuracy_lenient("<answer>8</answer>", reg) == pytest.approx(0.8)


def test_regression_nan_is_the_documented_deviation():
    reg = {"problem_type": "regression", "solution": "<answer>10</answer>"}
    nan = "<answer>nan</answer>"
    assert video_r1_accuracy(nan, reg["solution"], "regression") == 1.0  # max(0.0, nan) == 0.0
    assert rewards.accuracy(nan, reg) == 0.0
    huge = {"problem_type": "regression", "solution": "<answer>1.e310</answer>"}  # inf
    zero = "<think>x</think><answer>0</answer>"
    assert video_r1_accuracy(zero, huge["solution"], "regression") == 1.0  # inf / inf is nan
    assert rewards.accuracy(zero, huge) == 0.0


def test_accuracy_lenient_cases():
    mc = {"problem_type": "multiple choice", "solution": "<answer>B</answer>"}
    mc["options"] = ["A. red", "B. blue", "C. green"]
    for text in ("(B)", "B.", "B", "<answer>(B)</answer>", "answer: B", "<answer>blue</answer>"):
        assert rewards.accuracy_lenient(text, mc) == 1.0, text
    for text in ("(C)", "D", "", "<answer>Z</answer>"):
        assert rewards.accuracy_lenient(text, mc) == 0.0, text
    assert rewards.accuracy("(B)", mc) == rewards.accuracy("<answer>(B)</answer>", mc) == 0.0
    num = {"problem_type": "numerical", "solution": "<answer>3.5 meters</answer>"}
    assert rewards.accuracy_lenient("about 3.50 m", num) == 1.0  # no decimal-point rule
    assert rewards.accuracy("<answer>3.5</answer>", num) == 0.0  # Video-R1: float() fails
    num4 = {"problem_type": "numerical", "solution": "<answer>4.0</answer>"}
    assert rewards.accuracy_lenient("<answer>4</answer>", num4) == 1.0
    assert rewards.accuracy("<answer>4</answer>", num4) == 0.0  # the decimal-point rule
    reg = {"problem_type": "regression", "solution": "<answer>10</answer>"}
    assert rewards.accuracy_lenient("it is 8 m", reg) == pytest.approx(0.8)
    tg = {"problem_type": "temporal grounding", "solution": [5, 10]}
    assert rewards.accuracy_lenient("<answer>[2.5, 7.5]</answer>", tg) == pytest.approx(1 / 3)
    assert rewards.accuracy_lenient("from 5s - 10s", tg) == 1.0
    assert rewards.accuracy("<answer>[2.5, 7.5]</answer>", tg) == 0.0  # Time-R1's pattern only
    box = {"problem_type": "spatial grounding", "solution": [0, 0, 10, 10]}
    for text in ("<answer>[0, 0, 10, 10]</answer>", "[0, 0, 10, 10]"):
        assert rewards.accuracy_lenient(text, box) == rewards.accuracy(text, box)


# ----------------------------------------------------------------------------- grounding

TG = {"problem_type": "temporal grounding", "timestamp": [4.0, 10.0], "duration": 20.0}
times = st.floats(0, 30, allow_nan=False).map(lambda x: round(x, 1))


@settings(max_examples=200, deadline=None)
@given(times, times, st.sampled_from(["to", "and", "TO"]))
def test_tiou_matches_time_r1(a, b, sep):
    completion = f"<think>..</think><answer>first 1 to 2, then {a} {sep} {b}</answer>"
    iou, v2 = time_r1_rewards(completion, TG["timestamp"], TG["duration"])
    v2 = max(v2, 0.0)  # The documented clip: Time-R1 can go negative past the video's end.
    assert rewards.tiou(completion, TG) == pytest.approx(iou)
    assert rewards.accuracy(completion, TG) == pytest.approx(iou)
    assert rewards.tiou_v2(completion, TG) == pytest.approx(v2)


def test_tiou_hand_cases():
    example = {"solution": [5, 10], "duration": 20}
    assert rewards.tiou("<answer>2.5 to 7.5</answer>", example) == pytest.approx(2.5 / 7.5)
    assert rewards.tiou_v2("<answer>2.5 to 7.5</answer>", example) == pytest.approx(
        (2.5 / 7.5) * (1 - 2.5 / 20) * (1 - 2.5 / 20)
    )
    assert rewards.tiou("<answer>1 to 2</answer><answer>5 to 10</answer>", example) == 1.0
    assert rewards.tiou("<answer>10 to 5</answer>", example) == 0.0  # reversed
    assert rewards.tiou("<answer>[5, 10]</answer>", example) == 0.0  # Time-R1's pattern only
    point = {"solution": [3, 3], "duration": 20}
    assert rewards.tiou("<answer>3 to 3</answer>", point) == 0.0  # zero union
    # Time-R1 would give 0.2 * (1 - 0) * (1 - 4) = -0.6 for a prediction past the end.
    assert rewards.tiou_v2("<answer>5 to 90</answer>", {**example, "duration": 30}) >= 0.0
    string_gt = {"solution": "<answer>5.0 to 10.0</answer>", "duration": 20}
    assert rewards.tiou("<answer>5 to 10</answer>", string_gt) == 1.0


def test_bbox_iou_single_and_tracking():
    single = {"problem_type": "spatial grounding", "solution": [0, 0, 10, 10]}
    answer = '<answer>[{"bbox_2d": [5, 5, 15, 15], "label": "cup"}]</answer>'
    assert rewards.bbox_iou(answer, single) == pytest.approx(25 / 175)
    assert rewards.accuracy(answer, single) == pytest.approx(25 / 175)
    assert rewards.bbox_iou("[0, 0, 10, 10]", single) == 0.0  # no block
    track = {"solution": {"answer": [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 4, 4]]}}
    boxes = "[[0, 0, 10, 10], [5, 5, 15, 15], [0, 0, 2, 2]]"
    expected = (1 + 25 / 175 + 4 / 16) / 3
    assert rewards.bbox_iou(f"<answer>{boxes}</answer>", track) == pytest.approx(expected)
    assert rewards.bbox_iou("<answer>[[0, 0, 10, 10]]</answer>", track) == 0.0  # wrong count
    as_list = {"solution": [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 4, 4]]}
    assert rewards.bbox_iou(f"<answer>{boxes}</answer>", as_list) == pytest.approx(expected)


# ----------------------------------------------------------------------------- format, sums


def test_format_reward():
    # Video-R1 fullmatches the completion as generated; Time-R1 (format_lenient) strips it first.
    for text in ("<think>a</think>\n<answer>B</answer>\n", " <think>a</think><answer>B</answer>"):
        assert rewards.format_reward(text, {}) == 0.0 == video_r1_format(text)
        assert rewards.REGISTRY["format_lenient"](text, {}) == 1.0
    assert rewards.REGISTRY["format"]("<think>a</think>\n<answer>B</answer>", {}) == 1.0
    for text in ("<think>a</think> trailing <answer>B</answer>", "<answer>B</answer>"):
        assert rewards.format_reward(text, {}) == 0.0 == rewards.format_lenient(text, {})


FORMAT_PIECES = ["<think>", "</think>", "<answer>", "</answer>", " ", "\n", "x", "<", ">", "\t"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FORMAT_PIECES), max_size=14).map("".join))
def test_format_matches_video_r1(text):
    assert rewards.format_reward(text, {}) == video_r1_format(text)
    assert rewards.format_lenient(text, {}) == video_r1_format(text.strip())


def test_weighted_sum():
    mc = {"problem_type": "multiple choice", "solution": "<answer>B</answer>"}
    fn = rewards.weighted_sum({"accuracy": 1.0, "format": 0.5})
    assert fn("<think>x</think><answer>B</answer>", mc) == 1.5
    assert fn("<answer>B</answer>", mc) == 1.0
    with pytest.raises(ValueError, match="unknown reward names"):
        rewards.weighted_sum({"acuracy": 1.0})
    with pytest.raises(ValueError, match="finite"):
        rewards.weighted_sum({"format": math.nan})


# ----------------------------------------------------------------------------- group shaping


def test_length_bonus_is_video_r1():
    acc = [1.0, 1.0, 0.05, 1.0, 0.0]
    lengths = [320, 512, 400, 513, 400]
    assert rewards.length_bonus(accuracies=acc, lengths=lengths) == [0.2, 0.2, 0.0, 0.0, 0.0]
    # Only one correct completion in the group: no bonus.
    assert rewards.length_bonus(accuracies=[1.0, 0.0], lengths=[400, 400]) == [0.0, 0.0]
    assert rewards.GROUP_REGISTRY["length"](accuracies=acc, lengths=lengths)[0] == 0.2
    with pytest.raises(ValueError):
        rewards.length_bonus(accuracies=[1.0], lengths=[1, 2])


@given(st.integers(0, 200), st.integers(1, 100), st.integers(0, 100))
def test_overlong_matches_dapo(length, max_len, cache):
    assume(cache <= max_len)
    if cache == 0:  # trl divides by zero only in an empty range; the piecewise value is -1.
        expected = 0.0 if length <= max_len else -1.0
    else:
        expected = dapo_overlong(length, max_len, cache)
    got = rewards.soft_overlong_penalty(length, max_length=max_len, cache_length=cache)
    assert got == pytest.approx(expected)
    kw = dict(max_length=max_len, cache_length=cache, factor=0.5)
    assert rewards.GROUP_REGISTRY["overlong"](lengths=[length], **kw) == [pytest.approx(got / 2)]


@pytest.mark.parametrize(
    "name, example",
    [
        ("accuracy", {"solution": "<answer>B</answer>"}),
        ("accuracy", {"problem_type": "essay", "solution": "x"}),
        ("accuracy", {"problem_type": "multiple choice"}),
        ("accuracy", {"problem_type": "regression", "solution": "<answer>ten</answer>"}),
        ("accuracy", {"problem_type": "numerical", "solution": "<answer>nan</answer>"}),
        ("accuracy_lenient", {"problem_type": "numerical", "solution": "<answer>abc</answer>"}),
        ("accuracy_lenient", {"problem_type": "essay", "solution": "x"}),
        ("accuracy_lenient", {"problem_type": "temporal grounding", "solution": [10, 5]}),
        ("tiou", {"solution": [10, 5]}),
        ("tiou", {"solution": "no interval"}),
        ("tiou", {"timestamp": [1, 2, 3]}),
        ("tiou_v2", {"timestamp": [1, 2]}),
        ("tiou_v2", {"timestamp": [1, 2], "duration": 0}),
        ("tiou_v2", {"timestamp": [1, 2], "duration": "20"}),
        ("bbox_iou", {"solution": [0, 0, 1]}),
        ("bbox_iou", {"solution": "no box"}),
    ],
)
def test_malformed_examples_raise_clearly(name, example):
    with pytest.raises(ValueError, match="example|problem_type"):
        rewards.REGISTRY[name]("<answer>B</answer>", example)


EXAMPLES = [
    {"problem_type": "multiple choice", "solution": "<answer>B</answer>", "options": ["A. x"]},
    {"problem_type": "numerical", "solution": "<answer>3.5</answer>"},
    {"problem_type": "OCR", "solution": "<answer>stop here</answer>"},
    {"problem_type": "free-form", "solution": "<answer>the cat runs</answer>"},
    {"problem_type": "regression", "solution": "<answer>10</answer>"},
    {"problem_type": "regression", "solution": "<answer>0</answer>"},
    TG,
    {"problem_type": "spatial grounding", "solution": [0, 0, 10, 10]},
    {"problem_type": "spatial grounding", "solution": [[0, 0, 10, 10], [1, 1, 2, 2]]},
]
PIECES = ["<answer>", "</answer>", "<think>", "</think>", " ", "\n", "B", "3.5", "nan", "to"]
PIECES += ["1e999", "[0, 0, 5, 5]", "(", "]", ",", "-", "0", "10", "stop", "\ud800", "日本"]
completions = st.one_of(
    st.text(max_size=300), st.lists(st.sampled_from(PIECES), max_size=25).map("".join)
)


def _unit_rewards(example):
    if example["problem_type"] == "temporal grounding":
        return ["accuracy", "tiou", "tiou_v2"]
    if example["problem_type"] == "spatial grounding":
        return ["accuracy", "bbox_iou"]
    return ["accuracy"]


@settings(max_examples=150, deadline=None)
@given(completions)
def test_rewards_never_raise_and_stay_in_range(completion):
    combo = rewards.weighted_sum({"accuracy": 1.0, "format": -0.5})
    for example in EXAMPLES:
        assert rewards.format_reward(completion, example) in (0.0, 1.0)
        assert -0.5 <= combo(completion, example) <= 1.0
        assert rewards.format_lenient(completion, example) in (0.0, 1.0)
        for name in [*_unit_rewards(example), "accuracy_lenient"]:
            value = rewards.REGISTRY[name](completion, example)
            assert 0.0 <= value <= 1.0 and isinstance(value, float)


@pytest.mark.parametrize(
    "completion",
    [
        "<answer>" + "1" * 1_000_000 + "</answer>",
        "<think>" + "x " * 300_000 + "</think><answer>" * 50_000,
        "<answer>" + "[0, 0, 5, 5], " * 50_000 + "</answer>",
        None,
        b"<answer>B</answer>",
    ],
)
def test_rewards_survive_huge_and_non_string_completions(completion):
    for example in EXAMPLES:
        for name in ("format", "format_lenient", "accuracy", "accuracy_lenient"):
            assert 0.0 <= rewards.REGISTRY[name](completion, example) <= 1.0
