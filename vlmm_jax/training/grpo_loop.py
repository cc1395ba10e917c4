"""The GRPO stage: `python -m vlmm_jax.main --config=configs/grpo_*.py --workdir=DIR`.

Reuses the SFT run's machinery (mesh, sharded state, LoRA, checkpoints, metrics) and adds
rollouts. Resumes from the latest checkpoint (state and prompt-iterator position) with the same
KL reference as the uninterrupted run: the initial policy (a LoRA run's frozen base; otherwise
the starting weights, rebuilt from `init_from` or the seed). A finished stage is skipped.

On several hosts every host reads its own prompts (`data.pipeline` shards them in blocks of the
per-host batch, so a step's global batch is the same for any host count), decodes their videos,
scores their completions and computes their advantages; the sampler and the update run as one
program over the global, batch-sharded arrays.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vlmm_jax import hosts
from vlmm_jax.data.pipeline import BatchOptions, make_pipeline
from vlmm_jax.data.synthetic_data import SyntheticSample
from vlmm_jax.eval.runner import evaluate, greedy_generate
from vlmm_jax.policy import Policy
from vlmm_jax.results import write_stage_results
from vlmm_jax.training.checkpoint import Checkpointer
from vlmm_jax.training.grpo import GRPO
from vlmm_jax.training.metrics import MetricWriter
from vlmm_jax.training.trainer import (
    SFTRun,
    _finished_stage,
    _iterator_state,
    _set_iterator_state,
    export_hf,
)


def step_timing(
    *, step_s: float, rollout_s: float, data_s: float, generate_s: float, score_s: float
) -> dict[str, float]:
    """Where a GRPO step's wall time went (seconds): waiting for the prompt batches (`data_s`),
    sampling (`generate_s`: the sampler, device to host), rewards (`score_s`), the rest of the
    rollout (`rollout_other_s`: host-side batching and transfers, the temporal shuffle), the
    update (`update_s`); and `host_idle_fraction`: the share of the step spent in the rollout
    outside the sampler, when the device has nothing queued and waits for the host."""
    return {
        "step_s": step_s,
        "rollout_s": rollout_s,
        "data_s": data_s,
        "generate_s": generate_s,
        "score_s": score_s,
        "rollout_other_s": max(0.0, rollout_s - data_s - generate_s - score_s),
        "update_s": step_s - rollout_s,
        "host_idle_fraction": (rollout_s - generate_s) / max(step_s, 1e-9),
    }


def prompt_batches(run: SFTRun, split: str, batch_size: int, *, train: bool):
    """RL-mode batches (left-padded prompts, rows layout) of the run's data.

    Args:
      batch_size: prompts per global batch; in training each host gets its share of each.
    """
    if run.data is None:
        raise ValueError(
            "GRPO needs a dataset with prompts and answers (data.source=synthetic or annotations)"
        )
    d = run.config.data
    if d.source == "synthetic":  # the frames travel with the records
        decode = {
            "sample_fn": SyntheticSample(
                run.data.tokenizer, run.model_config, mode="rl", think=run.data.think
            )
        }
    else:  # annotations: the default SampleBuilder decodes the videos
        decode = run.data.pipeline_kwargs()
    # Training: each host reads its block of every global batch. Evaluation: every host reads
    # the whole (small) split and builds the same global batches (`greedy_generate`).
    local = hosts.host_batch_size(batch_size) if train else batch_size
    shards = {} if train else {"shard_index": 0, "shard_count": 1}
    return make_pipeline(
        run.data.split(split),
        run.data.tokenizer,
        run.model_config,
        BatchOptions(batch_size=local, max_length=d.max_length, visual_layout="rows"),
        mode="rl",
        **decode,
        seed=d.seed,
        shuffle=train,
        num_epochs=None if train else 1,
        host_block=local if train else None,
        drop_remainder=train,
        **shards,
        worker_count=d.num_workers,
    )


def evaluate_split(run: SFTRun, grpo: GRPO, policy: Policy, split: str, limit: int):
    """Greedy accuracy of `policy` on the first `limit` examples of `split` (all hosts)."""
    batches = prompt_batches(run, split, run.config.grpo.eval_batch_size, train=False)
    generate = greedy_generate(grpo.sampler, policy, grpo.tok.decode)
    return evaluate(generate, batches, limit=limit)


def reference_params(run: SFTRun, state):
    """The KL reference's own weights: None for LoRA (the frozen base is the reference) or when
    `grpo.beta == 0`; else the run's initial weights: a copy of the fresh state's, or rebuilt
    (`init_from` or the seeded init) on a resume, so a restart measures KL as before.

    The copy is kept in the compute dtype: the model casts every weight to it before use, so a
    bf16 copy of fp32 master weights gives the same log-probs at half the memory.
    """
    if run.config.grpo.beta <= 0 or run.lora:
        return None
    params = state.params if int(state.step) == 0 else run.initial_params()
    dtype = run.policy.dtype
    cast = run.policy.jit(
        lambda p: jax.tree.map(lambda x: x.astype(dtype) if x.dtype != dtype else jnp.copy(x), p),
        out_shardings=run.param_shardings(),
    )
    return cast(params)


def train_grpo(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs (or resumes, or skips if finished) a GRPO stage; returns the stage's figures."""
    run = SFTRun(config, workdir)
    g, ck, train = config.grpo, config.checkpoint, config.train
    ckpt = Checkpointer(
        os.path.join(workdir, "checkpoints", config.stage),
        keep_last=ck.keep_last,
        async_save=ck.async_save,
    )
    latest = ckpt.latest_step()
    done = _finished_stage(workdir, config.stage)
    if latest == train.steps and done is not None:
        ckpt.close()
        print(f"{config.stage}: already complete in {workdir}, skipping")
        return done
    grpo = GRPO(
        run.policy,
        run.tx,
        run.data.tokenizer,
        g,
        state_shardings=run.state_shardings()[1],
        micro_batches=config.data.micro_batches,
        trainable=run.trainable,
    )
    prompts = iter(prompt_batches(run, "train", g.prompts_per_step, train=True))
    if latest is not None:
        abstract, shardings = run.state_shardings()
        state, data_state = ckpt.restore(latest, shardings, abstract)
        _set_iterator_state(prompts, data_state)
    else:
        state = run.init_state()
    policy = run.policy.with_params(state.params, reference_params(run, state))
    writer = MetricWriter(workdir, config.stage, train.steps, initial_step=int(state.step))
    rng = jax.random.PRNGKey(config.seed + 1)
    nan_streak = 0
    try:
        for step in range(int(state.step) + 1, train.steps + 1):
            start = time.perf_counter()
            rollouts, kept, tries, data_s = [], 0, 0, 0.0
            while kept < g.prompts_per_step and tries < g.max_rollout_batches:
                key_t = jax.random.fold_in(jax.random.fold_in(rng, step), tries)
                wait = time.perf_counter()
                batch = next(prompts)  # decoded here, or ahead by `data.num_workers` workers
                data_s += time.perf_counter() - wait
                r = grpo.rollout(policy, batch, key_t)
                tries += 1
                r_kept = int(hosts.all_hosts_sum([r.kept])[0])  # the same on every host
                kept += r_kept
                rollouts.append((r, r_kept))
            rollout_s = time.perf_counter() - start
            figures = [r.figures for r, _ in rollouts]
            keys = sorted({k for f in figures for k in f})
            row = hosts.all_hosts_mean(
                {k: hosts.nanmean([f.get(k, np.nan) for f in figures]) for k in keys}
            )
            row["reward_errors"] = float(
                hosts.all_hosts_sum([sum(r.errors for r, _ in rollouts)])[0]
            )
            if kept:
                learn = [r for r, k in rollouts if k]  # some host kept a group of it
                reference = policy.reference() if g.beta > 0 else None  # (LoRA: the base of
                state, update = grpo.update(state, learn, reference)  # this state, not donated)
                row.update(update)
            else:  # every group had equal rewards: nothing to learn from this step
                state = state.replace(step=state.step + 1)
            policy = policy.with_params(state.params, policy.reference_params)
            row.update(
                step_timing(
                    step_s=time.perf_counter() - start,
                    rollout_s=rollout_s,
                    data_s=data_s,
                    generate_s=sum(r.seconds.get("generate", 0.0) for r, _ in rollouts),
                    score_s=sum(r.seconds.get("score", 0.0) for r, _ in rollouts),
                ),
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
            nan_streak = nan_streak + 1 if row.get("skipped") else 0
            if nan_streak >= train.max_consecutive_nan:
                raise FloatingPointError(
                    f"step {step}: {nan_streak} consecutive non-finite losses or gradients; "
                    f"stopping (train.max_consecutive_nan={train.max_consecutive_nan})"
                )
            if g.eval_every and step % g.eval_every == 0:
                _, summary = evaluate_split(run, grpo, policy, "validation", g.eval_examples)
                writer.write(step, {"accuracy": summary["accuracy"]}, prefix="eval")
            if step % ck.every == 0 or step == train.steps:
                ckpt.save(step, state, _iterator_state(prompts))
        ckpt.wait()
    finally:
        writer.close()
    records, summary = evaluate_split(run, grpo, policy, "validation", g.eval_examples)
    figures = {"steps": train.steps, "validation": summary}
    if jax.process_index() == 0:
        write_stage_results(workdir, config.stage, figures)
    if config.get("export_hf_dir"):
        export_hf(run, policy, config.export_hf_dir)
    ckpt.close()
    print(json.dumps({config.stage: figures}, indent=2, default=str))
    return figures
