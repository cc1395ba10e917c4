"""The SFT loop: mesh, sharded state, jitted steps, eval, checkpoints, metrics, export.

`train_sft(config, workdir)` is what `python -m vlmm_jax.main --config=configs/sft_*.py` runs.
Re-running with the same workdir resumes from the latest complete checkpoint (model, optimizer,
step, RNG and data position), and does nothing if the stage already finished.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import ml_collections
import numpy as np

from vlmm_jax.data.processors import save_processor_configs
from vlmm_jax.eval.token_loss import visual_diagnostics
from vlmm_jax.mesh import replicated
from vlmm_jax.models import save_pretrained
from vlmm_jax.models.lora import TRAIN_ONLY
from vlmm_jax.policy import Policy
from vlmm_jax.results import write_stage_results
from vlmm_jax.session import Session
from vlmm_jax.training.batches import batch_shardings, shard_batch
from vlmm_jax.training.checkpoint import Checkpointer
from vlmm_jax.training.data_sources import make_dataset
from vlmm_jax.training.metrics import MetricWriter, normalize
from vlmm_jax.training.optimizer import make_optimizer, trainable_labels
from vlmm_jax.training.sft import eval_step, train_step
from vlmm_jax.training.state import TrainState, state_from_params, state_shardings


def _iterator_state(it) -> dict:
    state = it.get_state()
    return {"iterator": state.decode() if isinstance(state, bytes) else state}


def _set_iterator_state(it, saved: dict):
    state = saved["iterator"]
    it.set_state(
        state.encode() if isinstance(state, str) and not isinstance(state, dict) else state
    )


class SFTRun(Session):
    """A `Session` plus what training needs: the optimizer, state shardings, jitted steps."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, **session_kwargs):
        super().__init__(config, workdir, **session_kwargs)
        train_only = TRAIN_ONLY if self.lora else None
        self.tx = make_optimizer(config.optimizer, self.abstract_params, train_only=train_only)
        labels = trainable_labels(
            self.abstract_params, freeze=tuple(config.optimizer.freeze), train_only=train_only
        )
        self.trainable = jax.tree.map(lambda label: label == "train", labels)  # bool per leaf
        train = config.train
        self.step_fn = functools.partial(
            train_step, policy=self.policy, tx=self.tx, train_on_prompt=train.train_on_prompt
        )
        self.eval_fn = functools.partial(
            eval_step, policy=self.policy, train_on_prompt=train.train_on_prompt
        )
        self._jitted = {}

    def init_state(self) -> TrainState:
        """The fresh train state: `initial_params()` and a new optimizer state, sharded."""
        _, shardings = self.state_shardings()
        rng = jax.random.fold_in(jax.random.PRNGKey(self.config.seed), 1)
        return state_from_params(self.initial_params(), self.tx, shardings, rng)

    def state_shardings(self):
        """(abstract train state, its `NamedSharding`s)."""
        shardings = state_shardings(self.abstract, self.tx, self.mesh, self.rules)
        abstract = jax.eval_shape(
            lambda: TrainState(
                step=np.int32(0),
                params=self.abstract_params,
                opt_state=self.tx.init(self.abstract_params),
                rng=jax.random.PRNGKey(0),
            )
        )
        return abstract, shardings

    def jitted(self, name: str, batch: dict):
        """The jitted train or eval step, with shardings taken from the batch structure."""
        if name not in self._jitted:
            _, shardings = self.state_shardings()
            b_sh = batch_shardings(batch, self.mesh)
            rep = replicated(self.mesh)
            if name == "train":
                self._jitted[name] = self.policy.jit(
                    self.step_fn,
                    in_shardings=(shardings, b_sh),
                    out_shardings=(shardings, rep),
                    donate_argnums=(0,),
                )
            else:
                self._jitted[name] = self.policy.jit(
                    self.eval_fn, in_shardings=(shardings.params, b_sh), out_shardings=rep
                )
        return self._jitted[name]

    def run_step(self, name, *args):
        return self.jitted(name, args[-1])(*args)

    def evaluate(self, params) -> dict[str, float]:
        it = iter(make_dataset(self.config, self.model_config, "validation", self.data))
        totals = None
        for _ in range(self.config.train.eval_batches):
            try:
                host = next(it)
            except StopIteration:
                break
            sums = self.run_step("eval", params, shard_batch(host, self.mesh))
            totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
        return normalize(totals) if totals is not None else {}


