"""Answer extraction: published regexes as references, hand cases, and never-raise properties."""

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlmm_jax.eval import answers

# Text built from the pieces that matter to a parser, so tags and numbers collide often.
TAGS = ["<answer>", "</answer>", "<think>", "</think>", " ", "\n", "x", "B", "1", ".", "<", ">"]
tagged = st.lists(st.sampled_from(TAGS), max_size=30).map("".join)
NUMS = ["1", "2", "0", "12", ".", " ", "to", "and", " to ", " and ", "x", "-", "TO", "\t"]
numeric = st.lists(st.sampled_from(NUMS), max_size=20).map("".join)
any_text = st.one_of(st.text(max_size=300), tagged, numeric)


def video_r1_extract(text):
    """tulerfeng/Video-R1 src/r1-v/src/open_r1/grpo.py `extract_answer` (None for no match)."""
    m = re.search(r"<answer>\s*(.*?)\s*</answer>", text, re.DOTALL)
    return m.group(1).strip() if m else None


def time_r1_last_block(text):
    """xiaomi-research/time-r1 main.py `parse_timestamp_output`, step 1-2."""
    matches = re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)
    return matches[-1] if matches else None


def time_r1_interval(text):
    """xiaomi-research/time-r1 main.py `parse_timestamp_output`, step 3 (on a block)."""
    matches = re.findall(r"(\d+\.?\d*) (to|and) (\d+\.?\d*)", text, re.IGNORECASE)
    if not matches:
        return None
    return float(matches[-1][0]), float(matches[-1][2])


def reference_format(text):
    """Video-R1 / Time-R1 `format_reward` (Time-R1 strips first)."""
    pattern = r"<think>.*?</think>\s*<answer>.*?</answer>"
    return re.fullmatch(pattern, text.strip(), re.DOTALL) is not None


@settings(max_examples=250, deadline=None)
@given(tagged)
def test_answer_block_matches_the_reference_regexes(text):
    assert answers.answer_block(text) == video_r1_extract(text)
    last = time_r1_last_block(text)
    assert answers.answer_block(text, which="last") == (None if last is None else last.strip())


@settings(max_examples=250, deadline=None)
@given(tagged)
def test_is_think_answer_matches_the_reference_regex(text):
    assert answers.is_think_answer(text) == reference_format(text)


@settings(max_examples=250, deadline=None)
@given(numeric)
def test_strict_interval_matches_time_r1(text):
    assert answers.extract_interval(text, strict=True) == time_r1_interval(text)


def test_answer_block_cases():
    text = "<think>a</think><answer> B </answer> then <answer>C</answer>"
    assert answers.answer_block(text) == "B"
    assert answers.answer_block(text, which="last") == "C"
    assert answers.answer_block("<answer>unclosed") is None
    assert answers.answer_span("no tags, B ") == "no tags, B"


def test_is_think_answer_cases():
    assert answers.is_think_answer("<think>r</think>\n<answer>B</answer>\n")
    assert answers.is_think_answer("<think></think><answer></answer>")
    assert not answers.is_think_answer("x<think>r</think><answer>B</answer>")
    assert not answers.is_think_answer("<think>r</think>x<answer>B</answer>")
    assert not answers.is_think_answer("<answer>B</answer>")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("B", "B"),
        ("(C)", "C"),
        ("[D]", "D"),
        ("b", "B"),
        ("A.", "A"),
        ("A. a red car", "A"),
        ("(B) the blue one", "B"),
        ("C: blue", "C"),
        ("D)", "D"),
        ("The answer is B.", "B"),
        ("Answer: (C)", "C"),
        ("the correct option is D because", "D"),
        ("Option A looks wrong, so the best answer is C", "C"),
        ("I pick (A), no wait, (D)", "D"),
        ("After watching, I would say B", "B"),
        ("<think>maybe (A)</think><answer>C</answer>", "C"),
        ("A dog runs across", None),
        ("the answer is a bit unclear", None),
        ("", None),
        ("12.5", None),
    ],
)
def test_extract_choice(text, expected):
    assert answers.extract_choice(text) == expected


