"""Run outputs in the workdir: `results.json` (figures per stage) and `metrics.jsonl`."""

from __future__ import annotations

import json
import math
import os
from typing import Any


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def write_stage_results(workdir: str, stage: str, figures: dict[str, Any]) -> str:
    """Merges `figures` into `workdir/results.json` under `stages[stage]`; returns the path."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "results.json")
    results = {"stages": {}}
    if os.path.exists(path):
        with open(path) as f:
            results = json.load(f)
    results.setdefault("stages", {})[stage] = _clean(figures)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    os.replace(tmp, path)  # atomic: a killed run never leaves half a file
    return path


def append_metrics(workdir: str, record: dict[str, Any]) -> None:
    """Appends one JSON line to `workdir/metrics.jsonl`."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(_clean(record), sort_keys=True) + "\n")
