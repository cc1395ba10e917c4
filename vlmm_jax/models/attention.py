"""The one attention function of the model: vision windows, packed causal text, decode steps.

Masking is expressed with segment ids and slot indices rather than dense masks:
  * a query attends to a key only when both carry the same non-zero segment id (0 marks padding
    and empty cache slots), and
  * with `causal=True`, only when the key's slot index is <= the query's.

Worked example (two packed samples of lengths 2 and 3, then one pad):
  segment_ids = [1, 1, 2, 2, 2, 0], causal -> token 3 sees tokens 2 and 3 only; the pad sees
  nothing and its output is zeros (not NaN).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)


def _xla_attention(q, k, v, q_seg, kv_seg, q_idx, kv_idx, causal, scale):
    # q [B,T,N,H], k/v [B,S,K,H]
    b, t, n, h = q.shape
    kh = k.shape[2]
    qg = q.reshape(b, t, kh, n // kh, h)  # [B,T,K,G,H]
    logits = jnp.einsum("BTKGH,BSKH->BKGTS", qg, k, preferred_element_type=jnp.float32)
    logits = logits * scale
    mask = q_seg[:, :, None] == kv_seg[:, None, :]  # [B,T,S]
    mask &= kv_seg[:, None, :] != 0
    if causal:
        mask &= kv_idx[:, None, :] <= q_idx[:, :, None]
    mask = mask[:, None, None]  # [B,1,1,T,S]
    logits = jnp.where(mask, logits, _MASKED)
    probs = jax.nn.softmax(logits, axis=-1)
    probs = jnp.where(mask, probs, 0.0).astype(v.dtype)  # fully masked rows -> zeros
    out = jnp.einsum("BKGTS,BSKH->BTKGH", probs, v, preferred_element_type=jnp.float32)
    return out.reshape(b, t, n, h).astype(q.dtype)


def _xla_decode_attention(q, k, v, q_seg, kv_seg, q_idx, kv_idx, causal, scale):
    """`_xla_attention` for one query per row (a decode step): the G query heads of each kv
    head are the rows of one contraction with its `[S, H]` keys, with no query-length axis and
    the mask built once per row (`[B, S]`), which XLA CPU runs faster than the general form."""
    b, _, n, h = q.shape
    kh = k.shape[2]
    qg = q.reshape(b, kh, n // kh, h)  # [B,K,G,H]
    logits = jnp.einsum("BKGH,BSKH->BKGS", qg, k, preferred_element_type=jnp.float32) * scale
    mask = (kv_seg == q_seg[:, :1]) & (kv_seg != 0)  # [B,S]
    if causal:
        mask &= kv_idx <= q_idx[:, :1]
    mask = mask[:, None, None]  # [B,1,1,S]
    probs = jax.nn.softmax(jnp.where(mask, logits, _MASKED), axis=-1)
    probs = jnp.where(mask, probs, 0.0).astype(v.dtype)  # fully masked rows -> zeros
    out = jnp.einsum("BKGS,BSKH->BKGH", probs, v, preferred_element_type=jnp.float32)
    return out.reshape(b, 1, n, h).astype(q.dtype)


def target_platform() -> str:
    """The platform the surrounding program compiles for: the devices of the mesh in context
    (a TPU topology compiled from a CPU host says "tpu"), else the default backend."""
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty:
        return mesh.abstract_device.platform
    return jax.default_backend()


def _spec(
    names: tuple[str | None, ...], shape: tuple[int, ...], mesh
) -> jax.sharding.PartitionSpec:
    """The mesh axes of logical `names` under the active rules, dropped where a dimension does
    not split evenly (that dimension is then computed whole on every shard)."""
    spec = nn.logical_to_mesh_axes(names) or jax.sharding.PartitionSpec()
    out = []
    for dim, axes in zip(shape, (*spec, *[None] * (len(shape) - len(spec))), strict=True):
        flat = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = int(np.prod([mesh.shape[a] for a in flat])) if flat else 1
        out.append(axes if flat and dim % size == 0 else None)
    return jax.sharding.PartitionSpec(*out)


def _pallas(q, k, v, q_seg, kv_seg, q_pos, kv_pos, causal, scale, platform):
    """The Pallas kernel, under `shard_map` over the batch (and heads) when a mesh is in
    context: Mosaic kernels cannot be partitioned automatically, and each shard's rows (and
    heads) are independent. `interpret` follows the compile target, not the host."""
    from vlmm_jax.kernels import flash_attention  # Pallas imports only when used

    def kernel(q, k, v, q_seg, kv_seg, q_pos, kv_pos):
        # The kernels attend equal ids; padding (0) must match nothing, queries or keys.
        return flash_attention(
            q,
            k,
            v,
            segment_ids=jnp.where(q_seg == 0, -1, q_seg),
            kv_segment_ids=jnp.where(kv_seg == 0, -2, kv_seg),
            causal=causal,
            sm_scale=scale,
            q_positions=q_pos,
            kv_positions=kv_pos,
            backend="gpu" if platform == "gpu" else "tpu",
            interpret=platform == "cpu",  # the only way Pallas runs on a CPU
        )

    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return kernel(q, k, v, q_seg, kv_seg, q_pos, kv_pos)
    q_spec = _spec(("batch", "length", "heads", "head_dim"), q.shape, mesh)
    kv_spec = _spec(("batch", "length", "kv_heads", "head_dim"), k.shape, mesh)
    if (q_spec[2] is None) != (kv_spec[2] is None) or q_spec[0] != kv_spec[0]:
        # GQA reads kv head n // G: heads and kv heads must split the same way (or not at all).
        q_spec = jax.sharding.PartitionSpec(kv_spec[0], None, None, None)
        kv_spec = jax.sharding.PartitionSpec(kv_spec[0], None, None, None)
    row = jax.sharding.PartitionSpec(q_spec[0], None)
    return jax.shard_map(
        kernel,
        mesh=mesh,
        in_specs=(q_spec, kv_spec, kv_spec, row, row, row, row),
        out_specs=q_spec,
        check_vma=False,
    )(q, k, v, q_seg, kv_seg, q_pos, kv_pos)


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    segment_ids: jax.Array | None = None,
    kv_segment_ids: jax.Array | None = None,
    causal: bool = False,
    q_positions: jax.Array | None = None,
    kv_positions: jax.Array | None = None,
    sm_scale: float | None = None,
    implementation: str = "xla",
) -> jax.Array:
    """Scaled dot-product attention with segment and causal masking, GQA.

    Args:
      q: `[B, T, N, H]` queries. k, v: `[B, S, K, H]` keys and values, N a multiple of K.
      segment_ids: `[B, T]` int query segments (default all ones). kv_segment_ids: `[B, S]`
        (default: `segment_ids` when T == S, else all ones). 0 marks padding.
      causal: mask keys whose slot index exceeds the query's.
      q_positions / kv_positions: `[B, T]` / `[B, S]` slot indices for the causal mask
        (default `arange`); decode steps pass the cache slots they write.
      sm_scale: softmax scale, default `1/sqrt(H)`.
      implementation: "xla" (the reference), "pallas" (the kernels in `vlmm_jax.kernels`, under
        `shard_map` on a mesh; in interpret mode when compiling for CPU, for tests), or "auto"
        (Pallas when compiling for TPU/GPU, XLA for CPU). The target is the mesh's platform.

    Returns:
      `[B, T, N, H]` in q's dtype; rows with no visible key are zeros.
    """
    b, t, n, h = q.shape
    s, kh = k.shape[1], k.shape[2]
    if n % kh:
        raise ValueError(f"query heads ({n}) must be a multiple of kv heads ({kh})")
    if segment_ids is None:
        segment_ids = jnp.ones((b, t), jnp.int32)
    if kv_segment_ids is None:
        kv_segment_ids = segment_ids if s == t else jnp.ones((b, s), jnp.int32)
    if q_positions is None:
        q_positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    if kv_positions is None:
        kv_positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
    scale = h**-0.5 if sm_scale is None else sm_scale
    platform = target_platform()
    if implementation == "auto":
        implementation = "xla" if platform == "cpu" else "pallas"
    if implementation == "xla":
        xla = _xla_decode_attention if t == 1 else _xla_attention
        return xla(q, k, v, segment_ids, kv_segment_ids, q_positions, kv_positions, causal, scale)
    if implementation == "pallas":
        return _pallas(
            q, k, v, segment_ids, kv_segment_ids, q_positions, kv_positions, causal, scale, platform
        )
    raise ValueError(f"unknown attention implementation {implementation!r}")
