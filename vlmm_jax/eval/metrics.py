"""Per-example scores and their aggregation as sums plus counts.

Scores take parsed values (see `answers.py`); `None` (nothing parsed) scores 0, never raises.
Aggregates are `Average(total, count)` pairs that add across examples, hosts and categories and
are divided only when reported (`summarize`).

Conventions and the references they follow:
  * MRA (VSI-Bench's lmms-eval task, `vsibench/utils.py` `mean_relative_accuracy`): the mean over
    thresholds 0.50, 0.55, ..., 0.95 of `|pred - gt| / |gt| <= 1 - threshold`. VSI-Bench compares
    with `<=` (default here); Video-R1's `src/eval_bench.py` uses `<` and `|gt| + 1e-8`
    (`inclusive=False`). VSI-Bench divides by `gt`, not `|gt|`; with `gt == 0` we use relative
    error 0 for an exact answer and infinity otherwise, and a non-finite prediction scores 0.
  * Numerical exact match: equal after `round(x, 2)` (Video-R1's numerical rule).
  * WER: word-level edit distance over `str.split()` words divided by `max(1, #reference
    words)`, as Video-R1's `wer`; computed with `jiwer` on whitespace-normalised text.
  * ROUGE: `rouge_score` F-measures of rouge1/rouge2/rougeL with the Porter stemmer.
  * Temporal IoU: `max(0, min(e1, e2) - max(s1, s2)) / (max(e1, e2) - min(s1, s2))`
    (Time-R1). An interval with `start > end`, or a zero union, scores 0 (Time-R1 crashes on
    the latter). R@m counts `iou > m` by default, as Time-R1's `eval_all.py`; `inclusive=True`
    gives `iou >= m` (moment-DETR and most grounding papers).
  * Box IoU: corners `[x1, y1, x2, y2]`; a box with `x2 < x1` or `y2 < y1`, or a zero union,
    scores 0 (as VideoChat-R1's `calculate_iou`, which gets 0 there by construction).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Mapping, Sequence

import jiwer
import numpy as np

__all__ = [
    "MRA_THRESHOLDS",
    "RECALL_THRESHOLDS",
    "Average",
    "box_iou",
    "choice_accuracy",
    "grounding_metrics",
    "mean_box_iou",
    "mean_relative_accuracy",
    "numerical_match",
    "recall_at",
    "rouge_f",
    "summarize",
    "temporal_iou",
    "word_error_rate",
]

MRA_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.50 .. 0.95
RECALL_THRESHOLDS = (0.3, 0.5, 0.7)


@dataclasses.dataclass(frozen=True)
class Average:
    """A running mean kept as `total` and `count`; `a + b` merges two of them."""

    total: float = 0.0
    count: int = 0

    @classmethod
    def of(cls, values: Iterable[float]) -> Average:
        values = [float(v) for v in values]
        return cls(math.fsum(values), len(values))

    def add(self, value: float) -> Average:
        return Average(self.total + float(value), self.count + 1)

    def __add__(self, other: Average) -> Average:
        return Average(self.total + other.total, self.count + other.count)

    @property
    def value(self) -> float:
        """`total / count`; NaN when nothing was counted."""
        return self.total / self.count if self.count else math.nan


def summarize(metrics: Mapping[str, Average]) -> dict[str, float]:
    """`{name: mean}` for reporting."""
    return {name: avg.value for name, avg in metrics.items()}


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def choice_accuracy(pred: str | None, target: str) -> float:
    """1.0 if the predicted option letter equals the target letter (case-insensitive)."""
    return float(pred is not None and pred.strip().upper() == target.strip().upper())


def numerical_match(pred: float | None, target: float) -> float:
    """1.0 if both round to the same value at 2 decimals (Video-R1's numerical rule)."""
    return float(_finite(pred) and _finite(target) and round(pred, 2) == round(target, 2))


def mean_relative_accuracy(
    pred: float | None,
    target: float,
    *,
    thresholds: Sequence[float] = MRA_THRESHOLDS,
    inclusive: bool = True,
) -> float:
    """VSI-Bench's MRA in [0, 1]: the fraction of thresholds `t` with rel. error `<= 1 - t`."""
    if not (_finite(pred) and _finite(target)):
        return 0.0
    if target == 0:
        rel = 0.0 if pred == 0 else math.inf
    else:
        rel = abs(pred - target) / abs(target)
    bounds = 1.0 - np.asarray(thresholds, dtype=np.float64)
    hits = rel <= bounds if inclusive else rel < bounds
    return float(np.mean(hits))


_WORDS = jiwer.ReduceToListOfListOfWords()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word edit distance / max(1, #reference words); >= 0, unbounded above (clip for rewards)."""
    ref, hyp = " ".join(reference.split()), " ".join(hypothesis.split())
    if not ref:
        return float(len(hyp.split()))
    if not hyp:
        return 1.0
    return float(jiwer.wer(ref, hyp, reference_transform=_WORDS, hypothesis_transform=_WORDS))


@functools.cache
def _rouge():
    from rouge_score import rouge_scorer  # imported on first use: it loads nltk and scipy (~2 s)

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge_f(reference: str, hypothesis: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measures (stemmed), each in [0, 1]; text without latin words scores 0."""
    scores = _rouge().score(reference, hypothesis)
    return {name: float(score.fmeasure) for name, score in scores.items()}


def temporal_iou(pred: Sequence[float] | None, gt: Sequence[float]) -> float:
    """IoU of two `[start, end]` intervals in [0, 1]; 0 for None, reversed or zero-union cases."""
    if pred is None or len(pred) != 2 or len(gt) != 2:
        return 0.0
    (s1, e1), (s2, e2) = pred, gt
    if not all(map(_finite, (s1, e1, s2, e2))) or s1 > e1 or s2 > e2:
        return 0.0
    inter = max(0.0, min(e1, e2) - max(s1, s2))
    union = max(e1, e2) - min(s1, s2)
    return float(min(1.0, inter / union)) if union > 0 else 0.0


def box_iou(pred: Sequence[float] | None, gt: Sequence[float]) -> float:
    """IoU of two `[x1, y1, x2, y2]` boxes in [0, 1]; 0 for None, inverted or zero-union cases."""
    if pred is None or len(pred) != 4 or len(gt) != 4:
        return 0.0
    if not all(map(_finite, (*pred, *gt))):
        return 0.0
    (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = pred, gt
    if ax2 < ax1 or ay2 < ay1 or bx2 < bx1 or by2 < by1:
        return 0.0
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    if not (union > 0 and math.isfinite(union)):
        return 0.0
    return float(min(1.0, max(0.0, inter / union)))


def mean_box_iou(preds: Sequence[Sequence[float]], gts: Sequence[Sequence[float]]) -> float:
    """Mean IoU over per-frame box pairs (VideoChat-R1 tracking); 0 if the counts differ."""
    if len(preds) != len(gts) or not gts:
        return 0.0
    return math.fsum(box_iou(p, g) for p, g in zip(preds, gts, strict=True)) / len(gts)


def recall_at(iou: float, threshold: float, *, inclusive: bool = False) -> float:
    """1.0 if `iou > threshold` (or `>=` with `inclusive=True`)."""
    return float(iou >= threshold if inclusive else iou > threshold)


def grounding_metrics(
    ious: Iterable[float],
    *,
    thresholds: Sequence[float] = RECALL_THRESHOLDS,
    inclusive: bool = False,
) -> dict[str, Average]:
    """`{"mIoU": ..., "R@0.3": ..., ...}` as `Average`s over per-example IoUs.

    Args:
      ious: one IoU per example (0 for examples whose answer did not parse).
      thresholds: the m of R@m.
      inclusive: count `iou >= m` instead of Time-R1's `iou > m`.
    """
    ious = [float(i) for i in ious]
    out = {"mIoU": Average.of(ious)}
    for t in thresholds:
        out[f"R@{t:g}"] = Average.of(recall_at(i, t, inclusive=inclusive) for i in ious)
    return out
