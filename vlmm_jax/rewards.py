"""Verifiable rewards for GRPO-family training: `REGISTRY[name](completion, example) -> float`.

`example` carries Video-R1's fields (`problem_type`, `solution` such as `"<answer>B</answer>"`,
`options`) and Time-R1's (`timestamp` or `solution` as `[start, end]` seconds, `duration`).
A reward never raises on a completion: anything unparsable (or not a string) scores 0. An example
that `check_example` rejects (unknown `problem_type`, a numeric solution without a number, an
unreadable, reversed or non-finite interval, no box, `duration <= 0`) makes the rewards that read
the bad field raise ValueError. The readers in `vlmm_jax.data.formats` check every record, so bad
data fails when its file is read; in a run, `batch_scores` scores failures 0 and counts them.

The defaults are the reference values; lenient variants have their own names:
  * `format`: Video-R1's `re.fullmatch(r"<think>.*?</think>\\s*<answer>.*?</answer>", c, re.S)`
    on the completion as generated: a leading space or a trailing newline scores 0.
    `format_lenient` strips the completion first, as Time-R1's `main.py` does.
  * `accuracy`: Video-R1's `accuracy_reward`. Completion AND solution are read with its
    `extract_answer`: the first `<answer>` block, stripped, or "" when there is none. So a tagless
    solution is compared with "" (a tagless multiple-choice completion then matches it: "" == ""),
    and a tagless completion answers "" (numerical and regression 0, OCR / free-form: WER / ROUGE
    of ""). `accuracy_lenient`: a tagless solution is used whole and a completion is read from its
    answer span (the first block, else the whole text); multiple choice compares the option letters
    `extract_choice(..., options=example["options"])` reads on both sides ("(B)", "B." and "B" all
    match "B"); numerical and regression read `extract_number` (no decimal-point rule); OCR's WER
    ignores case; temporal grounding reads the lenient `extract_interval` of the last answer span;
    spatial grounding is `bbox_iou`, as in `accuracy`. (The TTS vote keys answers the same ways.)

Plug-ins: `@register("name")` adds `fn(completion, example) -> float` to `REGISTRY`;
`@register("name", batched=True)` adds `fn(completions, examples) -> [R] scores` (e.g. a judge
model scoring a batch), exposed in `REGISTRY` through a per-sample wrapper and called whole by
`batch_scores`; `group=True` adds to `GROUP_REGISTRY`. A config imports the module that registers
them and names them (`config.grpo.rewards = {"name": 1.0}`); nothing is imported from a string.

References read (the code, not summaries), and the choices made where they disagree or break.
(tulerfeng/Video-R1 and volcengine/verl were read from forks stored in the code index:
HarryHsing/Video-R1 and kyoungjunpark/Video-R1; HollowMan6/verl.)
  * tulerfeng/Video-R1 `src/r1-v/src/open_r1/grpo.py` (`accuracy_reward`, `format_reward`):
    - multiple choice: exact string equality of the two stripped answers (`"(B)" != "B"`).
    - numerical: 0 if exactly one of the two strings contains "." or ","; else commas dropped,
      `float()`, equal after `round(x, 2)`.
    - OCR: `1 - WER` clipped to [0, 1]. free-form: mean of ROUGE-1/2/L F (stemmed), clipped.
    - regression: `1 - min(1, max(0, (|o - g| + 1e-9) / (|g| + 1e-9)))`. The one deviation:
      Video-R1 gives a `nan` answer full reward (`max(0.0, nan)` is 0.0), and any answer to a
      ground truth that overflows to inf (`1e310`: inf / inf is nan); here a non-finite answer
      or ground truth scores 0 (an infinite answer scores 0 in both). Kept for parity: `g == 0`
      scores 0.
    - `format` and the block extraction run in linear time (`answers.is_think_answer`,
      `answers.answer_block`), where the regexes backtrack quadratically on megabyte inputs.
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

import logging
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from vlmm_jax.eval import answers, metrics

__all__ = [
    "GROUP_REGISTRY",
    "REGISTRY",
    "Reward",
    "accuracy",
    "accuracy_lenient",
    "batch_scores",
    "bbox_iou",
    "check_example",
    "format_lenient",
    "format_reward",
    "is_batched",
    "length_bonus",
    "overlong_penalty",
    "register",
    "soft_overlong_penalty",
    "tiou",
    "tiou_v2",
    "weighted_sum",
]

Reward = Callable[[str, Mapping[str, Any]], float]
_Batched = Callable[[Sequence[str], Sequence[Mapping[str, Any]]], Sequence[float]]

_log = logging.getLogger(__name__)
_PROBLEM_TYPES = ("multiple choice", "numerical", "OCR", "free-form", "regression")
_PROBLEM_TYPES += ("temporal grounding", "spatial grounding")


# ----------------------------------------------------------------------------- example side
def _field(example: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in example and example[name] is not None:
            return example[name]
    raise ValueError(f"example needs one of the fields {names}; it has {sorted(example)}")


def _problem_type(example: Mapping[str, Any]) -> str:
    problem_type = _field(example, "problem_type")
    if problem_type not in _PROBLEM_TYPES:
        known = sorted(_PROBLEM_TYPES)
        raise ValueError(f"unknown example 'problem_type' {problem_type!r}; known: {known}")
    return problem_type


def _solution(example: Mapping[str, Any]) -> str:
    sol = _field(example, "solution")
    if isinstance(sol, bool) or not isinstance(sol, str | numbers.Real):
        raise ValueError(f"example 'solution' must be a string or number, got {sol!r}")
    return str(sol)


def _gt_strict(example: Mapping[str, Any]) -> str:
    """Video-R1's `extract_answer(solution)`: the first block, stripped, else ""."""
    return answers.answer_block(_solution(example)) or ""


