"""Verifiable rewards for GRPO-family training: `REGISTRY[name](completion, example) -> float`.

`example` carries Video-R1's fields (`problem_type`, `solution` such as `"<answer>B</answer>"`,
`options`) and Time-R1's (`timestamp` or `solution` as `[start, end]` seconds, `duration`).
A reward never raises on a completion: anything unparsable scores 0. A malformed *example*
(missing field, unknown `problem_type`, unparsable solution, `duration <= 0`) raises ValueError.

References read (the code, not summaries), and the choices made where they disagree or break.
(tulerfeng/Video-R1 and volcengine/verl were read from forks stored in the code index:
HarryHsing/Video-R1 and kyoungjunpark/Video-R1; HollowMan6/verl.)
  * tulerfeng/Video-R1 `src/r1-v/src/open_r1/grpo.py` (`accuracy_reward`, `format_reward`):
    - The answer is the FIRST `<answer>` block, stripped; gt the same from `solution` (a solution
      without tags is used whole, stripped, where Video-R1 would compare with "").
    - multiple choice: exact string equality of the two stripped answers (`"(B)" != "B"`).
    - numerical: 0 if exactly one of the two strings contains "." or ","; else commas dropped,
      `float()`, equal after `round(x, 2)`.
    - OCR: `1 - WER` clipped to [0, 1]. free-form: mean of ROUGE-1/2/L F (stemmed), clipped.
    - regression: `1 - min(1, max(0, (|o - g| + 1e-9) / (|g| + 1e-9)))`. Video-R1 gives a `nan`
      answer full reward (`max(0.0, nan)` is 0.0) and crashes into its `except` on None; here
      a non-finite or unparsable answer scores 0. Kept for parity: `g == 0` always scores 0.
    - No `<answer>` block scores 0 for every type (Video-R1 scores "" instead, which differs
      only for an empty OCR reference).
  * format: the stripped completion fullmatches `<think>.*?</think>\\s*<answer>.*?</answer>`
    (Video-R1's pattern; Time-R1 `main.py` strips first, which we follow so a trailing newline
    is not a format error). Checked in linear time (`answers.is_think_answer`).
  * xiaomi-research/time-r1 `main.py` (`iou_timestamp_reward`, `iou_timestamp_reward_v2`):
    - The LAST `<answer>` block and the last `(\\d+\\.?\\d*) (to|and) (\\d+\\.?\\d*)` in it.
    - tiou: interval IoU. Time-R1 crashes on a zero union (`iou` unbound): 0 here. A reversed
      prediction (start > end) scores 0 (it does in Time-R1 too, by construction).
    - tiou_v2: `iou * (1 - |gs - ps| / D) * (1 - |ge - pe| / D)`. Time-R1 lets a factor go
      negative when a prediction lies beyond the video (a negative reward); each factor is
      clipped to [0, 1] here, so the reward stays in [0, 1].
  * OpenGVLab/VideoChat-R1 `Videochat-R1.5/src/open_r1/reward_funcs.py` (`tracking_iou_reward`,
    `calculate_iou`): first `<answer>` block; tracking needs as many boxes as the gt has frames
    (else 0) and scores the mean per-frame IoU. Boxes are read with a literal regex (VideoChat-R1
    uses `ast.literal_eval`/`eval`); a single-box answer uses the first box in the block.
  * Video-R1 `src/r1-v/src/open_r1/trainer/grpo_trainer.py` (and `vllm_grpo_trainer_modified.py`):
    - length: if more than one completion of the group has accuracy > 0.1, each of those with
      320 <= completion tokens (EOS included) <= 512 gets +0.2. Needs the group, so it lives in
      `GROUP_REGISTRY` with the signature `fn(*, accuracies, lengths, **config) -> list[float]`.
    - The T-GRPO temporal bonus is a pure array function beside the advantages:
      `vlmm_jax.rl.temporal_bonus`.
  * DAPO soft overlong punishment (paper Eq. 13; huggingface/trl `trl/rewards/other_rewards.py`;
    volcengine/verl `verl/workers/reward_manager/dapo.py`): 0 up to `max_length - cache_length`,
    then linear down to `-factor` at `max_length`, `-factor` beyond (verl keeps decreasing; it
    never sees lengths beyond its cap). `cache_length == 0` gives a hard `-factor` beyond max.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vlmm_jax.eval import answers, metrics

__all__ = [
    "GROUP_REGISTRY",
    "REGISTRY",
    "Reward",
    "accuracy",
    "bbox_iou",
    "format_reward",
    "length_bonus",
    "overlong_penalty",
    "soft_overlong_penalty",
    "tiou",
    "tiou_v2",
    "weighted_sum",
]

Reward = Callable[[str, Mapping[str, Any]], float]


# ----------------------------------------------------------------------------- example side
def _field(example: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in example and example[name] is not None:
            return example[name]
    raise ValueError(f"example needs one of the fields {names}; it has {sorted(example)}")


def _gt_text(example: Mapping[str, Any]) -> str:
    sol = _field(example, "solution")
    if isinstance(sol, bool) or not isinstance(sol, str | numbers.Real):
        raise ValueError(f"example 'solution' must be a string or number, got {sol!r}")
    sol = str(sol)
    block = answers.answer_block(sol)
    return sol.strip() if block is None else block


def _gt_number(text: str, problem_type: str) -> float:
    value = answers.parse_number(text)
    if value is None:
        raise ValueError(f"{problem_type!r} example has a non-numeric solution {text!r}")
    return value


def _pair(value: Any, what: str) -> tuple[float, float]:
    if isinstance(value, str):
        parsed = answers.extract_interval(answers.answer_span(value))
        if parsed is None:
            raise ValueError(f"cannot read an interval from {what} {value!r}")
        value = parsed
    try:
        start, end = (float(v) for v in value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be [start, end] seconds, got {value!r}") from e
    if not (math.isfinite(start) and math.isfinite(end) and start <= end):
        raise ValueError(f"{what} must be finite with start <= end, got {value!r}")
    return start, end


def _gt_interval(example: Mapping[str, Any]) -> tuple[float, float]:
    key = "timestamp" if example.get("timestamp") is not None else "solution"
    return _pair(_field(example, key), f"example {key!r}")


def _box(value: Any, what: str) -> tuple[float, ...]:
    try:
        box = tuple(float(v) for v in value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be [x1, y1, x2, y2], got {value!r}") from e
    if len(box) != 4 or not all(map(math.isfinite, box)):
        raise ValueError(f"{what} must be 4 finite numbers [x1, y1, x2, y2], got {value!r}")
    return box


def _gt_boxes(example: Mapping[str, Any]) -> tuple[list[tuple[float, ...]], bool]:
    """The gt boxes and whether it is a track (a list of per-frame boxes)."""
    sol = _field(example, "solution")
    if isinstance(sol, Mapping):  # VideoChat-R1 tracking: {"answer": [[x1, y1, x2, y2], ...]}
        sol = _field(sol, "answer")
    if hasattr(sol, "tolist"):  # NumPy arrays
        sol = sol.tolist()
    if isinstance(sol, str):
        boxes = answers.extract_boxes(answers.answer_span(sol))
        if not boxes:
            raise ValueError(f"cannot read a box from example 'solution' {sol!r}")
        return boxes, len(boxes) > 1
    if isinstance(sol, Sequence) and sol and all(isinstance(b, Sequence) for b in sol):
        return [_box(b, f"example 'solution' frame {i}") for i, b in enumerate(sol)], True
    return [_box(sol, "example 'solution'")], False


# ----------------------------------------------------------------------------- rewards
def format_reward(completion: str, example: Mapping[str, Any]) -> float:
    """1.0 if the whole (stripped) completion is `<think>...</think><answer>...</answer>`."""
    del example
    return float(isinstance(completion, str) and answers.is_think_answer(completion))


def _multiple_choice(pred: str, gt: str, example: Mapping[str, Any]) -> float:
    return float(pred.strip() == gt.strip())


def _numerical(pred: str, gt: str, example: Mapping[str, Any]) -> float:
    gt_number = _gt_number(gt, "numerical")
    if ("." in gt or "," in gt) != ("." in pred or "," in pred):
        return 0.0
    return metrics.numerical_match(answers.parse_number(pred), gt_number)


def _ocr(pred: str, gt: str, example: Mapping[str, Any]) -> float:
    return min(1.0, max(0.0, 1.0 - metrics.word_error_rate(gt, pred)))


def _free_form(pred: str, gt: str, example: Mapping[str, Any]) -> float:
    scores = metrics.rouge_f(gt, pred)
    return min(1.0, max(0.0, sum(scores.values()) / len(scores)))


def _regression(pred: str, gt: str, example: Mapping[str, Any]) -> float:
    g = _gt_number(gt, "regression")
    o = answers.parse_number(pred)
    if o is None:
        return 0.0
    rel = (abs(o - g) + 1e-9) / (abs(g) + 1e-9)
    return 1.0 - min(1.0, max(0.0, rel)) if math.isfinite(rel) else 0.0


_QA = {
    "multiple choice": _multiple_choice,
    "numerical": _numerical,
    "OCR": _ocr,
    "free-form": _free_form,
    "regression": _regression,
}


def tiou(completion: str, example: Mapping[str, Any]) -> float:
    """Time-R1's temporal IoU of the last `s to e` in the last `<answer>` block, in [0, 1]."""
    gt = _gt_interval(example)
    pred = _pred_interval(completion)
    return metrics.temporal_iou(pred, gt)


