"""The GRPO stage: `python -m vlmm_jax.main --config=configs/grpo_*.py --workdir=DIR`.

Reuses the SFT run's machinery (mesh, sharded state, LoRA, checkpoints, metrics) and adds
rollouts. Resumes from the latest checkpoint (state and prompt-iterator position); a finished
stage is skipped.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vlmm_jax.data.pipeline import BatchOptions, make_pipeline
from vlmm_jax.eval.runner import evaluate
from vlmm_jax.inference.sampling import Greedy
from vlmm_jax.results import write_stage_results
from vlmm_jax.training.checkpoint import Checkpointer
from vlmm_jax.training.grpo import GRPO, prompt_inputs
from vlmm_jax.training.lora import base_params
from vlmm_jax.training.metrics import MetricWriter
from vlmm_jax.training.synthetic_data import SyntheticSample
from vlmm_jax.training.trainer import (
    SFTRun,
    _finished_stage,
    _iterator_state,
    _set_iterator_state,
    export_hf,
)


def prompt_batches(run: SFTRun, split: str, batch_size: int, *, train: bool):
    """RL-mode (left-padded prompt) batches of the run's dataset."""
    if run.data is None:
        raise ValueError(
            "GRPO needs a dataset with prompts and answers (data.source=synthetic or annotations)"
        )
    d = run.config.data
    if d.source == "synthetic":  # the frames travel with the records
        decode = {"sample_fn": SyntheticSample(run.data.tokenizer, run.model_config, mode="rl")}
    else:  # annotations: the default SampleBuilder decodes the videos
        decode = run.data.pipeline_kwargs()
    return make_pipeline(
        run.data.split(split),
        run.data.tokenizer,
        run.model_config,
        BatchOptions(batch_size=batch_size, max_length=d.max_length, visual_layout="flat"),
        mode="rl",
        **decode,
        seed=d.seed,
        shuffle=train,
        num_epochs=None if train else 1,
        drop_remainder=train,
    )


def greedy_generate(grpo: GRPO, params):
    """`batch -> (completions, lengths)` with greedy decoding (for evaluation)."""
    tok = grpo.tok

    def generate(batch):
        out = grpo.sampler(params, prompt_inputs(batch), method=Greedy())
        tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
        return [tok.decode(t[:n]) for t, n in zip(tokens, lengths, strict=True)], lengths.tolist()

    return generate


def evaluate_split(run: SFTRun, grpo: GRPO, params, split: str, limit: int):
    batches = prompt_batches(run, split, run.config.grpo.eval_batch_size, train=False)
    return evaluate(greedy_generate(grpo, params), batches, limit=limit)


def train_grpo(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs (or resumes, or skips if finished) a GRPO stage; returns the stage's figures."""
    run = SFTRun(config, workdir)
    g, ck = config.grpo, config.checkpoint
    ckpt = Checkpointer(
        os.path.join(workdir, "checkpoints", config.stage),
        keep_last=ck.keep_last,
        async_save=ck.async_save,
    )
    latest = ckpt.latest_step()
    done = _finished_stage(workdir, config.stage)
    if latest == config.train.steps and done is not None:
        ckpt.close()
        print(f"{config.stage}: already complete in {workdir}, skipping")
        return done
    grpo = GRPO(run.model, run.tx, run.data.tokenizer, g, mesh=run.mesh, rules=run.rules)
    prompts = iter(prompt_batches(run, "train", g.prompts_per_step, train=True))
    if latest is not None:
        abstract, shardings = run.state_shardings()
        state, data_state = ckpt.restore(latest, shardings, abstract)
        _set_iterator_state(prompts, data_state)
    else:
        state = run.init_state()
    # The reference policy: the base without adapters (LoRA: no copy), else the initial weights.
    ref = None
    if g.beta > 0:
        ref = base_params(state.params) if run.lora else jax.tree.map(jnp.copy, state.params)
    writer = MetricWriter(workdir, config.stage, config.train.steps, initial_step=int(state.step))
    rng = jax.random.PRNGKey(config.seed + 1)
    try:
        for step in range(int(state.step) + 1, config.train.steps + 1):
            start = time.perf_counter()
            chunks, figures, kept, tries = [], [], 0, 0
            while kept < g.prompts_per_step and tries < g.max_rollout_batches:
                key = jax.random.fold_in(jax.random.fold_in(rng, step), tries)
                chunk = grpo.rollout(state.params, next(prompts), key)
                figures.append(chunk["figures"])
                tries += 1
                if not chunk["dropped"]:
                    chunks.append(chunk)
                    kept += chunk["kept_groups"]
            rollout_s = time.perf_counter() - start
            row = {k: float(np.mean([f[k] for f in figures if k in f])) for k in figures[0]}
            if chunks:
                state, update = grpo.update(state, chunks, ref)
                row.update(update)
            else:  # every group had equal rewards: nothing to learn from this step
                state = state.replace(step=state.step + 1)
            row.update(
                rollout_s=rollout_s,
                update_s=time.perf_counter() - start - rollout_s,
                rollout_batches=tries,
            )
            writer.tick(
                step,
                row,
                # generated tokens: mean length x completions of every rollout batch
                tokens=row.get("response_tokens", 0) * g.group_size * g.prompts_per_step * tries,
                show=("reward", "accuracy"),
            )
            writer.write(step, row)
            if g.eval_every and step % g.eval_every == 0:
                _, summary = evaluate_split(run, grpo, state.params, "validation", g.eval_examples)
                writer.write(step, {"accuracy": summary["accuracy"]}, prefix="eval")
            if step % ck.every == 0 or step == config.train.steps:
                ckpt.save(step, state, _iterator_state(prompts))
        ckpt.wait()
    finally:
        writer.close()
    records, summary = evaluate_split(run, grpo, state.params, "validation", g.eval_examples)
    figures = {"steps": config.train.steps, "validation": summary}
    if jax.process_index() == 0:
        write_stage_results(workdir, config.stage, figures)
    if config.get("export_hf_dir"):
        export_hf(run, state.params, config.export_hf_dir)
    ckpt.close()
    print(json.dumps({config.stage: figures}, indent=2, default=str))
    return figures