def _gt_lenient(example: Mapping[str, Any]) -> str:
    """The first block of the solution, else the whole solution; stripped."""
    return answers.answer_span(_solution(example))


def _gt_number(example: Mapping[str, Any], problem_type: str) -> float:
    """The lenient reading of a numeric solution; raises if it has no number at all."""
    value = answers.extract_number(_gt_lenient(example))
    if value is None:
        sol = example["solution"]
        raise ValueError(f"{problem_type!r} example 'solution' has no number: {sol!r}")
    return value


def _pair(value: Any, what: str) -> tuple[float, float]:
    parsed = value
    if isinstance(value, str):
        parsed = answers.extract_interval(answers.answer_span(value))
        if parsed is None:
            raise ValueError(f"cannot read an interval from {what} {value!r}")
    try:
        start, end = (float(v) for v in parsed)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be [start, end] seconds, got {value!r}") from e
    if not (math.isfinite(start) and math.isfinite(end) and start <= end):
        raise ValueError(f"{what} must be finite with start <= end, got {value!r}")
    return start, end


def _gt_interval(example: Mapping[str, Any]) -> tuple[float, float]:
    key = "timestamp" if example.get("timestamp") is not None else "solution"
    return _pair(_field(example, key), f"example {key!r}")


def _duration(example: Mapping[str, Any]) -> float:
    duration = _field(example, "duration")
    if isinstance(duration, bool) or not isinstance(duration, numbers.Real):
        raise ValueError(f"example 'duration' must be a number of seconds, got {duration!r}")
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"example 'duration' must be finite and > 0, got {duration!r}")
    return float(duration)


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


def check_example(example: Mapping[str, Any]) -> None:
    """Raises ValueError, naming the field and its value, for an example no reward could score.

    Checks: a known `problem_type`; a `solution` (string or number); for numerical and
    regression, a number in it (`extract_number` of its answer span); for temporal grounding a
    finite `[start, end]` with start <= end (`timestamp`, else `solution`); for spatial grounding
    a box; and `duration` finite and > 0 when present. A solution without `<answer>` tags passes:
    `accuracy` scores it as Video-R1 does (against ""), `accuracy_lenient` reads it whole.
    """
    problem_type = _problem_type(example)
    if problem_type == "temporal grounding":
        _gt_interval(example)
    elif problem_type == "spatial grounding":
        _gt_boxes(example)
    else:
        _solution(example)
        if problem_type in ("numerical", "regression"):
            _gt_number(example, problem_type)
    if example.get("duration") is not None:
        _duration(example)


# ----------------------------------------------------------------------------- format
def format_reward(completion: str, example: Mapping[str, Any]) -> float:
    """1.0 if the completion, as generated, is `<think>...</think>\\s*<answer>...</answer>`."""
    del example
    if not isinstance(completion, str):
        return 0.0
    # Text that starts with "<" and ends with ">" is its own strip(): the check is unstripped.
    ends = completion.startswith("<think>") and completion.endswith("</answer>")
    return float(ends and answers.is_think_answer(completion))


def format_lenient(completion: str, example: Mapping[str, Any]) -> float:
    """`format_reward` of the stripped completion (Time-R1)."""
    del example
    return float(isinstance(completion, str) and answers.is_think_answer(completion))


# ----------------------------------------------------------------------------- QA accuracy
def _multiple_choice(pred: str, gt: str) -> float:
    return float(pred.strip() == gt.strip())


def _numerical(pred: str, gt: str) -> float:
    if ("." in gt or "," in gt) != ("." in pred or "," in pred):
        return 0.0
    return metrics.numerical_match(answers.parse_number(pred), answers.parse_number(gt))


