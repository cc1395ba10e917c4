"""`flash_attention`: one entry point over the TPU (Mosaic) and GPU (Triton) kernels."""

from __future__ import annotations

import jax

from vlmm_jax.kernels import flash_gpu, flash_tpu
from vlmm_jax.kernels.flash_tpu import BlockSizes

__all__ = ["BACKENDS", "BlockSizes", "flash_attention"]

# backend name -> kernel; both take the same keyword arguments.
BACKENDS = {"tpu": flash_tpu.flash_attention_tpu, "gpu": flash_gpu.flash_attention_gpu}


def _check(name, x, shape):
    if x is not None and tuple(x.shape) not in (tuple(shape), (1, *shape[1:])):
        raise ValueError(f"flash_attention: {name} has shape {x.shape}, expected {shape}")


def flash_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    segment_ids: jax.Array | None = None,
    kv_segment_ids: jax.Array | None = None,
    causal: bool = False,
    sm_scale: float | None = None,
    backend: str | None = None,
    interpret: bool = False,
    block_sizes: BlockSizes | tuple[int, int] | None = None,
    q_positions: jax.Array | None = None,
    kv_positions: jax.Array | None = None,
) -> jax.Array:
    """Block-sparse flash attention; differentiable (the backward is a kernel too).

    Query `t` attends key `s` iff `segment_ids[t] == kv_segment_ids[s]` (when given) and, when
    `causal`, `kv_positions[s] <= q_positions[t]` (positions default to the token index; frame
    indices give frame-causal attention). Block pairs with nothing visible are skipped, both
    compute and memory traffic; rows with nothing visible return zeros.

    Args:
      q: `[B, T, N, H]` queries, fp32 or bf16 (accumulation is fp32 either way).
      k, v: `[B, S, K, H]` keys and values, `N % K == 0` (GQA).
      segment_ids: `[B, T]` int32 (or `[1, T]`, shared by the batch).
      kv_segment_ids: `[B, S]` int32, default `segment_ids` (needs T == S).
      causal: mask later keys (by position).
      sm_scale: logit scale, default `H ** -0.5`.
      backend: "tpu" (Pallas Mosaic) or "gpu" (Pallas Triton); default `jax.default_backend()`,
        or "tpu" when `interpret` on CPU.
      interpret: run the kernel in Pallas interpret mode (CPU; slow, for tests).
      block_sizes: `BlockSizes` or `(block_q, block_kv)`; default 512 x 512 on TPU and
        64 x 64 on GPU, capped at the (rounded-up) sequence lengths.
      q_positions, kv_positions: `[B, T]` / `[B, S]` int32 positions for `causal`.

    Returns:
      `[B, T, N, H]` in the dtype of `q`.
    """
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"flash_attention: expected 4-D q/k/v, got {q.shape} {k.shape} {v.shape}")
    b, t, n, h = q.shape
    s, kh = k.shape[1], k.shape[2]
    if k.shape != v.shape or k.shape[0] != b or k.shape[3] != h:
        raise ValueError(f"flash_attention: k {k.shape} / v {v.shape} do not match q {q.shape}")
    if n % kh:
        raise ValueError(f"flash_attention: query heads {n} not a multiple of kv heads {kh}")
    if segment_ids is not None and kv_segment_ids is None and s != t:
        raise ValueError(f"flash_attention: T={t} != S={s} needs kv_segment_ids")
    if kv_segment_ids is not None and segment_ids is None:
        raise ValueError("flash_attention: kv_segment_ids given without segment_ids")
    _check("segment_ids", segment_ids, (b, t))
    _check("kv_segment_ids", kv_segment_ids, (b, s))
    _check("q_positions", q_positions, (b, t))
    _check("kv_positions", kv_positions, (b, s))
    if backend is None:
        backend = jax.default_backend()
        if backend == "cpu" and interpret:
            backend = "tpu"
    if backend == "cpu":
        raise ValueError(
            "flash_attention: no Pallas kernel compiles for CPU; pass interpret=True (slow, for "
            "tests) or use vlmm_jax.kernels.reference_attention (the XLA path)."
        )
    if backend not in BACKENDS:
        raise ValueError(f"flash_attention: backend={backend!r}, expected one of {list(BACKENDS)}")
    if isinstance(block_sizes, tuple | list):
        block_sizes = BlockSizes(*block_sizes)
    return BACKENDS[backend](
        q,
        k,
        v,
        segment_ids=segment_ids,
        kv_segment_ids=kv_segment_ids,
        causal=causal,
        q_positions=q_positions,
        kv_positions=kv_positions,
        sm_scale=sm_scale,
        block_sizes=block_sizes,
        interpret=interpret,
    )
