"""Answer extraction from model completions: tags, option letters, numbers, intervals, boxes.

Every function here takes any string (garbage, unicode, megabytes) and returns a value or `None`;
none raises. Parsing is literal: regular expressions plus `float()`; model output is never
evaluated (`eval`, `ast.literal_eval`, expression parsers).

Which `<answer>` block counts when there are several:
  * `which="first"` (default): the first complete `<answer>...</answer>` pair, stripped. This is
    Video-R1's `extract_answer` (`re.search(r'<answer>\\s*(.*?)\\s*</answer>', text, re.DOTALL)`,
    tulerfeng/Video-R1 `src/r1-v/src/open_r1/grpo.py`), used for the QA types and for boxes
    (VideoChat-R1's `tracking_iou_reward` also takes the first block).
  * `which="last"`: the last block that `re.findall(r"<answer>(.*?)</answer>")` would return, as
    Time-R1's `parse_timestamp_output` (xiaomi-research/time-r1 `main.py`) does for grounding.
Both are implemented with `str.find` instead of the regexes, which backtrack quadratically on
inputs such as `"<answer>" * 10**5`; tests check they agree with the regexes.

All patterns anchor number starts with a look-behind so that a long run of digits is scanned
once (`(\\d+\\.?\\d*) to` backtracks quadratically on a megabyte of digits).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Literal

__all__ = [
    "answer_block",
    "answer_span",
    "extract_box",
    "extract_boxes",
    "extract_choice",
    "extract_interval",
    "extract_number",
    "is_think_answer",
    "parse_number",
]

Which = Literal["first", "last"]
Box = tuple[float, float, float, float]

_OPEN, _CLOSE = "<answer>", "</answer>"
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _to_float(s: str) -> float | None:
    """`float(s)` if it parses to a finite number, else None."""
    try:
        value = float(s)
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def answer_block(text: str, *, which: Which = "first") -> str | None:
    """The content of one complete `<answer>...</answer>` block, stripped; None if there is none."""
    start = text.find(_OPEN)
    if start < 0:
        return None
    end = text.find(_CLOSE, start + len(_OPEN))
    if end < 0:
        return None  # No later <answer> can be closed either.
    if which == "first":
        return text[start + len(_OPEN) : end].strip()
    content = text[start + len(_OPEN) : end]
    while True:  # Non-overlapping pairs, left to right, as re.findall pairs them.
        start = text.find(_OPEN, end + len(_CLOSE))
        if start < 0:
            return content.strip()
        end = text.find(_CLOSE, start + len(_OPEN))
        if end < 0:
            return content.strip()
        content = text[start + len(_OPEN) : end]


def answer_span(text: str, *, which: Which = "first") -> str:
    """The `<answer>` block if there is one, else the whole text, stripped (what eval reads)."""
    block = answer_block(text, which=which)
    return text.strip() if block is None else block


_THINK_ANSWER = re.compile(r"</think>\s*<answer>")


def is_think_answer(text: str) -> bool:
    """Whether the stripped text is `<think>...</think>` then `<answer>...</answer>`, nothing else.

    Equivalent to `re.fullmatch(r"<think>.*?</think>\\s*<answer>.*?</answer>", text.strip(),
    re.DOTALL)` (Video-R1's and Time-R1's `format_reward`; Time-R1 strips first) but linear-time:
    the text must start with `<think>`, end with `</answer>`, and contain `</think>\\s*<answer>`
    between them; the leftmost such match is the one that leaves the most room for the answer.
    """
    text = text.strip()
    if not (text.startswith("<think>") and text.endswith(_CLOSE)):
        return False
    m = _THINK_ANSWER.search(text, len("<think>"))
    return m is not None and m.end() <= len(text) - len(_CLOSE)


def parse_number(text: str) -> float | None:
    """Video-R1's `normalize_number`: drop commas, `float()` the rest; None unless finite."""
    return _to_float(text.replace(",", ""))


_NUMBER = re.compile(
    r"(?<![\d.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|(?<![\d.])[-+]?\.\d+"
)


def extract_number(text: str, *, which: Which = "first") -> float | None:
    """A number from free text: the whole text if it is one, else its first (or last) number.

    Thousands separators (`1,234`) and exponents are read; non-finite values are None. (VSI-Bench's
    lmms-eval task reads only the first space-separated word; this also finds `about 3 m`.)
    """
    whole = parse_number(text.strip())
    if whole is not None:
        return whole
    numbers = (_to_float(m.group().replace(",", "")) for m in _NUMBER.finditer(text))
    found = None
    for value in numbers:
        if value is not None:
            if which == "first":
                return value
            found = value
    return found


_NUM = r"(\d+(?:\.\d*)?)"  # Same language as Time-R1's `\d+\.?\d*`, without ambiguous splits.
_TIME_R1 = re.compile(rf"(?<!\d){_NUM} (?:to|and) {_NUM}", re.IGNORECASE)
_UNIT = r"(?:\s*(?:seconds?|secs?|s)\b)?"
_LENIENT = re.compile(
    rf"(?<![\d.]){_NUM}{_UNIT}\s*(?:to|and|-|–|—|~)\s*{_NUM}{_UNIT}"
    rf"|\[\s*{_NUM}{_UNIT}\s*,\s*{_NUM}{_UNIT}\s*\]",
    re.IGNORECASE,
)