def _ocr(pred: str, gt: str) -> float:
    return min(1.0, max(0.0, 1.0 - metrics.word_error_rate(gt, pred)))


def _free_form(pred: str, gt: str) -> float:
    scores = metrics.rouge_f(gt, pred)
    return min(1.0, max(0.0, sum(scores.values()) / len(scores)))


def _relative(o: float | None, g: float | None) -> float:
    if o is None or g is None:
        return 0.0
    rel = (abs(o - g) + 1e-9) / (abs(g) + 1e-9)
    return 1.0 - min(1.0, max(0.0, rel)) if math.isfinite(rel) else 0.0


def _regression(pred: str, gt: str) -> float:
    return _relative(answers.parse_number(pred), answers.parse_number(gt))


_QA: dict[str, Callable[[str, str], float]] = {
    "multiple choice": _multiple_choice,
    "numerical": _numerical,
    "OCR": _ocr,
    "free-form": _free_form,
    "regression": _regression,
}


def accuracy(completion: str, example: Mapping[str, Any]) -> float:
    """Video-R1's `accuracy_reward` by `problem_type`, plus `temporal grounding` (tiou) and
    `spatial grounding` (bbox_iou); in [0, 1]. Completion and solution are each read as their
    first `<answer>` block, stripped, or "" without one (see the module docstring)."""
    problem_type = _problem_type(example)
    if problem_type == "temporal grounding":
        return tiou(completion, example)
    if problem_type == "spatial grounding":
        return bbox_iou(completion, example)
    if problem_type in ("numerical", "regression"):
        _gt_number(example, problem_type)  # A bad example raises whatever the completion is.
    gt = _gt_strict(example)
    if not isinstance(completion, str):
        return 0.0
    return float(_QA[problem_type](answers.answer_block(completion) or "", gt))


def accuracy_lenient(completion: str, example: Mapping[str, Any]) -> float:
    """`accuracy` with lenient answer reading (option letters, numbers in text, tagless
    solutions and completions; see the module docstring); in [0, 1]."""
    problem_type = _problem_type(example)
    if problem_type == "spatial grounding":
        return bbox_iou(completion, example)
    if problem_type == "temporal grounding":
        gt_interval = _gt_interval(example)
        if not isinstance(completion, str):
            return 0.0
        pred_interval = answers.extract_interval(answers.answer_span(completion, which="last"))
        return metrics.temporal_iou(pred_interval, gt_interval)
    g = _gt_number(example, problem_type) if problem_type in ("numerical", "regression") else None
    gt = _gt_lenient(example)
    if not isinstance(completion, str):
        return 0.0
    pred = answers.answer_span(completion)
    if problem_type == "multiple choice":
        options = example.get("options") or None
        letter = answers.extract_choice(completion, options=options)
        return float(letter is not None and letter == answers.extract_choice(gt, options=options))
    if problem_type == "numerical":
        return metrics.numerical_match(answers.extract_number(pred), g)
    if problem_type == "regression":
        return _relative(answers.extract_number(pred), g)
    if problem_type == "OCR":
        return _ocr(pred.lower(), gt.lower())
    return _free_form(pred, gt)


# ----------------------------------------------------------------------------- grounding
def tiou(completion: str, example: Mapping[str, Any]) -> float:
    """Time-R1's temporal IoU of the last `s to e` in the last `<answer>` block, in [0, 1]."""
    gt = _gt_interval(example)
    pred = _pred_interval(completion)
    return metrics.temporal_iou(pred, gt)


def tiou_v2(completion: str, example: Mapping[str, Any]) -> float:
    """Time-R1's IoU scaled by `(1 - |Δstart| / D)(1 - |Δend| / D)` (factors clipped), in [0, 1]."""
    gt = _gt_interval(example)
    duration = _duration(example)
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


REGISTRY: dict[str, Reward] = {
    "format": format_reward,
    "format_lenient": format_lenient,
    "accuracy": accuracy,
    "accuracy_lenient": accuracy_lenient,
    "tiou": tiou,
    "tiou_v2": tiou_v2,
    "bbox_iou": bbox_iou,
}
_BATCHED: dict[str, _Batched] = {}  # name -> the batched form of a `register(batched=True)`
_WARNED: set[str] = set()  # names whose failures `batch_scores` has logged
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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


# ----------------------------------------------------------------------------- plug-ins
def _per_sample(fn: _Batched) -> Reward:
    def reward(completion: str, example: Mapping[str, Any]) -> float:
        return float(fn([completion], [example])[0])

    reward.__name__ = reward.__qualname__ = getattr(fn, "__name__", "batched_reward")
    reward.__doc__ = fn.__doc__
    return reward


