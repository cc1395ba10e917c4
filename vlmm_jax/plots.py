"""PNG plots of a run: training curves from `metrics.jsonl`, accuracy against compute."""

from __future__ import annotations

import collections
import json
from collections.abc import Mapping
from typing import Any

# (panel title, metric key, splits) of `metrics.jsonl` rows; one line per (stage, split).
CURVES = (
    ("loss", "loss", ("train", "eval")),
    ("token accuracy", "token_accuracy", ("train", "eval")),
    ("reward", "reward", ("train",)),
    ("accuracy", "accuracy", ("train", "eval")),
    ("response tokens", "response_tokens", ("train",)),
    ("policy entropy", "entropy", ("train",)),
)


def figure(**kwargs):
    """A matplotlib `Figure` without pyplot: no global backend switch, no GUI, nothing to close
    (a notebook's inline plots keep working)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def read_metrics(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def training_curves(metrics_path: str, out_path: str) -> list[str]:
    """One panel per metric of `CURVES` that the run logged; returns the panels drawn."""
    series: dict[str, dict[str, list[tuple[int, float]]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )
    for row in read_metrics(metrics_path):
        for title, key, splits in CURVES:
            if row.get("split") in splits and isinstance(row.get(key), (int, float)):
                label = f"{row.get('stage', '?')} {row['split']}"
                series[title][label].append((row["step"], float(row[key])))
    panels = [t for t, _, _ in CURVES if t in series]
    cols = min(3, max(1, len(panels)))
    rows = -(-max(1, len(panels)) // cols)
    fig = figure(figsize=(4.2 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, title in zip(axes.ravel(), panels, strict=False):
        for label, points in series[title].items():
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_path, dpi=90)
    return panels


def tokens_per_question(stage: Mapping[str, Any]) -> float:
    """Generated tokens per question: a TTS stage's spent compute, else one greedy answer."""
    spent = stage.get("compute_per_question")
    return float(spent["tokens"]) if spent else float(stage.get("response_tokens", 0.0))


def accuracy_vs_compute(stages: Mapping[str, Mapping[str, Any]], out_path: str) -> None:
    """Accuracy against generated tokens per question, one labelled point per stage."""
    fig = figure(figsize=(6.4, 4.4), dpi=90)
    ax = fig.subplots()
    for name, stage in stages.items():
        x, y = tokens_per_question(stage), float(stage["accuracy"])
        ax.plot([x], [y], "o")
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("generated tokens per question (log)")
    ax.set_ylabel("accuracy (held-out)")
    ax.set_title("Test-time scaling: accuracy vs compute")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path)