def test_extract_choice_uses_options():
    options = ["A. a red car", "B. a blue car", "C. a truck"]
    assert answers.extract_choice("A blue car.", options=options) == "B"
    assert answers.extract_choice("E", options=options) is None
    assert answers.extract_choice("a truck", options=["cat", "dog", "a truck"]) == "C"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("42", 42.0),
        (" 3.14 ", 3.14),
        ("1,234.5", 1234.5),
        ("about 7 meters", 7.0),
        ("-2.5 degrees", -2.5),
        ("1e3", 1000.0),
        (".5", 0.5),
        ("v2 has 3 items", 2.0),
        ("nan", None),
        ("inf", None),
        ("1e999", None),
        ("no number", None),
    ],
)
def test_extract_number(text, expected):
    assert answers.extract_number(text) == expected


def test_extract_number_last_and_parse_number():
    assert answers.extract_number("from 3 to 5", which="last") == 5.0
    assert answers.parse_number("1,000") == 1000.0
    assert answers.parse_number("12 apples") is None
    assert answers.parse_number("-inf") is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("12.5 to 20.1", (12.5, 20.1)),
        ("The event is from 3 to 7 seconds.", (3.0, 7.0)),
        ("between 1.5 and 4", (1.5, 4.0)),
        ("[2.0, 8.5]", (2.0, 8.5)),
        ("3s - 5s", (3.0, 5.0)),
        ("4.2 seconds to 9 seconds", (4.2, 9.0)),
        ("first 1 to 2, finally 5 to 9", (5.0, 9.0)),
        ("10 to 3", (10.0, 3.0)),
        ("no interval here", None),
    ],
)
def test_extract_interval_lenient(text, expected):
    assert answers.extract_interval(text) == expected


def test_extract_interval_strict_is_time_r1():
    assert answers.extract_interval("12.5 to 20", strict=True) == (12.5, 20.0)
    assert answers.extract_interval("[2.0, 8.5]", strict=True) is None
    assert answers.extract_interval("3s to 5s", strict=True) is None
    assert answers.extract_interval("3  to 5", strict=True) is None


def test_extract_boxes():
    text = '[{"bbox_2d": [10, 20.5, 30, 40], "label": "cat"}] and (1, -2, 3, 4) and [1, 2, 3]'
    assert answers.extract_boxes(text) == [(10.0, 20.5, 30.0, 40.0), (1.0, -2.0, 3.0, 4.0)]
    assert answers.extract_box(text) == (10.0, 20.5, 30.0, 40.0)
    assert answers.extract_box("[[0,0,1,1],[1,1,2,2]]") == (0.0, 0.0, 1.0, 1.0)
    assert answers.extract_box("no box") is None


EXTRACTORS = [
    lambda t: answers.answer_block(t),
    lambda t: answers.answer_block(t, which="last"),
    answers.answer_span,
    answers.is_think_answer,
    answers.parse_number,
    answers.extract_number,
    lambda t: answers.extract_number(t, which="last"),
    answers.extract_interval,
    lambda t: answers.extract_interval(t, strict=True),
    answers.extract_boxes,
    answers.extract_choice,
    lambda t: answers.extract_choice(t, options=["A. x", "y", "(C) z"]),
]


@settings(max_examples=200, deadline=None)
@given(any_text)
def test_extractors_never_raise(text):
    for fn in EXTRACTORS:
        fn(text)


MB = 1 << 20
ADVERSARIAL = [
    "1" * MB,  # Quadratic for `(\d+\.?\d*) to` without a look-behind.
    "<answer>" * (MB // 8),  # Quadratic for `re.search(r"<answer>(.*?)</answer>")`.
    "<think>" + "</think><answer></answer>x" * (MB // 128),  # And for the format regex.
    "1.1." * (MB // 16),
    "[1, 2, 3, " * (MB // 40),
    "1" + " " * (MB // 4) + "x",
    "(A) answer is " * (MB // 56),
    "\ud800\udfff" * 1000 + "<answer>\ud800 1 to 2</answer>",
    "\u0663 to \u0665 and \u0661\u0662",
]


@pytest.mark.parametrize("index", range(len(ADVERSARIAL)))
def test_extractors_are_fast_on_adversarial_megabytes(index):
    text = ADVERSARIAL[index]
    start = time.perf_counter()
    for fn in EXTRACTORS:
        fn(text)
    assert time.perf_counter() - start < 5.0
