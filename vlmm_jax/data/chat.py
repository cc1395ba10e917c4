"""The Qwen chat format, tokenization with an assistant loss mask, and model-ready samples.

A rendered conversation, as Qwen2.5-VL's chat template writes it (default system prompt when the
first turn is not a system turn; one placeholder per image / video; Qwen3-VL's template writes
no default system turn and renders a system turn only as the first message):

    <|im_start|>system
    You are a helpful assistant.<|im_end|>
    <|im_start|>user
    <|vision_start|><|video_pad|><|vision_end|>How many ...?<|im_end|>
    <|im_start|>assistant
    <think>...</think><answer>3</answer><|im_end|>

Tokenization then expands each `<|video_pad|>` to `t*h*w / merge**2` copies (one per merged
visual token), as transformers' Qwen2.5-VL processor does. For Qwen3-VL each video placeholder
becomes one `<{t:.1f} seconds><|vision_start|><|video_pad|>*(h*w/merge**2)<|vision_end|>` per
temporal group instead, as `Qwen3VLProcessor` (transformers >= 5.25, 4.x) and vLLM do. The loss
mask is 1 on the assistant's content tokens and its closing `<|im_end|>` (not on the role
header, nor the newline after `<|im_end|>`), the tokens an SFT trainer learns to produce; a
next-token loss uses `loss_mask[:, 1:]` as the weight of predicting `input_ids[:, 1:]`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import av
import numpy as np

from vlmm_jax.data import qwen3_vl_processing as q3
from vlmm_jax.data.processors import DEFAULT_VISION, FAMILIES, VisionOptions, processor
from vlmm_jax.data.records import AnnotationError, Example
from vlmm_jax.data.tokenizer import Tokenizer
from vlmm_jax.models.config import ModelConfig
from vlmm_jax.models.positions import sample_positions

SYSTEM_PROMPT = "You are a helpful assistant."  # Qwen2.5-VL's default system turn
IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO_PLACEHOLDER = "<|vision_start|><|video_pad|><|vision_end|>"
MODES = ("sft", "rl")


# ----------------------------------------------------------------------------- rendering
def _is_image(part: Mapping[str, Any]) -> bool:
    return part.get("type") == "image" or "image" in part or "image_url" in part


def _is_video(part: Mapping[str, Any]) -> bool:
    return part.get("type") == "video" or "video" in part


def _text_parts(content: Any) -> str:
    """The text of a system / assistant turn in Qwen3-VL's template: a string, or its text parts."""
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content if "text" in part)


