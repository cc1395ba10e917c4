"""Generation-based evaluation: sample answers for prompt batches, score them, aggregate.

Per example the score is the `accuracy` reward of `vlmm_jax.rewards` (exact letter / number for
QA types, 1 - relative error for regression, IoU for grounding); `accuracy` in the summary is
its mean. Temporal grounding also reports mIoU and R@0.5 (IoU > 0.5, Time-R1's comparison),
spatial grounding the mean box IoU, and every stage the mean response length in tokens and the
fraction of well-formed `<think>...</think><answer>...</answer>` completions; every accuracy
comes with its 95% bootstrap interval over questions (`eval.baselines.bootstrap_ci`).
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import tqdm

from vlmm_jax import hosts
from vlmm_jax.data.packing import prompt_arrays
from vlmm_jax.eval import answers, metrics
from vlmm_jax.eval.baselines import bootstrap_ci
from vlmm_jax.inference.sampler import Sampler
from vlmm_jax.inference.sampling import Greedy
from vlmm_jax.policy import Policy
from vlmm_jax.rewards import REGISTRY, batch_scores

GROUNDING = ("temporal grounding", "spatial grounding")


def greedy_generate(
    sampler: Sampler, policy: Policy, decode: Callable[[Sequence[int]], str]
) -> Callable[[dict], tuple[list[str], list[int]]]:
    """`batch -> (completions, lengths)`: greedy decoding of a whole RL-mode prompt batch (rows
    layout; on several hosts every host holds the same batch and gets every completion) with
    `policy`. The one greedy path of training evals and the evaluation job; rows past the
    batch's examples (a final partial batch) are decoded and dropped."""

    def generate(batch):
        n = len(batch["examples"])
        prompts = hosts.global_rows(prompt_arrays(batch), policy.mesh, host_rows=False)
        out = sampler(policy, prompts, method=Greedy())
        tokens, lengths = hosts.all_rows(out.tokens)[:n], hosts.all_rows(out.lengths)[:n]
        return [decode(t[:k]) for t, k in zip(tokens, lengths, strict=True)], lengths.tolist()

    return generate


def reward_score(reward: str, completion: str, reward_example) -> float:
    """The `reward` of one completion against a reward example (`Example.to_reward_example`);
    a reward that fails scores 0 (`rewards.batch_scores`)."""
    return float(batch_scores(reward, [completion], [reward_example])[0][0])


def score(completion: str, example, reward: str = "accuracy") -> dict[str, Any]:
    """The `reward` (default `accuracy`, `reward_score`), format flag and (temporal grounding)
    IoU of one completion."""
    reward_example = example.to_reward_example()
    out = {
        "score": reward_score(reward, completion, reward_example),
        "format": REGISTRY["format"](completion, reward_example),
        "prediction": answers.answer_span(completion),
    }
    if example.problem_type == "temporal grounding":
        out["iou"] = REGISTRY["tiou"](completion, reward_example)
    return out


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Overall and per-category figures from per-example records (`score`, `category`, ...)."""
    if not records:
        return {"accuracy": 0.0, "count": 0}
    by_cat: dict[str, list[float]] = collections.defaultdict(list)
    for r in records:
        by_cat[r["category"]].append(r["score"])
    scores = [r["score"] for r in records]
    out: dict[str, Any] = {
        "accuracy": float(np.mean(scores)),
        "accuracy_ci": list(bootstrap_ci(scores)),
        "count": len(records),
        "format": float(np.mean([r["format"] for r in records])),
        "response_tokens": float(np.mean([r["length"] for r in records])),
        "by_category": {k: float(np.mean(v)) for k, v in sorted(by_cat.items())},
        "by_category_ci": {k: list(bootstrap_ci(v)) for k, v in sorted(by_cat.items())},
    }
    ious = [r["iou"] for r in records if "iou" in r]
    if ious:
        g = metrics.grounding_metrics(ious)
        out["temporal_mIoU"] = float(g["mIoU"].value)
        out["temporal_R@0.5"] = float(g["R@0.5"].value)
    boxes = [r["score"] for r in records if r["problem_type"] == "spatial grounding"]
    if boxes:
        out["box_IoU"] = float(np.mean(boxes))
    samples = [r["samples"] for r in records if "samples" in r]
    if samples:
        out["samples_per_question"] = float(np.mean(samples))
    return out


def evaluate(
    generate: Callable[[dict], tuple[list[str], list[int]]],
    batches: Iterable[dict],
    *,
    limit: int | None = None,
    progress: str | None = None,
    reward: str = "accuracy",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Runs `generate(batch) -> (completions, lengths)` over prompt batches and scores them.

    Args:
      generate: one completion (text) and its token count per prompt of the batch.
      batches: RL-mode prompt batches (`vlmm_jax.data.pipeline`), carrying `examples`.
      limit: stop after this many examples.
      progress: a tqdm bar with this label (over `limit` examples when given).
      reward: the `rewards.REGISTRY` name each completion is scored with.
    Returns:
      (per-example records, summary).
    """
    records: list[dict[str, Any]] = []
    bar = tqdm.tqdm(total=limit, desc=progress, unit="q", disable=progress is None)
    for batch in batches:
        completions, lengths = generate(batch)
        bar.update(len(completions))
        for ex, text, n in zip(batch["examples"], completions, lengths, strict=True):
            records.append(
                {
                    "id": ex.id,
                    "category": ex.category or ex.problem_type,
                    "problem_type": ex.problem_type,
                    "answer": ex.answer,
                    "completion": text,
                    "length": int(n),
                    **score(text, ex, reward),
                }
            )
        if limit is not None and len(records) >= limit:
            records = records[:limit]
            break
    bar.close()
    return records, summarize(records)


def write_predictions(path: str, records: Sequence[dict[str, Any]]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")


def baseline_rows(stages: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The baselines beside the stages, as table rows: `prior` (the text-only priors, the
    same for every stage: taken from the first that has them) and `<stage> / <ablation>`."""
    rows: dict[str, dict[str, Any]] = {}
    prior = next((s["prior"] for s in stages.values() if "accuracy" in s.get("prior", {})), None)
    if prior is not None:
        rows["prior (text only)"] = prior
    for name, s in stages.items():
        for kind, figures in s.get("ablations", {}).items():
            if "accuracy" in figures:
                rows[f"{name} / {kind}"] = figures
    return rows


def markdown_table(stages: dict[str, dict[str, Any]]) -> str:
    """Stage x metric table: overall accuracy (with its 95% interval), per category, grounding
    figures, lengths; then the baselines (`baseline_rows`)."""
    rows = {**stages, **baseline_rows(stages)}
    cats = sorted({c for s in rows.values() for c in s.get("by_category", {})})
    extra = [
        k
        for k in (
            "temporal_mIoU",
            "temporal_R@0.5",
            "box_IoU",
            "response_tokens",
            "samples_per_question",
        )
        if any(k in s for s in stages.values())
    ]
    head = ["stage", "accuracy", *cats, *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in rows.items():
        accuracy = _fmt(s.get("accuracy"))
        if s.get("accuracy_ci"):
            accuracy += " [{:.2f}, {:.2f}]".format(*s["accuracy_ci"])
        row = [name, accuracy]
        row += [_fmt(s.get("by_category", {}).get(c)) for c in cats]
        row += [_fmt(s.get(k)) for k in extra]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)