def train_sft(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs (or resumes, or skips if finished) the SFT stage; returns the stage's figures."""
    run = SFTRun(config, workdir)
    train, ck = config.train, config.checkpoint
    ckpt = Checkpointer(
        os.path.join(workdir, "checkpoints", config.stage),
        keep_last=ck.keep_last,
        best_metric=ck.get("best_metric") or None,
        best_mode=ck.best_mode,
        keep_best=ck.keep_best,
        async_save=ck.async_save,
    )
    latest = ckpt.latest_step()
    done = _finished_stage(workdir, config.stage)
    if latest == train.steps and done is not None:  # this stage already ran to the end
        ckpt.close()
        print(f"{config.stage}: already complete in {workdir}, skipping")
        return done
    data_it = iter(make_dataset(config, run.model_config, "train", run.data))
    if latest is not None:
        abstract, shardings = run.state_shardings()
        state, data_state = ckpt.restore(latest, shardings, abstract)
        _set_iterator_state(data_it, data_state)
    else:
        state = run.init_state()
    start = int(state.step)
    writer = MetricWriter(workdir, config.stage, train.steps, initial_step=start)
    nan_streak, skipped, last = 0, 0, {}
    try:
        for step in range(start + 1, train.steps + 1):
            host = next(data_it)
            state, sums = run.run_step("train", state, shard_batch(host, run.mesh))
            if step % train.log_every == 0 or step == train.steps:
                figures = normalize(sums)
                figures["learning_rate"] = float(_lr(config, step - 1))
                writer.tick(step, figures, tokens=figures["tokens"] * train.log_every)
                writer.write(step, figures)
                last = figures
            bad = int(np.asarray(jax.device_get(sums["skipped"])))
            skipped += bad
            nan_streak = nan_streak + 1 if bad else 0
            if nan_streak >= train.max_consecutive_nan:
                raise FloatingPointError(
                    f"step {step}: {nan_streak} consecutive non-finite losses or gradients; "
                    f"stopping (train.max_consecutive_nan={train.max_consecutive_nan})"
                )
            eval_figures = None
            if train.eval_every and step % train.eval_every == 0:
                eval_figures = run.evaluate(state.params)
                writer.write(step, eval_figures, prefix="eval")
            if step % ck.every == 0 or step == train.steps:
                metrics = {f"eval_{k}": v for k, v in (eval_figures or {}).items()}
                ckpt.save(step, state, _iterator_state(data_it), metrics or None)
        ckpt.wait()
    finally:
        writer.close()
    eval_final = run.evaluate(state.params) if train.eval_batches else {}
    figures = {
        "steps": train.steps,
        "train_loss": last.get("loss"),
        "train_token_accuracy": last.get("token_accuracy"),
        "eval_loss": eval_final.get("loss"),
        "eval_token_accuracy": eval_final.get("token_accuracy"),
        "skipped_steps": skipped,
    }
    if train.get("visual_diagnostics") and config.data.source == "synthetic":
        figures.update(
            visual_diagnostics(run.policy, state.params, run.data, train.visual_diagnostics)
        )
    if jax.process_index() == 0:
        write_stage_results(workdir, config.stage, figures)
    if config.get("export_hf_dir"):
        export_hf(run, run.policy.with_params(state.params), config.export_hf_dir)
    ckpt.close()
    print(json.dumps({config.stage: figures}, indent=2))
    return figures


def export_hf(run: Session, policy: Policy, path: str) -> None:
    """A Hugging Face checkpoint of the policy (LoRA merged) with the run's tokenizer and the
    family's processor configs, so the folder alone starts the next stage or is served."""
    params = policy.jit(Policy.merged)(policy) if policy.has_lora else policy.params
    save_pretrained(run.model, params, path, dtype=run.config.get("export_dtype") or None)
    if jax.process_index() == 0:
        save_processor_configs(path, run.model_config.model_type)
        if run.data is not None:
            run.data.tokenizer.save(path, run.model_config.model_type)


def _finished_stage(workdir: str, stage: str) -> dict | None:
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f).get("stages", {}).get(stage)


def _lr(config, step):
    from vlmm_jax.training.optimizer import schedule

    return schedule(config.optimizer)(step)
