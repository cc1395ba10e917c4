"""The real-data recipes (configs/*_r1.py) build, shard on fake devices and run one step.

Each runs in a subprocess (`tests.training.real_recipe_worker`) on a tiny random Hugging Face
checkpoint of the recipe's family (Qwen2.5-VL or Qwen3-VL) with a trained tokenizer, and
Video-R1 / Time-R1 annotation files that point at small mp4s written with PyAV; only
model-independent fields are shrunk.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.fake_devices import cpu_devices_env
from vlmm_jax.data.annotation_data import hold_out
from vlmm_jax.data.records import Example

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_recipe(recipe, tmp_path, devices=4, timeout=900):
    env = cpu_devices_env(devices)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.training.real_recipe_worker"]
        + ["--recipe", recipe, "--dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


@pytest.mark.parametrize(
    "recipe",
    [
        "sft_qwen2_5_vl_7b_video_r1",
        "grpo_qwen2_5_vl_7b_video_r1",
        "grpo_qwen2_5_vl_3b_time_r1",
        "sft_qwen3_vl_8b_video_r1",
        "grpo_qwen3_vl_8b_video_r1",
    ],
)
def test_real_recipe_runs_one_step(recipe, tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("torch")
    out = run_recipe(recipe, tmp_path, devices=4)
    assert out["devices"] == 4
    stages = out["results"]["stages"]
    if recipe.startswith("sft"):
        sft = stages["sft"]
        assert sft["steps"] == 1 and sft["skipped_steps"] == 0
        assert 0 < sft["train_loss"] < 20 and 0 < sft["eval_loss"] < 20
        return
    grpo = stages["grpo"]
    assert grpo["steps"] == 1 and grpo["validation"]["count"] == 2
    rows = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    train = [r for r in rows if r["stage"] == "grpo" and r["split"] == "train"]
    assert train and {"reward", "rollout_s", "update_s"} <= set(train[0])
    if "time_r1" in recipe:
        assert {"reward_tiou_v2", "reward_format"} <= set(train[0])
        assert "temporal_mIoU" in grpo["validation"]
    else:  # T-GRPO: shuffled-frame rollouts ran
        assert "shuffled_accuracy" in train[0]


def _examples(n):
    return [
        Example(id=f"q{i}", question="q?", answer="A", problem_type="multiple choice")
        for i in range(n)
    ]


def test_hold_out_is_stable_and_order_free():
    examples = _examples(50)
    train, val = hold_out(examples, 0.1)
    assert len(val) == 5 and len(train) == 45
    assert {e.id for e in train} | {e.id for e in val} == {e.id for e in examples}
    _, val_rev = hold_out(examples[::-1], 0.1)
    assert {e.id for e in val_rev} == {e.id for e in val}
    assert len(hold_out(_examples(2), 0.001)[1]) == 1  # at least one, never all
    with pytest.raises(ValueError, match="too few"):
        hold_out(_examples(1), 0.5)
