"""The Qwen2 / Qwen3 decoder with M-RoPE and an explicit KV cache.

Qwen3 (`text.qk_norm`): no q/k/v biases, an RMSNorm over each query and key head before the
rotary, M-RoPE sections interleaved over the frequencies, and DeepStack: visual features added
to the hidden states after the first layers.

The cache is a plain pytree (see `init_cache`); a call with `cache` writes its `T` new keys and
values at slot `cache["index"]` and returns the updated cache, so prefill (T = prompt length) and
decode (T = 1) are the same layer code. Two ways through the layers' scan:
  * a decode step (T = 1): the stacked `[L, ...]` keys and values ride in the carry and layer l
    writes its slot in place (`dynamic_update_slice` at `(l, :, index)`), so a step moves T slots
    per layer, not a copy of the cache (inside the sampler's while loop the buffer is updated in
    place);
  * T > 1 (a prefill, or completions attending to a prompt's cache in a differentiated GRPO
    update): each layer gets its own `[B, S, K, H]` slice as a scanned input and returns the
    updated slice. A backward pass through the scan then keeps each layer's slice once, where
    the carry would keep the whole stacked cache at every layer (L times the cache).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vlmm_jax.models.attention import attention
from vlmm_jax.models.config import ModelConfig
from vlmm_jax.models.layers import GatedMLP, RMSNorm, apply_rotary, constrain, param, stack_layers

Cache = dict[str, jax.Array]


def init_cache(config: ModelConfig, batch: int, max_length: int, dtype=jnp.float32) -> Cache:
    """An empty cache: `k`/`v` `[L, B, S, K, H]`, `segment_ids` `[B, S]` (0 = empty), `index`."""
    t = config.text
    shape = (t.num_layers, batch, max_length, t.num_kv_heads, t.resolved_head_dim)
    return {
        "k": jnp.zeros(shape, dtype),
        "v": jnp.zeros(shape, dtype),
        "segment_ids": jnp.zeros((batch, max_length), jnp.int32),
        "index": jnp.zeros((), jnp.int32),
    }


CACHE_AXES = {
    "k": ("layers", "batch", "cache_length", "kv_heads", "head_dim"),
    "v": ("layers", "batch", "cache_length", "kv_heads", "head_dim"),
    "segment_ids": ("batch", "cache_length"),
    "index": (),
}


def mrope_axes(config: ModelConfig) -> np.ndarray:
    """`[H/2]`: which of the (t, h, w) positions rotates each frequency.

    Contiguous sections (Qwen2.5-VL, e.g. 16/24/24): t for the first 16, then h, then w.
    Interleaved (Qwen3-VL, e.g. 24/20/20): h at 1, 4, 7, ... and w at 2, 5, 8, ... up to three
    times their section, t for the rest (transformers' `Qwen3VLTextRotaryEmbedding`).
    """
    t = config.text
    half = t.resolved_head_dim // 2
    if not t.mrope_interleaved:
        return np.repeat(np.arange(3), t.mrope_section)
    axes = np.zeros(half, np.int64)
    for axis in (1, 2):
        axes[axis : 3 * t.mrope_section[axis] : 3] = axis
    return axes


def mrope_angles(positions: jax.Array, config: ModelConfig) -> tuple[jax.Array, jax.Array]:
    """cos, sin `[B, T, H]` (fp32) for 3D positions `[3, B, T]` (see `mrope_axes`)."""
    t = config.text
    h = t.resolved_head_dim
    inv_freq = 1.0 / (t.rope_theta ** (jnp.arange(0, h, 2, dtype=jnp.float32) / h))  # [H/2]
    pos = positions.astype(jnp.float32)[mrope_axes(config)]  # [H/2, B, T]
    angles = jnp.moveaxis(pos, 0, -1) * inv_freq  # [B, T, H/2]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


class DecoderLayer(nn.Module):
    config: ModelConfig
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(
        self, carry, layer, layer_cache, cos, sin, q_seg, kv_seg, q_slots, kv_slots, deepstack
    ):
        """carry: (x `[B, T, D]`, the stacked cache {k, v: `[L, B, S, K, H]`} of a decode step, or
        None); `layer`: this layer's index l (int32 scalar); layer_cache: this layer's own
        {k, v: `[B, S, K, H]`} when T > 1, or None; deepstack: `[S, B, T, D]` added to the output
        of layers l < S, or None.

        Returns ((x, the stacked cache with this step's slots written at `(l, :, slot)`), this
        layer's cache with the T slots written, or None).
        """
        x, kv_cache = carry
        t = self.config.text
        n, k_heads, h, d = t.num_heads, t.num_kv_heads, t.resolved_head_dim, t.hidden_size
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        zeros = nn.initializers.zeros
        y = RMSNorm(t.rms_norm_eps, name="input_norm", **kw)(x)
        wq = param(self, "q", (d, n, h), ("embed", "heads", "head_dim"))
        wk = param(self, "k", (d, k_heads, h), ("embed", "kv_heads", "head_dim"))
        wv = param(self, "v", (d, k_heads, h), ("embed", "kv_heads", "head_dim"))
        q = jnp.einsum("BTD,DNH->BTNH", y, wq.astype(self.dtype))
        k = jnp.einsum("BTD,DKH->BTKH", y, wk.astype(self.dtype))
        v = jnp.einsum("BTD,DKH->BTKH", y, wv.astype(self.dtype))
        if t.attention_bias:
            q += param(self, "q_bias", (n, h), ("heads", "head_dim"), zeros).astype(self.dtype)
            k += param(self, "k_bias", (k_heads, h), ("kv_heads", "head_dim"), zeros).astype(
                self.dtype
            )
            v += param(self, "v_bias", (k_heads, h), ("kv_heads", "head_dim"), zeros).astype(
                self.dtype
            )
        if t.qk_norm:  # per head, before the rotary
            head = dict(axes=("head_dim",), **kw)
            q = RMSNorm(t.rms_norm_eps, name="q_norm", **head)(q)
            k = RMSNorm(t.rms_norm_eps, name="k_norm", **head)(k)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q = constrain(q, ("batch", "length", "heads", "head_dim"))
        slot = q_slots[0, 0]
        if layer_cache is not None:  # T > 1: write into this layer's own slice, attend to it
            layer_cache = {
                name: jax.lax.dynamic_update_slice(buf, new.astype(buf.dtype), (0, slot, 0, 0))
                for (name, buf), new in zip(layer_cache.items(), (k, v), strict=True)
            }
            k, v = (layer_cache[name].astype(self.dtype) for name in ("k", "v"))
        if kv_cache is not None:  # decode: write the slot in place, attend to the layer's slice
            at = (layer, 0, slot, 0, 0)
            kv_cache = {  # [B, T, K, H] at (l, :, slot)
                name: jax.lax.dynamic_update_slice(buf, new[None].astype(buf.dtype), at)
                for (name, buf), new in zip(kv_cache.items(), (k, v), strict=True)
            }
            k, v = (  # this layer's [B, S, K, H]
                jax.lax.dynamic_index_in_dim(kv_cache[name], layer, keepdims=False).astype(
                    self.dtype
                )
                for name in ("k", "v")
            )
        o = attention(
            q,
            k,
            v,
            segment_ids=q_seg,
            kv_segment_ids=kv_seg,
            causal=True,
            q_positions=q_slots,
            kv_positions=kv_slots,
            implementation=self.config.attention_implementation,
        )
        wo = param(self, "o", (n, h, d), ("heads", "head_dim", "embed"))
        x = x + jnp.einsum("BTNH,NHD->BTD", o, wo.astype(self.dtype))
        y = RMSNorm(t.rms_norm_eps, name="post_attention_norm", **kw)(x)
        x = x + GatedMLP(t.intermediate_size, name="mlp", **kw)(y)
        if deepstack is not None:  # DeepStack: visual features into the first S layers' outputs
            s = deepstack.shape[0]
            feature = jax.lax.dynamic_index_in_dim(
                deepstack, jnp.minimum(layer, s - 1), keepdims=False
            )
            x = jnp.where(layer < s, x + feature.astype(x.dtype), x)
        return (constrain(x, ("batch", "length", "embed")), kv_cache), layer_cache


class Decoder(nn.Module):
    """Embedded tokens `[B, T, D]` -> final-norm hidden states `[B, T, D]` (+ updated cache)."""

    config: ModelConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, positions, segment_ids, cache: Cache | None = None, deepstack=None):
        """x `[B, T, D]`; positions `[3, B, T]`; segment_ids `[B, T]` (0 = padding); deepstack:
        `[S, B, T, D]` (Qwen3-VL's visual features for the first S layers) or None."""
        t = self.config.text
        b, length = segment_ids.shape
        cos, sin = mrope_angles(positions, self.config)
        if cache is None:
            q_slots = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (b, length))
            kv_seg, kv_slots, kv_cache = segment_ids, q_slots, None
        else:
            idx = cache["index"]
            q_slots = jnp.broadcast_to(idx + jnp.arange(length, dtype=jnp.int32), (b, length))
            kv_seg = jax.lax.dynamic_update_slice(cache["segment_ids"], segment_ids, (0, idx))
            s = kv_seg.shape[1]
            kv_slots = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
            kv_cache = {"k": cache["k"], "v": cache["v"]}
        in_place = cache is not None and length == 1  # a decode step (see the module docstring)
        layer_caches = None if in_place else kv_cache  # scanned per layer when T > 1
        kv_cache = kv_cache if in_place else None
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        layer = stack_layers(
            DecoderLayer,
            num=t.num_layers,
            scan=self.config.scan_layers,
            remat=self.config.remat_policy,
            in_axes=(0, 0) + (nn.broadcast,) * 7,
        )
        args = (cos, sin, segment_ids, kv_seg, q_slots, kv_slots, deepstack)
        layer_ids = jnp.arange(t.num_layers, dtype=jnp.int32)
        carry = (x, kv_cache)
        if self.config.scan_layers:
            carry, new_caches = layer(self.config, name="layers", **kw)(
                carry, layer_ids, layer_caches, *args
            )
        else:
            outs = []
            for i in range(t.num_layers):
                own = (
                    None
                    if layer_caches is None
                    else jax.tree.map(lambda a, i=i: a[i], layer_caches)
                )
                carry, out = layer(self.config, name=f"layers_{i}", **kw)(
                    carry, layer_ids[i], own, *args
                )
                outs.append(out)
            new_caches = (
                None if layer_caches is None else jax.tree.map(lambda *a: jnp.stack(a), *outs)
            )
        x, kv_cache = carry
        if new_caches is not None:
            kv_cache = new_caches
        x = RMSNorm(t.rms_norm_eps, name="norm", **kw)(x)
        if cache is not None:
            cache = {**kv_cache, "segment_ids": kv_seg, "index": cache["index"] + length}
        return x, cache
