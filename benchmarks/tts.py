"""Test-time scaling throughput (questions/s): self-consistency@8 batched across questions against
one question at a time.

64 multiple-choice questions of the quickstart's shape (an 8-frame 84x84 video, 36 visual tokens,
and 40 to 120 text tokens, so that the batch is left-padded), answered by the synthetic recipes'
model (4 decoder layers of width 128, a 1,024-token vocabulary, random weights) with
`tts.evaluate`:

  * one at a time: `batch_size=1`, one `Sampler` call of 8 rows per question (each prefilled
    once, its cache fanned out), as the strategies ran before batching;
  * batched: `batch_size=--batch` questions per call (8 x 8 = 64 rows), each question still
    prefilled once and drawing the samples it would alone (`Strategy.run`).

Both decode the same questions with the same keys and all `--new-tokens` (EOS disabled); the
votes are checked equal. Compilation is excluded (one warm-up run each). Prints JSON; the ratio
> 1 means batched is faster.

    python benchmarks/tts.py [--questions 64] [--samples 8] [--batch 8] [--new-tokens 96]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys

import jax
import numpy as np

if __package__ in (None, ""):  # `python benchmarks/X.py`: the repository root on sys.path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.harness import interleaved, per_second  # noqa: E402
from vlmm_jax.config_dicts import build_model_config, synthetic_model  # noqa: E402
from vlmm_jax.inference import tts  # noqa: E402
from vlmm_jax.models import Qwen2_5_VL, init_params  # noqa: E402
from vlmm_jax.policy import Policy  # noqa: E402

VOCAB = 1024  # the synthetic recipes' tokenizer (`data.vocab_size`)
TOKEN_FIELDS = ("image_token_id", "video_token_id", "vision_start_token_id")
TOKEN_FIELDS += ("vision_end_token_id", "eos_token_id", "pad_token_id")
LETTERS = "ABCD"
MC = {
    "problem_type": "multiple choice",
    "options": ["A. a", "B. b", "C. c", "D. d"],
    "solution": "<answer>A</answer>",
}


def detokenize(ids) -> str:
    """The completion's last token as the option letter: votes see real disagreement."""
    return f"<think>{len(ids)}</think><answer>{LETTERS[ids[-1] % 4] if ids else 'A'}</answer>"


def question_prompts(config, n: int, frames: int = 8, side: int = 84, seed: int = 0):
    """n one-row video prompts (transformers' layout, NumPy) with 40..120 text tokens."""
    rng = np.random.default_rng(seed)
    v = config.vision
    grid = (frames // v.temporal_patch_size, side // v.patch_size, side // v.patch_size)
    n_vis = int(np.prod(grid)) // v.merge_unit
    text_hi = config.vision_start_token_id - 1
    out = []
    for _ in range(n):
        before, after = 8, int(rng.integers(32, 113))
        ids = np.concatenate(
            [
                rng.integers(1, text_hi, before),
                [config.vision_start_token_id],
                np.full(n_vis, config.video_token_id),
                [config.vision_end_token_id],
                rng.integers(1, text_hi, after),
            ]
        ).astype(np.int32)[None]
        out.append(
            {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "pixel_values_videos": rng.normal(size=(int(np.prod(grid)), v.patch_dim)).astype(
                    np.float32
                ),
                "video_grid_thw": np.asarray([grid], np.int64),
                "second_per_grid_ts": np.ones(1, np.float32),
            }
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--questions", type=int, default=64)
    p.add_argument("--samples", type=int, default=8, help="self-consistency's n")
    p.add_argument("--batch", type=int, default=8, help="questions per generate call (batched)")
    p.add_argument("--new-tokens", type=int, default=96)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()

    config = build_model_config(synthetic_model())
    text = dataclasses.replace(config.text, vocab_size=VOCAB)  # the trained tokenizer's size
    config = config.replace(
        text=text, **dict(zip(TOKEN_FIELDS, range(VOCAB - 6, VOCAB), strict=True))
    )
    model = Qwen2_5_VL(config)
    policy = Policy(model=model, params=init_params(model, jax.random.key(0)))
    generator = tts.ModelGenerator(policy, detokenize, max_new_tokens=args.new_tokens, eos_ids=())
    prompts = question_prompts(config, args.questions)
    questions = [tts.Question(dict(MC), lambda f, p=p: p, 8) for p in prompts]
    strategy = tts.SelfConsistency(n=args.samples)
    rng = jax.random.key(1)

    def run(batch_size):
        results = tts.evaluate([strategy], questions, generator, rng, batch_size=batch_size)
        return [(r.answer, r.spent) for r in results[strategy.name]]

    alone, batched = run(1), run(args.batch)  # the warm-ups (compilation)
    assert alone == batched, "batched self-consistency changed some question's answer"
    timing = interleaved(
        {"one_at_a_time": lambda: run(1), "batched": lambda: run(args.batch)},
        repeats=args.repeats,
        warmup=0,
    )
    lengths = [int(np.shape(q["input_ids"])[1]) for q in prompts]
    print(
        json.dumps(
            {
                "benchmark": "tts",
                "machine": f"{platform.machine()} {jax.devices()[0].device_kind}, "
                f"{os.cpu_count()} cpus",
                "config": {
                    "strategy": strategy.name,
                    "questions": args.questions,
                    "questions_per_call": args.batch,
                    "new_tokens_per_sample": args.new_tokens,
                    "prompt_tokens": [min(lengths), max(lengths)],
                    "model": "synthetic recipes' (4 decoder layers of width 128), random weights",
                },
                "questions_per_s": per_second(timing, args.questions),
                "speedup_batched_vs_one_at_a_time": timing["ratios"]["one_at_a_time/batched"],
                "timing": timing,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
