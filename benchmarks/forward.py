"""Forward throughput (tokens/s): our jitted model against transformers' eager one.

Same random weights (built with transformers, loaded with `from_pretrained`), same inputs: a
batch of video prompts plus text. Qwen2.5-VL (default): 8 frames at 112x112 (64 visual tokens).
Qwen3-VL (`--family qwen3_vl`): 8 frames at 128x128 (64 visual tokens), each of the 4 temporal
groups after its 2 timestamp tokens, DeepStack after 2 of the 4 vision blocks. Prints JSON;
`speedup` > 1 means vlmm_jax is faster.

    python benchmarks/forward.py [--family qwen2_5_vl|qwen3_vl] [--batch 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

if __package__ in (None, ""):  # `python benchmarks/X.py`: the repository root on sys.path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from benchmarks.harness import interleaved, per_second  # noqa: E402
from vlmm_jax.models import from_pretrained, vision_layout  # noqa: E402

VOCAB = 4096
IMAGE, VIDEO, VSTART, VEND = VOCAB - 2, VOCAB - 1, VOCAB - 4, VOCAB - 3


TEXT = dict(
    vocab_size=VOCAB,
    hidden_size=256,
    intermediate_size=768,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=2,
    rms_norm_eps=1e-6,
    bos_token_id=None,
    pad_token_id=0,
)
VISION = dict(depth=4, hidden_size=128, intermediate_size=256, num_heads=4, out_hidden_size=256)
TOKENS = dict(
    image_token_id=IMAGE,
    video_token_id=VIDEO,
    vision_start_token_id=VSTART,
    vision_end_token_id=VEND,
)
PATCH = {"qwen2_5_vl": 14, "qwen3_vl": 16}


def hf_model(seed=0, eos_token_id=0, family="qwen2_5_vl"):
    """A small random transformers model (4 layers, width 256, 4 vision blocks)."""
    torch.manual_seed(seed)
    if family == "qwen3_vl":
        config = transformers.Qwen3VLConfig(
            text_config=dict(
                **TEXT,
                head_dim=32,
                eos_token_id=eos_token_id,
                rope_parameters={
                    "rope_type": "default",
                    "mrope_section": [4, 6, 6],
                    "mrope_interleaved": True,
                    "rope_theta": 1e4,
                },
            ),
            vision_config=dict(
                **VISION, num_position_embeddings=64, deepstack_visual_indexes=[1, 2]
            ),
            **TOKENS,
        )
        cls = transformers.Qwen3VLForConditionalGeneration
    else:
        config = transformers.Qwen2_5_VLConfig(
            text_config=dict(
                **TEXT,
                eos_token_id=eos_token_id,
                rope_parameters={
                    "rope_type": "default",
                    "mrope_section": [4, 6, 6],
                    "rope_theta": 1e4,
                },
            ),
            vision_config=dict(
                **VISION, fullatt_block_indexes=[1, 3], window_size=112, tokens_per_second=2
            ),
            **TOKENS,
        )
        cls = transformers.Qwen2_5_VLForConditionalGeneration
    return cls._from_config(config, attn_implementation="sdpa", dtype=torch.float32).eval()


def inputs(batch, frames=8, text=64, seed=0, family="qwen2_5_vl"):
    """ids int64 [B, L], video grids [B, 3], pixel rows [P, 3*2*patch**2]. A Qwen3-VL video is one
    `2 timestamp tokens, <vstart>, pads, <vend>` run per temporal group."""
    rng = np.random.default_rng(seed)
    patch = PATCH[family]
    grid = (frames // 2, 8, 8)  # 8x8 patches a frame: 16 merged tokens per frame group
    per_group = grid[1] * grid[2] // 4
    if family == "qwen3_vl":
        groups = [[*rng.integers(1, VOCAB - 8, 2), VSTART, *[VIDEO] * per_group, VEND]]
        video = np.concatenate(groups * grid[0])
    else:
        video = np.concatenate([[VSTART], np.full(per_group * grid[0], VIDEO), [VEND]])
    rows = [
        np.concatenate(
            [rng.integers(1, VOCAB - 8, text // 2), video, rng.integers(1, VOCAB - 8, text // 2)]
        )
        for _ in range(batch)
    ]
    ids = np.stack(rows).astype(np.int64)
    grids = np.array([grid] * batch, np.int64)
    pixels = rng.normal(size=(int(np.prod(grids, 1).sum()), 6 * patch * patch))
    return ids, grids, pixels.astype(np.float32)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--family", choices=sorted(PATCH), default="qwen2_5_vl")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    ids, grids, pixels = inputs(args.batch, family=args.family)
    # Qwen2.5-VL's time is in the positions; Qwen3-VL's in the timestamp text.
    timing_in = {"second_per_grid_ts": np.ones(args.batch, np.float32)}
    if args.family == "qwen3_vl":
        timing_in = {}
    hf = hf_model(family=args.family)
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        model, params = from_pretrained(d, vision_position_advance="spatial")  # as transformers 5
    layout = vision_layout(grids, model.config.vision)

    @jax.jit
    def forward(params, ids, pixels):
        return model.apply(
            {"params": params},
            ids,
            pixel_values_videos=pixels,
            video_grid_thw=grids,
            vision_layout=layout,
            **timing_in,
        ).logits

    j_ids, j_pix = jnp.asarray(ids), jnp.asarray(pixels)
    t_in = dict(
        input_ids=torch.from_numpy(ids),
        pixel_values_videos=torch.from_numpy(pixels),
        video_grid_thw=torch.from_numpy(grids),
        mm_token_type_ids=torch.from_numpy((ids == VIDEO).astype(np.int32) * 2),
        **{k: torch.from_numpy(v) for k, v in timing_in.items()},
    )

    def theirs():
        with torch.no_grad():
            return hf(**t_in).logits

    timing = interleaved(
        {
            "vlmm_jax": lambda: forward(params, j_ids, j_pix).block_until_ready(),
            "transformers": theirs,
        },
        repeats=args.repeats,
    )
    max_diff = float(np.abs(theirs().numpy() - np.asarray(forward(params, j_ids, j_pix))).max())
    tokens = ids.size
    rate = per_second(timing, tokens)
    print(
        json.dumps(
            {
                "benchmark": "forward",
                "machine": f"{platform.machine()} {jax.devices()[0].device_kind}",
                "torch_threads": torch.get_num_threads(),
                "config": {
                    "family": args.family,
                    "decoder_layers": 4,
                    "width": 256,
                    "vision_blocks": 4,
                    "frames": 8,
                    "frame_px": 8 * PATCH[args.family],
                    "batch": args.batch,
                    "tokens_per_row": ids.shape[1],
                },
                "tokens_per_s": rate,
                "speedup_vs_transformers": timing["ratios"]["transformers/vlmm_jax"],
                "timing": timing,
                "max_abs_logit_diff": max_diff,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
