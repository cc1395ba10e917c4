"""The benchmark harness interleaves its contenders and reports what it measured; the scripts
that import `benchmarks` run under both spellings."""

import os
import subprocess
import sys
import time

import pytest

from benchmarks.harness import interleaved, per_second

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_interleaved_alternates_after_warmup_and_reports_medians():
    log = []

    def slow():
        log.append("a")
        time.sleep(0.02)

    def fast():
        log.append("b")

    out = interleaved({"a": slow, "b": fast}, repeats=5, warmup=2)
    assert log == ["a", "a", "b", "b"] + ["a", "b"] * 5
    a, b = out["seconds"]["a"], out["seconds"]["b"]
    assert len(a["runs"]) == 5 and a["min"] <= a["median"] <= a["max"]
    assert a["median"] >= 0.02 > b["median"]
    assert out["ratios"]["a/b"] == pytest.approx(a["median"] / b["median"])
    assert out["ratios"]["b/a"] == pytest.approx(1 / out["ratios"]["a/b"])
    rate = per_second(out, 10.0)["a"]
    assert rate["min"] == pytest.approx(10 / a["max"]) and rate["median"] == 10 / a["median"]
    assert isinstance(out["busy"], bool) and out["load_before"] >= 0


def test_fewer_than_five_repeats_warns():
    with pytest.warns(UserWarning, match="fewer than 5"):
        interleaved({"a": lambda: None}, repeats=2)


@pytest.mark.parametrize("script", ["sample", "train_step", "visual_pathway"])
def test_both_spellings_import(script):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    for cmd in ([f"benchmarks/{script}.py"], ["-m", f"benchmarks.{script}"]):
        proc = subprocess.run(
            [sys.executable, *cmd, "--help"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "usage" in proc.stdout
