"""Block-sparse flash attention for TPU (Pallas Mosaic): forward, dq and dk/dv kernels.

Layout inside the kernels is head-major, `[B, N, T, H]` for queries and `[B, K, S, H]` for keys
(GQA: query head `n` reads kv head `n // G`). Per-row statistics (log-sum-exp, delta, query
segment ids and positions) are replicated over 128 lanes and key-side ids over 8 sublanes, as
in jax's reference TPU flash attention, so every block obeys Mosaic's (8, 128) tiling.

Sparsity: the grid's last axis walks the compacted list of non-empty kv blocks of a q block
(`masks.block_tables`, scalar-prefetched into SMEM). Past the list's count the index_map keeps
returning the last valid block, so the pipeline issues no DMA, and `pl.when` skips the compute.
The dk/dv kernel walks the transposed lists, and for GQA also the `G` query heads of a kv head.
The walk's length is not the number of kv blocks but the smallest rung of `grid_rungs` that holds
the longest list (a `lax.switch` over kernels compiled for each rung, as splash attention sizes
its grid from the mask): a video's window mask with 3 live kv blocks of 64 walks 4, not 64.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from vlmm_jax.kernels import masks

__all__ = ["BlockSizes", "flash_attention_tpu"]

LANES = 128
SUBLANES = 8
MASK_VALUE = -1e30
_NT = (((1,), (1,)), ((), ()))  # a @ b.T


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Block sizes for the q and kv sequence axes (capped at the padded sequence length).

    On TPU both must be multiples of 128: kv blocks lie on the lane axis of the logits and of the
    kv segment ids, q blocks on the sublane axis (8 would do) but also index 128-lane row stats.
    """

    block_q: int = 512
    block_kv: int = 512

    def resolve(self, q_len: int, kv_len: int, multiple: int = LANES) -> BlockSizes:
        """Caps each block at its sequence length rounded up to `multiple`, and checks it."""
        bq = min(self.block_q, _round_up(q_len, multiple))
        bk = min(self.block_kv, _round_up(kv_len, multiple))
        for name, size in (("block_q", bq), ("block_kv", bk)):
            if size % multiple:
                raise ValueError(f"BlockSizes.{name}={size} must be a multiple of {multiple}")
        return BlockSizes(bq, bk)


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


@dataclasses.dataclass(frozen=True)
class _Config:
    block_q: int
    block_kv: int
    kv_len: int  # unpadded S
    groups: int  # G = N // K
    scale: float
    causal: bool
    segments: bool  # segment ids given
    positions: bool  # explicit positions given (else token index)
    interpret: bool


def _interpret_arg(interpret: bool):
    # The generic interpreter (plain HLO): the TPU interpreter (`pltpu.InterpretParams`) models
    # several devices with barriers across their threads, which deadlock under `shard_map` on a
    # multi-device CPU mesh.
    return bool(interpret)


