"""The boundary between `ml_collections` recipe configs and the frozen model dataclasses.

A recipe's `config.model` holds every decoder field (`num_layers`, `hidden_size`, ...) at its top
level, the vision tower's under `config.model.vision`, and the run-time switches (`dtype`,
`scan_layers`, ...), all filled from a named preset, so command-line overrides such as
`--config.model.num_layers=2` are type-checked by `ml_collections`.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from vlmm_jax.models.config import PRESETS, ModelConfig, TextConfig, VisionConfig

_RUNTIME = ("dtype", "param_dtype", "scan_layers", "remat_policy", "attention_implementation",
            "vision_position_advance")
_TOKENS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id",
           "eos_token_id", "pad_token_id")


def _fields(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def model_config_dict(preset: str, **overrides) -> ml_collections.ConfigDict:
    """`config.model` for a recipe: the fields of `PRESETS[preset]()`, then `overrides`."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}")
    base = PRESETS[preset]()
    flat = {k: v for k, v in _fields(base.text).items() if v is not None}
    flat["head_dim"] = base.text.resolved_head_dim
    flat.update({k: getattr(base, k) for k in _RUNTIME + _TOKENS if getattr(base, k) is not None})
    flat["vision"] = _fields(base.vision)
    flat["preset"] = preset
    cd = ml_collections.ConfigDict(flat)
    cd.update(overrides)
    return cd


def build_model_config(cd: ml_collections.ConfigDict) -> ModelConfig:
    """The `ModelConfig` described by a `config.model` ConfigDict (unknown keys are errors)."""
    d = cd.to_dict()
    d.pop("preset", None)
    vision = d.pop("vision", {})
    text_names = {f.name for f in dataclasses.fields(TextConfig)}
    vision_names = {f.name for f in dataclasses.fields(VisionConfig)}
    allowed = text_names | set(_RUNTIME) | set(_TOKENS)
    unknown = sorted(set(d) - allowed) + [f"vision.{k}" for k in sorted(set(vision) - vision_names)]
    if unknown:
        raise ValueError(f"config.model: unknown field(s) {unknown}")
    tuples = {"mrope_section", "fullatt_block_indexes"}
    text = TextConfig(**{k: tuple(v) if k in tuples else v for k, v in d.items() if k in text_names})
    vis = VisionConfig(**{k: tuple(v) if k in tuples else v for k, v in vision.items()})
    rest = {k: v for k, v in d.items() if k in _RUNTIME or k in _TOKENS}
    return ModelConfig(text=text, vision=vis, **rest)
