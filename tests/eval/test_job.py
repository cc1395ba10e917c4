"""The eval job end to end on a tiny synthetic recipe: a Hugging Face export (greedy) and an
orbax checkpoint of a stage (self-consistency), checked through the files it writes."""

import json
import os
import runpy

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def eval_recipe(tmp):
    """configs/eval_synthetic.py shrunk as in tests/training/test_recipes.py."""
    config = runpy.run_path(os.path.join(ROOT, "configs", "eval_synthetic.py"))["get_config"]()
    config.data.dir = str(tmp / "data")
    config.data.tokenizer = str(tmp / "tokenizer")  # trained once, shared by the runs
    s = config.data.synthetic
    s.num_train, s.num_val, s.num_test, s.frames, s.size = 24, 8, 8, 8, 56
    config.data.tokenizer_corpus = 24
    config.data.vocab_size = 512
    config.data.max_length = 512
    config.model.num_layers = 2
    config.eval.max_new_tokens = 8
    return config


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """One random model, written both as a Hugging Face directory and as a stage checkpoint."""
    from vlmm_jax.models import save_pretrained
    from vlmm_jax.training.checkpoint import Checkpointer
    from vlmm_jax.training.trainer import SFTRun

    tmp = tmp_path_factory.mktemp("eval")
    config = eval_recipe(tmp)
    run = SFTRun(config, str(tmp / "run"))
    state = run.init_state()
    hf = str(tmp / "hf")
    save_pretrained(run.model, state.params, hf)
    ckpt = Checkpointer(str(tmp / "run" / "checkpoints" / "sft"), async_save=False)
    ckpt.save(3, state, {"iterator": "{}"})
    ckpt.close()
    return tmp, hf, str(tmp / "run" / "checkpoints" / "sft")


def _check_outputs(workdir, stage, count):
    preds = [json.loads(x) for x in open(os.path.join(workdir, f"predictions_{stage}.jsonl"))]
    assert len(preds) == count and len({p["id"] for p in preds}) == count
    figures = json.load(open(os.path.join(workdir, "results.json")))["stages"][stage]
    assert figures["count"] == count
    np.testing.assert_allclose(figures["accuracy"], np.mean([p["score"] for p in preds]))
    for cat, acc in figures["by_category"].items():
        scores = [p["score"] for p in preds if p["category"] == cat]
        np.testing.assert_allclose(acc, np.mean(scores))
    table = open(os.path.join(workdir, "results.md")).read()
    assert table.startswith("| stage | accuracy |") and f"| {stage} |" in table
    return preds, figures


def test_eval_job_is_registered():
    from vlmm_jax.eval.job import evaluate_checkpoint
    from vlmm_jax.main import JOBS

    assert JOBS["eval"] is evaluate_checkpoint


def test_greedy_from_hugging_face_directory(model_dirs):
    from vlmm_jax.eval.job import evaluate_checkpoint

    tmp, hf, _ = model_dirs
    config = eval_recipe(tmp)
    config.init_from, config.stage = hf, "eval_greedy"
    config.eval.num_examples, config.eval.batch_size = 6, 4  # a full and a partial batch
    workdir = str(tmp / "out")
    figures = evaluate_checkpoint(config, workdir)
    preds, saved = _check_outputs(workdir, "eval_greedy", 6)
    assert saved["strategy"] == "greedy" and saved["model"] == hf
    assert figures["accuracy"] == saved["accuracy"]
    assert all(0 < p["length"] <= 8 for p in preds)
    lo, hi = saved["accuracy_ci"]
    assert lo <= saved["accuracy"] <= hi
    # Beside the model: priors fitted on the 24 training videos, and three ablations of the
    # same 6 questions (synthetic videos share one grid: nothing is skipped).
    assert saved["prior"]["count"] == 6 and saved["prior"]["fitted_on"] == "train (24 examples)"
    assert saved["prior"]["rules"]  # a rule per family of the training split
    ablations = saved["ablations"]
    for kind in ("blank", "shuffled_frames", "swapped"):
        assert ablations[kind]["count"] == 6 and ablations[kind]["skipped"] == 0, kind
        assert ablations[kind]["vs_real"]["questions"] == 6
        np.testing.assert_allclose(
            ablations[kind]["vs_real"]["difference"],
            saved["accuracy"] - ablations[kind]["accuracy"],
        )
    reliance = ablations["visual_reliance"]
    np.testing.assert_allclose(
        reliance["overall"], saved["accuracy"] - ablations["blank"]["accuracy"]
    )
    table = open(os.path.join(workdir, "results.md")).read()
    assert "| prior (text only) |" in table and "| eval_greedy / blank |" in table


