"""Pallas kernels for spatiotemporal attention.

`flash_attention` (block-sparse, TPU Mosaic / GPU Triton, forward and backward kernels),
`decode_attention` (a few queries against a KV cache, split-K), the mask helpers that express
video masks as segment ids / positions and their block tables, and `reference_attention`, the
pure-jnp (XLA) reference they are tested against.
"""

from vlmm_jax.kernels.api import BACKENDS, BlockSizes, flash_attention
from vlmm_jax.kernels.decode import decode_attention, reference_decode_attention
from vlmm_jax.kernels.masks import (
    BlockTables,
    block_density,
    block_tables,
    frame_causal_ids,
    packed_segment_ids,
    temporal_segment_ids,
    window_segment_ids,
)
from vlmm_jax.kernels.reference import attention_mask, reference_attention

__all__ = [
    "BACKENDS",
    "BlockSizes",
    "BlockTables",
    "attention_mask",
    "block_density",
    "block_tables",
    "decode_attention",
    "flash_attention",
    "frame_causal_ids",
    "packed_segment_ids",
    "reference_attention",
    "reference_decode_attention",
    "temporal_segment_ids",
    "window_segment_ids",
]
