"""Blind baselines and confidence intervals: what a score means next to what no vision gets.

Text-only priors are fitted on the training split only, per task family (an example's
`category`, else its `problem_type`), and answer every evaluated question without looking at its
video. Each family gets the best of its candidate rules, judged on the training split:

| problem type       | candidate rules                                                      |
| ------------------ | -------------------------------------------------------------------- |
| multiple choice    | the majority letter; the option whose text was most often right      |
| numerical          | the most common answer; the median                                   |
| regression         | the mean; the median                                                 |
| OCR, free-form     | the most common answer text                                          |
| temporal grounding | the best constant interval, in seconds or as fractions of duration   |
| spatial grounding  | the best constant box (the training box with the highest mean IoU)   |

A prior's completion is `<answer>...</answer>`, scored by the same reward as the model's.

`bootstrap_ci` (percentile bootstrap over questions) gives every accuracy an interval, and
`paired_bootstrap` says whether one stage beats another on the same questions: the interval of
the mean per-question difference must exclude 0.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vlmm_jax.rewards import batch_scores

INTERVAL_STEP = 0.02  # the constant-interval search grid, as a fraction of the range
MAX_BOX_CANDIDATES = 512


@dataclasses.dataclass(frozen=True)
class Prior:
    """One family's rule: `answer(example) -> answer text`, named `rule`; `train_score` is
    its mean reward on the training split."""

    family: str
    rule: str
    answer: Callable[[Any], str]
    train_score: float


def family(example) -> str:
    return example.category or example.problem_type


def _letter(option: str) -> str:
    return option.split(".", 1)[0].strip()


def _text(option: str) -> str:
    return option.split(".", 1)[1].strip() if "." in option else option.strip()


def _choice_rules(examples) -> dict[str, Callable[[Any], str]]:
    letters = collections.Counter(ex.answer for ex in examples)
    order = sorted(letters, key=lambda k: (-letters[k], k))
    texts = collections.Counter()
    for ex in examples:
        texts.update(_text(o) for o in ex.options if _letter(o) == ex.answer)

    def by_letter(ex):
        offered = [_letter(o) for o in ex.options] or order
        return next((k for k in order if k in offered), offered[0])

    def by_text(ex):
        if not ex.options:
            return by_letter(ex)
        best = max(ex.options, key=lambda o: texts[_text(o)])
        return _letter(best) if texts[_text(best)] else by_letter(ex)

    return {"majority letter": by_letter, "majority answer text": by_text}


def _number_rules(examples, exact: bool) -> dict[str, Callable[[Any], str]]:
    values = []
    for ex in examples:
        try:
            values.append(float(ex.answer))
        except ValueError:
            continue
    if not values:
        return {}
    median = float(np.median(values))
    rules = {"median": lambda ex: _num(median)}
    if exact:
        mode = collections.Counter(values).most_common(1)[0][0]
        rules["most common"] = lambda ex: _num(mode)
    else:
        mean = float(np.mean(values))
        rules["mean"] = lambda ex: _num(mean)
    return rules


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.4g}"


def _text_rules(examples) -> dict[str, Callable[[Any], str]]:
    common = collections.Counter(ex.answer for ex in examples).most_common(1)[0][0]
    return {"most common answer": lambda ex: common}


def interval_iou(candidates: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU `[C, N]` of candidate intervals `[C, 2]` against true intervals `[N, 2]`."""
    inter = np.minimum(candidates[:, None, 1], truth[None, :, 1]) - np.maximum(
        candidates[:, None, 0], truth[None, :, 0]
    )
    union = np.maximum(candidates[:, None, 1], truth[None, :, 1]) - np.minimum(
        candidates[:, None, 0], truth[None, :, 0]
    )
    return np.where(union > 0, np.maximum(inter, 0.0) / np.maximum(union, 1e-12), 0.0)


def best_constant_interval(truth: np.ndarray, high: float) -> tuple[float, float]:
    """The interval `(start, end)` on a grid of `INTERVAL_STEP * high` over `[0, high]` with
    the highest mean IoU against `truth [N, 2]`."""
    grid = np.linspace(0.0, high, int(round(1 / INTERVAL_STEP)) + 1)
    s, e = np.meshgrid(grid, grid, indexing="ij")
    keep = e > s
    candidates = np.stack([s[keep], e[keep]], axis=1)
    best = int(np.argmax(interval_iou(candidates, truth).mean(axis=1)))
    return float(candidates[best, 0]), float(candidates[best, 1])


