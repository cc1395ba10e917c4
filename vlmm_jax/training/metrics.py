"""Metric output: `metrics.jsonl`, TensorBoard events (tensorboardX, no TensorFlow), a progress bar.

Steps return sums plus denominators; `normalize` turns them into means on the host.
"""

from __future__ import annotations

import math
import time

import jax
import numpy as np
import tqdm

from vlmm_jax.results import append_metrics


def normalize(sums: dict) -> dict[str, float]:
    """`loss_sum / tokens` -> `loss`, `correct / tokens` -> `token_accuracy`; norms pass through."""
    host = {k: float(np.asarray(v)) for k, v in jax.device_get(sums).items()}
    tokens = max(host.get("tokens", 0.0), 1.0)
    out = {k: v for k, v in host.items() if k not in ("loss_sum", "correct")}
    if "loss_sum" in host:
        out["loss"] = host["loss_sum"] / tokens
    if "correct" in host:
        out["token_accuracy"] = host["correct"] / tokens
    return out


class MetricWriter:
    """Writes each step's figures to jsonl and TensorBoard, and drives a tqdm bar on process 0."""

    def __init__(self, workdir: str, stage: str, total_steps: int, initial_step: int = 0):
        self.workdir, self.stage = workdir, stage
        self.main = jax.process_index() == 0
        self.tb = None
        if self.main:  # imported here: tensorboardX imports torch when it is installed (~5 s)
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(f"{workdir}/tensorboard/{stage}")
        self.bar = tqdm.tqdm(
            total=total_steps,
            initial=initial_step,
            desc=stage,
            disable=not self.main,
            dynamic_ncols=True,
        )
        self.last_time = time.perf_counter()

    def write(self, step: int, figures: dict[str, float], *, prefix: str = "train"):
        if not self.main:
            return
        record = {"stage": self.stage, "split": prefix, "step": step, **figures}
        append_metrics(self.workdir, record)
        for k, v in figures.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.tb.add_scalar(f"{prefix}/{k}", v, step)

    def tick(
        self, step: int, figures: dict[str, float], tokens: float, show: tuple[str, ...] = ("loss",)
    ):
        """Advances the bar to `step`, showing the `show` figures present and tokens/s."""
        now = time.perf_counter()
        tok_s = tokens / max(now - self.last_time, 1e-9)
        self.last_time = now
        figures["tokens_per_s"] = tok_s
        shown = {k: f"{figures[k]:.4f}" for k in show if k in figures}
        self.bar.set_postfix(**shown, tok_s=f"{tok_s:.0f}")
        self.bar.update(step - self.bar.n)

    def close(self):
        self.bar.close()
        if self.tb is not None:
            self.tb.close()
