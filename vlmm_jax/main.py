"""Entry point: `python -m vlmm_jax.main --config=configs/NAME.py --workdir=DIR [--config.x=v]`.

Parses flags and hands the recipe to the job it names (`config.job`); nothing else happens here.
"""

from __future__ import annotations

import runpy
import sys

from absl import app, flags
from ml_collections import config_flags

from vlmm_jax import demo
from vlmm_jax.aot import run_aot
from vlmm_jax.eval.job import evaluate_checkpoint
from vlmm_jax.pipeline import run_pipeline
from vlmm_jax.training.grpo_loop import train_grpo
from vlmm_jax.training.trainer import train_sft

JOBS = {
    "demo": demo.run,
    "sft": train_sft,
    "grpo": train_grpo,
    "eval": evaluate_checkpoint,
    "pipeline": run_pipeline,
    "aot": run_aot,  # compile the recipe's programs for config.aot.topology (see vlmm_jax.aot)
}

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results, metrics and checkpoints go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    if config.job not in JOBS:
        raise app.UsageError(f"config.job={config.job!r} is not one of {sorted(JOBS)}")
    JOBS[config.job](config, _WORKDIR.value)


def check_override_keys(argv: list[str]) -> None:
    """Fails clearly on `--config.a.b=v` overrides naming a field the recipe does not have
    (ml_collections itself only raises a bare AttributeError)."""
    paths = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    overrides = [a[2:].split("=", 1)[0] for a in argv if a.startswith("--config.")]
    if not paths or not overrides:
        return
    config = runpy.run_path(paths[-1].split(":", 1)[0])["get_config"]()
    for key in overrides:
        node, parts = config, key.split(".")[1:]
        for i, part in enumerate(parts):
            if not hasattr(node, "keys") or part not in node:
                where = ".".join(["config", *parts[:i]])
                fields = sorted(node.keys()) if hasattr(node, "keys") else []
                sys.exit(f"--{key}: {where} has no field {part!r} (fields: {fields})")
            node = node[part]


if __name__ == "__main__":
    check_override_keys(sys.argv)
    app.run(main)
