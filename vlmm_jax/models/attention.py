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

import jax
import jax.numpy as jnp

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
      implementation: "xla" (the reference), "pallas" (the kernels in `vlmm_jax.kernels`; in
        interpret mode on CPU, for tests), or "auto" (Pallas on TPU/GPU, XLA on CPU).

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
    if implementation == "auto":
        implementation = "xla" if jax.default_backend() == "cpu" else "pallas"
    if implementation == "xla":
        return _xla_attention(
            q, k, v, segment_ids, kv_segment_ids, q_positions, kv_positions, causal, scale
        )
    if implementation == "pallas":
        from vlmm_jax.kernels import flash_attention  # Pallas imports only when used

        # The kernels attend equal ids; padding (0) must match nothing, queries or keys.
        return flash_attention(
            q,
            k,
            v,
            segment_ids=jnp.where(segment_ids == 0, -1, segment_ids),
            kv_segment_ids=jnp.where(kv_segment_ids == 0, -2, kv_segment_ids),
            causal=causal,
            sm_scale=scale,
            q_positions=q_positions,
            kv_positions=kv_positions,
            interpret=jax.default_backend() == "cpu",  # the only way Pallas runs on a CPU
        )
    raise ValueError(f"unknown attention implementation {implementation!r}")
