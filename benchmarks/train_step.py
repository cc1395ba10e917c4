"""SFT train-step throughput and model FLOPs utilisation, against transformers/PyTorch.

Same config (4 decoder layers, width 256, 4 vision blocks), same weights and batch (rows of text
around 8-frame 112x112 videos). Ours: the jitted `training.sft.train_step` (forward, backward,
AdamW). Theirs: `Qwen2_5_VLForConditionalGeneration` forward + backward + `torch.optim.AdamW`.
MFU = XLA-counted FLOPs of our step / time / the machine's matmul peak, measured in this run with
a large jitted matmul. Prints JSON; ratios > 1 mean vlmm_jax is faster.

    python benchmarks/train_step.py [--batch 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

if __package__ in (None, ""):  # `python benchmarks/X.py`: the repository root on sys.path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.forward import VIDEO, hf_model, inputs  # noqa: E402
from benchmarks.harness import interleaved, per_second  # noqa: E402
from vlmm_jax.config_dicts import optimizer_defaults  # noqa: E402
from vlmm_jax.models import from_pretrained  # noqa: E402
from vlmm_jax.models.positions import rope_index, row_vision_inputs  # noqa: E402
from vlmm_jax.policy import Policy  # noqa: E402
from vlmm_jax.training.optimizer import make_optimizer  # noqa: E402
from vlmm_jax.training.sft import train_step  # noqa: E402
from vlmm_jax.training.state import TrainState  # noqa: E402


def matmul_peak(n=2048, repeats=5) -> float:
    """FLOP/s of a large fp32 jitted matmul: the measured peak MFU is relative to."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        f(a).block_until_ready()
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    ids, grids, pixels = inputs(args.batch)
    spg = np.ones(args.batch, np.float32)
    hf = hf_model()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        model, params = from_pretrained(d, vision_position_advance="spatial")
    config = model.config
    # Our batch layout: per-row pixels, positions precomputed, loss on every next token.
    per_row = int(np.prod(grids[0]))
    rows = [[(pixels[i * per_row : (i + 1) * per_row], tuple(grids[i]))] for i in range(args.batch)]
    visual, layout = row_vision_inputs(rows, config.vision, num_patches=per_row)
    pos, _ = rope_index(
        jnp.asarray(ids),
        config,
        video_grid_thw=jnp.asarray(grids),
        second_per_grid_ts=jnp.asarray(spg),
    )
    batch = {
        "input_ids": ids.astype(np.int32),
        "loss_mask": np.ones_like(ids, np.int32),
        "segment_ids": np.ones_like(ids, np.int32),
        "position_ids": np.asarray(pos),
        "visual_pixels": visual,
        "vision_layout": layout,
    }
    batch = jax.tree.map(lambda x: jnp.asarray(x)[None], batch)  # one micro-batch
    opt = optimizer_defaults(
        learning_rate=1e-4,
        warmup_steps=0,
        schedule="constant",
        max_grad_norm=0.0,
        b2=0.999,
        weight_decay=0.0,
    )
    tx = make_optimizer(opt, params)
    state = TrainState(
        step=jnp.int32(0), params=params, opt_state=tx.init(params), rng=jax.random.PRNGKey(0)
    )
    step = jax.jit(
        functools.partial(train_step, policy=Policy(model=model), tx=tx, train_on_prompt=True)
    )
    flops = step.lower(state, batch).compile().cost_analysis()
    flops = float((flops[0] if isinstance(flops, list) else flops)["flops"])
    holder = {"state": state}

    def ours():
        holder["state"], m = step(holder["state"], batch)
        jax.block_until_ready(m)

    # PyTorch: the same step on the same batch (loss on all non-visual next tokens).
    hf.train()
    torch_opt = torch.optim.AdamW(hf.parameters(), lr=1e-4, weight_decay=0.0)
    labels = torch.from_numpy(np.where(ids == VIDEO, -100, ids))
    t_in = dict(
        input_ids=torch.from_numpy(ids),
        pixel_values_videos=torch.from_numpy(pixels),
        video_grid_thw=torch.from_numpy(grids),
        second_per_grid_ts=torch.from_numpy(spg),
        mm_token_type_ids=torch.from_numpy((ids == VIDEO).astype(np.int32) * 2),
        labels=labels,
    )

    def theirs():
        torch_opt.zero_grad()
        hf(**t_in).loss.backward()
        torch_opt.step()

    timing = interleaved({"vlmm_jax": ours, "transformers": theirs}, repeats=args.repeats)
    ours_s = timing["seconds"]["vlmm_jax"]["median"]
    peak = matmul_peak()
    tokens = ids.size
    print(
        json.dumps(
            {
                "benchmark": "train_step",
                "machine": f"{platform.machine()} {jax.devices()[0].device_kind}",
                "torch_threads": torch.get_num_threads(),
                "batch": args.batch,
                "tokens_per_row": ids.shape[1],
                "tokens_per_s": per_second(timing, tokens),
                "speedup_vs_transformers": timing["ratios"]["transformers/vlmm_jax"],
                "timing": timing,
                "step_flops_xla": flops,
                "matmul_peak_flops": round(peak),
                "mfu": round(flops / ours_s / peak, 4),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
