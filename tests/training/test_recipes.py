"""The synthetic recipes build, train a step, hand over (SFT export -> GRPO) and resume."""

import json
import os
import runpy

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


def test_sft_then_grpo_on_synthetic(tmp_path):
    """SFT -> HF export -> GRPO with LoRA (the reference policy is the base, no weight copy)."""
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
    grpo.train.steps = 1
    grpo.lora.enabled = True
    g = grpo.grpo
    g.group_size, g.prompts_per_step, g.max_new_tokens = 2, 2, 8
    g.eval_examples, g.eval_batch_size, g.dynamic_sampling = 4, 4, False
    g.beta = 0.04  # exercise the reference model (LoRA: the base without adapters)
    out = train_grpo(grpo, workdir)
    assert out["validation"]["count"] == 4
    results = json.loads(open(os.path.join(workdir, "results.json")).read())["stages"]
    assert {"sft", "grpo"} <= set(results)
    metrics = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    grpo_rows = [m for m in metrics if m["stage"] == "grpo" and m["split"] == "train"]
    assert grpo_rows and {"reward", "accuracy", "rollout_s", "update_s"} <= set(grpo_rows[0])
    assert train_grpo(grpo, workdir) == results["grpo"]  # finished: skipped, same figures