def register(
    name: str, *, batched: bool = False, group: bool = False, overwrite: bool = False
) -> Callable[[Callable], Callable]:
    """Decorator that adds a reward to `REGISTRY` (or `GROUP_REGISTRY`) under `name`.

    Args:
      name: an identifier-like name (`[A-Za-z_][A-Za-z0-9_]*`), as configs will spell it.
      batched: `fn(completions: Sequence[str], examples: Sequence[Mapping]) -> Sequence[float]`
        (`[R]` scores, e.g. a judge model scoring a whole batch). `REGISTRY[name]` becomes the
        per-sample `lambda c, e: fn([c], [e])[0]`; `batch_scores` calls `fn` on the whole batch.
        Otherwise `fn(completion, example) -> float`.
      group: register `fn(*, accuracies, lengths, **kwargs) -> list[float]` in
        `GROUP_REGISTRY` (`config.grpo.group_rewards`) instead.
      overwrite: replace an existing reward of that name (built-ins included).
    Returns:
      The decorator; it returns `fn` unchanged.
    Raises:
      ValueError: a bad name, `batched` with `group`, or (when decorating) a name already
        registered without `overwrite=True`.
    """
    if not (isinstance(name, str) and _NAME.fullmatch(name)):
        raise ValueError(f"reward name must match [A-Za-z_][A-Za-z0-9_]*, got {name!r}")
    if batched and group:
        raise ValueError(f"reward {name!r}: group rewards already see a whole group; drop batched")
    registry = GROUP_REGISTRY if group else REGISTRY

    def decorator(fn: Callable) -> Callable:
        if not callable(fn):
            raise TypeError(f"reward {name!r} must be callable, got {fn!r}")
        if name in registry and not overwrite:
            where = "GROUP_REGISTRY" if group else "REGISTRY"
            raise ValueError(
                f"reward {name!r} is already in {where} ({registry[name]!r}); "
                "pick another name or pass overwrite=True"
            )
        if group:
            GROUP_REGISTRY[name] = fn
        elif batched:
            _BATCHED[name] = fn
            REGISTRY[name] = _per_sample(fn)
        else:
            _BATCHED.pop(name, None)
            REGISTRY[name] = fn
        return fn

    return decorator


def is_batched(name: str) -> bool:
    """Whether `REGISTRY[name]` was registered with `batched=True`; ValueError if unknown."""
    if name not in REGISTRY:
        raise ValueError(f"unknown reward {name!r}; REGISTRY has {sorted(REGISTRY)}")
    return name in _BATCHED


def batch_scores(
    name: str, completions: Sequence[str], examples: Sequence[Mapping[str, Any]]
) -> tuple[np.ndarray, int]:
    """Scores of `R` completions by the reward `name`, where no sample's failure raises.

    An exception or a non-finite value from the reward for one sample scores 0.0 and counts one
    error; for a batched reward, a failing call (or a result that is not `[R]` numbers) scores
    all R as 0 and counts R errors. The first failure of each reward name is logged once, as a
    warning with the exception text.

    Args:
      name: a `REGISTRY` name.
      completions: `[R]` completion texts.
      examples: `[R]` examples, one per completion (repeat an example for its G completions).
    Returns:
      `(scores, errors)`: `[R]` float64 scores and the number of failed samples.
    Raises:
      ValueError: an unknown name, or `len(completions) != len(examples)` (caller errors).
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown reward {name!r}; REGISTRY has {sorted(REGISTRY)}")
    if len(completions) != len(examples):
        raise ValueError(f"{len(completions)} completions but {len(examples)} examples")
    r = len(completions)
    scores, errors, first = np.zeros([r], np.float64), 0, None
    if name in _BATCHED:
        try:
            values = np.asarray(_BATCHED[name](list(completions), list(examples)), np.float64)
            if values.shape != (r,):
                raise ValueError(f"returned shape {values.shape} for {r} completions")
        except Exception as e:  # A reward, whatever it does, must not stop the run.
            errors, first = r, f"{type(e).__name__}: {e}"
        else:
            finite = np.isfinite(values)
            scores[finite] = values[finite]
            errors = int(r - finite.sum())
            if errors:
                first = f"non-finite score {values[~finite][0]} for sample {np.argmin(finite)}"
    else:
        fn = REGISTRY[name]
        for i, (completion, example) in enumerate(zip(completions, examples, strict=True)):
            try:
                value = float(fn(completion, example))
                if not math.isfinite(value):
                    raise ValueError(f"non-finite score {value}")
            except Exception as e:
                errors += 1
                first = first or f"sample {i}: {type(e).__name__}: {e}"
                continue
            scores[i] = value
    if errors and name not in _WARNED:
        _WARNED.add(name)
        msg = "reward %r: %d of %d samples failed and scored 0 (logged once per reward); first: %s"
        _log.warning(msg, name, errors, r, first)
    return scores, errors


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
