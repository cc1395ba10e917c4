"""Run strategies over questions, and report accuracy against average compute (table + PNG)."""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import tqdm

from vlmm_jax import rewards
from vlmm_jax.inference.tts.generator import Generator
from vlmm_jax.inference.tts.strategies import Question, Result, Strategy

Score = Callable[[str, Mapping[str, Any]], float]


def evaluate(
    strategies: Sequence[Strategy],
    questions: Sequence[Question],
    generator: Generator,
    rng: jax.Array,
    *,
    score: Score | None = None,
    batch_size: int = 1,
    progress: bool = False,
) -> dict[str, list[Result]]:
    """Runs every strategy on every question; `Result.score = score(result.completion, example)`,
    and the same for each of its `Result.at_budget` results.

    The default score reads answers the way the vote did: `rewards.accuracy` (Video-R1's rule
    per `problem_type`, IoU for grounding), or `rewards.accuracy_lenient` for a question with
    `lenient=True`. Question q uses the key `fold_in(rng, q)` under every strategy, whatever
    `batch_size` (questions per `Strategy.run`, whose generation is one batch). `progress`
    shows a tqdm bar per strategy.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out: dict[str, list[Result]] = {}
    for strategy in strategies:
        results: list[Result] = []
        bar = tqdm.tqdm(total=len(questions), desc=strategy.name, unit="q", disable=not progress)
        for lo in range(0, len(questions), batch_size):
            chunk = questions[lo : lo + batch_size]
            keys = [jax.random.fold_in(rng, q) for q in range(lo, lo + len(chunk))]
            for question, r in zip(chunk, strategy.run(chunk, generator, keys), strict=True):
                results.append(_scored(r, score, question))
            bar.update(len(chunk))
        bar.close()
        out[strategy.name] = results
    return out


def _scored(result: Result, score: Score | None, question: Question) -> Result:
    """`result` and its smaller budgets with their scores (see `evaluate`)."""
    fn = score or rewards.REGISTRY["accuracy_lenient" if question.lenient else "accuracy"]
    value = float(fn(result.completion, question.example))
    smaller = {k: _scored(v, fn, question) for k, v in result.at_budget.items()}
    return dataclasses.replace(result, score=value, at_budget=smaller)


def summarize_results(results: Mapping[str, Sequence[Result]]) -> list[dict[str, Any]]:
    """One row per strategy: accuracy (mean score) and mean samples/tokens/frames/prefills."""
    rows = []
    for name, rs in results.items():
        n = max(1, len(rs))
        scores = [r.score for r in rs if r.score is not None]
        rows.append(
            {
                "strategy": name,
                "questions": len(rs),
                "accuracy": math.fsum(scores) / len(scores) if scores else float("nan"),
                **{
                    k: math.fsum(getattr(r.spent, k) for r in rs) / n
                    for k in ("samples", "tokens", "frames", "prefills")
                },
            }
        )
    return rows


def _family(name: str) -> str:
    return name.split("@")[0]


def report(
    results: Mapping[str, Sequence[Result]],
    *,
    x: str = "tokens",
    path: str | None = None,
    title: str = "Test-time scaling: accuracy vs compute",
) -> tuple[str, bytes]:
    """A markdown table and a PNG plot of accuracy against average compute per question.

    Args:
      results: strategy name -> scored results (from `evaluate`). Names `family@budget` of the
        same family are joined by a line in the plot, in order of compute.
      x: the compute axis: "tokens" (generated), "samples", "frames" or "prefills".
      path: where to write the PNG as well (optional).
    Returns:
      (markdown, png bytes).
    """
    if x not in ("tokens", "samples", "frames", "prefills"):
        raise ValueError(f"x must be tokens, samples, frames or prefills, got {x!r}")
    rows = summarize_results(results)
    header = "| strategy | questions | accuracy | samples/q | tokens/q | frames/q | prefills/q |"
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['strategy']} | {r['questions']} | {r['accuracy']:.3f} | {r['samples']:.1f} "
            f"| {r['tokens']:.1f} | {r['frames']:.1f} | {r['prefills']:.1f} |"
        )
    markdown = "\n".join(lines) + "\n"

    from vlmm_jax.plots import figure

    fig = figure(figsize=(6.4, 4.4), dpi=100)
    ax = fig.subplots()
    families: dict[str, list[dict]] = {}
    for r in rows:
        families.setdefault(_family(r["strategy"]), []).append(r)
    for fam, members in families.items():
        members = sorted(members, key=lambda r: r[x])
        ax.plot([r[x] for r in members], [r["accuracy"] for r in members], "o-", label=fam)
        for r in members:
            budget = r["strategy"][len(fam) :].lstrip("@")
            if budget:
                ax.annotate(
                    budget,
                    (r[x], r["accuracy"]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=8,
                )
    ax.set_xlabel(f"average {x} per question")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    png = buf.getvalue()
    if path is not None:
        with open(path, "wb") as f:
            f.write(png)
    return markdown, png