def _lanes(x, width):
    """Row stat `[bq, 128]` (lane-replicated) -> `[bq, width]`."""
    if width == LANES:
        return x
    if width < LANES:
        return x[:, :width]
    if width % LANES == 0:
        return jnp.tile(x, (1, width // LANES))
    return jnp.broadcast_to(x[:, :1], (x.shape[0], width))


def _mask(cfg: _Config, qi, kj, qseg_ref, kseg_ref, qpos_ref, kpos_ref):
    """`[bq, bk]` visibility of q block `qi` against kv block `kj` (None: all visible)."""
    bq, bk = cfg.block_q, cfg.block_kv
    mask = None

    def add(m):
        nonlocal mask
        mask = m if mask is None else mask & m

    if cfg.segments:
        add(_lanes(qseg_ref[...], bk) == kseg_ref[0:1, :])
    k_idx = kj * bk + lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
    if cfg.causal:
        if cfg.positions:
            add(kpos_ref[0:1, :] <= _lanes(qpos_ref[...], bk))
        else:
            add(k_idx <= qi * bq + lax.broadcasted_iota(jnp.int32, (bq, bk), 0))
    if cfg.kv_len % bk:
        add(k_idx < cfg.kv_len)
    return mask


def grid_rungs(n: int) -> tuple[int, ...]:
    """The lengths a walk over lists of up to `n` blocks may take: n, n/2, n/4, n/8 (rounded up)."""
    return tuple(sorted({-(-n // 2**i) for i in range(4)}))


def _walk(counts: jax.Array, n: int, call):
    """`call(steps)` for the smallest rung `steps` >= the longest list (`counts` `[B, rows]`).

    Exact for any mask: a list longer than a rung never takes it. Every rung is compiled; one
    runs."""
    rungs = grid_rungs(n)
    if len(rungs) == 1:
        return call(n)
    index = jnp.sum(jnp.asarray(rungs, jnp.int32) < jnp.max(counts))
    return lax.switch(index, [functools.partial(call, r) for r in rungs])


# --------------------------------------------------------------------------------- forward


def _unpack_side(cfg, refs):
    """Pops the optional (qseg, kseg, qpos, kpos) refs off the front of `refs`."""
    qseg_ref = kseg_ref = qpos_ref = kpos_ref = None
    if cfg.segments:
        qseg_ref, kseg_ref = refs.pop(0), refs.pop(0)
    if cfg.causal and cfg.positions:
        qpos_ref, kpos_ref = refs.pop(0), refs.pop(0)
    return qseg_ref, kseg_ref, qpos_ref, kpos_ref


def _fwd_kernel(lists_ref, counts_ref, *refs, cfg: _Config, save_lse: bool, count_visits: bool):
    refs = list(refs)
    q_ref, k_ref, v_ref = refs[:3]
    del refs[:3]
    side = _unpack_side(cfg, refs)
    o_ref = refs.pop(0)
    lse_ref = refs.pop(0) if save_lse else None
    visits_ref = refs.pop(0) if count_visits else None
    m_sc, l_sc, acc_sc = refs

    b, i, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)
    head_dim = acc_sc.shape[-1]

    @pl.when(j == 0)
    def _init():
        m_sc[...] = jnp.full(m_sc.shape, MASK_VALUE, jnp.float32)
        l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
        acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)
        if visits_ref is not None:
            visits_ref[...] = jnp.zeros(visits_ref.shape, jnp.int32)

    if visits_ref is not None:  # lanes 64+: grid steps walked
        lane = lax.broadcasted_iota(jnp.int32, visits_ref.shape, 1)
        visits_ref[...] += jnp.where(lane >= LANES // 2, 1, 0)

    @pl.when(j < counts_ref[b, i])
    def _compute():
        kj = lists_ref[b, i, j]
        q, k, v = q_ref[...], k_ref[...], v_ref[...]
        s = lax.dot_general(q, k, _NT, preferred_element_type=jnp.float32) * cfg.scale
        mask = _mask(cfg, i, kj, *side)
        if mask is not None:
            s = jnp.where(mask, s, MASK_VALUE)
        m_prev = m_sc[...]
        m_next = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))  # [bq, 128]
        p = jnp.exp(s - _lanes(m_next, cfg.block_kv))
        if mask is not None:
            p = jnp.where(mask, p, 0.0)  # rows with nothing visible yet: exp(0) = 1 otherwise
        alpha = jnp.exp(m_prev - m_next)
        l_sc[...] = alpha * l_sc[...] + jnp.sum(p, axis=1, keepdims=True)
        m_sc[...] = m_next
        pv = lax.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)
        acc_sc[...] = acc_sc[...] * _lanes(alpha, head_dim) + pv
        if visits_ref is not None:  # lanes < 64: blocks computed
            visits_ref[...] += jnp.where(lane < LANES // 2, 1, 0)

    @pl.when(j == pl.num_programs(3) - 1)
    def _finish():
        l = l_sc[...]
        safe = jnp.where(l == 0.0, 1.0, l)
        o_ref[...] = (acc_sc[...] / _lanes(safe, head_dim)).astype(o_ref.dtype)
        if lse_ref is not None:
            lse_ref[...] = jnp.where(l == 0.0, -MASK_VALUE, m_sc[...] + jnp.log(safe))


def _row_spec(bq, index):
    return pl.BlockSpec((None, bq, LANES), index)


def _col_spec(bk, index):
    return pl.BlockSpec((None, SUBLANES, bk), index)


def _side_inputs(cfg, qseg, kseg, qpos, kpos, q_index, kv_index):
    """Segment/position arrays and their specs; `q_index(*grid, *prefetch) -> (b, q_block)`."""
    arrays, specs = [], []
    pairs = []
    if cfg.segments:
        pairs.append((qseg, kseg))
    if cfg.causal and cfg.positions:
        pairs.append((qpos, kpos))
    for qa, ka in pairs:
        arrays += [qa, ka]
        specs += [
            _row_spec(cfg.block_q, lambda *a: (*q_index(*a), 0)),
            _col_spec(cfg.block_kv, lambda *a: (kv_index(*a)[0], 0, kv_index(*a)[1])),
        ]
    return arrays, specs


def _qmajor_specs(cfg: _Config, h: int):
    """BlockSpecs of q / kv / row stats for grids (b, n, q block, step) walking `q_lists`."""
    bq, bk, g = cfg.block_q, cfg.block_kv, cfg.groups

    def kv_index(b, n, i, j, lists, counts):
        return b, lax.div(n, g), lists[b, i, j], 0  # lax.div: jnp's // does not lower

    q_spec = pl.BlockSpec((None, None, bq, h), lambda b, n, i, j, L, C: (b, n, i, 0))
    stat_spec = pl.BlockSpec((None, None, bq, LANES), lambda b, n, i, j, L, C: (b, n, i, 0))
    return q_spec, pl.BlockSpec((None, None, bk, h), kv_index), stat_spec


def _fwd_call(q, k, v, side, tables, cfg: _Config, save_lse=True, count_visits=False):
    """q `[B, N, Tp, H]`, k/v `[B, K, Sp, H]` padded to the blocks; side = (qseg, kseg, qpos, kpos)
    lane/sublane-replicated. Returns o (and lse `[B, N, Tp, 128]`, visits)."""
    nk = k.shape[2] // cfg.block_kv
    call = functools.partial(_fwd_steps, q, k, v, side, tables, cfg, save_lse, count_visits)
    return _walk(tables.q_counts, nk, call)


def _fwd_steps(q, k, v, side, tables, cfg, save_lse, count_visits, steps):
    """The forward with a grid walking `steps` entries of each q block's kv list."""
    b, n, tp, h = q.shape
    bq = cfg.block_q
    nq = tp // bq
    q_spec, kv_spec, stat_spec = _qmajor_specs(cfg, h)
    side_arrays, side_specs = _side_inputs(
        cfg,
        *side,
        q_index=lambda b, n, i, j, L, C: (b, i),
        kv_index=lambda b, n, i, j, L, C: (b, L[b, i, j]),
    )
    out_shape = [jax.ShapeDtypeStruct(q.shape, q.dtype)]
    out_specs = [q_spec]
    if save_lse:
        out_shape.append(jax.ShapeDtypeStruct((b, n, tp, LANES), jnp.float32))
        out_specs.append(stat_spec)
    if count_visits:
        out_shape.append(jax.ShapeDtypeStruct((b, n, tp, LANES), jnp.int32))
        out_specs.append(stat_spec)
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=2,
        grid=(b, n, nq, steps),
        in_specs=[q_spec, kv_spec, kv_spec, *side_specs],
        out_specs=out_specs,
        scratch_shapes=[
            pltpu.VMEM((bq, LANES), jnp.float32),
            pltpu.VMEM((bq, LANES), jnp.float32),
            pltpu.VMEM((bq, h), jnp.float32),
        ],
    )
    kernel = functools.partial(_fwd_kernel, cfg=cfg, save_lse=save_lse, count_visits=count_visits)
    return pl.pallas_call(
        kernel,
        grid_spec=grid_spec,
        out_shape=out_shape,
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")
        ),
        interpret=_interpret_arg(cfg.interpret),
        name="flash_fwd_tpu",
    )(tables.q_lists[..., :steps], tables.q_counts, q, k, v, *side_arrays)


# --------------------------------------------------------------------------------- backward


def _probs_and_ds(cfg, q, k, v, do, lse, delta, mask):
    """Recomputes p `[bq, bk]` from the saved log-sum-exp and ds = p * (dO V^T - delta)."""
    s = lax.dot_general(q, k, _NT, preferred_element_type=jnp.float32) * cfg.scale
    p = jnp.exp(s - _lanes(lse, cfg.block_kv))
    if mask is not None:
        p = jnp.where(mask, p, 0.0)
    dp = lax.dot_general(do, v, _NT, preferred_element_type=jnp.float32)
    ds = p * (dp - _lanes(delta, cfg.block_kv))
    return p, ds


def _dq_kernel(lists_ref, counts_ref, *refs, cfg: _Config):
    refs = list(refs)
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref = refs[:6]
    del refs[:6]
    side = _unpack_side(cfg, refs)
    dq_ref, dq_sc = refs
    b, i, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)

    @pl.when(j == 0)
    def _init():
        dq_sc[...] = jnp.zeros(dq_sc.shape, jnp.float32)

    @pl.when(j < counts_ref[b, i])
    def _compute():
        k = k_ref[...]
        mask = _mask(cfg, i, lists_ref[b, i, j], *side)
        _, ds = _probs_and_ds(
            cfg, q_ref[...], k, v_ref[...], do_ref[...], lse_ref[...], delta_ref[...], mask
        )
        dq_sc[...] += lax.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)

    @pl.when(j == pl.num_programs(3) - 1)
    def _finish():
        dq_ref[...] = (dq_sc[...] * cfg.scale).astype(dq_ref.dtype)


