"""SFT loss per token class: characters and tokens classified by hand, the class means against
the eval step's loss on the same targets, and the ablated conditions scoring the same targets."""

import os

import jax
import numpy as np
import pytest

from vlmm_jax.config_dicts import build_model_config, pipeline_defaults
from vlmm_jax.data import synthetic_data
from vlmm_jax.eval.token_loss import (
    CLASSES,
    char_classes,
    class_means,
    target_classes,
    token_class_loss,
)
from vlmm_jax.models import Qwen2_5_VL, init_params
from vlmm_jax.pipeline import smoke_size
from vlmm_jax.policy import Policy

V, N, A, T = range(4)  # visual_word, number, answer, template
assert CLASSES == ("visual_word", "number", "answer", "template")


def test_char_classes_by_hand():
    text = "<think>The red cross, 0.5s</think><answer>B</answer>"
    got = char_classes(text)
    want = np.full(len(text), T)
    want[text.index("red") : text.index("red") + 3] = V
    want[text.index("cross") : text.index("cross") + 5] = V
    want[text.index("0.5")] = want[text.index("0.5") + 2] = N
    want[text.index(">B") + 1] = A
    np.testing.assert_array_equal(got, want)
    # Words inside other words are not visual words; digits and colours inside the answer
    # keep their class, its other characters are answer characters.
    np.testing.assert_array_equal(char_classes("reds"), [T] * 4)
    got = char_classes("<answer>red: 12</answer>")[8:15]
    np.testing.assert_array_equal(got, [V, V, V, A, A, N, N])


def test_target_classes_by_hand():
    pieces = ["<|im_start|>", "<think>", "The", " red", " at", " 0", ".", "5s", ".</", "think"]
    pieces += ["><", "answer", ">B", "</", "answer", ">", "<|im_end|>"]
    ids = np.arange(len(pieces))
    weights = np.ones(len(ids) - 1)
    weights[:2] = 0  # "<think>" and "The" are not targets; the row starts before them
    got = target_classes(ids, weights, lambda i: pieces[i])
    want = [-1, -1, V, T, N, T, N, T, T, T, T, A, T, T, T, T]
    np.testing.assert_array_equal(got, want)


def test_class_means_by_hand():
    nll = np.array([1.0, 2.0, 3.0, 4.0, 6.0])
    classes = np.array([A, T, T, N, A])
    out = class_means(nll, classes)
    assert out["answer"] == pytest.approx(3.5) and out["template"] == pytest.approx(2.5)
    assert out["number"] == pytest.approx(4.0) and out["visual_word"] is None
    assert out["tokens"] == {"answer": 2, "visual_word": 0, "number": 1, "template": 2}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("token_loss")
    c = smoke_size(pipeline_defaults(), os.fspath(root / "data"))
    model_config = build_model_config(c.model)
    data = synthetic_data.prepare(c, model_config, os.fspath(root))
    cfg = data.model_config
    model = Qwen2_5_VL(cfg)
    params = init_params(model, jax.random.PRNGKey(0))
    policy = Policy(params=params, model=model)
    make = synthetic_data.SyntheticSample(data.tokenizer, cfg, think=data.think)
    samples = [make(data.split("validation")[i]) for i in range(6)]
    return policy, params, samples, data


def test_class_means_recover_the_mean_target_loss(prepared):
    policy, params, samples, data = prepared
    out = token_class_loss(policy, params, samples, data.tokenizer, batch_size=4)
    counts = out["real"]["tokens"]
    # Every target of a CoT SFT sample falls in some class; the CoT holds all four.
    want_targets = sum(int(s["loss_mask"][1:].sum()) for s in samples)
    assert sum(counts.values()) == want_targets and min(counts.values()) > 0
    # The token-weighted class means give back the mean NLL of all targets, computed here
    # sample by sample with the model's full logits.
    mean = sum(out["real"][k] * counts[k] for k in CLASSES) / want_targets
    total, n = 0.0, 0
    for s in samples:
        ids = np.asarray(s["input_ids"])[None]
        logits = policy.apply(
            ids,
            position_ids=np.asarray(s["position_ids"])[:, None],
            pixel_values_videos=s["pixel_values_videos"],
            video_grid_thw=s["video_grid_thw"],
        ).logits[0, :-1]
        logp = jax.nn.log_softmax(np.asarray(logits, np.float64), -1)
        tgt = ids[0, 1:]
        keep = np.asarray(s["loss_mask"][1:], bool)
        total -= float(np.asarray(logp)[np.arange(len(tgt)), tgt][keep].sum())
        n += int(keep.sum())
    assert mean == pytest.approx(total / n, rel=1e-4)
    # The ablations change pixels only: the same targets, other losses.
    for condition in ("blank", "swapped"):
        assert out[condition]["tokens"] == counts
        assert out[condition]["template"] != pytest.approx(out["real"]["template"], rel=1e-6)