def test_self_consistency_from_stage_checkpoint(model_dirs):
    from vlmm_jax.eval.job import evaluate_checkpoint

    tmp, _, ckpt = model_dirs
    config = eval_recipe(tmp)
    config.checkpoint_dir, config.stage = ckpt, "eval_sc"
    config.eval.strategy, config.eval.num_samples, config.eval.num_examples = (
        "self_consistency",
        2,
        4,
    )
    workdir = str(tmp / "out")
    evaluate_checkpoint(config, workdir)
    preds, saved = _check_outputs(workdir, "eval_sc", 4)
    assert saved["strategy"] == "self_consistency@2" and saved["model"] == f"{ckpt}@3"
    assert saved["compute_per_question"]["samples"] == 2
    assert all(p["samples"] == 2 and len(p["info"]["answers"]) == 2 for p in preds)
    assert all(0 < p["length"] <= 8 for p in preds)
    # Its scaling curve: SC@1 on the first of the same two samples, then SC@2 itself.
    curve = saved["scaling"]
    assert [(r["budget"], r["samples"]) for r in curve] == [(1, 1.0), (None, 2.0)]
    assert curve[-1]["accuracy"] == saved["accuracy"]
    speed = saved["speed"]
    assert speed["questions_per_s"] * speed["seconds"] == pytest.approx(4)
    # The 4 questions went through one generate call; one question per call: the same answers.
    config.eval.questions_per_call, config.stage = 1, "eval_sc_alone"
    evaluate_checkpoint(config, workdir)
    alone, _ = _check_outputs(workdir, "eval_sc_alone", 4)
    key = lambda p: (p["id"], p["completion"], p["chosen"], p["spent"])  # noqa: E731
    assert [key(p) for p in alone] == [key(p) for p in preds]
    assert curve[0]["accuracy"] == np.mean([p["by_budget"]["1"]["score"] for p in preds])


def test_scaling_curve_by_hand():
    from vlmm_jax.eval.job import scaling_curve

    def pred(score, at_1, at_2):
        spent = {"samples": 4, "tokens": 40, "frames": 8, "prefills": 1}
        by = {
            "1": {"score": at_1, "samples": 1, "tokens": 10},
            "2": {"score": at_2, "samples": 2, "tokens": 30},
        }
        return {"score": score, "spent": spent, "by_budget": by}

    preds = [pred(1.0, 0.0, 1.0), pred(1.0, 1.0, 0.0), pred(0.0, 0.0, 0.0), pred(1.0, 0.0, 1.0)]
    curve = scaling_curve(preds)
    assert [(r["budget"], r["samples"], r["tokens"], r["accuracy"]) for r in curve] == [
        (1, 1.0, 10.0, 0.25),
        (2, 2.0, 30.0, 0.5),
        (None, 4.0, 40.0, 0.75),
    ]
    lo, hi = curve[1]["accuracy_ci"]  # 4 questions: resampled means lie on the grid k / 4
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0 and (4 * lo).is_integer() and (4 * hi).is_integer()
    del preds[2]["by_budget"]["2"]
    with pytest.raises(ValueError, match="budget 2"):
        scaling_curve(preds)
