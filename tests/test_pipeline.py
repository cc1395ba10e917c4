"""The main job end to end at a tiny size: every stage runs and reports; a rerun does no work."""

import json
import os
import runpy

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_quickstart(tmp_path):
    from vlmm_jax.pipeline import smoke_size

    config = runpy.run_path(os.path.join(ROOT, "configs", "quickstart.py"))["get_config"]()
    return smoke_size(config, str(tmp_path / "data"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from vlmm_jax.pipeline import run_pipeline

    tmp = tmp_path_factory.mktemp("quickstart")
    config, workdir = tiny_quickstart(tmp), str(tmp / "run")
    return config, workdir, run_pipeline(config, workdir)


def test_every_stage_ran_and_reported(finished):
    config, workdir, evaluated = finished
    names = ["untrained", "sft", "grpo", *config.tts.keys()]
    assert list(evaluated) == names
    stages = json.load(open(os.path.join(workdir, "results.json")))["stages"]
    for name in names:
        assert 0.0 <= stages[name]["accuracy"] <= 1.0, name
        assert stages[name]["count"] == (2 if name in config.tts else 4), name
        assert os.path.exists(os.path.join(workdir, f"predictions_{name}.jsonl"))
    assert stages["sft_train"]["steps"] == 2 and stages["grpo_train"]["steps"] == 1
    assert stages["align_train"]["steps"] == 2  # SFT started from the aligned model's export
    assert os.path.exists(os.path.join(workdir, "align_hf", "model.safetensors"))
    for stage in ("align_train", "sft_train"):  # the same 4 validation targets per condition
        loss = stages[stage]["token_loss"]
        assert loss["blank"]["tokens"] == loss["real"]["tokens"] == loss["swapped"]["tokens"]
    # Perception targets have no reasoning; the CoT targets hold every class.
    assert stages["align_train"]["token_loss"]["real"]["tokens"]["answer"] > 20
    assert min(stages["sft_train"]["token_loss"]["real"]["tokens"].values()) > 0
    assert stages["self_consistency_16"]["compute_per_question"]["samples"] == 4
    # one run of 4 samples gives SC@1, 2 and 4; adaptive (rounds of 2) its caps 2 and 4
    assert [r["samples"] for r in stages["self_consistency_16"]["scaling"]] == [1, 2, 4]
    assert [r["budget"] for r in stages["adaptive_consistency"]["scaling"]] == [2, None]
    assert stages["beam_search_4"]["strategy"].startswith("beam")
    assert os.path.exists(os.path.join(workdir, "sft_hf", "model.safetensors"))
    assert os.path.exists(os.path.join(workdir, "grpo_hf", "model.safetensors"))
    stages_table, comparisons_table = open(os.path.join(workdir, "results.md")).read().split("\n\n")
    rows = [row.split("|")[1].strip() for row in stages_table.splitlines()[2:]]
    ablations = [f"{s} / {k}" for s in ("sft", "grpo") for k in config.eval.ablations]
    assert rows == [*names, "prior (text only)", *ablations]
    assert "ablations" not in stages["untrained"]
    for stage in ("sft", "grpo"):  # each ablation's answers, question by question
        for kind in config.eval.ablations:
            lines = open(os.path.join(workdir, f"predictions_{stage}@{kind}.jsonl"))
            scores = [json.loads(line)["score"] for line in lines]
            assert len(scores) == 4 - stages[stage]["ablations"][kind]["skipped"]
            np.testing.assert_allclose(
                np.mean(scores), stages[stage]["ablations"][kind]["accuracy"]
            )
    # Each pillar against the stage it builds on, paired on the same questions.
    comparisons = stages["comparisons"]
    pairs = [("sft", "untrained"), ("grpo", "sft"), *[(t, "grpo") for t in config.tts]]
    assert set(comparisons) == {f"{a} - {b}" for a, b in pairs}
    for a, b in pairs:
        score = {
            n: {
                p["id"]: p["score"]
                for p in map(json.loads, open(f"{workdir}/predictions_{n}.jsonl"))
            }
            for n in (a, b)
        }
        common = sorted(set(score[a]) & set(score[b]))
        c = comparisons[f"{a} - {b}"]
        assert c["questions"] == len(common)
        diff = np.mean([score[a][k] - score[b][k] for k in common])
        np.testing.assert_allclose(c["difference"], diff)
    assert comparisons_table.splitlines()[0].startswith("| difference |")
    for png in ("training_curves.png", "tts_compute.png"):
        with open(os.path.join(workdir, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_rerun_does_no_work(finished, capsys):
    from vlmm_jax.pipeline import run_pipeline

    config, workdir, evaluated = finished
    metrics = open(os.path.join(workdir, "metrics.jsonl")).read()
    predictions = {
        n: os.path.getmtime(os.path.join(workdir, f"predictions_{n}.jsonl")) for n in evaluated
    }
    assert run_pipeline(config, workdir) == evaluated
    out = capsys.readouterr().out
    assert out.count("skipping") == len(evaluated) + 3  # + align, SFT and GRPO training
    assert open(os.path.join(workdir, "metrics.jsonl")).read() == metrics
    for n, mtime in predictions.items():
        assert os.path.getmtime(os.path.join(workdir, f"predictions_{n}.jsonl")) == mtime