def _dkv_kernel(lists_ref, counts_ref, *refs, cfg: _Config, steps: int):
    refs = list(refs)
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref = refs[:6]
    del refs[:6]
    side = _unpack_side(cfg, refs)
    dk_ref, dv_ref, dk_sc, dv_sc = refs
    b, j, t = pl.program_id(0), pl.program_id(2), pl.program_id(3)
    step = lax.rem(t, steps)  # lax.div/rem: jnp's floor semantics do not lower

    @pl.when(t == 0)
    def _init():
        dk_sc[...] = jnp.zeros(dk_sc.shape, jnp.float32)
        dv_sc[...] = jnp.zeros(dv_sc.shape, jnp.float32)

    @pl.when(step < counts_ref[b, j])
    def _compute():
        q, do = q_ref[...], do_ref[...]
        mask = _mask(cfg, lists_ref[b, j, step], j, *side)
        p, ds = _probs_and_ds(
            cfg, q, k_ref[...], v_ref[...], do, lse_ref[...], delta_ref[...], mask
        )
        # Transpose in fp32, then cast: the form jax's reference TPU kernel uses.
        dv_sc[...] += lax.dot(p.T.astype(do.dtype), do, preferred_element_type=jnp.float32)
        dk_sc[...] += lax.dot(ds.T.astype(q.dtype), q, preferred_element_type=jnp.float32)

    @pl.when(t == pl.num_programs(3) - 1)
    def _finish():
        dk_ref[...] = (dk_sc[...] * cfg.scale).astype(dk_ref.dtype)
        dv_ref[...] = dv_sc[...].astype(dv_ref.dtype)


