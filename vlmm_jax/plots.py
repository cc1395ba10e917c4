"""PNG plots of a run: training curves from `metrics.jsonl`, accuracy against samples."""

from __future__ import annotations

import collections
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# (panel title, metric key, splits) of `metrics.jsonl` rows; one line per (stage, split).
CURVES = (
    ("loss", "loss", ("train", "eval")),
    ("token accuracy", "token_accuracy", ("train", "eval")),
    ("reward", "reward", ("train",)),
    ("accuracy", "accuracy", ("train", "eval")),
    ("response tokens", "response_tokens", ("train",)),
    ("policy entropy", "entropy", ("train",)),
)
# A GRPO stage's (rows with a reward) "loss" is the clipped surrogate of advantages that sum to
# about zero per group: it says nothing about progress, so it is not drawn.
RL_HIDDEN = ("loss",)


def figure(**kwargs):
    """A matplotlib `Figure` without pyplot: no global backend switch, no GUI, nothing to close
    (a notebook's inline plots keep working)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def read_metrics(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def moving_average(values: Sequence[float], half: int) -> np.ndarray:
    """Centred mean over `2 * half + 1` values, shrinking at the ends: `out[i]` is the mean of
    `values[max(0, i - half) : i + half + 1]` (no lag, unlike a trailing mean)."""
    x = np.cumsum(np.concatenate([[0.0], np.asarray(values, np.float64)]))
    i = np.arange(len(values))
    lo, hi = np.maximum(0, i - half), np.minimum(len(values), i + half + 1)
    return (x[hi] - x[lo]) / (hi - lo)


def smoothing_half_width(points: int) -> int:
    """Half-width of a curve's moving average: a tenth of its points, 1 to 12 steps."""
    return int(np.clip(points // 10, 1, 12))


def training_curves(metrics_path: str, out_path: str) -> dict[str, list[str]]:
    """One panel per metric of `CURVES` that the run logged; returns each drawn panel's curves
    (`"<stage> <split>"` labels).

    Train curves of at least 5 points are drawn raw (faint) under their moving average (bold,
    `smoothing_half_width`); eval curves raw. GRPO stages' `RL_HIDDEN` metrics are left out."""
    metrics = read_metrics(metrics_path)
    rl_stages = {r.get("stage") for r in metrics if isinstance(r.get("reward"), (int, float))}
    series: dict[str, dict[str, list[tuple[int, float]]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )
    for row in metrics:
        for title, key, splits in CURVES:
            if key in RL_HIDDEN and row.get("stage") in rl_stages:
                continue
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
            steps, values = [p[0] for p in points], [p[1] for p in points]
            if label.endswith(" train") and len(points) >= 5:
                (raw,) = ax.plot(steps, values, alpha=0.25, linewidth=0.8)
                half = smoothing_half_width(len(points))
                smooth = moving_average(values, half)
                ax.plot(
                    steps,
                    smooth,
                    color=raw.get_color(),
                    linewidth=2,
                    label=f"{label} ({2 * half + 1}-step mean)",
                )
            else:
                ax.plot(steps, values, marker="." if len(points) < 5 else None, label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_path, dpi=90)
    return {title: list(series[title]) for title in panels}


def scaling_points(stage: Mapping[str, Any]) -> list[tuple[float, float, float, float]]:
    """(samples per question, accuracy, ci low, ci high) of a stage: its `scaling` curve (a
    TTS stage, every budget up to its own), else its one greedy point."""
    rows = stage.get("scaling") or [
        {
            "samples": stage.get("samples_per_question", 1.0),
            "accuracy": stage["accuracy"],
            "accuracy_ci": stage.get("accuracy_ci") or [stage["accuracy"]] * 2,
        }
    ]
    points = [
        (float(r["samples"]), float(r["accuracy"]), *map(float, r["accuracy_ci"])) for r in rows
    ]
    return sorted(points)


def accuracy_vs_samples(stages: Mapping[str, Mapping[str, Any]], out_path: str) -> None:
    """Accuracy (95% bootstrap intervals as error bars) against samples per question (log2):
    one line per TTS strategy through its budgets 1, 2, 4, ..., one point per greedy stage."""
    fig = figure(figsize=(6.4, 4.4), dpi=90)
    ax = fig.subplots()
    for name, stage in stages.items():
        x, y, lo, hi = (list(v) for v in zip(*scaling_points(stage), strict=True))
        err = [
            [max(0.0, a - b) for a, b in zip(y, lo, strict=True)],
            [max(0.0, b - a) for a, b in zip(y, hi, strict=True)],
        ]
        ax.errorbar(x, y, yerr=err, fmt="o-" if len(x) > 1 else "s", capsize=3, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("samples per question (log2)")
    ax.set_ylabel("accuracy (held-out, 95% interval)")
    ax.set_title("Test-time scaling: accuracy vs samples")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path)
