"""Model configuration: frozen dataclasses with named presets, and Hugging Face `config.json` I/O.

Dimension letters used across `vlmm_jax.models`:
  B batch, T query length, S key length, D model width, F MLP width, V vocab,
  N query heads, K kv heads, G query groups per kv head (N = K * G), H head dim,
  P patches (vision tokens before merging), C flattened patch (3 * 2 * 14 * 14).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Literal

# How the text position after a vision item is chosen (see `positions.rope_index`).
#   "max":     one past the largest position used by the item, over all three axes, as in Qwen's
#              own code, vLLM and transformers 4.x. Released checkpoints were trained this way.
#   "spatial": start + max(h, w) / merge, as transformers >= 5.0 computes it (the two agree for
#              images and for videos whose scaled time extent is below the spatial one).
VisionPositionAdvance = Literal["max", "spatial"]
# The Hugging Face `model_type` of a family: it picks the vision tower's blocks, the decoder's
# attention (q/k norms, biases), the M-RoPE layout, DeepStack and the checkpoint names.
MODEL_TYPES = ("qwen2_5_vl", "qwen3_vl")


@dataclasses.dataclass(frozen=True, kw_only=True)
class VisionConfig:
    """Vision tower sizes (`vision_config` in `config.json`).

    Qwen2.5-VL: 14 px patches, RMSNorm blocks with a gated SiLU MLP, window attention except in
    `fullatt_block_indexes`. Qwen3-VL: 16 px patches, LayerNorm blocks with a GELU MLP, attention
    per frame in every block (`window_size=0`), learned absolute position embeddings
    (`num_position_embeddings`, a square grid interpolated to each image) and DeepStack features
    taken after the blocks in `deepstack_visual_indexes`.
    """

    depth: int = 32
    hidden_size: int = 1280
    intermediate_size: int = 3420
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    window_size: int = 112  # pixels; windows are window_size // patch // merge merged tokens wide
    # (0: no windows, every block attends per frame)
    out_hidden_size: int = 3584  # the decoder width the merger projects to
    fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    tokens_per_second: float = 2.0
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    hidden_act: str = "silu"  # "silu" (gated MLP) | "gelu_pytorch_tanh" (fc1 -> GELU -> fc2)
    num_position_embeddings: int = 0  # learned position table of side sqrt(n); 0: none
    deepstack_visual_indexes: tuple[int, ...] = ()  # blocks whose outputs feed the decoder

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:  # C
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @property
    def merge_unit(self) -> int:
        return self.spatial_merge_size**2


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextConfig:
    """Decoder sizes (`text_config`, or the top level of older `config.json` files).

    Qwen2 (Qwen2.5-VL): q/k/v biases, M-RoPE in contiguous sections. Qwen3 (Qwen3-VL): no
    biases, RMSNorm of each query and key head before the rotary (`qk_norm`), and the sections
    interleaved over the frequencies (`mrope_interleaved`).
    """

    vocab_size: int = 152064
    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_layers: int = 28
    num_heads: int = 28
    num_kv_heads: int = 4
    head_dim: int | None = None  # default hidden_size // num_heads
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    mrope_section: tuple[int, int, int] = (16, 24, 24)
    max_position_embeddings: int = 128000
    tie_word_embeddings: bool = False
    attention_bias: bool = True
    qk_norm: bool = False
    mrope_interleaved: bool = False

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """A Qwen-VL Video-LMM: vision tower, merger, decoder, and run-time switches."""

    model_type: str = "qwen2_5_vl"  # one of MODEL_TYPES
    vision: VisionConfig = dataclasses.field(default_factory=VisionConfig)
    text: TextConfig = dataclasses.field(default_factory=TextConfig)
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    bos_token_id: int | None = 151643
    eos_token_id: int | tuple[int, ...] | None = 151645
    pad_token_id: int | None = None
    vision_position_advance: VisionPositionAdvance = "max"
    # Run-time switches (not part of the checkpoint).
    dtype: str = "float32"  # compute dtype of activations ("bfloat16" on accelerators)
    param_dtype: str = "float32"  # storage dtype of parameters
    scan_layers: bool = False  # nn.scan over layers: one compiled layer, fast compiles at 7B+
    remat_policy: str = "none"  # "none" | "full" | "dots" | "dots_with_no_batch_dims"
    attention_implementation: str = "xla"  # "xla" (reference) | "pallas" | "auto"

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    @property
    def is_qwen3(self) -> bool:
        return self.model_type == "qwen3_vl"

    def __post_init__(self):
        v, t = self.vision, self.text
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type {self.model_type!r} is not one of {MODEL_TYPES}")
        if any(not 0 <= i < v.depth for i in v.deepstack_visual_indexes):
            raise ValueError(
                f"vision.deepstack_visual_indexes {v.deepstack_visual_indexes} name blocks "
                f"beyond vision.depth={v.depth}"
            )
        if len(v.deepstack_visual_indexes) > t.num_layers:
            raise ValueError(
                f"{len(v.deepstack_visual_indexes)} DeepStack features need as many decoder "
                f"layers, the decoder has {t.num_layers}"
            )
        side = int(round(v.num_position_embeddings**0.5))
        if side * side != v.num_position_embeddings:
            raise ValueError(
                f"vision.num_position_embeddings ({v.num_position_embeddings}) must be a square"
            )
        if v.out_hidden_size != t.hidden_size:
            raise ValueError(
                f"vision.out_hidden_size ({v.out_hidden_size}) must equal text.hidden_size "
                f"({t.hidden_size}): the merger projects visual tokens into the decoder width"
            )
        if t.num_heads % t.num_kv_heads:
            raise ValueError(
                f"text.num_heads ({t.num_heads}) must be a multiple of "
                f"text.num_kv_heads ({t.num_kv_heads})"
            )
        if 2 * sum(t.mrope_section) != t.resolved_head_dim:
            raise ValueError(
                f"text.mrope_section {t.mrope_section} must sum to head_dim / 2 "
                f"({t.resolved_head_dim // 2})"
            )
        if any(i >= v.depth for i in v.fullatt_block_indexes):
            raise ValueError(
                f"vision.fullatt_block_indexes {v.fullatt_block_indexes} name blocks beyond "
                f"vision.depth={v.depth}"
            )
        if self.vision_position_advance not in ("max", "spatial"):
            raise ValueError(
                f"vision_position_advance must be 'max' or 'spatial', got "
                f"{self.vision_position_advance!r}"
            )


# ----------------------------------------------------------------------------- presets
def _qwen2_5_vl(text: TextConfig, *, fullatt=(7, 15, 23, 31)) -> ModelConfig:
    vision = VisionConfig(out_hidden_size=text.hidden_size, fullatt_block_indexes=fullatt)
    return ModelConfig(vision=vision, text=text)


def qwen2_5_vl_3b() -> ModelConfig:
    """Qwen/Qwen2.5-VL-3B-Instruct (3.75B parameters)."""
    return _qwen2_5_vl(
        TextConfig(
            vocab_size=151936,
            hidden_size=2048,
            intermediate_size=11008,
            num_layers=36,
            num_heads=16,
            num_kv_heads=2,
            tie_word_embeddings=True,
        )
    )


def qwen2_5_vl_7b() -> ModelConfig:
    """Qwen/Qwen2.5-VL-7B-Instruct (8.29B parameters)."""
    return _qwen2_5_vl(TextConfig())


def qwen2_5_vl_32b() -> ModelConfig:
    """Qwen/Qwen2.5-VL-32B-Instruct (33.5B parameters)."""
    return _qwen2_5_vl(
        TextConfig(
            hidden_size=5120,
            intermediate_size=27648,
            num_layers=64,
            num_heads=40,
            num_kv_heads=8,
        )
    )


def qwen2_5_vl_72b() -> ModelConfig:
    """Qwen/Qwen2.5-VL-72B-Instruct (73.4B parameters)."""
    return _qwen2_5_vl(
        TextConfig(
            vocab_size=152064,
            hidden_size=8192,
            intermediate_size=29568,
            num_layers=80,
            num_heads=64,
            num_kv_heads=8,
        )
    )


def _qwen3_vl(text: TextConfig, *, large_vision: bool) -> ModelConfig:
    """Qwen3-VL: Qwen3 decoder (q/k norms, no biases, interleaved M-RoPE 24/20/20, theta 5e6),
    the 16 px SigLIP-2-style tower (27 blocks of 1152 for 8B and up, 24 of 1024 below)."""
    text = dataclasses.replace(
        text,
        head_dim=128,
        rope_theta=5_000_000.0,
        mrope_section=(24, 20, 20),
        max_position_embeddings=262144,
        attention_bias=False,
        qk_norm=True,
        mrope_interleaved=True,
    )
    size = (
        dict(depth=27, hidden_size=1152, intermediate_size=4304, deepstack=(8, 16, 24))
        if large_vision
        else dict(depth=24, hidden_size=1024, intermediate_size=4096, deepstack=(5, 11, 17))
    )
    vision = VisionConfig(
        depth=size["depth"],
        hidden_size=size["hidden_size"],
        intermediate_size=size["intermediate_size"],
        num_heads=16,
        patch_size=16,
        window_size=0,
        fullatt_block_indexes=(),
        out_hidden_size=text.hidden_size,
        hidden_act="gelu_pytorch_tanh",
        num_position_embeddings=2304,
        deepstack_visual_indexes=size["deepstack"],
    )
    return ModelConfig(model_type="qwen3_vl", vision=vision, text=text, bos_token_id=None)


def qwen3_vl_2b() -> ModelConfig:
    """Qwen/Qwen3-VL-2B-Instruct."""
    return _qwen3_vl(
        TextConfig(
            vocab_size=151936,
            hidden_size=2048,
            intermediate_size=6144,
            num_layers=28,
            num_heads=16,
            num_kv_heads=8,
            tie_word_embeddings=True,
        ),
        large_vision=False,
    )


def qwen3_vl_4b() -> ModelConfig:
    """Qwen/Qwen3-VL-4B-Instruct."""
    return _qwen3_vl(
        TextConfig(
            vocab_size=151936,
            hidden_size=2560,
            intermediate_size=9728,
            num_layers=36,
            num_heads=32,
            num_kv_heads=8,
            tie_word_embeddings=True,
        ),
        large_vision=False,
    )


def qwen3_vl_8b() -> ModelConfig:
    """Qwen/Qwen3-VL-8B-Instruct (8.77B parameters)."""
    return _qwen3_vl(
        TextConfig(
            vocab_size=151936,
            hidden_size=4096,
            intermediate_size=12288,
            num_layers=36,
            num_heads=32,
            num_kv_heads=8,
        ),
        large_vision=True,
    )


def qwen3_vl_32b() -> ModelConfig:
    """Qwen/Qwen3-VL-32B-Instruct."""
    return _qwen3_vl(
        TextConfig(
            vocab_size=151936,
            hidden_size=5120,
            intermediate_size=25600,
            num_layers=64,
            num_heads=64,
            num_kv_heads=8,
        ),
        large_vision=True,
    )


def tiny(vocab_size: int = 512) -> ModelConfig:
    """A few-layer model for tests: 2 vision blocks (one full-attention), 2 decoder layers."""
    text = TextConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        mrope_section=(2, 3, 3),
        rope_theta=10000.0,
        max_position_embeddings=4096,
    )
    vision = VisionConfig(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=64,
        fullatt_block_indexes=(1,),
        window_size=56,  # 2x2 merged tokens per window
    )
    return ModelConfig(
        vision=vision,
        text=text,
        image_token_id=vocab_size - 2,
        video_token_id=vocab_size - 1,
        vision_start_token_id=vocab_size - 4,
        vision_end_token_id=vocab_size - 3,
        bos_token_id=None,
        eos_token_id=vocab_size - 5,
        pad_token_id=0,
    )


def tiny_qwen3(vocab_size: int = 512) -> ModelConfig:
    """`tiny` as a Qwen3-VL: 3 vision blocks (DeepStack after blocks 0 and 1), 3 decoder layers."""
    base = tiny(vocab_size)
    text = dataclasses.replace(
        base.text,
        num_layers=3,
        head_dim=16,
        attention_bias=False,
        qk_norm=True,
        mrope_interleaved=True,
    )
    vision = dataclasses.replace(
        base.vision,
        depth=3,
        patch_size=16,
        window_size=0,
        fullatt_block_indexes=(),
        hidden_act="gelu_pytorch_tanh",
        num_position_embeddings=16,
        deepstack_visual_indexes=(0, 1),
    )
    return base.replace(model_type="qwen3_vl", vision=vision, text=text)


def small(vocab_size: int = 2048) -> ModelConfig:
    """A CPU-trainable model: 4 vision blocks, 4 decoder layers of width 256."""
    text = TextConfig(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=768,
        num_layers=4,
        num_heads=8,
        num_kv_heads=2,
        mrope_section=(4, 6, 6),
        rope_theta=10000.0,
        max_position_embeddings=8192,
    )
    vision = VisionConfig(
        depth=4,
        hidden_size=128,
        intermediate_size=256,
        num_heads=4,
        out_hidden_size=256,
        fullatt_block_indexes=(1, 3),
    )
    return tiny(vocab_size).replace(vision=vision, text=text)


PRESETS = {
    "tiny": tiny,
    "small": small,
    "qwen2_5_vl_3b": qwen2_5_vl_3b,
    "qwen2_5_vl_7b": qwen2_5_vl_7b,
    "qwen2_5_vl_32b": qwen2_5_vl_32b,
    "qwen2_5_vl_72b": qwen2_5_vl_72b,
    "qwen3_vl_2b": qwen3_vl_2b,
    "qwen3_vl_4b": qwen3_vl_4b,
    "qwen3_vl_8b": qwen3_vl_8b,
    "qwen3_vl_32b": qwen3_vl_32b,
    "tiny_qwen3": tiny_qwen3,
}


# ----------------------------------------------------------------------------- config.json I/O
def _rope_params(text: Mapping[str, Any]) -> Mapping[str, Any]:
    return text.get("rope_parameters") or text.get("rope_scaling") or {}


def from_hf_dict(hf: Mapping[str, Any], *, source: str = "config.json") -> ModelConfig:
    """Builds a `ModelConfig` from a Hugging Face Qwen2.5-VL or Qwen3-VL `config.json` (the
    transformers 4 or 5 layout); `model_type` picks the family."""
    model_type = hf.get("model_type") or "qwen2_5_vl"
    if model_type not in MODEL_TYPES:
        raise ValueError(f"{source}: model_type {model_type!r} is not one of {MODEL_TYPES}")
    qwen3 = model_type == "qwen3_vl"
    text = dict(hf)
    text.update(hf.get("text_config") or {})
    vision = hf.get("vision_config")
    if vision is None:
        raise ValueError(f"{source}: no 'vision_config' entry")

    def need(d, key, where):
        if key not in d:
            raise ValueError(f"{source}: missing field {where}{key!r}")
        return d[key]

    rope = _rope_params(text)
    rope_theta = rope.get("rope_theta", text.get("rope_theta", 1_000_000.0))
    vrope = vision.get("rope_parameters") or {}
    tie = bool(hf.get("tie_word_embeddings", text.get("tie_word_embeddings", False)))
    text_cfg = TextConfig(
        vocab_size=need(text, "vocab_size", ""),
        hidden_size=need(text, "hidden_size", ""),
        intermediate_size=need(text, "intermediate_size", ""),
        num_layers=need(text, "num_hidden_layers", ""),
        num_heads=need(text, "num_attention_heads", ""),
        num_kv_heads=text.get("num_key_value_heads") or text["num_attention_heads"],
        head_dim=text.get("head_dim"),
        rms_norm_eps=text.get("rms_norm_eps", 1e-6),
        rope_theta=float(rope_theta),
        mrope_section=tuple(rope.get("mrope_section", (24, 20, 20) if qwen3 else (16, 24, 24))),
        max_position_embeddings=text.get("max_position_embeddings", 128000),
        tie_word_embeddings=tie,
        attention_bias=bool(text.get("attention_bias", not qwen3)),
        qk_norm=qwen3,
        mrope_interleaved=bool(rope.get("mrope_interleaved", False)),
    )
    family = (
        dict(
            patch_size=vision.get("patch_size", 16),
            window_size=0,
            fullatt_block_indexes=(),
            hidden_act=vision.get("hidden_act", "gelu_pytorch_tanh"),
            num_position_embeddings=need(vision, "num_position_embeddings", "vision_config."),
            deepstack_visual_indexes=tuple(vision.get("deepstack_visual_indexes", ())),
        )
        if qwen3
        else dict(
            patch_size=vision.get("patch_size", 14),
            window_size=vision.get("window_size", 112),
            fullatt_block_indexes=tuple(vision.get("fullatt_block_indexes", (7, 15, 23, 31))),
            tokens_per_second=float(vision.get("tokens_per_second", 2)),
        )
    )
    vision_cfg = VisionConfig(
        depth=need(vision, "depth", "vision_config."),
        hidden_size=need(vision, "hidden_size", "vision_config."),
        intermediate_size=need(vision, "intermediate_size", "vision_config."),
        num_heads=need(vision, "num_heads", "vision_config."),
        in_channels=vision.get("in_channels", vision.get("in_chans", 3)),
        temporal_patch_size=vision.get("temporal_patch_size", 2),
        spatial_merge_size=vision.get("spatial_merge_size", 2),
        out_hidden_size=vision.get("out_hidden_size", text_cfg.hidden_size),
        rope_theta=float(vrope.get("rope_theta", 10000.0)),
        **family,
    )
    eos = text.get("eos_token_id", hf.get("eos_token_id"))
    return ModelConfig(
        model_type=model_type,
        vision=vision_cfg,
        text=text_cfg,
        image_token_id=hf.get("image_token_id", 151655),
        video_token_id=hf.get("video_token_id", 151656),
        vision_start_token_id=hf.get("vision_start_token_id", 151652),
        vision_end_token_id=hf.get("vision_end_token_id", 151653),
        bos_token_id=text.get("bos_token_id"),
        eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
        pad_token_id=text.get("pad_token_id"),
    )


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


def to_hf_dict(config: ModelConfig) -> dict[str, Any]:
    """`config.json` contents for `config`: the transformers 5 layout (Qwen2.5-VL: v4 fields
    mirrored at the top level, as its published checkpoints have them)."""
    v, t = config.vision, config.text
    qwen3 = config.is_qwen3
    eos = (
        list(config.eos_token_id)
        if isinstance(config.eos_token_id, tuple)
        else (config.eos_token_id)
    )
    rope = {
        "rope_type": "default",
        "mrope_section": list(t.mrope_section),
        "rope_theta": t.rope_theta,
    }
    if t.mrope_interleaved:
        rope["mrope_interleaved"] = True
    text = {
        "model_type": f"{config.model_type}_text",
        "vocab_size": t.vocab_size,
        "hidden_size": t.hidden_size,
        "intermediate_size": t.intermediate_size,
        "num_hidden_layers": t.num_layers,
        "num_attention_heads": t.num_heads,
        "num_key_value_heads": t.num_kv_heads,
        "hidden_act": "silu",
        "rms_norm_eps": t.rms_norm_eps,
        "max_position_embeddings": t.max_position_embeddings,
        "rope_parameters": rope,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": config.pad_token_id,
        "tie_word_embeddings": t.tie_word_embeddings,
    }
    if qwen3:
        text["attention_bias"] = t.attention_bias
    else:
        text["use_sliding_window"] = False
    if t.head_dim is not None:
        text["head_dim"] = t.head_dim
    vision = {
        "model_type": f"{config.model_type}_vision",
        "depth": v.depth,
        "hidden_size": v.hidden_size,
        "intermediate_size": v.intermediate_size,
        "num_heads": v.num_heads,
        "in_channels": v.in_channels,
        "patch_size": v.patch_size,
        "temporal_patch_size": v.temporal_patch_size,
        "spatial_merge_size": v.spatial_merge_size,
        "out_hidden_size": v.out_hidden_size,
        "hidden_act": v.hidden_act,
        "rope_parameters": {"rope_type": "axial", "rope_theta": v.rope_theta},
    }
    if qwen3:
        vision["num_position_embeddings"] = v.num_position_embeddings
        vision["deepstack_visual_indexes"] = list(v.deepstack_visual_indexes)
    else:
        vision["window_size"] = v.window_size
        vision["fullatt_block_indexes"] = list(v.fullatt_block_indexes)
        vision["tokens_per_second"] = _number(v.tokens_per_second)
    top = {
        "architectures": [
            "Qwen3VLForConditionalGeneration" if qwen3 else "Qwen2_5_VLForConditionalGeneration"
        ],
        "model_type": config.model_type,
    }
    if not qwen3:
        legacy = {k: v for k, v in text.items() if k not in ("model_type", "rope_parameters")}
        top.update(legacy)
        top["rope_scaling"] = {"type": "mrope", "mrope_section": list(t.mrope_section)}
        top["rope_theta"] = t.rope_theta
    return {
        **top,
        "text_config": text,
        "vision_config": vision,
        "image_token_id": config.image_token_id,
        "video_token_id": config.video_token_id,
        "vision_start_token_id": config.vision_start_token_id,
        "vision_end_token_id": config.vision_end_token_id,
        "tie_word_embeddings": t.tie_word_embeddings,
    }


def load_hf_config(path: str) -> ModelConfig:
    try:
        with open(path) as f:
            return from_hf_dict(json.load(f), source=path)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