def _bwd_call(q, k, v, side, tables, o, lse, do, cfg: _Config):
    b, n, tp, h = q.shape
    nq, nk = tp // cfg.block_q, k.shape[2] // cfg.block_kv
    delta = jnp.sum(o.astype(jnp.float32) * do.astype(jnp.float32), axis=-1)
    delta = jnp.broadcast_to(delta[..., None], (b, n, tp, LANES))
    args = (q, k, v, do, lse, delta, side, tables, cfg)
    dq = _walk(tables.q_counts, nk, functools.partial(_dq_steps, *args))
    dk, dv = _walk(tables.kv_counts, nq, functools.partial(_dkv_steps, *args))
    return dq, dk, dv


_BWD_PARAMS = dict(dimension_semantics=("parallel", "parallel", "parallel", "arbitrary"))


def _dq_steps(q, k, v, do, lse, delta, side, tables, cfg, steps):
    """dq: the forward's q-major walk, `steps` entries of each q block's kv list."""
    b, n, tp, h = q.shape
    bq = cfg.block_q
    q_spec, kv_spec, stat_spec = _qmajor_specs(cfg, h)
    side_arrays, side_specs = _side_inputs(
        cfg,
        *side,
        q_index=lambda b, n, i, j, L, C: (b, i),
        kv_index=lambda b, n, i, j, L, C: (b, L[b, i, j]),
    )
    return pl.pallas_call(
        functools.partial(_dq_kernel, cfg=cfg),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=2,
            grid=(b, n, tp // bq, steps),
            in_specs=[q_spec, kv_spec, kv_spec, q_spec, stat_spec, stat_spec, *side_specs],
            out_specs=q_spec,
            scratch_shapes=[pltpu.VMEM((bq, h), jnp.float32)],
        ),
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=pltpu.CompilerParams(**_BWD_PARAMS),
        interpret=_interpret_arg(cfg.interpret),
        name="flash_dq_tpu",
    )(tables.q_lists[..., :steps], tables.q_counts, q, k, v, do, lse, delta, *side_arrays)


