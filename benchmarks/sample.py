"""Sampling throughput (new tokens/s): our shared-prefix sampler against transformers' `generate`
and against our own naive path.

8 prompts x 8 samples x 128 new tokens (top-k 50, temperature 1, EOS disabled on both sides so
every row decodes exactly 128 tokens) after a video prompt of ~1k tokens, on one random Qwen2.5-VL
(4 decoder layers of width 256, 4 vision blocks) built with transformers and loaded into ours with
`from_pretrained`: the same config and weights on both sides.

  * ours (shared prefix): vision tower + prefill once per prompt, cache fanned out to 8 rows,
    jitted `lax.while_loop` decode (compile time excluded: one warm-up call).
  * ours (naive): each prompt repeated 8 times through the whole model, same decode loop.
  * transformers: `generate(num_return_sequences=8, do_sample=True)`, SDPA attention, which
    expands the inputs (pixels included) to 64 rows before its prefill.

The video is 4 frames at 112x112 (32 visual tokens) plus ~1k text tokens: our vision tower runs
all patches of a batch as one sequence with dense segment masking (memory quadratic in the total
patch count), which the naive path's 64 video copies would not fit with a longer video.

Prints JSON; ratios > 1 mean ours (shared prefix) is faster.

    python -m benchmarks.sample [--prompts 8] [--samples 8] [--new-tokens 128] [--text 990]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import jax
import numpy as np
import torch

if __package__ in (None, ""):  # `python benchmarks/X.py`: the repository root on sys.path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.forward import VEND, VIDEO, VOCAB, VSTART  # noqa: E402
from benchmarks.forward import hf_model as forward_model  # noqa: E402
from benchmarks.harness import interleaved, per_second  # noqa: E402
from vlmm_jax.inference import Sampler, TopK  # noqa: E402
from vlmm_jax.models import from_pretrained  # noqa: E402

EOS = VOCAB - 5


def hf_model(seed=0):
    """forward.py's benchmark model, with an EOS id inside the vocabulary."""
    return forward_model(seed, eos_token_id=EOS)


def prompts(batch, text, frames=4, side=112, seed=0):
    """`batch` video prompts (same length: no padding), transformers' layout, NumPy."""
    rng = np.random.default_rng(seed)
    grid = (frames // 2, side // 14, side // 14)
    n_vis = int(np.prod(grid)) // 4
    rows = [
        np.concatenate(
            [
                rng.integers(1, VOCAB - 8, 16),
                [VSTART],
                np.full(n_vis, VIDEO),
                [VEND],
                rng.integers(1, VOCAB - 8, text - 16),
            ]
        )
        for _ in range(batch)
    ]
    ids = np.stack(rows).astype(np.int64)
    grids = np.array([grid] * batch, np.int64)
    return {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "pixel_values_videos": rng.normal(size=(int(np.prod(grids, 1).sum()), 1176)).astype(
            np.float32
        ),
        "video_grid_thw": grids,
        "second_per_grid_ts": np.ones(batch, np.float32),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--text", type=int, default=990, help="text tokens per prompt")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    inputs = prompts(args.prompts, args.text)
    hf = hf_model()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        model, params = from_pretrained(d)

    sampler = Sampler(model, max_new_tokens=args.new_tokens, eos_ids=())
    method, rng = TopK(k=50, temperature=1.0), jax.random.key(0)

    def ours(shared):
        out = sampler(
            params,
            inputs,
            rng=rng,
            method=method,
            num_samples=args.samples,
            shared_prefix=shared,
        )
        return jax.block_until_ready(out)

    start = time.perf_counter()
    out = ours(True)  # compile + first run
    compile_s = time.perf_counter() - start
    assert int(np.asarray(out.lengths).min()) == args.new_tokens

    t_in = {k: torch.from_numpy(v) for k, v in inputs.items()}
    t_in["mm_token_type_ids"] = torch.from_numpy(
        (inputs["input_ids"] == VIDEO).astype(np.int32) * 2
    )
    gen_kw = dict(
        do_sample=True,
        top_k=50,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=args.new_tokens,
        min_new_tokens=args.new_tokens,  # EOS suppressed: every row decodes all tokens
        num_return_sequences=args.samples,
        pad_token_id=0,
    )

    def theirs():
        with torch.no_grad():
            return hf.generate(**t_in, **gen_kw)

    assert theirs().shape == (
        args.prompts * args.samples,
        inputs["input_ids"].shape[1] + args.new_tokens,
    )
    timing = interleaved(
        {
            "ours_shared_prefix": lambda: ours(True),
            "ours_naive": lambda: ours(False),
            "transformers_generate": theirs,
        },
        repeats=args.repeats,
    )
    new_tokens = args.prompts * args.samples * args.new_tokens
    print(
        json.dumps(
            {
                "benchmark": "sample",
                "machine": f"{platform.machine()} {jax.devices()[0].device_kind}, "
                f"{os.cpu_count()} cpus, {torch.get_num_threads()} torch threads",
                "config": {
                    "decoder_layers": 4,
                    "width": 256,
                    "vision_blocks": 4,
                    "vocab": VOCAB,
                    "prompts": args.prompts,
                    "samples_per_prompt": args.samples,
                    "new_tokens_per_row": args.new_tokens,
                    "prompt_tokens": int(inputs["input_ids"].shape[1]),
                    "visual_tokens": int((inputs["input_ids"][0] == VIDEO).sum()),
                    "sampling": "top-k 50, temperature 1, EOS disabled",
                },
                "new_tokens": new_tokens,
                "ours_first_call_with_compile_s": round(compile_s, 3),
                "tokens_per_s": per_second(timing, new_tokens),
                "speedup_vs_transformers": timing["ratios"][
                    "transformers_generate/ours_shared_prefix"
                ],
                "speedup_shared_prefix_vs_naive": timing["ratios"]["ours_naive/ours_shared_prefix"],
                "timing": timing,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
