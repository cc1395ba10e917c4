"""The main job: SFT -> GRPO -> test-time scaling on one dataset, each pillar's gain in one table.

    python -m vlmm_jax.main --config=configs/quickstart.py --workdir=DIR

Stages, in order; each is skipped when a previous run of the same workdir finished it (a
training stage resumes from its latest checkpoint when it was interrupted):

  untrained     greedy accuracy of the randomly initialised model (the floor)
  align_train   vision-language alignment (when `config.align.train.steps` > 0): SFT from
                scratch on every training video's dense perception target (objects, colours,
                shapes, grid cells, when each is seen; `data.synthetic.perception`), exported
                to DIR/align_hf
  sft_train     chain-of-thought SFT (`train_sft`) from the aligned model, else from scratch,
                exported to DIR/sft_hf
  sft           greedy accuracy of the SFT model
  grpo_train    GRPO (T-GRPO by default) from the SFT export (`train_grpo`), exported to DIR/grpo_hf
  grpo          greedy accuracy of the GRPO model
  <tts name>    each strategy of `config.tts` (self-consistency, adaptive self-consistency,
                beam search, ...) on the GRPO model

Every stage's figures land in DIR/results.json under `stages.<name>` (the evaluated ones always
with `accuracy` and its 95% interval on the held-out split `config.eval.split`, the text-only
priors and, for SFT and GRPO, the blank / shuffled / swapped-video ablations); `comparisons`
holds the paired bootstrap of each pillar against the stage it builds on. The job prints the
table of the evaluated stages, their baselines and the comparisons and writes it to
DIR/results.md, with the plots DIR/training_curves.png and DIR/tts_compute.png (accuracy
against samples per question, each TTS strategy at every budget up to its own).

A recipe has the shared fields (`seed`, `model`, `data`, `mesh`, ...) once, the alignment, SFT
and GRPO stages' own fields under `config.align`, `config.sft` and `config.rl` (a full SFT /
GRPO recipe without the shared fields; a stage may also change some shared fields, as
`config.align.data.synthetic.target`), the evaluation fields under `config.eval` and the TTS
strategies as `config.tts.<name>` = overrides of `config.eval`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

from vlmm_jax import plots
from vlmm_jax.config_dicts import PIPELINE_SHARED as SHARED
from vlmm_jax.config_dicts import eval_defaults, grpo_defaults, sft_defaults
from vlmm_jax.eval.baselines import paired_bootstrap, scores_by_id
from vlmm_jax.eval.job import evaluate_checkpoint
from vlmm_jax.eval.runner import markdown_table
from vlmm_jax.results import write_stage_results
from vlmm_jax.training.grpo_loop import train_grpo
from vlmm_jax.training.trainer import train_sft


def _recipe(defaults, config, fields, **extra) -> ml_collections.ConfigDict:
    """A full single-stage recipe: `defaults` updated by the shared fields, then the stage's."""
    recipe = ml_collections.ConfigDict(defaults.to_dict())
    recipe.update(ml_collections.ConfigDict({k: config[k] for k in SHARED}).to_dict())
    recipe.update(fields.to_dict())
    recipe.update(extra)
    return recipe


def _stages(workdir: str) -> dict[str, Any]:
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f).get("stages", {})


def _evaluated(workdir: str, name: str) -> bool:
    return "accuracy" in _stages(workdir).get(name, {})


def smoke_size(config: ml_collections.ConfigDict, data_dir: str) -> ml_collections.ConfigDict:
    """`config` shrunk to seconds per stage (tests, notebooks in CI): 24 training videos of 8
    frames at 56x56, 2 decoder layers, 2 alignment and 2 SFT steps, 1 GRPO step, 4 questions
    per greedy eval and 2 per TTS strategy. The numbers it gives mean nothing. Changes
    `config` in place."""
    config.data.dir = data_dir
    s = config.data.synthetic
    s.num_train, s.num_val, s.num_test, s.frames, s.size = 24, 8, 8, 8, 56
    config.data.tokenizer_corpus, config.data.vocab_size, config.data.max_length = 24, 512, 512
    config.data.batch_size = 2
    config.model.num_layers = 2
    for stage in (config.align, config.sft):
        stage.train.steps, stage.train.eval_every, stage.train.eval_batches = 2, 0, 1
        stage.train.visual_diagnostics = min(stage.train.visual_diagnostics, 4)
    config.rl.train.steps = 1
    g = config.rl.grpo
    g.group_size, g.prompts_per_step, g.max_new_tokens = 2, 2, 8
    g.eval_examples, g.eval_batch_size = 4, 4
    for stage in (config.align, config.sft, config.rl):
        stage.checkpoint.async_save = False
    config.eval.num_examples, config.eval.max_new_tokens, config.eval.batch_size = 4, 8, 4
    for overrides in config.tts.values():
        overrides.num_examples = 2
        if overrides.get("num_samples"):
            overrides.num_samples = 4
    return config


