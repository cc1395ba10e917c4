"""Scoring a rollout: the rewards of decoded completions as one batched host step.

`RolloutScorer(rewards, group_rewards, correctness)(texts, examples, lengths, group)` scores
R = B * G completions (prompt-major) and returns `[B, G]` arrays:

  total     sum over `rewards` (name -> weight, `vlmm_jax.rewards.REGISTRY`) of w * reward,
            plus sum over `group_rewards` (`rewards.GROUP_REGISTRY`: Video-R1's length bonus,
            DAPO's overlong penalty) of w * group reward
  correct   the `correctness` reward (default `accuracy`; e.g. `tiou_v2` in a grounding
            recipe): what the group rewards and T-GRPO's temporal bonus count as correct
  parts     each reward and group reward, for the metrics

Nothing here raises on a completion: a reward that raises or returns a non-finite value scores
0 for that completion and is counted in `errors` (`rewards.batch_scores`). Malformed examples
were rejected when the data was read.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vlmm_jax.rewards import GROUP_REGISTRY, REGISTRY, batch_scores

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Scores:
    """`[B, G]` arrays of one rollout batch (see the module docstring)."""

    total: np.ndarray
    correct: np.ndarray
    parts: dict[str, np.ndarray]
    errors: int = 0


class RolloutScorer:
    """The rewards of a GRPO recipe (see the module docstring).

    Args:
      rewards: reward name -> weight (`config.grpo.rewards`).
      group_rewards: group reward name -> `{"weight": w, **kwargs}` (`config.grpo.group_rewards`).
      correctness: the reward whose value counts as correctness (`config.grpo.correctness`).
    Raises:
      ValueError: unknown names, non-finite weights, a group reward without a weight.
    """

    def __init__(
        self,
        rewards: Mapping[str, float],
        group_rewards: Mapping[str, Mapping[str, Any]] | None = None,
        correctness: str = "accuracy",
    ):
        rewards, group_rewards = (
            dict(rewards),
            {k: dict(v) for k, v in (group_rewards or {}).items()},
        )
        unknown = sorted(set(rewards) - set(REGISTRY)) + sorted({correctness} - set(REGISTRY))
        if unknown:
            raise ValueError(
                f"grpo.rewards / grpo.correctness: unknown reward(s) {unknown}; "
                f"known {sorted(REGISTRY)}"
            )
        unknown = sorted(set(group_rewards) - set(GROUP_REGISTRY))
        if unknown:
            raise ValueError(
                f"grpo.group_rewards: unknown reward(s) {unknown}; known {sorted(GROUP_REGISTRY)}"
            )
        for name, spec in group_rewards.items():
            if "weight" not in spec:
                raise ValueError(f"grpo.group_rewards.{name}: needs a `weight`")
            kw = {k: v for k, v in spec.items() if k != "weight"}
            try:  # a misspelt or missing keyword fails here, not as zeros at every step
                GROUP_REGISTRY[name](accuracies=[0.0], lengths=[1], **kw)
            except (TypeError, ValueError) as e:
                raise ValueError(f"grpo.group_rewards.{name}: {e}") from None
        weights = {**rewards, **{k: v["weight"] for k, v in group_rewards.items()}}
        bad = {k: w for k, w in weights.items() if not math.isfinite(float(w))}
        if bad:
            raise ValueError(f"grpo reward weights must be finite, got {bad}")
        self.rewards, self.group_rewards, self.correctness = rewards, group_rewards, correctness

    def correct(self, texts: Sequence[str], examples: Sequence[Mapping]) -> tuple[np.ndarray, int]:
        """`[R]` correctness rewards and the error count."""
        return batch_scores(self.correctness, texts, examples)

    def __call__(
        self,
        texts: Sequence[str],
        examples: Sequence[Mapping],
        lengths: np.ndarray,
        group: int,
    ) -> Scores:
        """Scores R = B * G completions (prompt-major) with their token `lengths [R]`."""
        r = len(texts)
        if len(examples) != r or np.shape(lengths) != (r,) or r % group:
            raise ValueError(
                f"score: {r} completions, {len(examples)} examples, lengths {np.shape(lengths)}, "
                f"group {group}"
            )
        errors, parts = 0, {}
        for name in dict.fromkeys([*self.rewards, self.correctness]):
            parts[name], err = batch_scores(name, texts, examples)
            errors += err
        correct = parts[self.correctness].reshape(-1, group)
        total = sum((w * parts[k] for k, w in self.rewards.items()), np.zeros(r)).reshape(-1, group)
        grouped_lengths = np.asarray(lengths).reshape(-1, group)
        for name, spec in self.group_rewards.items():
            part, err = self._group(name, spec, correct, grouped_lengths)
            errors += err
            parts[name] = part.reshape(-1)
            total = total + spec["weight"] * part
        return Scores(
            total=total,
            correct=correct,
            parts={k: v.reshape(-1, group) for k, v in parts.items()},
            errors=errors,
        )

    @staticmethod
    def _group(name, spec, correct, lengths) -> tuple[np.ndarray, int]:
        kw = {k: v for k, v in spec.items() if k != "weight"}
        out, errors = np.zeros(correct.shape), 0
        for i, (acc, n) in enumerate(zip(correct, lengths, strict=True)):
            try:
                values = GROUP_REGISTRY[name](
                    accuracies=[float(a) for a in acc], lengths=[int(x) for x in n], **kw
                )
                values = np.asarray(values, np.float64).reshape(len(acc))
                if not np.all(np.isfinite(values)):
                    raise ValueError(f"non-finite values {values.tolist()}")
                out[i] = values
            except Exception as e:  # noqa: BLE001 -- a plug-in's bug scores 0, counted
                _log.warning("group reward %r failed on a group (scored 0): %s", name, e)
                errors += len(acc)
        return out, errors
