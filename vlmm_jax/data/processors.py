"""Each model family's visual processor behind one interface: sampling, resize, pixels, prompt.

`processor(model_type)` gives the rules of Qwen2.5-VL (`vision_processing`, qwen_vl_utils'
`fetch_video`) or Qwen3-VL (`qwen3_vl_processing`, transformers' `Qwen3VLVideoProcessor`). The
chat layer (`chat.load_visual`, `chat.tokenize_chat`) asks it, so every pipeline, the eval job
and the benchmarks process a video the way the checkpoint's own processor does:

| | qwen2_5_vl | qwen3_vl |
|---|---|---|
| frames | `smart_nframes` (even count) | `int(T / video_fps * fps)` (any count) |
| video budget | per frame (`min_pixels`, `max_pixels`), plus `total_pixels` | all frames together |
| resize | float bicubic (`resize_bicubic`) | uint8 bicubic (`resize_bicubic_uint8`) |
| time in the model | `second_per_grid_ts` (M-RoPE) | `<t seconds>` text before each frame group |
| default system turn | "You are a helpful assistant." | none |

Dimension letters: F frames, H/W height/width, G temporal groups, P patch rows, C row width.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from vlmm_jax.data import qwen3_vl_processing as q3
from vlmm_jax.data import video as video_lib
from vlmm_jax.data import vision_processing as q25

FAMILIES = ("qwen2_5_vl", "qwen3_vl")


@dataclasses.dataclass(frozen=True, kw_only=True)
class VisionOptions:
    """How videos and images are sampled and resized; None takes the family's default.

    `total_pixels` bounds a whole video in both families. `min_pixels` / `max_pixels` mean what
    the family's processor means by them: per frame for qwen2_5_vl (qwen_vl_utils;
    `max_pixels=None` is its cap that shrinks with the frame count), over all frames for
    qwen3_vl (the checkpoints' `video_preprocessor_config.json` `size`).
    """

    fps: float = video_lib.FPS  # frames sampled per second of video
    nframes: int | None = None  # a fixed frame count instead (overrides fps)
    min_frames: int = video_lib.FPS_MIN_FRAMES
    max_frames: int = video_lib.FPS_MAX_FRAMES
    min_pixels: int | None = None  # video pixel floor
    max_pixels: int | None = None  # video pixel cap
    total_pixels: int | None = None  # pixel budget of a whole video
    image_min_pixels: int | None = None
    image_max_pixels: int | None = None


DEFAULT_VISION = VisionOptions()


def _or(value, default):
    return default if value is None else value


class _Processor:
    """What both families share: decoding a video file under the family's rules (each frame
    resized as it is decoded, `video.read_video`). Subclasses give `frame_indices`,
    `frame_size`, `resample` and `video`."""

    def load_video(self, path: str, o: VisionOptions = DEFAULT_VISION) -> dict[str, np.ndarray]:
        """The visual arrays of a video file (see `video`); raises as `video.read_video`."""
        frames, ordinals, video_fps, total = video_lib.read_video(
            path,
            lambda total, fps: self.frame_indices(total, fps, o),
            resize=lambda f, h, w: self.frame_size(f, h, w, o),
            resample=self.resample,
        )
        return self.video(frames, ordinals, video_fps, total, o)


class Qwen2_5_VLProcessor(_Processor):
    """qwen_vl_utils' `fetch_video` / `fetch_image` and transformers' Qwen2-VL processors."""

    resample = staticmethod(q25.resize_bicubic)

    def __init__(self, vision: Any | None = None):
        v = vision
        self.patch = v.patch_size if v else q25.PATCH_SIZE
        self.merge = v.spatial_merge_size if v else q25.MERGE_SIZE
        self.temporal = v.temporal_patch_size if v else q25.TEMPORAL_PATCH_SIZE

    def budget(self, o: VisionOptions) -> dict[str, Any]:
        return {
            "min_pixels": _or(o.min_pixels, q25.VIDEO_MIN_PIXELS),
            "max_pixels": o.max_pixels,
            "total_pixels": _or(o.total_pixels, q25.VIDEO_TOTAL_PIXELS),
        }

    def frame_indices(self, total: int, video_fps: float, o: VisionOptions) -> np.ndarray:
        """The sampled ordinals, int64 [F] (F even)."""
        return video_lib.qwen2_5_vl_indices(
            total,
            video_fps,
            fps=o.fps,
            nframes=o.nframes,
            min_frames=o.min_frames,
            max_frames=o.max_frames,
        )

    def frame_size(self, f: int, h: int, w: int, o: VisionOptions) -> tuple[int, int]:
        """The (height, width) every one of `f` frames of `h x w` is resized to."""
        return q25.video_size(
            f, h, w, **self.budget(o), patch_size=self.patch, merge_size=self.merge
        )

    def video(
        self, frames: np.ndarray, ordinals: np.ndarray, video_fps: float, total: int, o
    ) -> dict[str, np.ndarray]:
        """`{"pixel_values_videos" [P, C], "video_grid_thw" [1, 3], "second_per_grid_ts" [1]}`
        of the frames uint8 [F, H, W, 3] at `ordinals` [F] of a `total`-frame video."""
        pixels, grid = q25.process_video(
            frames,
            **self.budget(o),
            patch_size=self.patch,
            merge_size=self.merge,
            temporal_patch_size=self.temporal,
        )
        sample_fps = len(ordinals) / max(total, 1e-6) * video_fps
        spg = np.asarray([self.temporal / sample_fps], np.float32)
        return {"pixel_values_videos": pixels, "video_grid_thw": grid, "second_per_grid_ts": spg}

    def image(self, image: np.ndarray, o: VisionOptions) -> dict[str, np.ndarray]:
        """`{"pixel_values" [P, C], "image_grid_thw" [1, 3]}` of one uint8 [H, W, 3] image."""
        pixels, grid = q25.process_images(
            [image],
            min_pixels=_or(o.image_min_pixels, q25.IMAGE_MIN_PIXELS),
            max_pixels=_or(o.image_max_pixels, q25.IMAGE_MAX_PIXELS),
            patch_size=self.patch,
            merge_size=self.merge,
            temporal_patch_size=self.temporal,
        )
        return {"pixel_values": pixels, "image_grid_thw": grid}

    def max_patches(self, frames: int, o: VisionOptions) -> int:
        """Patch rows of the largest video of `frames` sampled frames under `o` (qwen_vl_utils'
        per-frame cap times the temporal patches) or the largest image. A video below the pixel
        floor is scaled up to it with its sides rounded up, so when the floor is near the cap
        it may exceed this by one merged-token row and column per frame."""
        frames -= frames % self.temporal
        per_frame = q25.video_max_pixels(frames, **self.budget(o))
        video = frames // self.temporal * (int(per_frame) // self.patch**2)
        image = _or(o.image_max_pixels, q25.IMAGE_MAX_PIXELS) // self.patch**2
        return max(video, image)

    def fixed_size(self, frames: np.ndarray) -> VisionOptions:
        """Options that keep `frames` [F, H, W, 3] at their size (H, W multiples of 28)."""
        side = frames.shape[1] * frames.shape[2]
        return VisionOptions(min_pixels=side, max_pixels=side)


class Qwen3_VLProcessor(_Processor):
    """transformers' `Qwen3VLVideoProcessor`, Qwen3-VL's image processor and the timestamps of
    `Qwen3VLProcessor` (the checkpoints' default budgets)."""

    resample = staticmethod(q3.resize_bicubic_uint8)

    def __init__(self, vision: Any | None = None):
        if vision is not None:
            got = (vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size)
            want = (q3.PATCH_SIZE, q3.MERGE_SIZE, q3.TEMPORAL_PATCH_SIZE)
            if got != want:
                raise ValueError(
                    f"qwen3_vl processor: the vision config has (patch_size, spatial_merge_size, "
                    f"temporal_patch_size) = {got}; Qwen3-VL's processor is built for {want}"
                )

    def budget(self, o: VisionOptions) -> dict[str, int]:
        """The whole-video floor and cap: `max_pixels` and `total_pixels` both bound all frames
        together here (the lower one wins); unset, the checkpoints' `size`."""
        caps = [x for x in (o.max_pixels, o.total_pixels) if x is not None]
        return {
            "min_pixels": _or(o.min_pixels, q3.CHECKPOINT_VIDEO_MIN_PIXELS),
            "max_pixels": min(caps) if caps else q3.CHECKPOINT_VIDEO_MAX_PIXELS,
        }

    def frame_indices(self, total: int, video_fps: float, o: VisionOptions) -> np.ndarray:
        """The sampled ordinals, int64 [F] (F may be odd)."""
        return q3.sample_frame_indices(
            total,
            video_fps,
            fps=None if o.nframes else o.fps,
            num_frames=o.nframes,
            min_frames=o.min_frames,
            max_frames=o.max_frames,
        )

    def frame_size(self, f: int, h: int, w: int, o: VisionOptions) -> tuple[int, int]:
        return q3.video_size(f, h, w, **self.budget(o))

    def video(
        self, frames: np.ndarray, ordinals: np.ndarray, video_fps: float, total: int, o
    ) -> dict[str, np.ndarray]:
        """`{"pixel_values_videos" [P, C], "video_grid_thw" [1, 3], "video_timestamps" [G]}`;
        the timestamps (seconds of each temporal group) go into the prompt."""
        del total
        pixels, grid = q3.process_video(frames, **self.budget(o))
        stamps = q3.frame_group_timestamps(ordinals, video_fps)
        return {"pixel_values_videos": pixels, "video_grid_thw": grid, "video_timestamps": stamps}

    def image(self, image: np.ndarray, o: VisionOptions) -> dict[str, np.ndarray]:
        pixels, grid = q3.process_images(
            [image],
            min_pixels=_or(o.image_min_pixels, q3.IMAGE_MIN_PIXELS),
            max_pixels=_or(o.image_max_pixels, q3.IMAGE_MAX_PIXELS),
        )
        return {"pixel_values": pixels, "image_grid_thw": grid}

    def max_patches(self, frames: int, o: VisionOptions) -> int:
        """Patch rows of the largest video (its cap counts all frames: rows = t*h*w / (2 * 16**2)
        <= max_pixels / 512, whatever `frames` is) or the largest image; a video scaled up to
        the floor may exceed it as in Qwen2.5-VL's case."""
        del frames
        row = q3.TEMPORAL_PATCH_SIZE * q3.PATCH_SIZE**2
        image = _or(o.image_max_pixels, q3.IMAGE_MAX_PIXELS) // q3.PATCH_SIZE**2
        return max(self.budget(o)["max_pixels"] // row, image)

    def fixed_size(self, frames: np.ndarray) -> VisionOptions:
        """Options that keep `frames` at their size (H, W multiples of 32): the budget of all
        frames is exactly theirs (the frame count rounded as `video_smart_resize` rounds it)."""
        f, h, w = frames.shape[:3]
        t = round(f / q3.TEMPORAL_PATCH_SIZE) * q3.TEMPORAL_PATCH_SIZE
        return VisionOptions(min_pixels=t * h * w, max_pixels=t * h * w)


def processor(model_type: str, vision: Any | None = None):
    """The visual processor of a family (`ModelConfig.model_type`), checked against the vision
    config's patch geometry when `vision` (a `VisionConfig`) is given."""
    if model_type == "qwen2_5_vl":
        return Qwen2_5_VLProcessor(vision)
    if model_type == "qwen3_vl":
        return Qwen3_VLProcessor(vision)
    raise ValueError(f"processor: model_type must be one of {FAMILIES}, got {model_type!r}")


def frames_visual(
    frames: np.ndarray,
    video_fps: float,
    model_type: str,
    *,
    ordinals: np.ndarray | None = None,
    total: int | None = None,
    vision: Any | None = None,
) -> dict[str, np.ndarray]:
    """The visual arrays of already decoded frames uint8 [F, H, W, 3] kept at their size (the
    synthetic data: boxes stay in the pixels the model sees).

    Args:
      video_fps: the clip's frame rate; `ordinals` [F] the frames' places in it (default
        `0..F-1`) and `total` its frame count (default F), for the timing of each family.
    """
    proc = processor(model_type, vision)
    ordinals = np.arange(len(frames)) if ordinals is None else np.asarray(ordinals)
    total = len(frames) if total is None else total
    return proc.video(frames, ordinals, video_fps, total, proc.fixed_size(frames))


def processor_configs(model_type: str) -> dict[str, dict[str, Any]]:
    """`{file name: contents}` of the processor configs a family's published checkpoints ship
    (`preprocessor_config.json`, `video_preprocessor_config.json`), with their budgets, so an
    export is prepared by transformers' and vLLM's processors as the original checkpoint is."""
    if model_type == "qwen2_5_vl":
        geometry = {"patch_size": q25.PATCH_SIZE, "merge_size": q25.MERGE_SIZE}
        common = {
            **geometry,
            "temporal_patch_size": q25.TEMPORAL_PATCH_SIZE,
            "image_mean": list(q25.OPENAI_CLIP_MEAN),
            "image_std": list(q25.OPENAI_CLIP_STD),
            "processor_class": "Qwen2_5_VLProcessor",
        }
        image = {"min_pixels": 56 * 56, "max_pixels": 14 * 14 * 4 * 16384}  # 3136, 12845056
        video = {"min_pixels": q25.VIDEO_MIN_PIXELS, "max_pixels": q25.VIDEO_MAX_PIXELS}
        return {
            "preprocessor_config.json": {
                **common,
                **image,
                "image_processor_type": "Qwen2VLImageProcessor",
            },
            "video_preprocessor_config.json": {
                **common,
                **video,
                "video_processor_type": "Qwen2VLVideoProcessor",
            },
        }
    if model_type == "qwen3_vl":
        common = {
            "patch_size": q3.PATCH_SIZE,
            "merge_size": q3.MERGE_SIZE,
            "temporal_patch_size": q3.TEMPORAL_PATCH_SIZE,
            "image_mean": list(q3.IMAGE_MEAN),
            "image_std": list(q3.IMAGE_STD),
            "processor_class": "Qwen3VLProcessor",
        }
        return {
            "preprocessor_config.json": {
                **common,
                "size": {"shortest_edge": q3.IMAGE_MIN_PIXELS, "longest_edge": q3.IMAGE_MAX_PIXELS},
                "image_processor_type": "Qwen2VLImageProcessor",
            },
            "video_preprocessor_config.json": {
                **common,
                "size": {
                    "shortest_edge": q3.CHECKPOINT_VIDEO_MIN_PIXELS,
                    "longest_edge": q3.CHECKPOINT_VIDEO_MAX_PIXELS,
                },
                "fps": q3.FPS,
                "min_frames": q3.MIN_FRAMES,
                "max_frames": q3.MAX_FRAMES,
                "do_sample_frames": True,
                "video_processor_type": "Qwen3VLVideoProcessor",
            },
        }
    raise ValueError(f"processor_configs: model_type must be one of {FAMILIES}, got {model_type!r}")


def save_processor_configs(path: str, model_type: str) -> None:
    """Writes `processor_configs(model_type)` into the directory `path`."""
    os.makedirs(path, exist_ok=True)
    for name, contents in processor_configs(model_type).items():
        with open(os.path.join(path, name), "w") as f:
            json.dump(contents, f, indent=2)
