"""Qwen2.5-VL-compatible Video-LMM in Flax, and Hugging Face checkpoint import/export."""

from vlmm_jax.models.attention import attention
from vlmm_jax.models.config import PRESETS, ModelConfig, TextConfig, VisionConfig
from vlmm_jax.models.hf_checkpoint import from_pretrained, load_params, save_pretrained
from vlmm_jax.models.positions import rope_index, vision_layout
from vlmm_jax.models.qwen2_5_vl import (
    ModelOutput,
    Qwen2_5_VL,
    abstract_params,
    init_params,
    param_count,
)
from vlmm_jax.models.text import CACHE_AXES, init_cache

__all__ = [
    "CACHE_AXES",
    "PRESETS",
    "ModelConfig",
    "ModelOutput",
    "Qwen2_5_VL",
    "TextConfig",
    "VisionConfig",
    "abstract_params",
    "attention",
    "from_pretrained",
    "init_cache",
    "init_params",
    "load_params",
    "param_count",
    "rope_index",
    "save_pretrained",
    "vision_layout",
]
