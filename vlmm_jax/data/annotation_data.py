"""Annotation files as trainer input (`config.data.source = "annotations"`).

The real-data counterpart of `data.synthetic_data`: `prepare(config, model_config, workdir)`
reads the annotation file (Video-R1, Time-R1 / Charades-STA or MCQ, see `data.formats`), splits
off a validation set, loads the tokenizer (by default the `init_from` checkpoint's
`tokenizer.json`), and returns them with the model config the run must use:

- with `config.init_from`, the architecture is the checkpoint's own `config.json` (so
  `load_params` finds every tensor at its shape whatever preset `config.model` names); only the
  run-time switches (`dtype`, `param_dtype`, `scan_layers`, `remat_policy`, ...) come from
  `config.model`;
- the special-token ids come from the tokenizer, and must agree with the checkpoint's.

Videos are decoded in the grain pipeline by the default `data.SampleBuilder` (PyAV), with the
frame and pixel budgets of `config.data` (`vision_options`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Sequence
from typing import Any

import ml_collections

from vlmm_jax.config_dicts import _RUNTIME
from vlmm_jax.data.chat import VisionOptions
from vlmm_jax.data.formats import read_examples
from vlmm_jax.data.records import Example
from vlmm_jax.data.tokenizer import Tokenizer, load_tokenizer
from vlmm_jax.data.video import FPS, FPS_MAX_FRAMES
from vlmm_jax.models.config import ModelConfig, load_hf_config

_log = logging.getLogger(__name__)

# Ids the checkpoint's embedding rows were trained for: the tokenizer must give the same ones.
_VISUAL_IDS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
# `config.data` fields that only the random and synthetic sources read (dropped here).
_OTHER_SOURCES = (
    "num_examples",
    "video_grid",
    "dir",
    "vocab_size",
    "tokenizer_corpus",
    "synthetic",
)


def add_defaults(c: ml_collections.ConfigDict) -> None:
    """Sets `c.data` to the annotation source's fields (source "annotations"), with comments."""
    d = c.data
    for name in _OTHER_SOURCES:  # recipes start from the random / synthetic defaults
        if name in d:
            del d[name]
    d.source = "annotations"
    d.path = ""  # the annotation file (.json / .jsonl)
    d.format = ""  # video_r1 | time_r1 | charades_sta | mcq; "": detect from the content
    d.media_root = ""  # relative video paths resolve here; "": the annotation file's folder
    d.validation_path = ""  # a held-out annotation file; "": hold out part of `path`
    d.validation_fraction = 0.01  # of `path`, chosen by hashed example id (stable across runs)
    d.tokenizer = ""  # a tokenizer.json or its folder; "": the init_from checkpoint's
    d.max_length = 4096  # tokens per row (longer samples are errors, or skipped)
    d.packing = True  # SFT: several samples per row; False: one sample per padded row
    d.fps = FPS  # frames sampled per second of video
    d.nframes = 0  # a fixed frame count instead of fps; 0: by fps
    d.max_frames = FPS_MAX_FRAMES  # cap on sampled frames per video
    # Pixel budgets, 0: the model family's default. min/max_pixels are per frame for Qwen2.5-VL
    # (qwen_vl_utils) and over all frames of a video for Qwen3-VL (its video processor).
    d.min_pixels = 0  # video pixel floor
    d.max_pixels = 0  # video pixel cap; Qwen2.5-VL's 0: qwen_vl_utils' (shrinks with frames)
    d.total_pixels = 0  # pixel budget of a whole video
    d.image_max_pixels = 0  # per-image pixel cap (image examples)
    d.on_error = "skip"  # raise | skip: a bad record or undecodable video stops or is counted
    d.max_skip_fraction = 0.01  # with skip: fail once this fraction of examples was skipped
    d.check_media = True  # check at start that every referenced video exists


def vision_options(data: ml_collections.ConfigDict) -> VisionOptions:
    """`chat.VisionOptions` from `config.data` (0: the family's default)."""
    return VisionOptions(
        fps=float(data.fps),
        nframes=int(data.nframes) or None,
        max_frames=int(data.max_frames),
        min_pixels=int(data.min_pixels) or None,
        max_pixels=int(data.max_pixels) or None,
        total_pixels=int(data.total_pixels) or None,
        image_max_pixels=int(data.image_max_pixels) or None,
    )


