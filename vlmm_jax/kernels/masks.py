"""Spatiotemporal attention masks as segment ids / positions, and their block tables.

Every mask here is expressed in the convention of `reference.py`: query `t` sees key `s` iff
their segment ids are equal and (when causal) `kv_positions[s] <= q_positions[t]`.

| mask            | segment ids                      | causal positions     |
| --------------- | -------------------------------- | -------------------- |
| per frame       | `temporal_segment_ids(grid_thw)` | -                    |
| spatial windows | `window_segment_ids(grid_thw)`   | -                    |
| frame-causal    | `frame_causal_ids(grid_thw)[0]`  | `...[1]` (frame idx) |
| packed text     | `packed_segment_ids(lengths, T)` | token index          |

`grid_thw` is Qwen2.5-VL's `video_grid_thw` / `image_grid_thw`: one `(t, h, w)` row per
item, in patches, with `t` temporal slices (each slice = `temporal_patch_size` = 2 frames). The
vision tower sees `sum(t * h * w)` patch tokens, items one after the other. Layout helpers run on
the host with NumPy (the layout is static); `block_tables` runs on device under `jit`.

Worked example: `grid_thw = [(2, 4, 4)]`, merge 2, window 56px = 2x2 merged tokens = 4x4 patches:
per-frame ids are `[0]*16 + [1]*16`; window ids (window-reordered order) are
`[0]*16 + [1]*16` too, since one window covers a whole 4x4 slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "BlockTables",
    "block_density",
    "block_tables",
    "frame_causal_ids",
    "packed_segment_ids",
    "temporal_segment_ids",
    "window_segment_ids",
]

_BIG = np.iinfo(np.int32).max
_SMALL = np.iinfo(np.int32).min


def _rows(grid_thw) -> list[tuple[int, int, int]]:
    return [tuple(int(x) for x in row) for row in np.asarray(grid_thw).reshape(-1, 3)]


def temporal_segment_ids(grid_thw: Sequence[Sequence[int]]) -> np.ndarray:
    """Per-frame mask: one segment per temporal slice of every item.

    This is Qwen2.5-VL's full-attention `cu_seqlens` as segment ids. Windows are reordered within
    a slice only, so the ids are the same in the original and the window-reordered token order.

    Returns:
      `[L]` int32, `L = sum(t * h * w)`.
    """
    ids, base = [], 0
    for t, h, w in _rows(grid_thw):
        ids.append(np.repeat(np.arange(base, base + t, dtype=np.int32), h * w))
        base += t
    return np.concatenate(ids)


def window_segment_ids(
    grid_thw: Sequence[Sequence[int]],
    *,
    window_size: int = 112,
    patch_size: int = 14,
    spatial_merge_size: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Qwen2.5-VL spatial windows, in the window-reordered token order.

    Mirrors `Qwen2_5_VisionTransformer.get_window_index`: windows of `window_size` pixels
    (112px = 4x4 merged tokens = 8x8 patches), partial windows at the right/bottom edges, every
    window inside one temporal slice.

    Returns:
      segment_ids: `[L]` int32 window id of each patch token after reordering.
      window_index: `[L / merge**2]` int32 permutation of merged tokens (HF's `window_index`):
        `x_reordered = x.reshape(L // m2, m2, D)[window_index].reshape(L, D)`.
    """
    m = spatial_merge_size
    vws = window_size // m // patch_size
    index, seg, offset, wbase = [], [], 0, 0
    for t, h, w in _rows(grid_thw):
        gh, gw = h // m, w // m
        idx = np.arange(t * gh * gw).reshape(t, gh, gw)
        nh, nw = -(-gh // vws), -(-gw // vws)
        pad = np.full((t, nh * vws, nw * vws), -1)
        pad[:, :gh, :gw] = idx
        pad = pad.reshape(t, nh, vws, nw, vws).transpose(0, 1, 3, 2, 4).reshape(t, nh * nw, -1)
        counts = (pad >= 0).sum(-1).reshape(-1)
        index.append(pad[pad >= 0] + offset)
        seg.append(np.repeat(np.arange(wbase, wbase + counts.size, dtype=np.int32), counts * m * m))
        offset += t * gh * gw
        wbase += counts.size
    return np.concatenate(seg), np.concatenate(index).astype(np.int32)


def frame_causal_ids(grid_thw: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Frame-causal mask (streaming video): a token sees its own and earlier temporal slices.

    Use with `causal=True`: the segment id separates items, the position is the temporal slice
    index counted across items (so that positions keep increasing and block tables stay exact).

    Returns:
      segment_ids: `[L]` int32 item index; positions: `[L]` int32 temporal slice index.
    """
    seg, pos, base = [], [], 0
    for i, (t, h, w) in enumerate(_rows(grid_thw)):
        seg.append(np.full(t * h * w, i, np.int32))
        pos.append(np.repeat(np.arange(base, base + t, dtype=np.int32), h * w))
        base += t
    return np.concatenate(seg), np.concatenate(pos)


def packed_segment_ids(lengths: Sequence[int], total_length: int) -> np.ndarray:
    """Packed causal text: samples of `lengths` back to back, use with `causal=True`.

    Tokens past `sum(lengths)` (padding) get id `len(lengths)`: they see only other padding, so
    they stay finite (mask them out of the loss), and ids keep increasing along the sequence,
    which keeps `block_tables` exact.

    Returns:
      `[total_length]` int32.
    """
    lengths = [int(x) for x in lengths]
    if sum(lengths) > total_length:
        raise ValueError(f"packed lengths sum to {sum(lengths)} > total_length={total_length}")
    ids = np.full(total_length, len(lengths), np.int32)
    ids[: sum(lengths)] = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
    return ids


class BlockTables(NamedTuple):
    """Which `(q block, kv block)` pairs hold any visible element, in scalar-prefetch form.

    `q_lists[b, i, :q_counts[b, i]]` are the non-empty kv blocks of q block `i` in increasing
    order; the tail repeats the last one (0 when empty) so that a Pallas index_map reading it
    keeps the block already in VMEM and issues no DMA. `kv_lists` / `kv_counts` are the same
    for the transposed table (q blocks of each kv block), used by the dk/dv kernel.
    """

    mask: jax.Array  # [B, nq, nk] bool
    q_lists: jax.Array  # [B, nq, nk] int32
    q_counts: jax.Array  # [B, nq] int32
    kv_lists: jax.Array  # [B, nk, nq] int32
    kv_counts: jax.Array  # [B, nk] int32


def _block_reduce(x, block, fill, op):
    """`[B, L]` -> `[B, ceil(L / block)]` reduction; the padding of the last block is `fill`."""
    b, n = x.shape
    nb = -(-n // block)
    x = jnp.pad(x, ((0, 0), (0, nb * block - n)), constant_values=fill)
    return op(x.reshape(b, nb, block), axis=-1)


def _compact(mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`[..., n]` bool -> indices of the True entries first (in order), tail = last index."""
    n = mask.shape[-1]
    order = jnp.argsort(~mask, axis=-1, stable=True).astype(jnp.int32)
    counts = jnp.sum(mask, axis=-1, dtype=jnp.int32)
    last = jnp.take_along_axis(order, jnp.maximum(counts - 1, 0)[..., None], axis=-1)
    last = jnp.where(counts[..., None] > 0, last, 0)
    lists = jnp.where(jnp.arange(n) < counts[..., None], order, last)
    return lists, counts


def block_tables(
    q_len: int,
    kv_len: int,
    *,
    block_q: int,
    block_kv: int,
    batch: int = 1,
    segment_ids: jax.Array | None = None,
    kv_segment_ids: jax.Array | None = None,
    causal: bool = False,
    q_positions: jax.Array | None = None,
    kv_positions: jax.Array | None = None,
) -> BlockTables:
    """Non-empty block table from segment ids (+ causality), computed on device in O(T + S).

    Each block is summarised by the range of its segment ids and its extreme position; a pair is
    kept when the ranges overlap (and, if causal, the kv block's first position is not after the
    q block's last). This is exact when segment ids and positions are non-decreasing along the
    sequence (all helpers above, packed text, Qwen's window order) and a superset otherwise:
    the kernels still mask element-wise, so results stay exact and only less work is skipped.

    Args:
      q_len, kv_len: unpadded lengths T and S; blocks past them hold padding only.
      block_q, block_kv: block sizes.
      batch: B, used when no per-example array is given.
      segment_ids, kv_segment_ids, causal, q_positions, kv_positions: as in `reference.py`.

    Returns:
      `BlockTables` with `nq = ceil(T / block_q)`, `nk = ceil(S / block_kv)`.
    """
    nq, nk = -(-q_len // block_q), -(-kv_len // block_kv)
    arrays = [a for a in (segment_ids, kv_segment_ids, q_positions, kv_positions) if a is not None]
    if arrays:
        batch = arrays[0].shape[0]
    mask = jnp.ones((batch, nq, nk), bool)
    if segment_ids is not None:
        if kv_segment_ids is None:
            kv_segment_ids = segment_ids
        qmin = _block_reduce(segment_ids, block_q, _BIG, jnp.min)
        qmax = _block_reduce(segment_ids, block_q, _SMALL, jnp.max)
        kmin = _block_reduce(kv_segment_ids, block_kv, _BIG, jnp.min)
        kmax = _block_reduce(kv_segment_ids, block_kv, _SMALL, jnp.max)
        mask &= (qmin[:, :, None] <= kmax[:, None, :]) & (kmin[:, None, :] <= qmax[:, :, None])
    if causal:
        qp = jnp.arange(q_len, dtype=jnp.int32)[None] if q_positions is None else q_positions
        kp = jnp.arange(kv_len, dtype=jnp.int32)[None] if kv_positions is None else kv_positions
        qpmax = _block_reduce(qp, block_q, _SMALL, jnp.max)
        kpmin = _block_reduce(kp, block_kv, _BIG, jnp.min)
        mask &= kpmin[:, None, :] <= qpmax[:, :, None]
    q_lists, q_counts = _compact(mask)
    kv_lists, kv_counts = _compact(jnp.swapaxes(mask, 1, 2))
    return BlockTables(mask, q_lists, q_counts, kv_lists, kv_counts)


def block_density(tables: BlockTables) -> float:
    """Fraction of `(q block, kv block)` pairs a block-sparse kernel computes."""
    return float(jnp.mean(tables.mask.astype(jnp.float32)))