def extract_interval(text: str, *, strict: bool = False) -> tuple[float, float] | None:
    """The last `start to end` interval in `text`, in seconds, as written (start may exceed end).

    Args:
      text: the text to search (pass an answer block, not a whole completion, for Time-R1).
      strict: Time-R1's pattern only, `(\\d+\\.?\\d*) (to|and) (\\d+\\.?\\d*)` with single
        spaces, case-insensitive. Otherwise also `s - e`, `s ~ e`, `[s, e]`, `from s to e`,
        `between s and e`, each number optionally followed by `s`/`sec`/`seconds`.
    Returns:
      `(start, end)` of the last match, or None.
    """
    pattern = _TIME_R1 if strict else _LENIENT
    last = None
    for match in pattern.finditer(text):
        last = match
    if last is None:
        return None
    start, end = (g for g in last.groups() if g is not None)
    a, b = _to_float(start), _to_float(end)
    return None if a is None or b is None else (a, b)


_SIGNED = r"([-+]?\d+(?:\.\d+)?)"
_BOX = re.compile(
    rf"\[\s*{_SIGNED}\s*,\s*{_SIGNED}\s*,\s*{_SIGNED}\s*,\s*{_SIGNED}\s*\]"
    rf"|\(\s*{_SIGNED}\s*,\s*{_SIGNED}\s*,\s*{_SIGNED}\s*,\s*{_SIGNED}\s*\)"
)


def extract_boxes(text: str) -> list[Box]:
    """Every `[x1, y1, x2, y2]` (or parenthesised) group of four numbers, in order."""
    boxes = []
    for m in _BOX.finditer(text):
        values = [_to_float(g) for g in m.groups() if g is not None]
        if all(v is not None for v in values):
            boxes.append(tuple(values))
    return boxes


def extract_box(text: str) -> Box | None:
    """The first `[x1, y1, x2, y2]` box in `text`, or None."""
    boxes = extract_boxes(text)
    return boxes[0] if boxes else None


_PHRASE = re.compile(
    r"(?:answer|option|choice)(?:\s+(?:is|would\s+be|should\s+be|will\s+be))?\s*[:\-]?\s*"
    r"(?:option\s+|choice\s+)?[(\[]?(?-i:([A-Z]))(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_BARE = re.compile(r"[(\[]?([A-Za-z])[)\]]?[.:,!]?")
_LEADING = re.compile(r"[(\[]?([A-Z])(?:[)\]]|[.:](?!\d))")
_PAREN = re.compile(r"\(([A-Z])\)")
_TRAILING = re.compile(r"(?:^|[\s:])[(\[]?([A-Z])[)\]]?[.!]?$")
_OPTION = re.compile(r"\s*[(\[]?([A-Z])[)\]]?[.:]?\s+(.*)", re.DOTALL)


def _norm(s: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())


def extract_choice(
    text: str, *, options: Sequence[str] | None = None, letters: str | None = None
) -> str | None:
    """The option letter a (possibly verbose) answer picks, or None.

    Rules, first hit wins (on the `<answer>` block if present, else the whole text):
      1. the text is a bare letter, either case: `B`, `(B)`, `[B]`, `B.`, `b`;
      2. it starts with a letter and a delimiter: `B. red car`, `(B) red`, `B: red`, `B)`;
      3. the last answer phrase: `The answer is B`, `Answer: (B)`, `the correct option is B`;
      4. the last parenthesised letter `(B)` (Time-R1's MCQ rule);
      5. it ends with a lone letter: `... so I pick B.`;
      6. it equals one option's text (`red car` for option `B. red car`), case/punctuation-folded.

    Args:
      text: the model output.
      options: the example's options, Video-R1 style (`["A. red car", "B. blue car"]`); they give
        the valid letters and enable rule 6.
      letters: the valid letters; default the first `len(options)` letters, else A-Z.
    Returns:
      An uppercase letter from `letters`, or None.
    """
    if letters is None:
        letters = _LETTERS[: len(options)] if options else _LETTERS
    span = answer_span(text)

    def valid(m: re.Match | None) -> str | None:
        letter = m.group(1).upper() if m is not None else None
        return letter if letter is not None and letter in letters else None

    hit = valid(_BARE.fullmatch(span)) or valid(_LEADING.match(span))
    if hit:
        return hit
    for finder in (_PHRASE, _PAREN):
        found = [m.group(1) for m in finder.finditer(span) if m.group(1) in letters]
        if found:
            return found[-1]
    hit = valid(_TRAILING.search(span[-16:]))  # Anchored at the end: the tail suffices.
    if hit or not options:
        return hit
    target = _norm(span)
    for i, option in enumerate(options):
        m = _OPTION.fullmatch(option)
        label, body = (m.group(1), m.group(2)) if m else (_LETTERS[i], option)
        if target and label in letters and _norm(body) == target:
            return label
    return None