def _dkv_steps(q, k, v, do, lse, delta, side, tables, cfg, steps):
    """dk, dv: kv-major walk over (query head in the group, `steps` entries of the q list)."""
    b, _, _, h = q.shape
    kh, sp = k.shape[1], k.shape[2]
    bq, bk, g = cfg.block_q, cfg.block_kv, cfg.groups

    def q_index(b, kk, j, t, L, C):
        return (b, kk * g + lax.div(t, steps), L[b, j, lax.rem(t, steps)], 0)

    q_spec = pl.BlockSpec((None, None, bq, h), q_index)
    stat_spec = pl.BlockSpec((None, None, bq, LANES), q_index)
    kv_spec = pl.BlockSpec((None, None, bk, h), lambda b, kk, j, t, L, C: (b, kk, j, 0))
    side_arrays, side_specs = _side_inputs(
        cfg,
        *side,
        q_index=lambda b, kk, j, t, L, C: (b, L[b, j, lax.rem(t, steps)]),
        kv_index=lambda b, kk, j, t, L, C: (b, j),
    )
    return pl.pallas_call(
        functools.partial(_dkv_kernel, cfg=cfg, steps=steps),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=2,
            grid=(b, kh, sp // bk, g * steps),
            in_specs=[q_spec, kv_spec, kv_spec, q_spec, stat_spec, stat_spec, *side_specs],
            out_specs=[kv_spec, kv_spec],
            scratch_shapes=[pltpu.VMEM((bk, h), jnp.float32), pltpu.VMEM((bk, h), jnp.float32)],
        ),
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        compiler_params=pltpu.CompilerParams(**_BWD_PARAMS),
        interpret=_interpret_arg(cfg.interpret),
        name="flash_dkv_tpu",
    )(tables.kv_lists[..., :steps], tables.kv_counts, q, k, v, do, lse, delta, *side_arrays)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _flash(q, k, v, side, tables, cfg):
    return _fwd_call(q, k, v, side, tables, cfg, save_lse=False)[0]


def _flash_fwd(q, k, v, side, tables, cfg):
    o, lse = _fwd_call(q, k, v, side, tables, cfg, save_lse=True)
    return o, (q, k, v, side, tables, o, lse)


def _flash_bwd(cfg, res, do):
    q, k, v, side, tables, o, lse = res
    dq, dk, dv = _bwd_call(q, k, v, side, tables, o, lse, do, cfg)
    return dq, dk, dv, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


# --------------------------------------------------------------------------------- wrapper


