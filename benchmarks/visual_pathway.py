"""Can the synthetic recipes' model learn to read a video from scratch? The background decides.

The easiest visual question there is: one square of one of the 8 synthetic colours on a plain
background, "What colour is the object?", answer the colour word. The synthetic recipes' model
(4 decoder layers of width 128, a 2-block vision tower) trains from random weights with the SFT
train step on batches drawn from `--train-clips` clips (512); every `--eval-every` steps, the
loss of the colour word on 64 held-out clips with the real, blanked and swapped video
(`eval.token_loss`). Uniform guessing is ln 8.

A model that reads the video has real << blank, swapped; a model that learned only the answer
prior has all three equal (at or below ln 8). Prints JSON, one run per background x radius:

  dark       the generator's former near-black backgrounds (about -1.5 per channel once the
             processor normalises them): small objects are drowned, the model ignores the video
  synthetic  `render.BACKGROUNDS`, tints near the normalisation mean (patches ~0)

`--objects K` (K > 1) puts K shapes of distinct colours in each clip and asks for the colour of
one named by its shape ("What colour is the triangle?"): the model must bind colour to shape,
as the synthetic attribute task asks (which then also maps the colour to an option letter).

    python benchmarks/visual_pathway.py [--backgrounds dark,synthetic] [--radii 6] [--objects 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

if __package__ in (None, ""):  # `python benchmarks/X.py`: the repository root on sys.path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vlmm_jax.config_dicts import build_model_config, optimizer_defaults, synthetic_model  # noqa: E402
from vlmm_jax.data.packing import collate_rows, round_up  # noqa: E402
from vlmm_jax.data.pipeline import batch_arrays  # noqa: E402
from vlmm_jax.data.records import Example  # noqa: E402
from vlmm_jax.data.synthetic.builder import SyntheticRecord  # noqa: E402
from vlmm_jax.data.synthetic.render import BACKGROUNDS, COLORS, SHAPES, stencil  # noqa: E402
from vlmm_jax.data.synthetic_data import SyntheticSample  # noqa: E402
from vlmm_jax.data.tokenizer import train_tokenizer  # noqa: E402
from vlmm_jax.eval.token_loss import token_class_loss  # noqa: E402
from vlmm_jax.models import Qwen2_5_VL, init_params  # noqa: E402
from vlmm_jax.policy import Policy  # noqa: E402
from vlmm_jax.training.batches import split_micro_batches  # noqa: E402
from vlmm_jax.training.optimizer import make_optimizer  # noqa: E402
from vlmm_jax.training.sft import train_step  # noqa: E402
from vlmm_jax.training.state import TrainState  # noqa: E402

QUESTION = "What colour is the object?"
NAMES = tuple(COLORS)
PALETTES = {
    "dark": ((20, 20, 24), (30, 26, 22), (18, 28, 32), (34, 34, 34), (26, 20, 30)),
    "synthetic": BACKGROUNDS,
}


def question(objects: int, shape: str) -> str:
    return QUESTION if objects == 1 else f"What colour is the {shape}?"


def clip(rng: np.random.Generator, frames: int, size: int, radius: int, backgrounds, objects=1):
    """(question, colour, uint8 [frames, size, size, 3]): `objects` static shapes of distinct
    colours and shapes (squares when there is one), not overlapping; the question asks for
    the colour of the first, by its shape when there are several."""
    if objects == 1:  # the draws of the single-square runs quoted in the README
        colours = [int(rng.integers(len(NAMES)))]
    else:
        colours = [int(c) for c in rng.choice(len(NAMES), objects, replace=False)]
    shapes = ["square"] if objects == 1 else list(rng.choice(SHAPES, objects, replace=False))
    video = np.empty((frames, size, size, 3), np.uint8)
    video[:] = backgrounds[rng.integers(len(backgrounds))]
    placed: list[np.ndarray] = []
    while len(placed) < objects:  # rejection: boxes at least one pixel apart
        xy = rng.integers(radius, size - radius, 2)
        if all(np.abs(xy - other).max() > 2 * radius + 1 for other in placed):
            placed.append(xy)
    for (x, y), c, shape in zip(placed, colours, shapes, strict=True):
        mask = stencil(shape, radius)
        box = video[:, y - radius : y + radius + 1, x - radius : x + radius + 1]
        box[:, mask] = COLORS[NAMES[c]]
    return question(objects, shapes[0]), NAMES[colours[0]], video


def samples(make: SyntheticSample, rng, n: int, args, radius: int, backgrounds):
    out = []
    for i in range(n):
        asked, colour, video = clip(rng, args.frames, args.size, radius, backgrounds, args.objects)
        example = Example(id=str(i), question=asked, answer=colour, problem_type="free-form")
        out.append(make(SyntheticRecord(example, video, 4.0)))
    return out


def batch(rows_of_samples, config, pad_id: int) -> dict:
    """`[1, B, L]` micro-batched arrays of one sample per row."""
    length = round_up(max(int(s["num_tokens"]) for s in rows_of_samples), 64)
    rows = collate_rows([[s] for s in rows_of_samples], config, length=length, pad_id=pad_id)
    return split_micro_batches(batch_arrays(rows), 1)


def run(args, background: str, radius: int) -> dict:
    questions = [question(args.objects, shape) for shape in SHAPES]
    tok = train_tokenizer([f"<answer>{c}</answer>" for c in NAMES] * 4 + questions * 4, 512)
    model_config = build_model_config(synthetic_model())
    text = dataclasses.replace(model_config.text, vocab_size=512)
    model_config = model_config.replace(text=text, **tok.model_token_ids())
    model = Qwen2_5_VL(model_config)
    policy = Policy(model=model)
    make = SyntheticSample(tok, model_config, think=False)
    palette = PALETTES[background]
    train = samples(make, np.random.default_rng(0), args.train_clips, args, radius, palette)
    held_out = samples(make, np.random.default_rng(1), 64, args, radius, palette)

    opt = optimizer_defaults()
    opt.learning_rate, opt.warmup_steps, opt.total_steps = args.lr, 10, args.steps
    opt.freeze = tuple(f for f in args.freeze.split(",") if f)
    params = init_params(model, jax.random.key(0))
    tx = make_optimizer(opt, params)
    state = TrainState(jnp.int32(0), params, tx.init(params), jax.random.key(1))
    step = jax.jit(functools.partial(train_step, policy=policy, tx=tx))
    curve = {"step": [], "real": [], "blank": [], "swapped": []}
    start = time.perf_counter()
    for i in range(args.steps):
        pick = np.random.default_rng(i).choice(len(train), args.batch, replace=False)
        state, _ = step(state, batch([train[j] for j in pick], model_config, tok.pad_id))
        if (i + 1) % args.eval_every == 0 or i + 1 == args.steps:
            loss = token_class_loss(policy, state.params, held_out, tok)
            curve["step"].append(i + 1)
            for condition in ("real", "blank", "swapped"):
                curve[condition].append(round(loss[condition]["visual_word"], 3))
    seconds = round(time.perf_counter() - start, 1)
    return {"background": background, "radius": radius, "seconds": seconds, "colour_nll": curve}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backgrounds", default="dark,synthetic", help=f"of {sorted(PALETTES)}")
    p.add_argument("--radii", default="6", help="square half-sides in pixels")
    p.add_argument("--size", type=int, default=84, help="frame side in pixels")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument(
        "--objects", type=int, default=1, help="shapes per clip (>1: 'What colour is the X?')"
    )
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--train-clips", type=int, default=512, help="training set size")
    p.add_argument("--batch", type=int, default=8, help="clips per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--freeze", default="", help="optimizer.freeze parts, e.g. vision,merger")
    args = p.parse_args()
    out = {
        "config": vars(args),
        "uniform_nll": round(math.log(len(NAMES)), 3),
        "runs": [
            run(args, b, int(r)) for b in args.backgrounds.split(",") for r in args.radii.split(",")
        ],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
