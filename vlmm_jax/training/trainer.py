"""The SFT loop: mesh, sharded state, jitted steps, eval, checkpoints, metrics, export.

`train_sft(config, workdir)` is what `python -m vlmm_jax.main --config=configs/sft_*.py` runs.
Re-running with the same workdir resumes from the latest complete checkpoint (model, optimizer,
step, RNG and data position), and does nothing if the stage already finished.
"""

from __future__ import annotations

import functools
import json
import os

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from vlmm_jax.config_dicts import build_model_config
from vlmm_jax.models import Qwen2_5_VL, abstract_params, init_params, load_params, save_pretrained
from vlmm_jax.results import write_stage_results
from vlmm_jax.training import annotation_data, synthetic_data
from vlmm_jax.training.batches import batch_shardings, shard_batch
from vlmm_jax.training.checkpoint import Checkpointer
from vlmm_jax.training.data_sources import make_dataset
from vlmm_jax.training.lora import TRAIN_ONLY, abstract_with_lora, add_lora, base_params, merge
from vlmm_jax.training.mesh import (
    make_mesh,
    maybe_initialize_distributed,
    replicated,
    rules_from_config,
)
from vlmm_jax.training.metrics import MetricWriter, normalize
from vlmm_jax.training.optimizer import make_optimizer
from vlmm_jax.training.sft import eval_step, train_step
from vlmm_jax.training.state import TrainState, create_train_state, state_from_params


def _iterator_state(it) -> dict:
    state = it.get_state()
    return {"iterator": state.decode() if isinstance(state, bytes) else state}


def _set_iterator_state(it, saved: dict):
    state = saved["iterator"]
    it.set_state(
        state.encode() if isinstance(state, str) and not isinstance(state, dict) else state
    )


class SFTRun:
    """Everything a run needs, built once: mesh, model, optimizer, shardings, jitted steps."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        maybe_initialize_distributed(config.get("multihost"))
        self.config, self.workdir = config, workdir
        self.mesh = make_mesh(dict(config.mesh))
        self.rules = rules_from_config(config.logical_axis_rules)
        self.model_config = build_model_config(config.model)
        self.data = None  # the prepared dataset (and tokenizer), for sources that need one
        if config.data.source == "synthetic":
            self.data = synthetic_data.prepare(config, self.model_config, workdir)
            self.model_config = self.data.model_config  # vocabulary and ids of its tokenizer
        elif config.data.source == "annotations":
            self.data = annotation_data.prepare(config, self.model_config, workdir)
            self.model_config = self.data.model_config  # the checkpoint's, with its tokenizer's ids
        self.model = Qwen2_5_VL(self.model_config)
        self.abstract = abstract_params(self.model_config)
        lora = config.get("lora")
        self.lora = None  # add_lora's keyword arguments when LoRA is on
        if lora is not None and lora.enabled:  # adapters under params["lora"], trained alone
            self.lora = {"targets": lora.targets, "rank": lora.rank, "alpha": lora.alpha}
            self.abstract = abstract_with_lora(self.abstract, **self.lora)
        self.tx = make_optimizer(
            config.optimizer,
            nn.meta.unbox(self.abstract),
            train_only=TRAIN_ONLY if self.lora else None,
        )
        train = config.train
        self.step_fn = functools.partial(
            train_step, model=self.model, tx=self.tx, train_on_prompt=train.train_on_prompt
        )
        self.eval_fn = functools.partial(
            eval_step, model=self.model, train_on_prompt=train.train_on_prompt
        )
        self._jitted = {}

    def init_state(self) -> TrainState:
        key = jax.random.PRNGKey(self.config.seed)
        if self.config.get("init_from"):
            _, shardings = self.state_shardings()
            params = load_params(
                self.config.init_from,
                self.model_config,
                dtype=self.model_config.param_dtype,
                shardings=base_params(shardings.params),
            )
            if self.lora:  # only the adapters come out of the jit: no copy of the base
                lora_sh = shardings.params["lora"]
                add = jax.jit(lambda p, k: self._add_lora(p, k)["lora"], out_shardings=lora_sh)
                params = {**params, "lora": add(params, key)}
            return state_from_params(params, self.tx, shardings, key)
        with jax.set_mesh(self.mesh):
            state, _ = create_train_state(
                lambda k: self._add_lora(init_params(self.model, k), k),
                self.abstract,
                self.tx,
                self.mesh,
                self.rules,
                key,
            )
        return state

    def _add_lora(self, params, key):
        if not self.lora:
            return params
        return add_lora(params, rng=jax.random.fold_in(key, 1), **self.lora)

    def state_shardings(self):
        from vlmm_jax.training.state import state_shardings

        shardings = state_shardings(self.abstract, self.tx, self.mesh, self.rules)
        abstract = jax.eval_shape(
            lambda: TrainState(
                step=np.int32(0),
                params=nn.meta.unbox(self.abstract),
                opt_state=self.tx.init(nn.meta.unbox(self.abstract)),
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
                self._jitted[name] = jax.jit(
                    self.step_fn,
                    in_shardings=(shardings, b_sh),
                    out_shardings=(shardings, rep),
                    donate_argnums=(0,),
                )
            else:
                self._jitted[name] = jax.jit(
                    self.eval_fn, in_shardings=(shardings.params, b_sh), out_shardings=rep
                )
        return self._jitted[name]

    def run_step(self, name, *args):
        fn = self.jitted(name, args[-1])  # shardings are built outside: unbox must not constrain
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            return fn(*args)

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
    if jax.process_index() == 0:
        write_stage_results(workdir, config.stage, figures)
    if config.get("export_hf_dir"):
        export_hf(run, state.params, config.export_hf_dir)
    ckpt.close()
    print(json.dumps({config.stage: figures}, indent=2))
    return figures


def export_hf(run: SFTRun, params, path: str) -> None:
    """A Hugging Face checkpoint of `params` (LoRA merged) with the run's tokenizer, so the
    folder alone starts the next stage or loads in transformers."""
    params = jax.jit(merge)(params) if run.lora else params
    save_pretrained(run.model, params, path, dtype=run.config.get("export_dtype") or None)
    if run.data is not None and jax.process_index() == 0:
        run.data.tokenizer.save(path)


def _finished_stage(workdir: str, stage: str) -> dict | None:
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f).get("stages", {}).get(stage)


def _lr(config, step):
    from vlmm_jax.training.optimizer import schedule

    return schedule(config.optimizer)(step)
