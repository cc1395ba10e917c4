"""Proof of fit, compiled for real TPU slices on this CPU host (libtpu, nothing executed):
the 7B SFT step fits a v5p-8, its compiled arguments are the bytes its shardings lay out, and
those halve on a v5p-16 (FSDP; lowered only, not compiled a second time); the 3B
Time-R1 GRPO programs (rollout, reference pass, update, optimizer, eval) fit a v5p-8, with the
Pallas kernels under `shard_map`."""

import json
import os
import subprocess
import sys

import pytest

from tests.fake_devices import xla_flags_without_fast_compile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytest.importorskip("libtpu")


def aot(recipe, topology, workdir, *flags):
    env = {**xla_flags_without_fast_compile(), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlmm_jax.main",
            f"--config=configs/{recipe}.py",
            f"--workdir={workdir}",
            "--config.job=aot",
            f"--config.aot.topology={topology}",
            *flags,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(workdir, "aot.json")) as f:
        return json.load(f)


def test_sft_7b_fits_v5p_and_shards_its_state(tmp_path):
    small = aot("sft_qwen2_5_vl_7b_video_r1", "v5p-8", tmp_path / "v5p-8")
    big = aot(
        "sft_qwen2_5_vl_7b_video_r1", "v5p-16", tmp_path / "v5p-16", "--config.aot.compile=False"
    )
    step = small["programs"]["train_step"]
    assert small["chips"] == 4 and small["mesh"]["fsdp"] == 4 and step["fits"], step
    assert small["attention"] == "auto"  # the Pallas kernels, compiled by Mosaic
    # The compiler laid the arguments out as their shardings say (TPU tiles pad a little).
    assert step["argument_bytes"] == pytest.approx(step["sharded_argument_bytes"], rel=0.05)
    lowered = big["programs"]["train_step"]
    assert not big["compiled"] and big["chips"] == 8 and "fits" not in lowered
    ratio = step["sharded_argument_bytes"] / lowered["sharded_argument_bytes"]
    assert ratio >= 1.8, ratio
    assert step["model_flops"] > 6 * 8e9 * 16 * 4096  # 6 N tokens at least


def test_grpo_3b_time_r1_fits_v5p(tmp_path):
    report = aot("grpo_qwen2_5_vl_3b_time_r1", "v5p-8", tmp_path)
    assert set(report["programs"]) == {"rollout", "logp", "update", "optimizer", "eval"}
    for name, program in report["programs"].items():
        assert program["fits"] and program["headroom_bytes"] > 0, (name, program)
