"""Qwen2.5-VL vision tower: 3D patch embedding, window/full attention blocks, 2x2 patch merger.

All patches of all images and videos in a batch run as one sequence `[1, P, D]`; windows and
temporal slices are attention segments, so nothing attends across items.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlmm_jax.models.attention import attention
from vlmm_jax.models.config import ModelConfig
from vlmm_jax.models.layers import GatedMLP, RMSNorm, apply_rotary, constrain, param, stack_layers


class VisionBlock(nn.Module):
    """Pre-norm block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`."""

    config: ModelConfig
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, cos, sin, window_seg, frame_seg, is_full):
        """x `[B, P, D]`; cos/sin `[B, P, H]`; segments `[B, P]`; is_full: bool (or scanned [])."""
        cfg = self.config.vision
        n, h, d = cfg.num_heads, cfg.head_dim, cfg.hidden_size
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = RMSNorm(cfg.rms_norm_eps, name="norm1", **kw)(x)
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
        y = RMSNorm(cfg.rms_norm_eps, name="norm2", **kw)(x)
        x = x + GatedMLP(cfg.intermediate_size, use_bias=True, name="mlp", **kw)(y)
        return constrain(x, ("batch", "length", "embed")), None


class PatchMerger(nn.Module):
    """RMSNorm per patch, concatenate each 2x2 block, MLP (GELU) to the decoder width."""

    config: ModelConfig
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):  # x [B, P, D] -> [B, P/4, D_text]
        cfg = self.config.vision
        d_in = cfg.hidden_size * cfg.merge_unit
        x = RMSNorm(1e-6, name="ln_q", dtype=self.dtype, param_dtype=self.param_dtype)(x)
        x = x.reshape(x.shape[0], -1, d_in)
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
    merged visual tokens `[P/4, D_text]` or `[B, P/4, D_text]`."""

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
    def __call__(self, pixel_values: jax.Array, layout: dict[str, jax.Array]) -> jax.Array:
        flat = pixel_values.ndim == 2
        if flat and layout["patch_order"].ndim == 2:  # M identical items: run them as a batch
            items = layout["patch_order"].shape[0]
            merged = self(pixel_values.reshape(items, -1, pixel_values.shape[-1]), layout)
            return merged.reshape(-1, merged.shape[-1])
        cfg = self.config.vision
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        w_patch = param(self, "patch_embed", (cfg.patch_dim, cfg.hidden_size), ("patch", "embed"))
        if flat:  # one sequence of all patches
            pixel_values, layout = pixel_values[None], jax.tree.map(lambda a: a[None], layout)
        x = jnp.einsum("BPC,CD->BPD", pixel_values.astype(self.dtype), w_patch.astype(self.dtype))
        x = jnp.take_along_axis(x, layout["patch_order"][..., None], axis=1)  # window order
        cos, sin = self._rotary(layout["rope_hw"])
        win, frame = layout["window_segments"], layout["frame_segments"]
        is_full = [i in cfg.fullatt_block_indexes for i in range(cfg.depth)]
        block = stack_layers(
            VisionBlock,
            num=cfg.depth,
            scan=self.config.scan_layers,
            remat=self.config.remat_policy,
            in_axes=(nn.broadcast,) * 4 + (0,),
        )
        if self.config.scan_layers:
            x, _ = block(self.config, name="blocks", **kw)(
                x, cos, sin, win, frame, jnp.asarray(is_full)
            )
        else:
            for i in range(cfg.depth):
                x, _ = block(self.config, name=f"blocks_{i}", **kw)(
                    x, cos, sin, win, frame, is_full[i]
                )
        merged = PatchMerger(self.config, name="merger", **kw)(x)  # [B, P/4, D_text]
        merged = jnp.take_along_axis(merged, layout["merged_inverse"][..., None], axis=1)
        return merged[0] if flat else merged
