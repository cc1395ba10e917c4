"""Qwen2.5-VL and Qwen3-VL in Flax: vision tower -> visual tokens merged into the text stream ->
decoder (Qwen3-VL: plus DeepStack, the tower's intermediate features added to the first decoder
layers' hidden states at the visual positions). `config.model_type` picks the family.

`model.apply({"params": params}, input_ids=..., attention_mask=..., pixel_values=...,
image_grid_thw=..., pixel_values_videos=..., video_grid_thw=..., second_per_grid_ts=...)` takes the
inputs of transformers' `Qwen2_5_VLForConditionalGeneration` in the same layout.

Grids fix array shapes inside the vision tower (the window reordering), so outside `jit` they may be
concrete arrays; inside `jit` pass a precomputed `vision_layout` (see `positions.vision_layout`),
computed on the host per batch shape.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vlmm_jax.models.config import ModelConfig
from vlmm_jax.models.layers import constrain
from vlmm_jax.models.positions import rope_index, text_positions, vision_layout
from vlmm_jax.models.text import Cache, Decoder
from vlmm_jax.models.vision import VisionTower


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class ModelOutput:
    """logits `[B, T, V]` (fp32), the updated cache (or None), rope_deltas `[B, 1]`, hidden states
    `[B, T, D]` after the final norm."""

    logits: jax.Array | None
    cache: Cache | None
    rope_deltas: jax.Array | None
    hidden_states: jax.Array


def _concrete_grids(*grids) -> np.ndarray:
    parts = []
    for g in grids:
        if g is None:
            continue
        if isinstance(g, jax.core.Tracer):
            raise ValueError(
                "image_grid_thw/video_grid_thw are traced: the vision window layout depends on "
                "their values. Under jit, pass `vision_layout=positions.vision_layout(grids, "
                "config.vision)` computed on the host, or close over the grids as constants."
            )
        parts.append(np.asarray(g).reshape(-1, 3))
    return np.concatenate(parts) if parts else np.zeros((0, 3), np.int64)


def merge_row_visual_tokens(embeds, is_visual, features):
    """Writes each row's `features [B, M, D]` into `embeds [B, L, D]` at the row's visual
    placeholder positions `is_visual [B, L]`, in order of appearance."""
    idx = jnp.clip(jnp.cumsum(is_visual, axis=1) - 1, 0, features.shape[1] - 1)
    gathered = jnp.take_along_axis(features.astype(embeds.dtype), idx[..., None], axis=1)
    return jnp.where(is_visual[..., None], gathered, embeds)


def merge_visual_tokens(embeds, input_ids, token_id, features):
    """Writes `features [M, D]` into `embeds [B, L, D]` at the positions of `token_id`, in
    row-major order (as `masked_scatter`)."""
    is_tok = input_ids == token_id
    idx = jnp.clip(jnp.cumsum(is_tok.reshape(-1)) - 1, 0, features.shape[0] - 1)
    gathered = features.astype(embeds.dtype)[idx].reshape(embeds.shape)
    return jnp.where(is_tok[..., None], gathered, embeds)


class Qwen2_5_VL(nn.Module):
    """Qwen2.5-VL / Qwen3-VL conditional-generation model (vision tower, merger, decoder, LM
    head), as transformers' `Qwen2_5_VLForConditionalGeneration` / `Qwen3VLForConditionalGeneration`
    for `config.model_type` "qwen2_5_vl" / "qwen3_vl"."""

    config: ModelConfig

    @property
    def dtype(self):
        return jnp.dtype(self.config.dtype)

    @property
    def param_dtype(self):
        return jnp.dtype(self.config.param_dtype)

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.visual = VisionTower(self.config, name="visual", **kw)
        self.decoder = Decoder(self.config, name="decoder", **kw)
        t = self.config.text
        self.embed_tokens = self.param(
            "embed_tokens",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")),
            (t.vocab_size, t.hidden_size),
            self.param_dtype,
        )
        if not t.tie_word_embeddings:
            self.lm_head = self.param(
                "lm_head",
                nn.with_logical_partitioning(nn.initializers.normal(0.02), ("embed", "vocab")),
                (t.hidden_size, t.vocab_size),
                self.param_dtype,
            )

    def encode_vision(self, pixel_values, grid_thw=None, layout=None):
        """Visual tokens `[P/4, D]` for pixels `[P, C]` of the items in `grid_thw` `[M, 3]`."""
        return self._vision_features(pixel_values, grid_thw, layout)[0]

    def _vision_features(self, pixel_values, grid_thw=None, layout=None):
        """(visual tokens `[P/4, D]`, DeepStack features `[S, P/4, D]` or None)."""
        if layout is None:
            layout = vision_layout(_concrete_grids(grid_thw), self.config.vision)
        return self.visual(pixel_values, jax.tree.map(jnp.asarray, layout))

    def embed(
        self,
        input_ids,
        pixel_values=None,
        image_grid_thw=None,
        pixel_values_videos=None,
        video_grid_thw=None,
        vision_layout=None,
        visual_pixels=None,
    ):
        """Token embeddings `[B, L, D]` with image and video features written in, and the
        DeepStack features `[S, B, L, D]` at the same positions (zeros elsewhere; None without
        DeepStack or without visual inputs)."""
        x = self.embed_tokens.astype(self.dtype)[input_ids]
        if visual_pixels is not None:  # per-row pixels of all items, in order of appearance
            feats, deep = self.visual(visual_pixels, vision_layout)  # [B, P/4, D], [S, B, P/4, D]
            c = self.config
            is_visual = (input_ids == c.image_token_id) | (input_ids == c.video_token_id)
            if deep is not None:
                deep = jax.vmap(lambda f: merge_row_visual_tokens(jnp.zeros_like(x), is_visual, f))(
                    deep
                )
            return merge_row_visual_tokens(x, is_visual, feats), deep
        pix = [p for p in (pixel_values, pixel_values_videos) if p is not None]
        if not pix:
            return x, None
        grids = [
            g
            for p, g in ((pixel_values, image_grid_thw), (pixel_values_videos, video_grid_thw))
            if p is not None
        ]
        if vision_layout is None:
            vision_layout = _layout_for(self.config, *grids)
        feats, deep = self._vision_features(jnp.concatenate(pix, axis=0), layout=vision_layout)
        n_img = (
            0 if pixel_values is None else pixel_values.shape[0] // self.config.vision.merge_unit
        )
        c = self.config
        if deep is not None:
            deep_x = jnp.zeros((deep.shape[0], *x.shape), x.dtype)
        for present, token, part in (
            (pixel_values is not None, c.image_token_id, slice(0, n_img)),
            (pixel_values_videos is not None, c.video_token_id, slice(n_img, None)),
        ):
            if not present:
                continue
            x = merge_visual_tokens(x, input_ids, token, feats[part])
            if deep is not None:
                deep_x = jax.vmap(lambda d, f, t=token: merge_visual_tokens(d, input_ids, t, f))(
                    deep_x, deep[:, part]
                )
        return x, (deep_x if deep is not None else None)

    def logits(self, hidden):
        """Vocabulary logits `[B, T, V]` in fp32 for hidden states `[B, T, D]`."""
        if self.config.text.tie_word_embeddings:
            out = jnp.einsum("BTD,VD->BTV", hidden, self.embed_tokens.astype(self.dtype))
        else:
            out = jnp.einsum("BTD,DV->BTV", hidden, self.lm_head.astype(self.dtype))
        return constrain(out.astype(jnp.float32), ("batch", "length", "vocab"))

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        pixel_values: jax.Array | None = None,
        image_grid_thw: Any = None,
        pixel_values_videos: jax.Array | None = None,
        video_grid_thw: Any = None,
        second_per_grid_ts: Any = None,
        *,
        position_ids: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        cache: Cache | None = None,
        rope_deltas: jax.Array | None = None,
        vision_layout: dict[str, jax.Array] | None = None,
        visual_pixels: jax.Array | None = None,
        return_logits: bool = True,
        mm_token_type_ids: Any = None,  # accepted for transformers parity; derived from ids
    ) -> ModelOutput:
        """Forward pass (training, prefill, or a decode step with `cache` and `rope_deltas`).

        Args:
          input_ids: `[B, T]`. attention_mask: `[B, T]` 1 = token, 0 = padding.
          pixel_values / pixel_values_videos: `[P, C]` flattened patches; *_grid_thw `[M, 3]`.
          second_per_grid_ts: `[M_video]` seconds per temporal grid.
          position_ids: `[3, B, T]` explicit M-RoPE positions (packed batches pass these).
          segment_ids: `[B, T]` packed-sample ids (0 = padding); default from attention_mask.
          cache: from `init_cache` / a previous call; the T tokens are written at its index.
          rope_deltas: `[B, 1]` from the prefill: marks a decode step (positions = slot + delta).
          vision_layout: precomputed `positions.vision_layout` of the image then video grids
            (or, with `visual_pixels`, `[B, ...]` per-row layouts from `row_vision_inputs`).
          visual_pixels: `[B, P, C]` per-row patches of every image and video of the row in order
            of appearance, padded (the batched, shardable alternative to the flat inputs);
            position_ids must then be given.
          return_logits: False skips the LM head (losses that chunk it themselves).
        """
        del mm_token_type_ids
        b, t = input_ids.shape
        if segment_ids is None:
            segment_ids = (
                jnp.ones((b, t), jnp.int32)
                if attention_mask is None
                else attention_mask.astype(jnp.int32)
            )
        x, deepstack = self.embed(
            input_ids,
            pixel_values,
            image_grid_thw,
            pixel_values_videos,
            video_grid_thw,
            vision_layout,
            visual_pixels,
        )
        x = constrain(x, ("batch", "length", "embed"))
        if deepstack is not None:
            deepstack = constrain(deepstack, (None, "batch", "length", "embed"))
        if position_ids is None:
            if rope_deltas is not None:  # decode: text continues after the prompt
                start = 0 if cache is None else cache["index"]
                slots = jnp.broadcast_to(start + jnp.arange(t, dtype=jnp.int32), (b, t))
                position_ids = text_positions(slots, rope_deltas)
            else:
                position_ids, rope_deltas = rope_index(
                    input_ids,
                    self.config,
                    attention_mask=attention_mask,
                    image_grid_thw=_as_array(image_grid_thw),
                    video_grid_thw=_as_array(video_grid_thw),
                    second_per_grid_ts=_as_array(second_per_grid_ts),
                )
        hidden, cache = self.decoder(x, position_ids, segment_ids, cache, deepstack)
        logits = self.logits(hidden) if return_logits else None
        return ModelOutput(
            logits=logits, cache=cache, rope_deltas=rope_deltas, hidden_states=hidden
        )


def _as_array(x):
    return None if x is None else jnp.asarray(x)


def _layout_for(config: ModelConfig, *grids):
    return vision_layout(_concrete_grids(*grids), config.vision)


def init_params(model: Qwen2_5_VL, rng: jax.Array, *, boxed: bool = False):
    """Random parameters for `model` (text-only init traces the vision tower too)."""
    v = model.config.vision
    grid = np.array(
        [
            [
                v.temporal_patch_size // v.temporal_patch_size,
                2 * v.spatial_merge_size,
                2 * v.spatial_merge_size,
            ]
        ]
    )
    n_patches = int(grid.prod())
    ids = np.full((1, n_patches // v.merge_unit + 2), model.config.image_token_id, np.int32)
    pixels = jnp.zeros((n_patches, v.patch_dim), jnp.float32)
    # The parameters do not depend on the attention kernel: trace the XLA path (the Pallas one
    # would run in interpret mode on a CPU host, inside remat, for nothing).
    model = Qwen2_5_VL(model.config.replace(attention_implementation="xla"))
    variables = model.init(rng, jnp.asarray(ids), pixel_values=pixels, image_grid_thw=grid)
    params = variables["params"]
    return params if boxed else nn.meta.unbox(params)


def param_count(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def abstract_params(config: ModelConfig):
    """Parameter shapes (boxed with logical axes) without allocating: `jax.eval_shape` of init."""
    model = Qwen2_5_VL(config)
    return jax.eval_shape(lambda r: init_params(model, r, boxed=True), jax.random.key(0))