def tiou_v2(completion: str, example: Mapping[str, Any]) -> float:
    """Time-R1's IoU scaled by `(1 - |Δstart| / D)(1 - |Δend| / D)` (factors clipped), in [0, 1]."""
    gt = _gt_interval(example)
    duration = _field(example, "duration")
    if isinstance(duration, bool) or not isinstance(duration, numbers.Real):
        raise ValueError(f"example 'duration' must be a number of seconds, got {duration!r}")
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"example 'duration' must be finite and > 0, got {duration!r}")
    pred = _pred_interval(completion)
    iou = metrics.temporal_iou(pred, gt)
    if iou <= 0.0:
        return 0.0
    start_factor = 1.0 - abs(gt[0] - pred[0]) / duration
    end_factor = 1.0 - abs(gt[1] - pred[1]) / duration
    return iou * min(1.0, max(0.0, start_factor)) * min(1.0, max(0.0, end_factor))


def _pred_interval(completion: Any) -> tuple[float, float] | None:
    if not isinstance(completion, str):
        return None
    block = answers.answer_block(completion, which="last")
    return None if block is None else answers.extract_interval(block, strict=True)


def bbox_iou(completion: str, example: Mapping[str, Any]) -> float:
    """IoU of the first box in the first `<answer>` block; for a track, mean per-frame IoU."""
    gts, is_track = _gt_boxes(example)
    block = answers.answer_block(completion) if isinstance(completion, str) else None
    if block is None:
        return 0.0
    if is_track:
        return metrics.mean_box_iou(answers.extract_boxes(block), gts)
    return metrics.box_iou(answers.extract_box(block), gts[0])


