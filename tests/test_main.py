"""The launcher: the demo job runs, and config overrides are type- and key-checked."""

import json
import os
import subprocess
import sys

import pytest

from vlmm_jax.config_dicts import build_model_config, model_config_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(*args, workdir):
    cmd = [
        sys.executable,
        "-m",
        "vlmm_jax.main",
        "--config=configs/demo.py",
        f"--workdir={workdir}",
        *args,
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


def test_demo_runs_with_overrides(tmp_path):
    run = launch("--config.model.num_layers=1", "--config.new_tokens=3", workdir=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    demo = json.loads((tmp_path / "results.json").read_text())["stages"]["demo"]
    assert demo["kv_cache_k"][0] == 1  # one decoder layer
    assert len(demo["generated_tokens"][0]) == 3
    assert demo["prefill_logits"] == [1, demo["input_ids"][1], 512]


def test_unknown_key_is_named(tmp_path):
    run = launch("--config.model.num_layer=2", workdir=tmp_path)
    assert run.returncode != 0
    assert "config.model has no field 'num_layer'" in run.stderr


def test_wrong_type_is_named(tmp_path):
    run = launch("--config.model.num_layers=two", workdir=tmp_path)
    assert run.returncode != 0
    assert "--config.model.num_layers=two" in run.stderr


def test_model_config_dict_round_trip():
    cd = model_config_dict("small")
    cd.num_layers = 3
    cd.vision.depth = 2
    cd.vision.fullatt_block_indexes = (1,)
    cfg = build_model_config(cd)
    assert cfg.text.num_layers == 3 and cfg.vision.depth == 2
    cd.vision.fullatt_block_indexes = (5,)
    with pytest.raises(ValueError, match="fullatt_block_indexes"):
        build_model_config(cd)
