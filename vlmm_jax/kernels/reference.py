"""Pure-jnp attention with segment ids, causality and GQA: the reference every kernel matches.

Mask convention (shared by every kernel in this package): query `t` may attend key `s` iff

    q_segment_ids[t] == kv_segment_ids[s]          (when segment ids are given)
    and kv_positions[s] <= q_positions[t]          (when causal)

Positions default to the token index (top-left aligned causality, as in
`jax.nn.dot_product_attention(is_causal=True)`). Passing frame indices as positions turns
`causal=True` into frame-causal attention (see `masks.frame_causal_ids`). A row with no
visible key returns zeros (and zero gradients), never NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["attention_mask", "reference_attention"]


def attention_mask(
    q_len: int,
    kv_len: int,
    *,
    segment_ids: jax.Array | None = None,
    kv_segment_ids: jax.Array | None = None,
    causal: bool = False,
    q_positions: jax.Array | None = None,
    kv_positions: jax.Array | None = None,
) -> jax.Array | None:
    """The dense boolean mask `[B or 1, T, S]` of the convention above (None: no masking)."""
    mask = None
    if segment_ids is not None:
        if kv_segment_ids is None:
            kv_segment_ids = segment_ids
        mask = segment_ids[:, :, None] == kv_segment_ids[:, None, :]
    if causal:
        qp = jnp.arange(q_len)[None] if q_positions is None else q_positions
        kp = jnp.arange(kv_len)[None] if kv_positions is None else kv_positions
        c = kp[:, None, :] <= qp[:, :, None]
        mask = c if mask is None else mask & c
    return mask


def reference_attention(
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
    return_lse: bool = False,
):
    """Dense softmax attention in fp32 (XLA); output in the input dtype.

    Args:
      q: `[B, T, N, H]` queries; `N` a multiple of the kv heads `K`.
      k, v: `[B, S, K, H]` keys and values.
      segment_ids: `[B, T]` int32 query segment ids.
      kv_segment_ids: `[B, S]` int32 key segment ids (default: `segment_ids`, needs T == S).
      causal: mask keys whose position is after the query's.
      q_positions, kv_positions: `[B, T]` / `[B, S]` int32 positions for `causal`.
      sm_scale: logit scale, default `H ** -0.5`.
      return_lse: also return the `[B, N, T]` log-sum-exp (`-inf` on empty rows).

    Returns:
      `[B, T, N, H]` attention output (and the log-sum-exp when asked).
    """
    b, t, n, h = q.shape
    _, s, kh, _ = k.shape
    if n % kh:
        raise ValueError(f"query heads N={n} must be a multiple of kv heads K={kh} (q {q.shape})")
    g = n // kh
    scale = h**-0.5 if sm_scale is None else sm_scale
    qg = q.reshape(b, t, kh, g, h).astype(jnp.float32)
    logits = jnp.einsum(
        "BTKGH,BSKH->BKGTS", qg, k.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST
    )
    logits = logits * scale
    mask = attention_mask(
        t,
        s,
        segment_ids=segment_ids,
        kv_segment_ids=kv_segment_ids,
        causal=causal,
        q_positions=q_positions,
        kv_positions=kv_positions,
    )
    if mask is not None:
        mask = mask[:, None, None]  # [B, 1, 1, T, S]
        masked = jnp.where(mask, logits, -jnp.inf)
    else:
        masked = logits
    m = jax.lax.stop_gradient(jnp.max(masked, axis=-1, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    p = jnp.exp(masked - m)  # exp(-inf) = 0 on masked keys: no inf * 0 in the gradient
    l = jnp.sum(p, axis=-1, keepdims=True)
    p = p / jnp.where(l == 0, 1.0, l)
    out = jnp.einsum("BKGTS,BSKH->BTKGH", p, v.astype(jnp.float32), precision="highest")
    out = out.reshape(b, t, n, h).astype(q.dtype)
    if return_lse:
        lse = jnp.where(l[..., 0] > 0, m[..., 0] + jnp.log(l[..., 0]), -jnp.inf)
        return out, lse.reshape(b, n, t)
    return out
