"""Block-sparse flash attention for GPU (Pallas Triton): forward, dq and dk/dv kernels.

Layout stays `[B, T, N, H]` (the Triton BlockSpecs squeeze the head axis), padded to the blocks
along the sequence and to a power of two along `H` (Triton's block shapes must be powers of
two; zero columns change neither logits nor outputs). One program handles one (q block, batch,
head) and loops with a dynamic trip count over that q block's compacted list of non-empty kv
blocks (`masks.block_tables`), so empty blocks cost neither loads nor math. The dk/dv kernel
loops over the transposed lists per query head; GQA sums the `G` query heads' dk/dv after.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from vlmm_jax.kernels import masks
from vlmm_jax.kernels.flash_tpu import BlockSizes

__all__ = ["DEFAULT_BLOCK_SIZES", "flash_attention_gpu"]

DEFAULT_BLOCK_SIZES = BlockSizes(block_q=64, block_kv=64)
MASK_VALUE = -1e30


@dataclasses.dataclass(frozen=True)
class _Config:
    block_q: int
    block_kv: int
    kv_len: int
    groups: int
    scale: float
    causal: bool
    segments: bool
    positions: bool
    interpret: bool
    num_warps: int


def _pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _mask(cfg, qi, kj, side):
    """`[bq, bk]` visibility of q block `qi` vs kv block `kj`; side = (qseg, kseg, qpos, kpos)
    refs, q-side already blocked, kv-side whole sequence (or None)."""
    bq, bk = cfg.block_q, cfg.block_kv
    qseg_ref, kseg_ref, qpos_ref, kpos_ref = side
    k_slice = pl.ds(kj * bk, bk)
    k_idx = kj * bk + lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
    mask = None

    def add(m):
        nonlocal mask
        mask = m if mask is None else mask & m

    if cfg.segments:
        add(qseg_ref[...][:, None] == kseg_ref[k_slice][None, :])
    if cfg.causal:
        if cfg.positions:
            add(kpos_ref[k_slice][None, :] <= qpos_ref[...][:, None])
        else:
            add(k_idx <= qi * bq + lax.broadcasted_iota(jnp.int32, (bq, bk), 0))
    if cfg.kv_len % bk:
        add(k_idx < cfg.kv_len)
    return mask


def _q_side(cfg, side, q_slice):
    """Views of the q-side id refs at `q_slice` (dk/dv kernel: whole-sequence refs)."""
    qseg, kseg, qpos, kpos = side
    return (
        None if qseg is None else qseg.at[q_slice],
        kseg,
        None if qpos is None else qpos.at[q_slice],
        kpos,
    )


def _split(cfg, refs):
    refs = list(refs)
    side = [None] * 4
    if cfg.segments:
        side[0], side[1] = refs.pop(0), refs.pop(0)
    if cfg.causal and cfg.positions:
        side[2], side[3] = refs.pop(0), refs.pop(0)
    return tuple(side), refs


def _fwd_kernel(lists_ref, count_ref, q_ref, k_ref, v_ref, *refs, cfg):
    side, (o_ref, lse_ref) = _split(cfg, refs)
    bq, bk = cfg.block_q, cfg.block_kv
    qi = pl.program_id(0)
    q = q_ref[...]
    hp = q.shape[-1]

    def body(jj, carry):
        acc, m, l = carry
        kj = lists_ref[jj]
        k = k_ref[pl.ds(kj * bk, bk), :]
        v = v_ref[pl.ds(kj * bk, bk), :]
        s = plgpu.dot(q, k, trans_b=True).astype(jnp.float32) * cfg.scale
        mask = _mask(cfg, qi, kj, side)
        if mask is not None:
            s = jnp.where(mask, s, MASK_VALUE)
        m_next = jnp.maximum(m, jnp.max(s, axis=1))
        p = jnp.exp(s - m_next[:, None])
        if mask is not None:
            p = jnp.where(mask, p, 0.0)
        alpha = jnp.exp(m - m_next)
        l = alpha * l + jnp.sum(p, axis=1)
        acc = acc * alpha[:, None] + plgpu.dot(p.astype(v.dtype), v).astype(jnp.float32)
        return acc, m_next, l

    init = (
        jnp.zeros((bq, hp), jnp.float32),
        jnp.full((bq,), MASK_VALUE, jnp.float32),
        jnp.zeros((bq,), jnp.float32),
    )
    acc, m, l = lax.fori_loop(0, count_ref[0], body, init)
    safe = jnp.where(l == 0.0, 1.0, l)
    o_ref[...] = (acc / safe[:, None]).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(l == 0.0, -MASK_VALUE, m + jnp.log(safe))


def _dq_kernel(lists_ref, count_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, *refs, cfg):
    side, (dq_ref,) = _split(cfg, refs)
    bk = cfg.block_kv
    qi = pl.program_id(0)
    q, do, lse, delta = q_ref[...], do_ref[...], lse_ref[...], delta_ref[...]

    def body(jj, dq):
        kj = lists_ref[jj]
        k = k_ref[pl.ds(kj * bk, bk), :]
        v = v_ref[pl.ds(kj * bk, bk), :]
        s = plgpu.dot(q, k, trans_b=True).astype(jnp.float32) * cfg.scale
        p = jnp.exp(s - lse[:, None])
        mask = _mask(cfg, qi, kj, side)
        if mask is not None:
            p = jnp.where(mask, p, 0.0)
        dp = plgpu.dot(do, v, trans_b=True).astype(jnp.float32)
        ds = p * (dp - delta[:, None])
        return dq + plgpu.dot(ds.astype(k.dtype), k).astype(jnp.float32)

    dq = lax.fori_loop(0, count_ref[0], body, jnp.zeros(q.shape, jnp.float32))
    dq_ref[...] = (dq * cfg.scale).astype(dq_ref.dtype)


def _dkv_kernel(lists_ref, count_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, *refs, cfg):
    side, (dk_ref, dv_ref) = _split(cfg, refs)
    bq = cfg.block_q
    kj = pl.program_id(0)
    k, v = k_ref[...], v_ref[...]

    def body(ii, carry):
        dk, dv = carry
        qi = lists_ref[ii]
        q_slice = pl.ds(qi * bq, bq)
        q, do = q_ref[q_slice, :], do_ref[q_slice, :]
        lse, delta = lse_ref[q_slice], delta_ref[q_slice]
        s = plgpu.dot(q, k, trans_b=True).astype(jnp.float32) * cfg.scale
        p = jnp.exp(s - lse[:, None])
        mask = _mask(cfg, qi, kj, _q_side(cfg, side, q_slice))
        if mask is not None:
            p = jnp.where(mask, p, 0.0)
        dv = dv + plgpu.dot(p.astype(do.dtype), do, trans_a=True).astype(jnp.float32)
        dp = plgpu.dot(do, v, trans_b=True).astype(jnp.float32)
        ds = p * (dp - delta[:, None])
        dk = dk + plgpu.dot(ds.astype(q.dtype), q, trans_a=True).astype(jnp.float32)
        return dk, dv

    zeros = jnp.zeros(k.shape, jnp.float32)
    dk, dv = lax.fori_loop(0, count_ref[0], body, (zeros, zeros))
    dk_ref[...] = (dk * cfg.scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _call(kernel, cfg, grid, in_specs, out_specs, out_shape, name):
    return pl.pallas_call(
        functools.partial(kernel, cfg=cfg),
        grid=grid,
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=plgpu.CompilerParams(num_warps=cfg.num_warps, num_stages=2),
        interpret=cfg.interpret,
        name=name,
    )


def _side_specs(cfg, tp, sp, q_index, kv_whole):
    """BlockSpecs of (qseg, kseg[, qpos, kpos]); q side blocked by `q_index` or whole."""
    specs = []
    n_pairs = int(cfg.segments) + int(cfg.causal and cfg.positions)
    for _ in range(n_pairs):
        specs.append(pl.BlockSpec((None, cfg.block_q), q_index) if q_index else kv_whole(tp))
        specs.append(kv_whole(sp))
    return specs


def _fwd_call(q, k, v, side, tables, cfg):
    b, tp, n, hp = q.shape
    sp = k.shape[1]
    bq, g = cfg.block_q, cfg.groups
    nq = tp // bq
    q_spec = pl.BlockSpec((None, bq, None, hp), lambda i, b, n: (b, i, n, 0))
    kv_spec = pl.BlockSpec((None, sp, None, hp), lambda i, b, n: (b, 0, lax.div(n, g), 0))
    row = pl.BlockSpec((None, None, bq), lambda i, b, n: (b, n, i))
    lists_spec = pl.BlockSpec((None, None, tables.q_lists.shape[-1]), lambda i, b, n: (b, i, 0))
    count_spec = pl.BlockSpec((None, None, 1), lambda i, b, n: (b, i, 0))

    def whole(length):
        return pl.BlockSpec((None, length), lambda i, b, n: (b, 0))

    specs = _side_specs(cfg, tp, sp, lambda i, b, n: (b, i), whole)
    return _call(
        _fwd_kernel,
        cfg,
        (nq, b, n),
        [lists_spec, count_spec, q_spec, kv_spec, kv_spec, *specs],
        [q_spec, row],
        [jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, n, tp), jnp.float32)],
        "flash_fwd_gpu",
    )(tables.q_lists, tables.q_counts[..., None], q, k, v, *[x for x in side if x is not None])


def _bwd_call(q, k, v, side, tables, o, lse, do, cfg):
    b, tp, n, hp = q.shape
    sp, kh = k.shape[1], k.shape[2]
    bq, bk, g = cfg.block_q, cfg.block_kv, cfg.groups
    nq, nk = tp // bq, sp // bk
    delta = jnp.einsum("BTNH,BTNH->BNT", o.astype(jnp.float32), do.astype(jnp.float32))
    side_arrays = [x for x in side if x is not None]

    q_spec = pl.BlockSpec((None, bq, None, hp), lambda i, b, n: (b, i, n, 0))
    kv_spec = pl.BlockSpec((None, sp, None, hp), lambda i, b, n: (b, 0, lax.div(n, g), 0))
    row = pl.BlockSpec((None, None, bq), lambda i, b, n: (b, n, i))
    lists_spec = pl.BlockSpec((None, None, tables.q_lists.shape[-1]), lambda i, b, n: (b, i, 0))
    count_spec = pl.BlockSpec((None, None, 1), lambda i, b, n: (b, i, 0))

    def whole(length):
        return pl.BlockSpec((None, length), lambda i, b, n: (b, 0))

    dq = _call(
        _dq_kernel,
        cfg,
        (nq, b, n),
        [lists_spec, count_spec, q_spec, kv_spec, kv_spec, q_spec, row, row]
        + _side_specs(cfg, tp, sp, lambda i, b, n: (b, i), whole),
        q_spec,
        jax.ShapeDtypeStruct(q.shape, q.dtype),
        "flash_dq_gpu",
    )(tables.q_lists, tables.q_counts[..., None], q, k, v, do, lse, delta, *side_arrays)

    # dk/dv per query head ([B, Sp, N, Hp], fp32), then summed over the G heads of each group.
    qw_spec = pl.BlockSpec((None, tp, None, hp), lambda j, b, n: (b, 0, n, 0))
    kv_spec = pl.BlockSpec((None, bk, None, hp), lambda j, b, n: (b, j, lax.div(n, g), 0))
    out_spec = pl.BlockSpec((None, bk, None, hp), lambda j, b, n: (b, j, n, 0))
    roww = pl.BlockSpec((None, None, tp), lambda j, b, n: (b, n, 0))
    lists_spec = pl.BlockSpec((None, None, tables.kv_lists.shape[-1]), lambda j, b, n: (b, j, 0))
    count_spec = pl.BlockSpec((None, None, 1), lambda j, b, n: (b, j, 0))
    kv_side = []
    for _ in range(int(cfg.segments) + int(cfg.causal and cfg.positions)):
        kv_side += [
            pl.BlockSpec((None, tp), lambda j, b, n: (b, 0)),
            pl.BlockSpec((None, sp), lambda j, b, n: (b, 0)),
        ]
    dk, dv = _call(
        _dkv_kernel,
        cfg,
        (nk, b, n),
        [lists_spec, count_spec, qw_spec, kv_spec, kv_spec, qw_spec, roww, roww, *kv_side],
        [out_spec, out_spec],
        [jax.ShapeDtypeStruct((b, sp, n, hp), jnp.float32)] * 2,
        "flash_dkv_gpu",
    )(tables.kv_lists, tables.kv_counts[..., None], q, k, v, do, lse, delta, *side_arrays)
    dk = dk.reshape(b, sp, kh, g, hp).sum(3).astype(k.dtype)
    dv = dv.reshape(b, sp, kh, g, hp).sum(3).astype(v.dtype)
    return dq, dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _flash(q, k, v, side, tables, cfg):
    return _fwd_call(q, k, v, side, tables, cfg)[0]


def _flash_fwd(q, k, v, side, tables, cfg):
    o, lse = _fwd_call(q, k, v, side, tables, cfg)
    return o, (q, k, v, side, tables, o, lse)


def _flash_bwd(cfg, res, do):
    q, k, v, side, tables, o, lse = res
    dq, dk, dv = _bwd_call(q, k, v, side, tables, o, lse, do, cfg)
    return dq, dk, dv, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def _pad_lists(lists):
    """Pads the list axis to a power of two (Triton block shapes) by repeating the tail."""
    n = lists.shape[-1]
    return jnp.pad(lists, [(0, 0)] * (lists.ndim - 1) + [(0, _pow2(n) - n)], mode="edge")


def flash_attention_gpu(
    q,
    k,
    v,
    *,
    segment_ids=None,
    kv_segment_ids=None,
    causal=False,
    q_positions=None,
    kv_positions=None,
    sm_scale=None,
    block_sizes: BlockSizes | None = None,
    interpret=False,
):
    """Block-sparse flash attention on GPU; arguments as in `api.flash_attention`."""
    b, t, n, h = q.shape
    s, kheads = k.shape[1], k.shape[2]
    if n % kheads:
        raise ValueError(f"query heads N={n} must be a multiple of kv heads K={kheads}")
    bs = (block_sizes or DEFAULT_BLOCK_SIZES).resolve(t, s, multiple=16)
    bq, bk = _pow2(bs.block_q), _pow2(bs.block_kv)
    hp = max(16, _pow2(h))
    cfg = _Config(
        block_q=bq,
        block_kv=bk,
        kv_len=s,
        groups=n // kheads,
        scale=float(h**-0.5 if sm_scale is None else sm_scale),
        causal=bool(causal),
        segments=segment_ids is not None,
        positions=causal and (q_positions is not None or kv_positions is not None),
        interpret=bool(interpret),
        num_warps=4 if hp <= 64 else 8,
    )
    tp, sp = _round_up(t, bq), _round_up(s, bk)
    tables = masks.block_tables(
        t,
        s,
        block_q=bq,
        block_kv=bk,
        batch=b,
        segment_ids=segment_ids,
        kv_segment_ids=kv_segment_ids,
        causal=causal,
        q_positions=q_positions,
        kv_positions=kv_positions,
    )
    tables = tables._replace(
        q_lists=_pad_lists(jnp.broadcast_to(tables.q_lists, (b, *tables.q_lists.shape[1:]))),
        q_counts=jnp.broadcast_to(tables.q_counts, (b, tables.q_counts.shape[1])),
        kv_lists=_pad_lists(jnp.broadcast_to(tables.kv_lists, (b, *tables.kv_lists.shape[1:]))),
        kv_counts=jnp.broadcast_to(tables.kv_counts, (b, tables.kv_counts.shape[1])),
    )

    def pad(x, length):
        widths = [(0, 0), (0, length - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
        if x.ndim == 4:
            widths[-1] = (0, hp - h)
        return jnp.pad(x, widths)

    def ids(x, length, real):
        return pad(jnp.broadcast_to(x, (b, real)).astype(jnp.int32), length)

    side = [None] * 4
    if segment_ids is not None:
        kvs = segment_ids if kv_segment_ids is None else kv_segment_ids
        side[0], side[1] = ids(segment_ids, tp, t), ids(kvs, sp, s)
    if cfg.positions:
        qp = jnp.arange(t, dtype=jnp.int32)[None] if q_positions is None else q_positions
        kp = jnp.arange(s, dtype=jnp.int32)[None] if kv_positions is None else kv_positions
        side[2], side[3] = ids(qp, tp, t), ids(kp, sp, s)
    o = _flash(pad(q, tp), pad(k, sp), pad(v, sp), tuple(side), tables, cfg)
    return o[:, :t, :, :h]
