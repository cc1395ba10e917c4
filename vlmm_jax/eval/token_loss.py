"""Which target tokens a model learned from the video: SFT loss per token class, real vs ablated.

A model that reads the video predicts the tokens that depend on it (the answer, the colour and
shape words, the numbers) better with its real video than with the video blanked or swapped for
another example's; the template tokens ("I look for the") are the same either way. The mean
negative log-likelihood of the targets of each class, under each visual condition:

| class         | a target token holding...                                               |
| ------------- | ----------------------------------------------------------------------- |
| `visual_word` | a colour, shape or grid-cell word of the synthetic videos               |
| `number`      | a digit                                                                 |
| `answer`      | another character inside `<answer>...</answer>` (a letter, a word)      |
| `template`    | only other characters (tags, punctuation, the reasoning's wording)      |

A token holding characters of several classes takes the first class of that table (`>B` is an
answer token, ` 0` a number, wherever they stand).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from vlmm_jax.data.packing import collate_rows, round_up
from vlmm_jax.data.pipeline import batch_arrays
from vlmm_jax.data.synthetic.perception import CELLS
from vlmm_jax.data.synthetic.render import COLORS, SHAPES
from vlmm_jax.data.visual_ablations import ablate
from vlmm_jax.policy import Policy
from vlmm_jax.training.batches import split_micro_batches
from vlmm_jax.training.sft import target_logprobs

CLASSES = ("visual_word", "number", "answer", "template")
CONDITIONS = ("real", "blank", "swapped")
VISUAL_WORDS = (*COLORS, *SHAPES, *sorted({w for row in CELLS for c in row for w in c.split()}))
_WORD = re.compile(r"\b(" + "|".join(sorted(VISUAL_WORDS, key=len, reverse=True)) + r")\b")
_ANSWER = re.compile(r"<answer>(.*?)(</answer>|$)", re.S)


def char_classes(text: str) -> np.ndarray:
    """int8 `[len(text)]`: the index in `CLASSES` of every character of `text`."""
    out = np.full(len(text), CLASSES.index("template"), np.int8)
    for m in _ANSWER.finditer(text):
        out[m.start(1) : m.end(1)] = CLASSES.index("answer")
    for i, ch in enumerate(text):
        if ch.isdigit():
            out[i] = CLASSES.index("number")
    for m in _WORD.finditer(text):
        out[m.start() : m.end()] = CLASSES.index("visual_word")
    return out


def target_classes(ids: np.ndarray, weights: np.ndarray, decode_one) -> np.ndarray:
    """int8 `[L-1]` class of each target `ids[1:]` of a row (-1 where `weights` is 0).

    `decode_one(id) -> str` is the text of one token (special tokens included); a token's
    characters are found by laying the decoded targets of the row end to end.
    """
    out = np.full(len(ids) - 1, -1, np.int8)
    where = np.flatnonzero(np.asarray(weights) > 0)
    pieces = [decode_one(int(ids[j + 1])) for j in where]
    classes = char_classes("".join(pieces))
    start = 0
    for j, piece in zip(where, pieces, strict=True):
        span = classes[start : start + len(piece)]
        out[j] = span.min() if len(span) else CLASSES.index("template")
        start += len(piece)
    return out


def class_means(nll: np.ndarray, classes: np.ndarray) -> dict[str, Any]:
    """Mean NLL per class of the targets `classes >= 0`, and the target count of each."""
    out: dict[str, Any] = {}
    for k, name in enumerate(CLASSES):
        sel = classes == k
        out[name] = float(nll[sel].mean()) if sel.any() else None
    out["tokens"] = {name: int((classes == k).sum()) for k, name in enumerate(CLASSES)}
    return out


def _condition(samples: Sequence[dict], condition: str, seed: int) -> list[dict]:
    if condition == "real":
        return list(samples)
    rng = np.random.default_rng(seed)
    n = len(samples)
    # `swapped`: the next sample's pixels (the synthetic videos of one dataset share a grid).
    return [
        ablate(s, condition, rng, other=samples[(i + 1) % n] if condition == "swapped" else None)
        for i, s in enumerate(samples)
    ]


def token_class_loss(
    policy: Policy,
    params,
    samples: Sequence[dict],
    tokenizer,
    *,
    conditions: Sequence[str] = CONDITIONS,
    batch_size: int = 8,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """`{condition: class_means(...)}` of SFT-mode `build_sample` dicts `samples`.

    Every condition scores the same targets (the ablations change pixels only), so the class
    token counts agree across conditions.
    """
    if len(samples) < 2:
        raise ValueError("token_class_loss needs at least 2 samples (swapped takes another's)")
    step = policy.jit(functools.partial(target_logprobs, policy=policy))

    def decode_one(i):
        return tokenizer.decode([i], skip_special_tokens=False)

    out = {}
    for condition in conditions:
        nll, classes = [], []
        for_condition = _condition(samples, condition, seed)
        for b in range(0, len(for_condition), batch_size):
            chunk = for_condition[b : b + batch_size]
            length = round_up(max(int(s["num_tokens"]) for s in chunk), 64)
            rows = collate_rows(
                [[s] for s in chunk], policy.config, length=length, pad_id=tokenizer.pad_id
            )
            batch = jax.tree.map(lambda x: x[0], split_micro_batches(batch_arrays(rows), 1))
            logp, w, _ = jax.device_get(step(params, batch))
            for r in range(len(chunk)):
                cls = target_classes(rows["input_ids"][r], w[r], decode_one)
                nll.append(-logp[r][cls >= 0])
                classes.append(cls[cls >= 0])
        out[condition] = class_means(np.concatenate(nll), np.concatenate(classes))
    return out


def visual_diagnostics(policy: Policy, params, data, n: int, split: str = "validation"):
    """On the first `n` examples of `split` of a prepared synthetic dataset
    (`data.synthetic_data.SyntheticData`), as its SFT stage trains on them (same target and
    chain-of-thought setting): `token_loss` (`token_class_loss`) and `vision_probe`
    (`eval.vision_probe.probe`)."""
    from vlmm_jax.data.synthetic_data import SyntheticSample
    from vlmm_jax.eval.vision_probe import probe

    source = data.split(split)
    make = SyntheticSample(data.tokenizer, policy.config, think=data.think, target=data.target)
    records = [source[i] for i in range(min(n, len(source)))]
    samples = [make(r) for r in records]
    return {
        "token_loss": token_class_loss(policy, params, samples, data.tokenizer),
        "vision_probe": probe(policy.model, policy.with_params(params).weights(), records, samples),
    }


__all__ = [
    "CLASSES",
    "CONDITIONS",
    "char_classes",
    "class_means",
    "target_classes",
    "token_class_loss",
    "visual_diagnostics",
]
