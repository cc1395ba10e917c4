"""Answers of a question type, votes over them, and when a vote is decisive.

An answer is a hashable key that `extract_answer` reads from a completion, by `problem_type`
(Video-R1 / Time-R1 field names), exactly as the reward that scores it reads the completion, so
that a vote never prefers a completion that scores worse than those that voted with it:

    problem_type        kind        strict: `rewards.accuracy`      lenient: `accuracy_lenient`
    multiple choice     "choice"    first answer block, stripped    `extract_choice` letter
    numerical           "number"    (has "." or ",", number         `extract_number` of the
                                     rounded to 2 decimals)          answer span, rounded to 2
    regression          "number"    the number (exact)              as numerical
    temporal grounding  "interval"  Time-R1's strict `s to e` of    lenient `extract_interval`
                                     the LAST block                  of the last answer span
    spatial grounding   "box"       first box of the first block    as strict
    OCR, free-form      "text"      first answer block, stripped    the answer span, lower-cased,
                                                                     whitespace collapsed

(The answer span is the first block, else the whole text; a block is stripped.) A missing or
empty block, or nothing parsed, is None: every such completion scores as the answer "". Strict
keys determine `accuracy` exactly (equal keys, equal scores); regression is keyed by the exact
number because its score is continuous in it. Lenient keys determine `accuracy_lenient`, except
that regression numbers equal to 2 decimals share a key (scores within `0.01 / |gt|`). For a
tracking example (several gt boxes) `bbox_iou` reads every box; the vote uses the first.

Discrete answers are voted by count (ties: the answer seen first). Intervals and boxes are rarely
equal, so their "vote" is the medoid: the candidate with the highest mean IoU to the other
candidates (ties: the first). Unparsable completions (None) never win while anything parses.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from vlmm_jax.eval import answers as ans
from vlmm_jax.eval import metrics

AnswerKind = Literal["choice", "number", "interval", "box", "text"]

_KINDS: dict[str, AnswerKind] = {
    "multiple choice": "choice",
    "numerical": "number",
    "regression": "number",
    "temporal grounding": "interval",
    "spatial grounding": "box",
    "OCR": "text",
    "free-form": "text",
}


def answer_kind(example: Mapping[str, Any]) -> AnswerKind:
    """The answer kind of an example's `problem_type` ("text" when absent or unknown)."""
    return _KINDS.get(str(example.get("problem_type", "")), "text")


def extract_answer(text: str, example: Mapping[str, Any], *, lenient: bool = False) -> Any:
    """The hashable answer key of one completion for `example`, or None; never raises.

    Args:
      text: the completion.
      example: its example (`problem_type`, `options`).
      lenient: key by what `rewards.accuracy_lenient` reads instead of `rewards.accuracy`
        (see the module docstring).
    """
    if not isinstance(text, str):
        return None
    kind = answer_kind(example)
    if kind == "box":
        block = ans.answer_block(text)
        return None if block is None else ans.extract_box(block)
    if lenient:
        return _lenient_answer(text, example, kind)
    if kind == "interval":
        block = ans.answer_block(text, which="last")
        return None if block is None else ans.extract_interval(block, strict=True)
    block = ans.answer_block(text) or None  # An empty block scores as a missing one.
    if block is None or kind != "number":
        return block
    value = ans.parse_number(block)
    if value is None or example.get("problem_type") != "numerical":
        return value
    return ("." in block or "," in block, round(value, 2))


def _lenient_answer(text: str, example: Mapping[str, Any], kind: AnswerKind) -> Any:
    if kind == "choice":
        return ans.extract_choice(text, options=example.get("options") or None)
    if kind == "number":
        value = ans.extract_number(ans.answer_span(text))
        return None if value is None else round(value, 2)
    if kind == "interval":
        return ans.extract_interval(ans.answer_span(text, which="last"))
    span = " ".join(ans.answer_span(text).lower().split())
    return span or None


def _iou(kind: AnswerKind):
    return metrics.temporal_iou if kind == "interval" else metrics.box_iou


def vote(candidates: Sequence[Any], kind: AnswerKind) -> tuple[Any, int | None]:
    """The winning answer and the index of its first occurrence (None, None if none parses).

    Discrete kinds: the most frequent answer. "interval" / "box": the medoid by IoU.
    """
    valid = [(i, a) for i, a in enumerate(candidates) if a is not None]
    if not valid:
        return None, None
    if kind in ("interval", "box"):
        iou = _iou(kind)
        if len(valid) == 1:
            return valid[0][1], valid[0][0]
        means = [
            math.fsum(iou(a, b) for j, b in valid if j != i) / (len(valid) - 1) for i, a in valid
        ]
        best = max(range(len(valid)), key=lambda k: (means[k], -k))
        return valid[best][1], valid[best][0]
    counts = Counter(a for _, a in valid)
    first = {}
    for i, a in valid:
        first.setdefault(a, i)
    winner = max(counts, key=lambda a: (counts[a], -first[a]))
    return winner, first[winner]


def vote_counts(candidates: Sequence[Any], kind: AnswerKind, *, iou_threshold: float = 0.5):
    """`(leader, v1, v2)`: the vote winner, its support and the runner-up's.

    Discrete kinds: v1, v2 are the two largest counts. "interval" / "box": v1 counts the
    candidates with IoU >= `iou_threshold` to the medoid (itself included) and v2 all other
    parsed candidates (conservative: dissenters are pooled as one rival). None answers count for
    neither.
    """
    leader, _ = vote(candidates, kind)
    if leader is None:
        return None, 0, 0
    valid = [a for a in candidates if a is not None]
    if kind in ("interval", "box"):
        iou = _iou(kind)
        v1 = sum(1 for a in valid if iou(a, leader) >= iou_threshold)
        return leader, v1, len(valid) - v1
    top = Counter(valid).most_common(2)
    return leader, top[0][1], top[1][1] if len(top) > 1 else 0


def beta_confidence(v1: int, v2: int) -> float:
    """P(p1 > p2) for the two leading answers' true shares, given v1 and v2 votes.

    Adaptive-Consistency's Beta criterion (Aggarwal et al., EMNLP 2023, "Let's Sample Step by
    Step"): with a uniform prior, the leader's share among the top two is `Beta(v1 + 1, v2 + 1)`
    and the confidence is `P(x > 1/2) = 1 - I_{1/2}(v1 + 1, v2 + 1)`. For integer parameters the
    regularised incomplete beta is a binomial tail, so exactly:
    `sum_{j=0}^{v1} C(v1 + v2 + 1, j) / 2^(v1 + v2 + 1)`.
    E.g. 3-0 gives 15/16 = 0.9375; 4-0 gives 31/32 = 0.96875; 4-1 gives 57/64 = 0.890625.
    """
    n = v1 + v2 + 1
    return math.fsum(math.comb(n, j) for j in range(v1 + 1)) / 2.0**n
