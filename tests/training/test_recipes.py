"""The synthetic recipes build, train, hand over (SFT export -> GRPO) and resume; GRPO with
LoRA trains the adapters (and only them) against the frozen base as its KL reference."""

import json
import os
import runpy

import jax
import numpy as np
import pytest

from tests.training.grpo_worker import completion_parity  # noqa: F401  (registers the reward)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def recipe(name, tmp_path):
    config = runpy.run_path(os.path.join(ROOT, "configs", f"{name}.py"))["get_config"]()
    config.data.dir = str(tmp_path / "data")
    s = config.data.synthetic
    s.num_train, s.num_val, s.num_test, s.frames, s.size = 24, 8, 8, 8, 56
    config.data.tokenizer_corpus = 24
    config.data.vocab_size = 512
    config.data.max_length = 512
    config.model.num_layers = 2
    config.checkpoint.async_save = False
    return config


def test_sft_then_grpo_with_lora(tmp_path):
    """SFT -> HF export -> GRPO with LoRA and a KL penalty: the first step's KL is exactly 0
    (zero adapters: the policy is its reference), the second's is not; the base weights come
    out bit-identical, the adapters do not; the export is the merged model."""
    from vlmm_jax.eval.job import restore_params
    from vlmm_jax.models import load_params
    from vlmm_jax.models.lora import merge
    from vlmm_jax.session import Session
    from vlmm_jax.training.grpo_loop import train_grpo
    from vlmm_jax.training.trainer import train_sft

    workdir = str(tmp_path / "run")
    sft = recipe("sft_synthetic", tmp_path)
    sft.train.steps, sft.train.eval_every, sft.train.eval_batches = 2, 0, 1
    sft.data.batch_size = 2
    sft.export_hf_dir = os.path.join(workdir, "sft_hf")
    figures = train_sft(sft, workdir)
    assert figures["eval_loss"] is not None and os.path.exists(sft.export_hf_dir + "/config.json")

    grpo = recipe("grpo_synthetic", tmp_path)
    grpo.init_from = sft.export_hf_dir
    grpo.data.tokenizer = os.path.join(workdir, "tokenizer")  # the SFT stage's
    grpo.train.steps = 2
    grpo.optimizer.learning_rate = 1e-2
    grpo.lora.enabled = True
    grpo.export_hf_dir = os.path.join(workdir, "grpo_hf")
    g = grpo.grpo
    g.group_size, g.prompts_per_step, g.max_new_tokens = 2, 2, 8
    g.eval_examples, g.eval_batch_size, g.dynamic_sampling = 4, 4, False
    g.rewards = {"completion_parity_test": 1.0}  # varies across random completions
    g.beta = 0.04  # the reference: the LoRA base, no weight copy
    out = train_grpo(grpo, workdir)
    assert out["validation"]["count"] == 4
    results = json.loads(open(os.path.join(workdir, "results.json")).read())["stages"]
    assert {"sft", "grpo"} <= set(results)
    metrics = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    rows = [m for m in metrics if m["stage"] == "grpo" and m["split"] == "train"]
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["kl"] == 0.0 and rows[1]["kl"] > 1e-8, rows
    assert all(r["grad_norm"] > 1e-4 and r["skipped"] == 0 for r in rows), rows
    for r in rows:  # the step's time, split: its parts add up and the sampler's share shows
        parts = ("data_s", "generate_s", "score_s", "rollout_other_s")
        assert sum(r[k] for k in parts) == pytest.approx(r["rollout_s"], rel=1e-6), r
        assert r["rollout_s"] + r["update_s"] == pytest.approx(r["step_s"], rel=1e-6), r
        assert min(r[k] for k in parts) >= 0 and r["generate_s"] > 0 and r["score_s"] > 0, r
        idle = (r["rollout_s"] - r["generate_s"]) / r["step_s"]
        assert r["host_idle_fraction"] == pytest.approx(idle, rel=1e-6) and 0 < idle < 1, r

    session = Session(grpo, workdir)
    params, _ = restore_params(
        os.path.join(workdir, "checkpoints", "grpo"),
        None,
        session.abstract_params,
        session.param_shardings(),
    )
    base = load_params(sft.export_hf_dir, session.model_config)
    trained = {k: v for k, v in params.items() if k != "lora"}
    for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(base), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(np.abs(np.asarray(b)).max() > 0 for b in _leaves_named(params["lora"], "b"))
    exported = load_params(grpo.export_hf_dir, session.model_config)
    for a, b in zip(jax.tree.leaves(exported), jax.tree.leaves(merge(params)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert train_grpo(grpo, workdir) == results["grpo"]  # finished: skipped, same figures


def _leaves_named(tree, name):
    flat = jax.tree_util.tree_leaves_with_path(tree)
    return [x for path, x in flat if getattr(path[-1], "key", None) == name]