def _prepare(q, k, v, segment_ids, kv_segment_ids, causal, q_positions, kv_positions, bs):
    """Pads to the blocks, goes head-major, replicates row/column ids; builds block tables."""
    b, t, n, h = q.shape
    s = k.shape[1]
    tp, sp = _round_up(t, bs.block_q), _round_up(s, bs.block_kv)
    tables = masks.block_tables(
        t,
        s,
        block_q=bs.block_q,
        block_kv=bs.block_kv,
        batch=b,
        segment_ids=segment_ids,
        kv_segment_ids=kv_segment_ids,
        causal=causal,
        q_positions=q_positions,
        kv_positions=kv_positions,
    )
    tables = tables._replace(
        q_lists=jnp.broadcast_to(tables.q_lists, (b, *tables.q_lists.shape[1:])),
        q_counts=jnp.broadcast_to(tables.q_counts, (b, *tables.q_counts.shape[1:])),
        kv_lists=jnp.broadcast_to(tables.kv_lists, (b, *tables.kv_lists.shape[1:])),
        kv_counts=jnp.broadcast_to(tables.kv_counts, (b, *tables.kv_counts.shape[1:])),
    )

    def seq_pad(x, length):  # [B, L, ...] -> [B, Lp, ...]
        return jnp.pad(x, [(0, 0), (0, length - x.shape[1])] + [(0, 0)] * (x.ndim - 2))

    def rows(x):  # [B, T] -> [B, Tp, 128]
        x = seq_pad(jnp.broadcast_to(x, (b, t)).astype(jnp.int32), tp)
        return jnp.broadcast_to(x[:, :, None], (b, tp, LANES))

    def cols(x):  # [B, S] -> [B, 8, Sp]
        x = seq_pad(jnp.broadcast_to(x, (b, s)).astype(jnp.int32), sp)
        return jnp.broadcast_to(x[:, None, :], (b, SUBLANES, sp))

    side = [None] * 4
    if segment_ids is not None:
        kvs = segment_ids if kv_segment_ids is None else kv_segment_ids
        side[0], side[1] = rows(segment_ids), cols(kvs)
    if causal and (q_positions is not None or kv_positions is not None):
        qp = jnp.arange(t, dtype=jnp.int32)[None] if q_positions is None else q_positions
        kp = jnp.arange(s, dtype=jnp.int32)[None] if kv_positions is None else kv_positions
        side[2], side[3] = rows(qp), cols(kp)
    qh = jnp.swapaxes(seq_pad(q, tp), 1, 2)
    kh = jnp.swapaxes(seq_pad(k, sp), 1, 2)
    vh = jnp.swapaxes(seq_pad(v, sp), 1, 2)
    return qh, kh, vh, tuple(side), tables


def flash_attention_tpu(
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
    _count_visits=False,
):
    """Block-sparse flash attention on TPU; arguments as in `api.flash_attention`.

    Returns `[B, T, N, H]`. With `_count_visits` (testing only, no gradient) returns instead
    `[B, N, T]` counts per query row's block: kv blocks computed, and grid steps walked.
    """
    b, t, n, h = q.shape
    s, kheads = k.shape[1], k.shape[2]
    if n % kheads:
        raise ValueError(f"query heads N={n} must be a multiple of kv heads K={kheads}")
    bs = (block_sizes or BlockSizes()).resolve(t, s)
    cfg = _Config(
        block_q=bs.block_q,
        block_kv=bs.block_kv,
        kv_len=s,
        groups=n // kheads,
        scale=float(h**-0.5 if sm_scale is None else sm_scale),
        causal=bool(causal),
        segments=segment_ids is not None,
        positions=causal and (q_positions is not None or kv_positions is not None),
        interpret=bool(interpret),
    )
    qh, kh, vh, side, tables = _prepare(
        q, k, v, segment_ids, kv_segment_ids, causal, q_positions, kv_positions, bs
    )
    if _count_visits:
        visits = _fwd_call(qh, kh, vh, side, tables, cfg, save_lse=False, count_visits=True)[1]
        return visits[:, :, :t, 0], visits[:, :, :t, -1]
    o = _flash(qh, kh, vh, side, tables, cfg)
    return jnp.swapaxes(o, 1, 2)[:, :t]