def accuracy(completion: str, example: Mapping[str, Any]) -> float:
    """Video-R1's accuracy by `problem_type`, plus `temporal grounding` (tiou) and `spatial
    grounding` (bbox_iou); in [0, 1]."""
    problem_type = _field(example, "problem_type")
    if problem_type == "temporal grounding":
        return tiou(completion, example)
    if problem_type == "spatial grounding":
        return bbox_iou(completion, example)
    if problem_type not in _QA:
        known = sorted([*_QA, "temporal grounding", "spatial grounding"])
        raise ValueError(f"unknown example 'problem_type' {problem_type!r}; known: {known}")
    gt = _gt_text(example)
    if problem_type in ("numerical", "regression"):
        _gt_number(gt, problem_type)  # A bad example raises whatever the completion is.
    pred = answers.answer_block(completion) if isinstance(completion, str) else None
    return 0.0 if pred is None else float(_QA[problem_type](pred, gt, example))


REGISTRY: dict[str, Reward] = {
    "format": format_reward,
    "accuracy": accuracy,
    "tiou": tiou,
    "tiou_v2": tiou_v2,
    "bbox_iou": bbox_iou,
}


def weighted_sum(weights: Mapping[str, float]) -> Reward:
    """`fn(completion, example) = sum(w * REGISTRY[name](completion, example))` from a config.

    Raises:
      ValueError: at construction, for a name not in `REGISTRY` or a non-finite weight.
    """
    unknown = sorted(set(weights) - set(REGISTRY))
    if unknown:
        raise ValueError(f"unknown reward names {unknown}; REGISTRY has {sorted(REGISTRY)}")
    items = [(REGISTRY[name], float(w)) for name, w in weights.items()]
    if not all(math.isfinite(w) for _, w in items):
        raise ValueError(f"reward weights must be finite, got {dict(weights)}")

    def reward(completion: str, example: Mapping[str, Any]) -> float:
        return math.fsum(w * fn(completion, example) for fn, w in items)

    reward.__name__ = "weighted_sum_" + "_".join(weights)
    return reward


