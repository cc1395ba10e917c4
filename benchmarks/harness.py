"""Side-by-side timing for every benchmark: contenders interleaved (A, B, A, B, ...) after a
warm-up each, medians and min-max ranges, ratios of medians, and the load average around it.

A peer measured while another job steals the cores is not measured side by side: PyTorch's
eager path slows down under contention far more than XLA's, so a busy machine flatters us.
Interleaving spreads any drift over both; `busy` flags a run whose 1-minute load average,
read before the warm-ups (later readings include the benchmark's own load), exceeded half the
cores; the reading after is recorded too.

    from benchmarks.harness import interleaved
    timing = interleaved({"ours": run_ours, "transformers": run_theirs}, repeats=5)
    timing["ratios"]["transformers/ours"]  # > 1: ours is faster

Scripts run both as `python -m benchmarks.X` and as `python benchmarks/X.py`; for the second,
each puts the repository root on `sys.path` before importing `benchmarks`.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np


def load() -> float:
    return float(os.getloadavg()[0])


def interleaved(
    contenders: dict[str, Callable[[], Any]], *, repeats: int = 5, warmup: int = 1
) -> dict[str, Any]:
    """Times each contender `repeats` times, alternating between them, after `warmup` calls
    each (compilation, allocator, caches). Every call must block until its work is done.

    Returns `{"seconds": {name: {"median", "min", "max", "runs"}}, "ratios": {"b/a": median_b
    / median_a for every ordered pair}, "load_before", "load_after", "busy", "repeats"}`.
    """
    if repeats < 5:
        warnings.warn(f"repeats={repeats}: fewer than 5 interleaved repeats", stacklevel=2)
    before = load()  # before any of our own work: a 1-minute average lags, and counts it
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    after = load()
    seconds = {
        name: {
            "median": float(np.median(t)),
            "min": float(np.min(t)),
            "max": float(np.max(t)),
            "runs": [round(x, 4) for x in t],
        }
        for name, t in times.items()
    }
    ratios = {
        f"{b}/{a}": seconds[b]["median"] / seconds[a]["median"]
        for a in contenders
        for b in contenders
        if a != b
    }
    busy = before > (os.cpu_count() or 1) / 2  # `after` includes the benchmark's own load
    if busy:
        warnings.warn(
            f"load average {before:.2f} before the run on {os.cpu_count()} cpus: the machine "
            "was busy; these figures are not side by side",
            stacklevel=2,
        )
    return {
        "seconds": seconds,
        "ratios": ratios,
        "repeats": repeats,
        "load_before": before,
        "load_after": after,
        "busy": busy,
    }


def per_second(timing: dict[str, Any], work: float) -> dict[str, dict[str, float]]:
    """`work` units (tokens, questions) per second of each contender: median and range."""
    return {
        name: {
            "median": work / s["median"],
            "min": work / s["max"],
            "max": work / s["min"],
        }
        for name, s in timing["seconds"].items()
    }
