"""Block-sparse attention: work skipped per video mask, correctness, and (on TPU/GPU) speed.

    python benchmarks/attention.py [--tokens 4096,8192,16384] [--heads 16] [--head_dim 80]

Prints one JSON object:
- `density`: for each mask and length, the fraction of unmasked elements, the fraction of
  (q block, kv block) pairs the kernel computes for the TPU and GPU default blocks, and the
  kernel's forward FLOPs against dense attention (`4 * T * S * N * H`) with the skipped fraction.
- `correctness`: interpret-mode max relative error of both kernels vs the XLA reference on a small
  video (forward), so a CPU run checks the numbers it reports.
- `timing` (TPU/GPU only): median milliseconds of forward and forward+backward for the kernel and
  for `jax.nn.dot_product_attention` (xla, and cudnn where it accepts the mask), and the ratios.

Video layout: `T / 1024` temporal slices of 32x32 patches (16 frames at 448x448 px = 8 slices =
8192 tokens, the vision tower's view before the 2x2 merge); windows are Qwen2.5-VL's 112 px =
8x8 patches. Packed text: causal samples of random lengths (seed 0) packed to `T`.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from vlmm_jax import kernels
from vlmm_jax.kernels import masks

TPU_BLOCK, GPU_BLOCK = 512, 64


def mask_kwargs(name: str, tokens: int, side: int = 32) -> dict:
    """Segment ids / positions of one mask for `tokens` patch tokens, as `[1, T]` arrays."""
    grid = [(max(1, tokens // (side * side)), side, side)]
    if name == "per_frame":
        kw = dict(segment_ids=masks.temporal_segment_ids(grid))
    elif name == "windows":
        kw = dict(segment_ids=masks.window_segment_ids(grid)[0])
    elif name == "frame_causal":
        seg, pos = masks.frame_causal_ids(grid)
        kw = dict(segment_ids=seg, causal=True, q_positions=pos, kv_positions=pos)
    elif name == "packed_causal_text":
        rng = np.random.RandomState(0)
        lengths, total = [], 0
        while total < tokens:
            lengths.append(int(min(rng.randint(tokens // 16, tokens // 3), tokens - total)))
            total += lengths[-1]
        kw = dict(segment_ids=masks.packed_segment_ids(lengths, tokens), causal=True)
    elif name == "dense_causal":
        kw = dict(causal=True)
    else:
        raise ValueError(f"unknown mask {name!r}")
    return {k: jnp.asarray(v)[None] if not isinstance(v, bool) else v for k, v in kw.items()}


MASKS = ["per_frame", "windows", "frame_causal", "packed_causal_text", "dense_causal"]


def element_density(t: int, kw: dict) -> float:
    """Unmasked fraction, computed in row chunks (no T x T matrix)."""
    seg = kw.get("segment_ids")
    pos = kw.get("q_positions")
    pos = jnp.arange(t)[None] if pos is None else pos
    total = 0.0
    for start in range(0, t, 1024):
        rows = slice(start, min(start + 1024, t))
        m = jnp.ones((rows.stop - rows.start, t), bool)
        if seg is not None:
            m &= seg[0, rows, None] == seg[0, None, :]
        if kw.get("causal"):
            m &= pos[0, None, :] <= pos[0, rows, None]
        total += float(jnp.sum(m))
    return total / (t * t)


def density_rows(tokens_list, heads, head_dim):
    out = []
    for name in MASKS:
        for t in tokens_list:
            kw = mask_kwargs(name, t)
            table_kw = {k: v for k, v in kw.items() if k != "causal"}
            row = dict(mask=name, tokens=t, element_density=round(element_density(t, kw), 5))
            dense_flops = 4 * t * t * heads * head_dim
            for backend, block in (("tpu", TPU_BLOCK), ("gpu", GPU_BLOCK)):
                tables = masks.block_tables(
                    t, t, block_q=block, block_kv=block, causal=kw.get("causal", False), **table_kw
                )
                d = masks.block_density(tables)
                row[f"{backend}_block"] = block
                row[f"{backend}_block_density"] = round(d, 5)
                row[f"{backend}_kernel_gflops_fwd"] = round(d * dense_flops / 1e9, 3)
                row[f"{backend}_skipped_fraction"] = round(1 - d, 5)
            row["dense_gflops_fwd"] = round(dense_flops / 1e9, 3)
            out.append(row)
    return out


def correctness_rows():
    """Small video (2 slices of 16x16 patches = 512 tokens) in interpret mode, forward."""
    out = []
    key = jax.random.split(jax.random.key(0), 3)
    t, n, kh, h = 512, 2, 1, 64
    q = jax.random.normal(key[0], (1, t, n, h))
    k = jax.random.normal(key[1], (1, t, kh, h))
    v = jax.random.normal(key[2], (1, t, kh, h))
    for name in MASKS:
        kw = mask_kwargs(name, t, side=16)
        want = kernels.reference_attention(q, k, v, **kw)
        row = dict(mask=name, tokens=t)
        for backend, block in (("tpu", (128, 128)), ("gpu", (64, 64))):
            got = kernels.flash_attention(
                q, k, v, backend=backend, interpret=True, block_sizes=block, **kw
            )
            err = float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))
            row[f"{backend}_interpret_max_rel_err"] = err
        out.append(row)
    return out


def _time(f, *args, reps=5):
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def timing_rows(tokens_list, heads, head_dim):
    backend = jax.default_backend()
    out = []
    for name in MASKS:
        for t in tokens_list:
            kw = mask_kwargs(name, t)
            key = jax.random.split(jax.random.key(0), 3)
            shape = (1, t, heads, head_dim)
            q, k, v = (jax.random.normal(kk, shape, jnp.bfloat16) for kk in key)
            dense_mask = kernels.attention_mask(t, t, **kw)
            dense_mask = None if dense_mask is None else dense_mask[:, None]
            impls = {"kernel": lambda q, k, v, kw=kw: kernels.flash_attention(q, k, v, **kw)}
            for impl in ["xla"] + (["cudnn"] if backend == "gpu" else []):
                impls[impl] = lambda q, k, v, impl=impl, m=dense_mask: jax.nn.dot_product_attention(
                    q, k, v, mask=m, implementation=impl
                )
            row = dict(mask=name, tokens=t, backend=backend)
            for impl, f in impls.items():
                fwd = jax.jit(f)
                loss = lambda q, k, v, f=f: jnp.sum(f(q, k, v).astype(jnp.float32))  # noqa: E731
                bwd = jax.jit(jax.grad(loss, (0, 1, 2)))
                try:
                    row[f"{impl}_fwd_ms"] = _time(fwd, q, k, v)
                    row[f"{impl}_fwd_bwd_ms"] = _time(bwd, q, k, v)
                except Exception as e:  # e.g. cudnn rejecting a mask, or out of memory
                    row[f"{impl}_error"] = f"{type(e).__name__}: {str(e)[:200]}"
            for impl in ("xla", "cudnn"):
                for phase in ("fwd", "fwd_bwd"):
                    a, b = row.get(f"kernel_{phase}_ms"), row.get(f"{impl}_{phase}_ms")
                    if a and b:
                        row[f"speedup_vs_{impl}_{phase}"] = round(b / a, 3)
            out.append(row)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="4096,8192,16384")
    parser.add_argument("--heads", type=int, default=16)  # Qwen2.5-VL vision tower
    parser.add_argument("--head_dim", type=int, default=80)
    parser.add_argument("--skip_correctness", action="store_true")
    args = parser.parse_args()
    tokens_list = [int(x) for x in args.tokens.split(",")]
    result = dict(
        backend=jax.default_backend(),
        heads=args.heads,
        head_dim=args.head_dim,
        density=density_rows(tokens_list, args.heads, args.head_dim),
    )
    if not args.skip_correctness:
        result["correctness"] = correctness_rows()
    if jax.default_backend() in ("tpu", "gpu"):
        result["timing"] = timing_rows(tokens_list, args.heads, args.head_dim)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