def _interval_rules(examples) -> dict[str, Callable[[Any], str]]:
    spans = np.array([ex.timestamps for ex in examples if ex.timestamps], np.float64)
    if not len(spans):
        return {}
    start, end = best_constant_interval(spans, float(spans[:, 1].max()))
    rules = {"best constant interval (s)": lambda ex: f"{start:.2f} to {end:.2f}"}
    timed = [ex for ex in examples if ex.timestamps and ex.duration]
    if len(timed) == len(examples):
        frac = np.array([np.array(ex.timestamps) / ex.duration for ex in timed])
        fs, fe = best_constant_interval(frac, 1.0)
        rules["best constant interval (fraction)"] = lambda ex: (
            f"{fs * ex.duration:.2f} to {fe * ex.duration:.2f}"
        )
    return rules


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU `[A, B]` of boxes `[A, 4]` and `[B, 4]` (x1, y1, x2, y2)."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=-1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _box_rules(examples) -> dict[str, Callable[[Any], str]]:
    boxes = np.array([ex.boxes[0] for ex in examples if ex.boxes], np.float64)
    if not len(boxes):
        return {}
    pick = np.random.default_rng(0).permutation(len(boxes))[:MAX_BOX_CANDIDATES]
    candidates = np.concatenate([boxes[pick], boxes.mean(0, keepdims=True)])
    candidates = np.concatenate([candidates, np.median(boxes, 0, keepdims=True)])
    best = candidates[int(np.argmax(box_iou_matrix(candidates, boxes).mean(axis=1)))]
    text = "[" + ", ".join(f"{x:.0f}" for x in best) + "]"
    return {"best constant box": lambda ex: text}


def _rules(problem_type: str, examples) -> dict[str, Callable[[Any], str]]:
    if problem_type == "multiple choice":
        return _choice_rules(examples)
    if problem_type in ("numerical", "regression"):
        return _number_rules(examples, exact=problem_type == "numerical")
    if problem_type == "temporal grounding":
        return _interval_rules(examples)
    if problem_type == "spatial grounding":
        return _box_rules(examples)
    return _text_rules(examples)


def completion(answer: str) -> str:
    return f"<answer>{answer}</answer>"


def fit_priors(train: Sequence[Any], reward: str = "accuracy") -> dict[str, Prior]:
    """The best prior per task family of the training `Example`s, by mean `reward` on them."""
    groups: dict[tuple[str, str], list] = collections.defaultdict(list)
    for ex in train:
        groups[(family(ex), ex.problem_type)].append(ex)
    priors = {}
    for (name, problem_type), examples in sorted(groups.items()):
        best = None
        refs = [ex.to_reward_example() for ex in examples]
        for rule, answer in _rules(problem_type, examples).items():
            texts = [completion(answer(ex)) for ex in examples]
            score = float(np.mean(batch_scores(reward, texts, refs)[0]))
            if best is None or score > best.train_score:
                best = Prior(name, rule, answer, score)
        if best is not None:
            priors[name] = best
    return priors


def prior_records(priors: dict[str, Prior], examples: Sequence[Any], score) -> list[dict]:
    """Per-example records (as `eval.runner.evaluate` makes them) of the priors' answers;
    `score(completion, example) -> dict` is the model's scorer. A family the training split
    never showed is answered with an empty answer (and scores what that scores)."""
    out = []
    for ex in examples:
        prior = priors.get(family(ex))
        text = completion(prior.answer(ex) if prior else "")
        out.append(
            {
                "id": ex.id,
                "category": family(ex),
                "problem_type": ex.problem_type,
                "answer": ex.answer,
                "completion": text,
                "rule": prior.rule if prior else "none (family not in training split)",
                "length": 0,
                **score(text, ex),
            }
        )
    return out


# ----------------------------------------------------------------------------- intervals
def scores_by_id(records: Sequence[dict]) -> dict[str, float]:
    """`{question id: score}` of per-example records (the predictions files' lines)."""
    return {str(r["id"]): float(r["score"]) for r in records}


def _bootstrap_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), (resamples, len(values)))
    return values[idx].mean(axis=1)


def bootstrap_ci(
    scores: Sequence[float], *, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-question `scores` (resampling
    questions with replacement); quantiles of the resampled means by the inverted CDF."""
    values = np.asarray(scores, np.float64)
    if not len(values):
        return (float("nan"), float("nan"))
    means = _bootstrap_means(values, resamples, seed)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha], method="inverted_cdf")
    return float(lo), float(hi)


def paired_bootstrap(
    a: dict[str, float], b: dict[str, float], *, level: float = 0.95, resamples: int = 2000
) -> dict[str, Any]:
    """`a` minus `b` on the questions both scored (`{question id: score}`): the mean
    difference, its paired bootstrap interval, and whether the interval excludes 0."""
    common = sorted(set(a) & set(b))
    diff = np.array([a[k] - b[k] for k in common], np.float64)
    lo, hi = bootstrap_ci(diff, level=level, resamples=resamples)
    return {
        "difference": float(diff.mean()) if len(diff) else float("nan"),
        "ci": [lo, hi],
        "questions": len(common),
        "significant": bool(len(diff) and (lo > 0 or hi < 0)),
    }


__all__ = [
    "Prior",
    "best_constant_interval",
    "bootstrap_ci",
    "fit_priors",
    "paired_bootstrap",
    "prior_records",
    "scores_by_id",
]