@dataclasses.dataclass(frozen=True)
class AnnotationData:
    """The prepared dataset of a run: examples per split, tokenizer, and the model config."""

    train: Sequence[Example]
    validation: Sequence[Example]
    tokenizer: Tokenizer
    model_config: ModelConfig  # the checkpoint's architecture with the tokenizer's ids
    vision: VisionOptions
    on_error: str = "raise"
    max_skip_fraction: float = 0.01

    def split(self, name: str) -> Sequence[Example]:
        """`train`, or `validation` (also served as `test`)."""
        if name == "train":
            return self.train
        if name in ("validation", "test"):
            return self.validation
        raise ValueError(f"unknown split {name!r}; expected train, validation or test")

    def pipeline_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `data.make_pipeline` (the default SampleBuilder decodes)."""
        return {
            "vision": self.vision,
            "on_error": self.on_error,
            "max_skip_fraction": self.max_skip_fraction,
        }


def _rank(example: Example, index: int) -> tuple[str, int]:
    return hashlib.sha1(example.id.encode()).hexdigest(), index


def hold_out(examples: Sequence[Example], fraction: float) -> tuple[list, list]:
    """`(train, validation)`: validation is the `round(fraction * n)` examples (at least one,
    never all) with the smallest hash of their id, so the file's order does not matter."""
    n = len(examples)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"config.data.validation_fraction must be in (0, 1), got {fraction}")
    if n < 2:
        raise ValueError(f"config.data.path holds {n} example(s): too few to hold one out")
    k = min(max(1, round(fraction * n)), n - 1)
    order = sorted(range(n), key=lambda i: _rank(examples[i], i))
    held = set(order[:k])
    train = [ex for i, ex in enumerate(examples) if i not in held]
    return train, [examples[i] for i in sorted(held)]


def _read(data: ml_collections.ConfigDict, path: str) -> Sequence[Example]:
    return read_examples(
        path,
        data.get("format") or None,
        data.get("media_root") or None,
        on_error=data.get("on_error", "raise"),
        max_skip_fraction=data.get("max_skip_fraction", 0.01),
        check_media=data.get("check_media", True),
    )


def model_config_for(
    config: ml_collections.ConfigDict, model_config: ModelConfig, tok: Tokenizer
) -> ModelConfig:
    """The model config of the run: the checkpoint's (if any) + run-time switches + token ids.

    Raises:
      ValueError: the tokenizer's visual token ids differ from the checkpoint's, or its
        vocabulary is larger than the model's; the message names both files.
    """
    init_from = config.get("init_from")
    ids = tok.model_token_ids()
    if not init_from:  # random init: the preset, its vocabulary grown to the tokenizer's
        vocab = max(model_config.text.vocab_size, -(-tok.vocab_size // 128) * 128)
        text = dataclasses.replace(model_config.text, vocab_size=vocab)
        return model_config.replace(text=text, **ids)
    path = os.path.join(os.path.expanduser(init_from), "config.json")
    ckpt = load_hf_config(path)
    differs = [
        f.name
        for f in dataclasses.fields(ckpt.text)
        if getattr(ckpt.text, f.name) != getattr(model_config.text, f.name)
    ]
    if differs:
        _log.info("config.model differs from %s in %s; using the checkpoint's", path, differs)
    bad = [
        f"{k}: checkpoint {getattr(ckpt, k)}, tokenizer {ids[k]}"
        for k in _VISUAL_IDS
        if getattr(ckpt, k) != ids[k]
    ]
    if bad:
        raise ValueError(
            f"tokenizer {tok.path} and checkpoint {path} disagree on special-token ids "
            f"({'; '.join(bad)}); point config.data.tokenizer at the checkpoint's tokenizer"
        )
    if tok.vocab_size > ckpt.text.vocab_size:
        raise ValueError(
            f"tokenizer {tok.path} has {tok.vocab_size} ids but checkpoint {path} embeds only "
            f"{ckpt.text.vocab_size}"
        )
    runtime = {k: getattr(model_config, k) for k in _RUNTIME}
    return ckpt.replace(**runtime, **ids)


def prepare(
    config: ml_collections.ConfigDict, model_config: ModelConfig, workdir: str
) -> AnnotationData:
    """Reads the annotation file(s) and the tokenizer; returns `AnnotationData`."""
    del workdir  # nothing is built: the annotations and the tokenizer are the user's
    d = config.data
    if not d.get("path"):
        raise ValueError("config.data.path: the annotation file is required (source annotations)")
    tok_path = d.get("tokenizer") or config.get("init_from")
    if not tok_path:
        raise ValueError(
            "config.data.tokenizer: no tokenizer given and no config.init_from checkpoint to "
            "take tokenizer.json from"
        )
    tok = load_tokenizer(os.path.expanduser(tok_path))
    examples = _read(d, d.path)
    if d.get("validation_path"):
        train, validation = list(examples), list(_read(d, d.validation_path))
    else:
        train, validation = hold_out(examples, d.validation_fraction)
    _log.info("%s: %d train, %d validation examples", d.path, len(train), len(validation))
    return AnnotationData(
        train=train,
        validation=validation,
        tokenizer=tok,
        model_config=model_config_for(config, model_config, tok),
        vision=vision_options(d),
        on_error=d.get("on_error", "raise"),
        max_skip_fraction=d.get("max_skip_fraction", 0.01),
    )