# ----------------------------------------------------------------------------- group shaping
def length_bonus(
    *,
    accuracies: Sequence[float],
    lengths: Sequence[int],
    min_tokens: int = 320,
    max_tokens: int = 512,
    bonus: float = 0.2,
    threshold: float = 0.1,
    min_correct: int = 2,
) -> list[float]:
    """Video-R1's length bonus for one group of completions of the same prompt.

    Args:
      accuracies: `[G]` accuracy rewards (before any temporal bonus).
      lengths: `[G]` completion lengths in tokens, EOS included (Video-R1's `completion_mask`).
      min_tokens, max_tokens: the inclusive token range that earns the bonus.
      bonus: added to each qualifying completion.
      threshold: accuracy above which a completion counts as correct.
      min_correct: the bonus applies only if at least this many are correct (Video-R1: > 1).
    Returns:
      `[G]` additive bonuses (0 or `bonus`).
    """
    if len(accuracies) != len(lengths):
        raise ValueError(f"{len(accuracies)} accuracies but {len(lengths)} lengths")
    correct = [a > threshold for a in accuracies]
    if sum(correct) < min_correct:
        return [0.0] * len(lengths)
    return [
        bonus if ok and min_tokens <= n <= max_tokens else 0.0
        for ok, n in zip(correct, lengths, strict=True)
    ]


def soft_overlong_penalty(
    length: int, *, max_length: int, cache_length: int, factor: float = 1.0
) -> float:
    """DAPO's soft overlong punishment of one completion, in [-factor, 0]."""
    if not 0 <= cache_length <= max_length:
        raise ValueError(f"need 0 <= cache_length <= max_length, got {cache_length}, {max_length}")
    expected = max_length - cache_length
    if length <= expected:
        return 0.0
    if length > max_length:
        return -factor
    return factor * (expected - length) / cache_length


def overlong_penalty(
    *,
    lengths: Sequence[int],
    max_length: int,
    cache_length: int,
    factor: float = 1.0,
    accuracies: Sequence[float] | None = None,
) -> list[float]:
    """`soft_overlong_penalty` for each completion (group signature; `accuracies` unused)."""
    del accuracies
    kw = dict(max_length=max_length, cache_length=cache_length, factor=factor)
    return [soft_overlong_penalty(n, **kw) for n in lengths]


GROUP_REGISTRY: dict[str, Callable[..., list[float]]] = {
    "length": length_bonus,
    "overlong": overlong_penalty,
}
