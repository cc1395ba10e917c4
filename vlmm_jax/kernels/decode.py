"""Decode attention: a few new query positions per sequence against a KV cache, split-K.

Query `i` of `Q` in sequence `b` sits at position `lengths[b] - Q + i` (its own key is already
in the cache); it sees cache slots `p < lengths[b]`, and with `causal` only `p <= its position`.
The cache is cut into `num_splits` contiguous ranges of kv blocks, each reduced by its own
program (flash-decoding: parallel work even at batch 1); the partial outputs are merged with
their log-sum-exps in XLA. Blocks past `lengths[b]` are skipped: no compute and, on TPU, no DMA
(the index_map repeats the last valid block). The `G = N / K` query heads of a kv head and the
`Q` queries are stacked as the rows of one matmul against each kv block.

Inference only: no backward.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as plgpu

from vlmm_jax.kernels.reference import reference_attention

__all__ = ["decode_attention", "reference_decode_attention"]

LANES = 128
MASK_VALUE = -1e30
_NT = (((1,), (1,)), ((), ()))


@dataclasses.dataclass(frozen=True)
class _Config:
    num_queries: int  # Q
    groups: int  # G
    rows: int  # padded G * Q
    block_kv: int
    blocks_per_split: int
    scale: float
    causal: bool


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def _scores_mask(cfg, length, blk, shape, row_offset):
    """Visibility `[rows, bk]` of kv block `blk`; `row_offset` `[rows, bk]` is `i - Q + 1` for
    a row holding query `i` (an input, not an in-kernel `iota % Q`: vector remainders are not
    something to rely on in Mosaic)."""
    kv_pos = blk * cfg.block_kv + lax.broadcasted_iota(jnp.int32, shape, 1)
    mask = kv_pos < length
    if cfg.causal:
        mask &= kv_pos < length + row_offset
    return mask


def _row_offsets(cfg):
    """`[rows]` int32: `i - Q + 1` for row `(g, i)`, 0 on padding rows."""
    nq, g = cfg.num_queries, cfg.groups
    off = jnp.tile(jnp.arange(nq, dtype=jnp.int32) - nq + 1, g)
    return jnp.pad(off, (0, cfg.rows - g * nq))


# ------------------------------------------------------------------------------------ TPU


def _tpu_kernel(lengths_ref, off_ref, q_ref, k_ref, v_ref, o_ref, lse_ref, *scratch, cfg):
    m_sc, l_sc, acc_sc = scratch
    b, split, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)
    length = lengths_ref[b]
    blk = split * cfg.blocks_per_split + j

    @pl.when(j == 0)
    def _init():
        m_sc[...] = jnp.full(m_sc.shape, MASK_VALUE, jnp.float32)
        l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
        acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)

    @pl.when(blk * cfg.block_kv < length)
    def _compute():
        q, k, v = q_ref[...], k_ref[...], v_ref[...]
        s = lax.dot_general(q, k, _NT, preferred_element_type=jnp.float32) * cfg.scale
        offsets = jnp.tile(off_ref[...], (1, cfg.block_kv // LANES))  # lane-replicated rows
        mask = _scores_mask(cfg, length, blk, s.shape, offsets)
        s = jnp.where(mask, s, MASK_VALUE)
        m_prev = m_sc[...]
        m_next = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))
        p = jnp.where(mask, jnp.exp(s - m_next[:, :1]), 0.0)
        alpha = jnp.exp(m_prev - m_next)
        l_sc[...] = alpha * l_sc[...] + jnp.sum(p, axis=1, keepdims=True)
        m_sc[...] = m_next
        pv = lax.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)
        acc_sc[...] = acc_sc[...] * alpha[:, :1] + pv

    @pl.when(j == pl.num_programs(3) - 1)
    def _finish():
        l = l_sc[...]
        safe = jnp.where(l == 0.0, 1.0, l)
        o_ref[...] = (acc_sc[...] / safe[:, :1]).astype(o_ref.dtype)
        lse_ref[...] = jnp.where(l == 0.0, MASK_VALUE, m_sc[...] + jnp.log(safe))


def _tpu_partials(qr, k, v, lengths, cfg, num_splits, interpret):
    """qr `[B, K, R, H]`, cache `[B, S, K, H]` -> o `[B, K, P, R, H]`, lse `[B, K, P, R]`."""
    b, kh, rows, h = qr.shape
    s = k.shape[1]
    bk, bps = cfg.block_kv, cfg.blocks_per_split

    def block(bi, split, j, lengths_ref):
        last = jnp.maximum(pl.cdiv(lengths_ref[bi], bk) - 1, 0)
        return jnp.minimum(split * bps + j, last)  # past the length: same block, no DMA

    if h % LANES == 0:  # free reshape [B, S, K*H]: head kk is lane block kk
        k, v = k.reshape(b, s, kh * h), v.reshape(b, s, kh * h)

        def kv_index(bi, kk, split, j, lengths_ref):
            return bi, block(bi, split, j, lengths_ref), kk

        kv_spec = pl.BlockSpec((None, bk, h), kv_index)
    else:  # head dims off the lane tiling need head-major blocks (one transpose of the cache)
        k, v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)

        def kv_index(bi, kk, split, j, lengths_ref):
            return bi, kk, block(bi, split, j, lengths_ref), 0

        kv_spec = pl.BlockSpec((None, None, bk, h), kv_index)
    q_spec = pl.BlockSpec((None, None, rows, h), lambda bi, kk, sp, j, L: (bi, kk, 0, 0))
    off_spec = pl.BlockSpec((rows, LANES), lambda bi, kk, sp, j, L: (0, 0))
    offsets = jnp.broadcast_to(_row_offsets(cfg)[:, None], (rows, LANES))
    o_spec = pl.BlockSpec((None, None, None, rows, h), lambda bi, kk, sp, j, L: (bi, kk, sp, 0, 0))
    lse_spec = pl.BlockSpec(
        (None, None, None, rows, LANES), lambda bi, kk, sp, j, L: (bi, kk, sp, 0, 0)
    )
    o, lse = pl.pallas_call(
        functools.partial(_tpu_kernel, cfg=cfg),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=1,
            grid=(b, kh, num_splits, bps),
            in_specs=[off_spec, q_spec, kv_spec, kv_spec],
            out_specs=[o_spec, lse_spec],
            scratch_shapes=[
                pltpu.VMEM((rows, LANES), jnp.float32),
                pltpu.VMEM((rows, LANES), jnp.float32),
                pltpu.VMEM((rows, h), jnp.float32),
            ],
        ),
        out_shape=[
            jax.ShapeDtypeStruct((b, kh, num_splits, rows, h), jnp.float32),
            jax.ShapeDtypeStruct((b, kh, num_splits, rows, LANES), jnp.float32),
        ],
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")
        ),
        interpret=pltpu.InterpretParams() if interpret else False,
        name="decode_attention_tpu",
    )(lengths, offsets, qr, k, v)
    return o, lse[..., 0]


# ------------------------------------------------------------------------------------ GPU


def _gpu_kernel(lengths_ref, off_ref, q_ref, k_ref, v_ref, o_ref, lse_ref, *, cfg):
    split = pl.program_id(2)
    length = lengths_ref[0]
    bk, bps = cfg.block_kv, cfg.blocks_per_split
    q, offsets = q_ref[...], off_ref[...][:, None]
    first = split * bps
    stop = jnp.clip(pl.cdiv(length, bk) - first, 0, bps)

    def body(jj, carry):
        acc, m, l = carry
        blk = first + jj
        k = k_ref[pl.ds(blk * bk, bk), :]
        v = v_ref[pl.ds(blk * bk, bk), :]
        s = plgpu.dot(q, k, trans_b=True).astype(jnp.float32) * cfg.scale
        mask = _scores_mask(cfg, length, blk, s.shape, offsets)
        s = jnp.where(mask, s, MASK_VALUE)
        m_next = jnp.maximum(m, jnp.max(s, axis=1))
        p = jnp.where(mask, jnp.exp(s - m_next[:, None]), 0.0)
        alpha = jnp.exp(m - m_next)
        acc = acc * alpha[:, None] + plgpu.dot(p.astype(v.dtype), v).astype(jnp.float32)
        return acc, m_next, alpha * l + jnp.sum(p, axis=1)

    rows, hp = q.shape
    init = (
        jnp.zeros((rows, hp), jnp.float32),
        jnp.full((rows,), MASK_VALUE, jnp.float32),
        jnp.zeros((rows,), jnp.float32),
    )
    acc, m, l = lax.fori_loop(0, stop, body, init)
    safe = jnp.where(l == 0.0, 1.0, l)
    o_ref[...] = acc / safe[:, None]
    lse_ref[...] = jnp.where(l == 0.0, MASK_VALUE, m + jnp.log(safe))


def _gpu_partials(qr, k, v, lengths, cfg, num_splits, interpret):
    b, kh, rows, h = qr.shape
    s = k.shape[1]
    hp = max(16, _pow2(h))
    sp = num_splits * cfg.blocks_per_split * cfg.block_kv
    qr = jnp.pad(qr, ((0, 0), (0, 0), (0, 0), (0, hp - h)))
    k = jnp.pad(k, ((0, 0), (0, sp - s), (0, 0), (0, hp - h)))
    v = jnp.pad(v, ((0, 0), (0, sp - s), (0, 0), (0, hp - h)))
    kv_spec = pl.BlockSpec((None, sp, None, hp), lambda bi, kk, p: (bi, 0, kk, 0))
    offsets = _row_offsets(cfg)
    o, lse = pl.pallas_call(
        functools.partial(_gpu_kernel, cfg=cfg),
        grid=(b, kh, num_splits),
        in_specs=[
            pl.BlockSpec((1,), lambda bi, kk, p: (bi,)),
            pl.BlockSpec((rows,), lambda bi, kk, p: (0,)),
            pl.BlockSpec((None, None, rows, hp), lambda bi, kk, p: (bi, kk, 0, 0)),
            kv_spec,
            kv_spec,
        ],
        out_specs=[
            pl.BlockSpec((None, None, None, rows, hp), lambda bi, kk, p: (bi, kk, p, 0, 0)),
            pl.BlockSpec((None, None, None, rows), lambda bi, kk, p: (bi, kk, p, 0)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct((b, kh, num_splits, rows, hp), jnp.float32),
            jax.ShapeDtypeStruct((b, kh, num_splits, rows), jnp.float32),
        ],
        compiler_params=plgpu.CompilerParams(num_warps=4, num_stages=2),
        interpret=interpret,
        name="decode_attention_gpu",
    )(lengths, offsets, qr, k, v)
    return o[..., :h], lse


# ------------------------------------------------------------------------------------ API


def _combine(o, lse):
    """Merges split partials: o `[B, K, P, R, H]`, lse `[B, K, P, R]` -> `[B, K, R, H]`."""
    m = jnp.max(lse, axis=2, keepdims=True)
    w = jnp.exp(lse - m)  # empty splits: lse = MASK_VALUE, o = 0
    return jnp.sum(w[..., None] * o, axis=2) / jnp.sum(w, axis=2)[..., None]


def decode_attention(
    q: jax.Array,
    k_cache: jax.Array,
    v_cache: jax.Array,
    lengths: jax.Array,
    *,
    causal: bool = True,
    sm_scale: float | None = None,
    num_splits: int | None = None,
    block_kv: int | None = None,
    backend: str | None = None,
    interpret: bool = False,
) -> jax.Array:
    """Attention of `Q` new tokens per sequence against a KV cache, split along the cache.

    Args:
      q: `[B, Q, N, H]` queries of the last `Q` positions (Q = 1 for plain decoding).
      k_cache, v_cache: `[B, S, K, H]` caches, `N % K == 0`; slots `>= lengths[b]` are ignored.
      lengths: `[B]` int32 valid cache length per sequence, including the `Q` new tokens.
      causal: query `i` sees slots `<= lengths[b] - Q + i` (else all `< lengths[b]`).
      sm_scale: logit scale, default `H ** -0.5`.
      num_splits: cache ranges reduced in parallel (default: up to 8, one per >= 1 block).
      block_kv: kv block length (default 512 on TPU, 64 on GPU, capped at the cache length).
      backend: "tpu" or "gpu" (default: `jax.default_backend()`, or "tpu" when interpreting).
      interpret: Pallas interpret mode (CPU tests).

    Returns:
      `[B, Q, N, H]` in the dtype of `q`; zeros for a sequence of length 0.
    """
    b, nq, n, h = q.shape
    _, s, kh, _ = k_cache.shape
    if n % kh or k_cache.shape != v_cache.shape or k_cache.shape[0] != b:
        raise ValueError(f"decode_attention: q {q.shape} vs caches {k_cache.shape} {v_cache.shape}")
    if lengths.shape != (b,):
        raise ValueError(f"decode_attention: lengths has shape {lengths.shape}, expected ({b},)")
    if backend is None:
        backend = jax.default_backend()
        backend = "tpu" if backend == "cpu" and interpret else backend
    if backend not in ("tpu", "gpu"):
        raise ValueError(
            f"decode_attention: backend={backend!r} has no kernel; use interpret=True on CPU or "
            "reference_decode_attention (XLA)"
        )
    g = n // kh
    multiple = LANES if backend == "tpu" else 16
    bk = min(block_kv or (512 if backend == "tpu" else 64), _round_up(s, multiple))
    if backend == "gpu":
        bk = _pow2(bk)
    if bk % multiple:
        raise ValueError(f"decode_attention: block_kv={bk} must be a multiple of {multiple}")
    nblocks = -(-s // bk)
    splits = min(num_splits or 8, nblocks)
    bps = -(-nblocks // splits)
    rows = _round_up(g * nq, 8) if backend == "tpu" else max(16, _pow2(g * nq))
    cfg = _Config(
        num_queries=nq,
        groups=g,
        rows=rows,
        block_kv=bk,
        blocks_per_split=bps,
        scale=float(h**-0.5 if sm_scale is None else sm_scale),
        causal=bool(causal),
    )
    # rows ordered (g, q): row r is query r % Q of query head kk * G + r // Q.
    qr = q.reshape(b, nq, kh, g, h).transpose(0, 2, 3, 1, 4).reshape(b, kh, g * nq, h)
    qr = jnp.pad(qr, ((0, 0), (0, 0), (0, rows - g * nq), (0, 0)))
    pad = splits * bps * bk - s
    if backend == "tpu" and pad:
        k_cache = jnp.pad(k_cache, ((0, 0), (0, pad), (0, 0), (0, 0)))
        v_cache = jnp.pad(v_cache, ((0, 0), (0, pad), (0, 0), (0, 0)))
    partials = _tpu_partials if backend == "tpu" else _gpu_partials
    lengths = jnp.minimum(lengths.astype(jnp.int32), s)
    o, lse = partials(qr, k_cache, v_cache, lengths, cfg, splits, interpret)
    o = _combine(o, lse)[:, :, : g * nq]
    return o.reshape(b, kh, g, nq, h).transpose(0, 3, 1, 2, 4).reshape(b, nq, n, h).astype(q.dtype)


def reference_decode_attention(q, k_cache, v_cache, lengths, *, causal=True, sm_scale=None):
    """Pure-jnp decode attention with the same semantics (for tests and the CPU path)."""
    b, nq, _, _ = q.shape
    s = k_cache.shape[1]
    slots = jnp.arange(s, dtype=jnp.int32)[None]
    q_pos = lengths[:, None] - nq + (jnp.arange(nq)[None] if causal else nq - 1)
    return reference_attention(
        q,
        k_cache,
        v_cache,
        segment_ids=jnp.zeros((b, nq), jnp.int32),
        kv_segment_ids=(slots >= lengths[:, None]).astype(jnp.int32),
        causal=True,
        q_positions=jnp.broadcast_to(q_pos, (b, nq)),
        kv_positions=jnp.broadcast_to(slots, (b, s)),
        sm_scale=sm_scale,
    )