def _render(
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool,
    add_vision_id: bool,
    model_type: str = "qwen2_5_vl",
    video_texts: Sequence[str] | None = None,
) -> tuple[str, list[tuple[int, int]]]:
    """The chat text and the character spans `[start, end)` of each assistant turn's content
    plus its `<|im_end|>`; `video_texts[k]`, when given, replaces the k-th video placeholder."""
    if model_type not in FAMILIES:
        raise ValueError(f"render_chat: model_type must be one of {FAMILIES}, got {model_type!r}")
    qwen3 = model_type == "qwen3_vl"
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    n = 0  # characters written so far
    images = videos = 0

    def emit(s: str) -> None:
        nonlocal n
        out.append(s)
        n += len(s)

    for i, message in enumerate(messages):
        role, content = message["role"], message["content"]
        if qwen3 and (role not in ("system", "user", "assistant") or (role == "system" and i)):
            raise ValueError(
                f"render_chat: messages[{i}] has role {role!r}; Qwen3-VL's chat template renders "
                "a system turn only as the first message, then user and assistant turns"
            )
        if i == 0 and role != "system" and not qwen3:
            emit(f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n")
        emit(f"<|im_start|>{role}\n")
        start = n
        if isinstance(content, str) or (qwen3 and role != "user"):
            emit(_text_parts(content))
        else:
            for part in content:
                if _is_image(part):
                    images += 1
                    emit((f"Picture {images}: " if add_vision_id else "") + IMAGE_PLACEHOLDER)
                elif _is_video(part):
                    videos += 1
                    body = VIDEO_PLACEHOLDER
                    if video_texts is not None:
                        body = video_texts[videos - 1] if videos <= len(video_texts) else ""
                    emit((f"Video {videos}: " if add_vision_id else "") + body)
                elif "text" in part:
                    emit(part["text"])
        emit("<|im_end|>")
        if role == "assistant":
            spans.append((start, n))
        emit("\n")
    if add_generation_prompt:
        emit("<|im_start|>assistant\n")
    if video_texts is not None and len(video_texts) != videos:
        raise ValueError(
            f"tokenize_chat: the messages hold {videos} videos but {len(video_texts)} video "
            "timestamp lists were given"
        )
    return "".join(out), spans


def render_chat(
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = False,
    add_vision_id: bool = False,
    model_type: str = "qwen2_5_vl",
) -> str:
    """The text of the family's chat template for `messages` (one placeholder per visual item):
    Qwen2.5-VL's, or Qwen3-VL's (`templates/qwen3_vl.jinja`, without tools).

    Args:
      messages: `{"role": "system" | "user" | "assistant", "content": str | [part, ...]}` where a
        part is `{"type": "video"}`, `{"type": "image"}` or `{"type": "text", "text": ...}`.
      add_generation_prompt: end with `<|im_start|>assistant\\n` (prompts for generation).
      add_vision_id: prefix items with "Picture k: " / "Video k: " (the template's option).
      model_type: the family, "qwen2_5_vl" or "qwen3_vl".
    """
    return _render(messages, add_generation_prompt, add_vision_id, model_type)[0]


def _expand(ids, mask, pad_id: int, counts: Sequence[int], what: str):
    where = np.flatnonzero(ids == pad_id)
    if len(where) != len(counts):
        raise ValueError(
            f"tokenize_chat: the messages hold {len(where)} {what} placeholders but "
            f"{len(counts)} {what} token counts were given"
        )
    if not len(where):
        return ids, mask
    reps = np.ones(len(ids), np.int64)
    reps[where] = np.asarray(counts, np.int64)
    return np.repeat(ids, reps), np.repeat(mask, reps)


def _timestamped_videos(
    video_tokens: Sequence[int], video_timestamps: Sequence[np.ndarray]
) -> tuple[list[str], list[int]]:
    """Qwen3-VL: each video's text with one pad per temporal group, and the pad counts."""
    if len(video_timestamps) != len(video_tokens):
        raise ValueError(
            f"tokenize_chat: {len(video_tokens)} video token counts but {len(video_timestamps)} "
            "video timestamp lists were given (qwen3_vl needs one per video)"
        )
    texts, counts = [], []
    for k, (tokens, stamps) in enumerate(zip(video_tokens, video_timestamps, strict=True)):
        groups = len(np.asarray(stamps).reshape(-1))
        if groups == 0 or tokens % groups:
            raise ValueError(
                f"tokenize_chat: video {k} has {tokens} tokens, not a multiple of its "
                f"{groups} temporal groups (video_timestamps)"
            )
        texts.append(q3.video_prompt(stamps, 1))
        counts += [tokens // groups] * groups
    return texts, counts


def tokenize_chat(
    messages: Sequence[Mapping[str, Any]],
    tokenizer: Tokenizer,
    *,
    image_tokens: Sequence[int] = (),
    video_tokens: Sequence[int] = (),
    add_generation_prompt: bool = False,
    model_type: str = "qwen2_5_vl",
    video_timestamps: Sequence[np.ndarray] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and assistant loss mask of a conversation, visual placeholders expanded.

    Args:
      messages: as `render_chat`.
      tokenizer: a `Tokenizer` (Qwen's special tokens).
      image_tokens / video_tokens: merged visual tokens of each image / video, in order of
        appearance (`num_visual_tokens(grid)`).
      add_generation_prompt, model_type: as `render_chat`.
      video_timestamps: qwen3_vl: seconds of each temporal group [G] of each video
        (`load_visual`'s `video_timestamps`), written into the prompt.

    Returns:
      input_ids `int32 [L]` and loss_mask `bool [L]` (True on assistant content + `<|im_end|>`).
    """
    texts, counts = None, list(video_tokens)
    if model_type == "qwen3_vl":
        texts, counts = _timestamped_videos(video_tokens, video_timestamps)
    elif len(video_timestamps):
        raise ValueError(f"tokenize_chat: video_timestamps are for qwen3_vl, not {model_type}")
    text, spans = _render(messages, add_generation_prompt, False, model_type, texts)
    ids, offsets = tokenizer.encode_with_offsets(text)
    mask = np.zeros(len(ids), bool)
    for start, end in spans:  # a token counts when it starts inside the span
        mask |= (offsets[:, 0] >= start) & (offsets[:, 0] < end)
    ids, mask = _expand(ids, mask, tokenizer.image_pad_id, image_tokens, "image")
    ids, mask = _expand(ids, mask, tokenizer.video_pad_id, counts, "video")
    return ids.astype(np.int32), mask


def num_visual_tokens(grid_thw: Sequence[int] | np.ndarray, merge_size: int = 2) -> int:
    """Merged visual tokens of one item of patch grid `(t, h, w)`: `t*h*w / merge_size**2`."""
    t, h, w = (int(x) for x in np.asarray(grid_thw).reshape(3))
    return t * h * w // merge_size**2


# ----------------------------------------------------------------------------- examples
def sft_response(example: Example) -> str:
    """The SFT target: `<think>{chain_of_thought}</think><answer>{answer}</answer>`, or just the
    answer tags when the example has no chain of thought."""
    answer = f"<answer>{example.answer}</answer>"
    if example.chain_of_thought is None:
        return answer
    return f"<think>{example.chain_of_thought}</think>{answer}"


def example_messages(
    example: Example,
    *,
    response: str | None = None,
    think: bool = True,
    system_prompt: str | None = None,
) -> list[dict[str, Any]]:
    """The conversation of `example`: [system], user (visual item then prompt), [assistant];
    no system turn when `system_prompt` is None (the template then writes its default)."""
    parts: list[dict[str, Any]] = []
    if example.video is not None:
        parts.append({"type": "video", "video": example.video})
    elif example.image is not None:
        parts.append({"type": "image", "image": example.image})
    parts.append({"type": "text", "text": example.prompt(think=think)})
    messages: list[dict[str, Any]] = []
    if system_prompt is not None:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": parts})
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return messages


def _read_image(path: str) -> np.ndarray:
    from PIL import Image  # only image examples need PIL

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def load_visual(
    example: Example,
    options: VisionOptions = DEFAULT_VISION,
    *,
    model_type: str = "qwen2_5_vl",
    vision: Any | None = None,
) -> dict[str, np.ndarray]:
    """Decodes and processes the example's video (or image) as the family's processor does
    (`processors.processor(model_type)`).

    Args:
      options: sampling and pixel budgets (None fields: the family's defaults).
      vision: the model's `VisionConfig` (patch geometry); None: the family's.

    Returns:
      `{"pixel_values_videos" [P, C], "video_grid_thw" [1, 3]}` plus, for qwen2_5_vl,
      `"second_per_grid_ts" [1]` (temporal_patch_size / sample_fps) or, for qwen3_vl,
      `"video_timestamps" [G]` (seconds of each temporal group, for the prompt);
      `{"pixel_values", "image_grid_thw"}` for an image, `{}` for text only.

    Raises:
      AnnotationError: kind `missing_media` (no file) or `bad_media` (not decodable); the
        message names the example's source and the file.
    """
    path = example.video if example.video is not None else example.image
    if path is None:
        return {}
    proc = processor(model_type, vision)
    proc.budget(options)  # a bad option is the caller's error, not the example's
    try:
        if example.video is not None:  # each frame resized as it is decoded
            return proc.load_video(path, options)
        return proc.image(_read_image(path), options)
    except FileNotFoundError as e:
        kind, err = "missing_media", e
    except (ValueError, OSError, av.FFmpegError) as e:  # PyAV / PIL decode failures
        kind, err = "bad_media", e
    if not os.path.exists(path):
        kind = "missing_media"
    raise AnnotationError(
        example.source or example.id, f"cannot read media {path}: {err}", kind=kind
    ) from err


def build_sample(
    example: Example,
    tokenizer: Tokenizer,
    config: ModelConfig,
    *,
    mode: str = "sft",
    options: VisionOptions = DEFAULT_VISION,
    visual: Mapping[str, np.ndarray] | None = None,
    think: bool | None = None,
    system_prompt: str | None = None,
) -> dict[str, Any]:
    """One model-ready sample of `example`.

    Args:
      example: the record.
      tokenizer: its ids must match `config` (`config.replace(**tokenizer.model_token_ids())`).
      config: the model config (vision sizes, token ids, position rules).
      mode: "sft" (prompt + `sft_response` target, loss on the response) or "rl" (prompt
        ending with the generation prompt `<|im_start|>assistant\\n`, loss mask all 0).
      options: video / image sampling.
      visual: already decoded `load_visual` output (skips decoding).
      think: ask for <think> reasoning in the prompt; default: in SFT, when the example has a
        chain of thought; in RL, always.
      system_prompt: a system turn; None: the family template's default (Qwen2.5-VL's
        `SYSTEM_PROMPT`, none for Qwen3-VL).

    Returns:
      dict with `input_ids int32 [L]`, `loss_mask bool [L]`, `position_ids int32 [3, L]`, the
      visual arrays of `load_visual` (`pixel_values_videos [P, C]`, `video_grid_thw [1, 3]`,
      `second_per_grid_ts [1]` or `video_timestamps [G]`, or `pixel_values`, `image_grid_thw`),
      `num_tokens`,
      `num_patches`, `id`, `source` and `example` (the record, for rewards).
    """
    if mode not in MODES:
        raise ValueError(f"build_sample: mode must be one of {MODES}, got {mode!r}")
    if tokenizer.video_pad_id != config.video_token_id or (
        tokenizer.image_pad_id != config.image_token_id
    ):
        raise ValueError(
            "build_sample: tokenizer and model config disagree on the visual token ids "
            f"(tokenizer image/video {tokenizer.image_pad_id}/{tokenizer.video_pad_id}, config "
            f"{config.image_token_id}/{config.video_token_id}); build the config with "
            "config.replace(**tokenizer.model_token_ids())"
        )
    v = config.vision
    if visual is None:
        visual = load_visual(example, options, model_type=config.model_type, vision=v)
    visual = dict(visual)
    if think is None:
        think = mode == "rl" or example.chain_of_thought is not None
    response = sft_response(example) if mode == "sft" else None
    messages = example_messages(
        example, response=response, think=think, system_prompt=system_prompt
    )
    merge = v.spatial_merge_size
    grids = {k: visual.get(f"{k}_grid_thw") for k in ("image", "video")}
    counts = {
        k: [num_visual_tokens(g, merge) for g in (np.zeros((0, 3)) if grid is None else grid)]
        for k, grid in grids.items()
    }
    ids, mask = tokenize_chat(
        messages,
        tokenizer,
        image_tokens=counts["image"],
        video_tokens=counts["video"],
        add_generation_prompt=mode == "rl",
        model_type=config.model_type,
        video_timestamps=[visual["video_timestamps"]] if "video_timestamps" in visual else (),
    )
    positions = sample_positions(
        ids,
        config,
        image_grid_thw=grids["image"],
        video_grid_thw=grids["video"],
        second_per_grid_ts=visual.get("second_per_grid_ts"),
    )
    num_patches = sum(
        len(visual[k]) for k in ("pixel_values", "pixel_values_videos") if k in visual
    )
    return {
        "input_ids": ids,
        "loss_mask": mask,
        "position_ids": positions,
        **visual,
        "num_tokens": len(ids),
        "num_patches": num_patches,
        "id": example.id,
        "source": example.source,
        "example": example,
    }