def eval_stage_names(config: ml_collections.ConfigDict) -> list[str]:
    return ["untrained", "sft", "grpo", *config.tts.keys()]


def stage_pairs(config: ml_collections.ConfigDict) -> list[tuple[str, str]]:
    """(later, earlier) stages whose difference the table tests: each pillar against the one
    it builds on."""
    return [("sft", "untrained"), ("grpo", "sft"), *[(name, "grpo") for name in config.tts]]


def compare_stages(workdir: str, pairs) -> dict[str, Any]:
    """Paired bootstrap of `later - earlier` accuracy on the questions both answered, from
    their `predictions_<stage>.jsonl`."""

    def scores(name):
        with open(os.path.join(workdir, f"predictions_{name}.jsonl")) as f:
            return scores_by_id([json.loads(line) for line in f])

    return {f"{a} - {b}": paired_bootstrap(scores(a), scores(b)) for a, b in pairs}


def comparison_table(comparisons: dict[str, Any]) -> str:
    lines = [
        "| difference | accuracy | 95% interval | questions | significant |",
        "|---|---|---|---|---|",
    ]
    for name, c in comparisons.items():
        lo, hi = c["ci"]
        mark = "yes" if c["significant"] else "no"
        lines.append(
            f"| {name} | {c['difference']:+.3f} | [{lo:+.3f}, {hi:+.3f}] | {c['questions']} "
            f"| {mark} |"
        )
    return "\n".join(lines)


def run_pipeline(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs (or resumes) every stage; returns the evaluated stages' figures by name."""
    sft_hf, grpo_hf = os.path.join(workdir, "sft_hf"), os.path.join(workdir, "grpo_hf")
    align_hf = os.path.join(workdir, "align_hf") if config.align.train.steps else ""

    def evaluate(name: str, init_from: str, **overrides) -> None:
        if _evaluated(workdir, name):
            print(f"{name}: already evaluated in {workdir}, skipping")
            return
        fields = ml_collections.ConfigDict({"eval": config.eval.to_dict()})
        fields.eval.update(overrides)
        evaluate_checkpoint(
            _recipe(eval_defaults(), config, fields, stage=name, init_from=init_from), workdir
        )

    evaluate("untrained", "", ablations=())  # a random model: its ablations mean nothing
    if align_hf:
        align = _recipe(
            sft_defaults(), config, config.align, stage="align_train", export_hf_dir=align_hf
        )
        train_sft(align, workdir)
    train_sft(
        _recipe(
            sft_defaults(),
            config,
            config.sft,
            stage="sft_train",
            init_from=align_hf,
            export_hf_dir=sft_hf,
        ),
        workdir,
    )
    evaluate("sft", sft_hf)
    train_grpo(
        _recipe(
            grpo_defaults(),
            config,
            config.rl,
            stage="grpo_train",
            init_from=sft_hf,
            export_hf_dir=grpo_hf,
        ),
        workdir,
    )
    evaluate("grpo", grpo_hf)
    for name, overrides in config.tts.items():
        evaluate(name, grpo_hf, **overrides.to_dict())

    stages = _stages(workdir)
    evaluated = {k: stages[k] for k in eval_stage_names(config) if k in stages}
    comparisons = compare_stages(workdir, stage_pairs(config))
    write_stage_results(workdir, "comparisons", comparisons)
    table = markdown_table(evaluated) + "\n\n" + comparison_table(comparisons)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(table + "\n")
    plots.training_curves(
        os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "training_curves.png")
    )
    plots.accuracy_vs_samples(
        {k: v for k, v in evaluated.items() if k == "grpo" or k in config.tts},
        os.path.join(workdir, "tts_compute.png"),
    )
    print(table)
    print(f"results: {workdir}/results.json, results.md, training_curves.png, tts_compute.png")
    return evaluated
