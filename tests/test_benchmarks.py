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


@pytest.mark.parametrize("script", ["long_video", "sample", "train_step", "tts", "visual_pathway"])
def test_both_spellings_import(script):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    for cmd in ([f"benchmarks/{script}.py"], ["-m", f"benchmarks.{script}"]):
        proc = subprocess.run(
            [sys.executable, *cmd, "--help"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "usage" in proc.stdout


def _cropped(mask):
    import numpy as np

    ys, xs = np.nonzero(mask)
    return mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def test_visual_pathway_clips_bind_the_asked_colour_to_the_named_shape():
    """Several objects: distinct colours, and the asked colour's pixels are exactly the stencil
    of the shape the question names (so the colour cannot be read without the shape)."""
    import numpy as np

    from benchmarks.visual_pathway import NAMES, QUESTION, clip
    from vlmm_jax.data.synthetic.render import BACKGROUNDS, COLORS, SHAPES, stencil

    rng = np.random.default_rng(0)
    for _ in range(20):
        asked, colour, video = clip(rng, 2, 84, 6, BACKGROUNDS[:1], objects=3)
        shape = asked.removeprefix("What colour is the ").removesuffix("?")
        assert shape in SHAPES
        present = [c for c in NAMES if (video[0] == COLORS[c]).all(-1).any()]
        assert len(present) == 3 and colour in present
        mask = (video[0] == COLORS[colour]).all(-1)
        np.testing.assert_array_equal(_cropped(mask), _cropped(stencil(shape, 6)))
    assert clip(rng, 2, 84, 6, BACKGROUNDS[:1])[0] == QUESTION  # one square: the plain question
