"""The run's plots: moving averages by hand, which curves the training panels draw, and the
accuracy-against-samples points of greedy and TTS stages."""

import json

import numpy as np

from vlmm_jax import plots


def test_moving_average_by_hand():
    values = [1.0, 3.0, 2.0, 6.0, 4.0]
    np.testing.assert_allclose(plots.moving_average(values, 1), [2.0, 2.0, 11 / 3, 4.0, 5.0])
    np.testing.assert_allclose(plots.moving_average(values, 2), [2.0, 3.0, 3.2, 15 / 4, 4.0])
    np.testing.assert_allclose(plots.moving_average(values, 0), values)
    assert plots.smoothing_half_width(20) == 2 and plots.smoothing_half_width(3) == 1
    assert plots.smoothing_half_width(1000) == 12


def test_training_curves_leave_out_the_grpo_loss(tmp_path):
    """SFT's loss is drawn; GRPO's surrogate loss is not, its reward and entropy are."""
    rows = [
        {"stage": "sft_train", "split": "train", "step": s, "loss": 3.0 - 0.1 * s}
        for s in range(10)
    ]
    rows += [{"stage": "sft_train", "split": "eval", "step": 9, "loss": 2.5}]
    rows += [
        {
            "stage": "grpo_train",
            "split": "train",
            "step": s,
            "loss": 0.01,
            "reward": 0.1 * s,
            "entropy": 1.0,
        }
        for s in range(6)
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    drawn = plots.training_curves(str(path), str(tmp_path / "curves.png"))
    assert drawn == {
        "loss": ["sft_train train", "sft_train eval"],
        "reward": ["grpo_train train"],
        "policy entropy": ["grpo_train train"],
    }
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_scaling_points_and_plot(tmp_path):
    greedy = {"accuracy": 0.4, "accuracy_ci": [0.3, 0.5], "samples_per_question": 1.0}
    rows = [
        {"budget": b, "samples": float(s), "accuracy": a, "accuracy_ci": [a - 0.1, a + 0.1]}
        for b, s, a in ((1, 1, 0.35), (2, 2, 0.4), (None, 4, 0.5))
    ]
    sc = {"accuracy": 0.5, "accuracy_ci": [0.4, 0.6], "scaling": rows[::-1]}
    assert plots.scaling_points(greedy) == [(1.0, 0.4, 0.3, 0.5)]
    assert [p[:2] for p in plots.scaling_points(sc)] == [(1.0, 0.35), (2.0, 0.4), (4.0, 0.5)]
    plots.accuracy_vs_samples({"grpo": greedy, "self_consistency_4": sc}, str(tmp_path / "t.png"))
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
