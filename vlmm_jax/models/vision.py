"""The Qwen-VL vision towers: 3D patch embedding, attention blocks, 2x2 patch merger.

Qwen2.5-VL: RMSNorm blocks with a gated SiLU MLP, window attention except in the full-attention
blocks. Qwen3-VL: a patch-embedding bias, a learned position table interpolated to each grid
(`layout["pos_taps"]`), LayerNorm blocks with a GELU MLP attending per frame, and DeepStack:
the outputs of `deepstack_visual_indexes` blocks, each through its own merger, for the decoder.

All patches of all images and videos in a batch run as one sequence `[1, P, D]`; windows and
temporal slices are attention segments, so nothing attends across items.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlmm_jax.models.attention import attention
from vlmm_jax.models.config import ModelConfig
from vlmm_jax.models.layers import (
    MLP,
    GatedMLP,
    LayerNorm,
    RMSNorm,
    apply_rotary,
    constrain,
    param,
    stack_layers,
)


def _norm(config: ModelConfig, name: str, **kw) -> nn.Module:
    if config.is_qwen3:
        return LayerNorm(1e-6, name=name, **kw)
    return RMSNorm(config.vision.rms_norm_eps, name=name, **kw)


class VisionBlock(nn.Module):
    """Pre-norm block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`."""

    config: ModelConfig
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, carry, cos, sin, window_seg, frame_seg, is_full, deepstack_slot):
        """carry: (x `[B, P, D]`, DeepStack slots `[S, B, P, D]` or None); cos/sin `[B, P, H]`;
        segments `[B, P]`; is_full: bool; deepstack_slot: the slot this block's output fills,
        -1 for none (both Python values, or scanned `[]` arrays)."""
        x, slots = carry
        cfg = self.config.vision
        n, h, d = cfg.num_heads, cfg.head_dim, cfg.hidden_size
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = _norm(self.config, "norm1", **kw)(x)
        w_qkv = param(self, "qkv", (d, 3, n, h), ("embed", "qkv", "heads", "head_dim"))
        b_qkv = param(
            self, "qkv_bias", (3, n, h), ("qkv", "heads", "head_dim"), nn.initializers.zeros
        )
        qkv = jnp.einsum("BPD,DCNH->CBPNH", y, w_qkv.astype(self.dtype))
        qkv = qkv + b_qkv.astype(self.dtype)[:, None, None]
        q, k, v = apply_rotary(qkv[0], cos, sin), apply_rotary(qkv[1], cos, sin), qkv[2]
        seg = jnp.where(is_full, frame_seg, window_seg)
        o = attention(q, k, v, segment_ids=seg, implementation=self.config.attention_implementation)
        w_o = param(self, "proj", (n, h, d), ("heads", "head_dim", "embed"))
        b_o = param(self, "proj_bias", (d,), ("embed",), nn.initializers.zeros)
        x = x + jnp.einsum("BPNH,NHD->BPD", o, w_o.astype(self.dtype)) + b_o.astype(self.dtype)
        y = _norm(self.config, "norm2", **kw)(x)
        if self.config.is_qwen3:
            mlp = MLP(cfg.intermediate_size, cfg.hidden_act, name="mlp", **kw)
        else:
            mlp = GatedMLP(cfg.intermediate_size, use_bias=True, name="mlp", **kw)
        x = constrain(x + mlp(y), ("batch", "length", "embed"))
        if slots is not None and not (isinstance(deepstack_slot, int) and deepstack_slot < 0):
            # keep this block's output in its DeepStack slot (a block with none, -1 when
            # scanned, writes slot 0 back unchanged: one slot moves, not all S)
            slot = jnp.maximum(deepstack_slot, 0)
            current = jax.lax.dynamic_index_in_dim(slots, slot, 0, keepdims=False)
            new = jnp.where(deepstack_slot >= 0, x.astype(slots.dtype), current)
            slots = jax.lax.dynamic_update_index_in_dim(slots, new, slot, 0)
        return (x, slots), None


class PatchMerger(nn.Module):
    """Norm per patch, concatenate each 2x2 block, MLP (GELU) to the decoder width.

    Qwen2.5-VL: RMSNorm (`ln_q`); Qwen3-VL: LayerNorm (`norm`), after concatenating for the
    DeepStack mergers (`postshuffle_norm`)."""

    config: ModelConfig
    dtype: jnp.dtype
    param_dtype: jnp.dtype
    postshuffle_norm: bool = False

    @nn.compact
    def __call__(self, x):  # x [B, P, D] -> [B, P/4, D_text]
        cfg = self.config.vision
        d_in = cfg.hidden_size * cfg.merge_unit
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if not self.config.is_qwen3:
            x = RMSNorm(1e-6, name="ln_q", **kw)(x)
        elif not self.postshuffle_norm:
            x = LayerNorm(1e-6, name="norm", **kw)(x)
        x = x.reshape(x.shape[0], -1, d_in)
        if self.postshuffle_norm:
            x = LayerNorm(1e-6, name="norm", **kw)(x)
        zeros = nn.initializers.zeros
        w1 = param(self, "fc1", (d_in, d_in), ("embed", "mlp"))
        b1 = param(self, "fc1_bias", (d_in,), ("mlp",), zeros)
        w2 = param(self, "fc2", (d_in, cfg.out_hidden_size), ("mlp", "embed"))
        b2 = param(self, "fc2_bias", (cfg.out_hidden_size,), ("embed",), zeros)
        x = jnp.einsum("BMI,IJ->BMJ", x, w1.astype(self.dtype)) + b1.astype(self.dtype)
        x = nn.gelu(x, approximate=False)
        return jnp.einsum("BMJ,JD->BMD", x, w2.astype(self.dtype)) + b2.astype(self.dtype)


class VisionTower(nn.Module):
    """Pixels `[P, C]` or `[B, P, C]` (+ a `vision_layout`, with the same leading dims) ->
    merged visual tokens `[P/4, D_text]` or `[B, P/4, D_text]`, and the DeepStack features
    `[S, P/4, D_text]` or `[S, B, P/4, D_text]` (S = len(deepstack_visual_indexes); None when 0).
    """

    config: ModelConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def _rotary(self, rope_hw):  # [B, P, 2] -> cos, sin [B, P, H] (fp32)
        cfg = self.config.vision
        dim = cfg.head_dim // 2
        inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
        angles = rope_hw.astype(jnp.float32)[..., None] * inv_freq  # [B, P, 2, H/4]
        angles = angles.reshape(*angles.shape[:2], -1)  # [B, P, H/2]: h freqs then w freqs
        angles = jnp.concatenate([angles, angles], axis=-1)
        return jnp.cos(angles), jnp.sin(angles)

    @nn.compact
    def __call__(self, pixel_values: jax.Array, layout: dict[str, jax.Array]):
        flat = pixel_values.ndim == 2
        if flat and layout["patch_order"].ndim == 2:  # M identical items: run them as a batch
            items = layout["patch_order"].shape[0]
            merged, deep = self(pixel_values.reshape(items, -1, pixel_values.shape[-1]), layout)
            unbatch = lambda a: a.reshape(*a.shape[:-3], -1, a.shape[-1])  # noqa: E731
            return unbatch(merged), None if deep is None else unbatch(deep)
        cfg = self.config.vision
        qwen3 = self.config.is_qwen3
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        w_patch = param(self, "patch_embed", (cfg.patch_dim, cfg.hidden_size), ("patch", "embed"))
        if flat:  # one sequence of all patches
            pixel_values, layout = pixel_values[None], jax.tree.map(lambda a: a[None], layout)
        x = jnp.einsum("BPC,CD->BPD", pixel_values.astype(self.dtype), w_patch.astype(self.dtype))
        if qwen3:
            zeros = nn.initializers.zeros
            b_patch = param(self, "patch_embed_bias", (cfg.hidden_size,), ("embed",), zeros)
            x = x + b_patch.astype(self.dtype)
        x = jnp.take_along_axis(x, layout["patch_order"][..., None], axis=1)  # window order
        if cfg.num_position_embeddings:
            table = param(
                self, "pos_embed", (cfg.num_position_embeddings, cfg.hidden_size), (None, "embed")
            )
            taps = table.astype(jnp.float32)[layout["pos_taps"]]  # [B, P, 4, D]
            pos = jnp.einsum("BPKD,BPK->BPD", taps, layout["pos_weights"].astype(jnp.float32))
            x = x + pos.astype(self.dtype)
        cos, sin = self._rotary(layout["rope_hw"])
        win, frame = layout["window_segments"], layout["frame_segments"]
        is_full = [i in cfg.fullatt_block_indexes for i in range(cfg.depth)]
        deep_idx = cfg.deepstack_visual_indexes
        slot_of = [deep_idx.index(i) if i in deep_idx else -1 for i in range(cfg.depth)]
        block = stack_layers(
            VisionBlock,
            num=cfg.depth,
            scan=self.config.scan_layers,
            remat=self.config.remat_policy,
            in_axes=(nn.broadcast,) * 4 + (0, 0),
        )
        slots = jnp.zeros((len(deep_idx), *x.shape), x.dtype) if deep_idx else None
        carry = (x, slots)
        if self.config.scan_layers:
            carry, _ = block(self.config, name="blocks", **kw)(
                carry, cos, sin, win, frame, jnp.asarray(is_full), jnp.asarray(slot_of)
            )
        else:
            for i in range(cfg.depth):
                carry, _ = block(self.config, name=f"blocks_{i}", **kw)(
                    carry, cos, sin, win, frame, is_full[i], slot_of[i]
                )
        x, slots = carry
        inverse = layout["merged_inverse"][..., None]
        merged = PatchMerger(self.config, name="merger", **kw)(x)  # [B, P/4, D_text]
        merged = jnp.take_along_axis(merged, inverse, axis=1)
        deep = None
        if deep_idx:
            deep = jnp.stack(
                [
                    jnp.take_along_axis(
                        PatchMerger(
                            self.config, name=f"deepstack_merger_{k}", postshuffle_norm=True, **kw
                        )(slots[k]),
                        inverse,
                        axis=1,
                    )
                    for k in range(len(deep_idx))
                ]
            )  # [S, B, P/4, D_text]
        if flat:
            return merged[0], None if deep is None else deep[:, 0]
        return merged, deep
