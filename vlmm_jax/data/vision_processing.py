"""The Qwen2-VL / Qwen2.5-VL visual processor in NumPy: resize, normalise, patchify.

Given uint8 frames, produces the ``pixel_values`` / ``pixel_values_videos`` rows and
``*_grid_thw`` that transformers' ``Qwen2VLImageProcessor`` / ``Qwen2VLVideoProcessor`` produce,
so the model consumes them unchanged.

Dimension letters: F frames, H/W height/width in pixels, C channels (3), P patch rows,
T/Gh/Gw the temporal/height/width patch grid, M merge size, Tp temporal patch size,
Ph/Pw pixels in a patch, O output pixels along a resized axis, K filter taps.

Resizing is the antialiased bicubic (Keys, a = -0.5) of torchvision's
``resize(..., BICUBIC, antialias=True)`` on a float image, i.e. ``torch._upsample_bicubic2d_aa``,
which the transformers (torchvision backend) processors and qwen_vl_utils' video path use: width
pass then height pass in float32, then clamp and round half to even. Measured against torch: at
most 1 grey level, on ~2e-5 of the values (float32 rounding ties). Against PIL's fixed-point
bicubic (transformers' ``*Pil`` processors, qwen_vl_utils' image path): at most 1 level on natural
images, up to ~25 on white noise, because PIL rounds and clips to uint8 between its two passes.
``tests/data/test_vision_processing.py`` checks both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.sparse

# OpenAI CLIP statistics, as transformers' ``image_utils.OPENAI_CLIP_MEAN`` / ``OPENAI_CLIP_STD``.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
MAX_RATIO = 200

# Image defaults of transformers' Qwen2VLImageProcessor (size shortest_edge / longest_edge).
IMAGE_MIN_PIXELS = 56 * 56
IMAGE_MAX_PIXELS = 28 * 28 * 1280

# Video budget of qwen_vl_utils (vision_process.py).
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28
VIDEO_TOTAL_PIXELS = int(128000 * 28 * 28 * 0.9)  # ~128k visual tokens per video
FRAME_FACTOR = 2


def smart_resize(
    height: int,
    width: int,
    *,
    factor: int = 28,
    min_pixels: int = 56 * 56,
    max_pixels: int = 14 * 14 * 4 * 1280,
) -> tuple[int, int]:
    """Target (height, width), multiples of ``factor``, with area in ``[min_pixels, max_pixels]``.

    The rules of transformers' ``qwen2_vl.image_processing_qwen2_vl.smart_resize``: round each side
    to the nearest multiple of ``factor``; if the area is then above ``max_pixels`` (below
    ``min_pixels``), scale both sides by ``beta = sqrt(area / max_pixels)`` (``sqrt(min_pixels /
    area)``) and floor (ceil) to ``factor``, keeping the aspect ratio as closely as possible.
    (qwen_vl_utils additionally clamps the first rounding to at least ``factor``; transformers
    does not, and we follow transformers, whose processors the model is paired with.)

    Raises:
      ValueError: if a side is not positive or the aspect ratio exceeds 200.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"smart_resize: expected positive height and width, got {height}x{width}")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_RATIO:
        raise ValueError(
            f"smart_resize: absolute aspect ratio must be at most {MAX_RATIO}, got {ratio:.1f} "
            f"for a {height}x{width} (HxW) frame"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def video_max_pixels(
    nframes: int,
    *,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int | None = None,
    total_pixels: int = VIDEO_TOTAL_PIXELS,
) -> float:
    """Per-frame pixel cap of a video of ``nframes`` frames, as qwen_vl_utils ``fetch_video``.

    ``max(min(VIDEO_MAX_PIXELS, total_pixels / nframes * FRAME_FACTOR), int(min_pixels * 1.05))``,
    lowered further to ``max_pixels`` when given, so the whole video stays near ``total_pixels``.
    """
    if nframes <= 0:
        raise ValueError(f"video_max_pixels: expected nframes > 0, got {nframes}")
    budget = max(
        min(VIDEO_MAX_PIXELS, total_pixels / nframes * FRAME_FACTOR), int(min_pixels * 1.05)
    )
    return budget if max_pixels is None else min(max_pixels, budget)


def video_size(
    nframes: int,
    height: int,
    width: int,
    *,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int | None = None,
    total_pixels: int = VIDEO_TOTAL_PIXELS,
    patch_size: int = PATCH_SIZE,
    merge_size: int = MERGE_SIZE,
) -> tuple[int, int]:
    """The (height, width) ``process_video`` resizes ``nframes`` frames of ``height x width`` to:
    ``smart_resize`` under the per-frame cap ``video_max_pixels(nframes)`` (qwen_vl_utils
    ``fetch_video``). `load_video(resize=...)` takes it to resize frames as they are decoded."""
    cap = video_max_pixels(
        nframes, min_pixels=min_pixels, max_pixels=max_pixels, total_pixels=total_pixels
    )
    return smart_resize(
        height, width, factor=patch_size * merge_size, min_pixels=min_pixels, max_pixels=cap
    )


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic kernel with a = -0.5 (PIL's and torch's antialiased bicubic), in float32."""
    a = np.float32(-0.5)
    x = np.abs(x).astype(np.float32)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0)).astype(np.float32)


def _resize_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Taps of the antialiased bicubic along one axis: indices [O, K] int and weights [O, K].

    Follows torch's ``_compute_indices_min_size_weights_aa`` (float32 weights, the tap window of
    PIL's ``precompute_coeffs``); float32 rounding as torch keeps the mismatches to rare ties.
    """
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    support = f32(2.0 * max(float(scale), 1.0))  # the kernel widens by the scale when shrinking
    inv_scale = f32(1.0 / float(scale)) if scale >= 1 else f32(1.0)
    center = (float(scale) * (np.arange(out_size) + 0.5)).astype(f32)  # [O]
    lo = np.maximum(np.trunc((center - support).astype(np.float64) + 0.5), 0).astype(np.int64)
    hi = np.minimum(np.trunc((center + support).astype(np.float64) + 0.5), in_size).astype(np.int64)
    taps = int((hi - lo).max())
    j = np.arange(taps)  # [K]
    offset = (j[None, :] + lo[:, None]).astype(f32) - center[:, None]  # [O, K]
    w = _cubic((offset.astype(np.float64) + 0.5) * float(inv_scale))
    w = np.where(j[None, :] < (hi - lo)[:, None], w, f32(0))
    total = np.zeros(out_size, f32)
    for k in range(taps):  # sequential float32 sum, as torch
        total += w[:, k]
    idx = np.minimum(lo[:, None] + j[None, :], in_size - 1)  # padded taps weigh 0
    return idx, (w / total[:, None]).astype(f32)


def _resize_axis(x: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """One separable pass along ``axis`` of float32 x, as a sparse [O, I] matrix product.

    The CSR product sums each row's taps in index order in float32, as torch's loop does.
    """
    idx, w = _resize_weights(x.shape[axis], out_size)  # [O, K]
    o, k = idx.shape
    op = scipy.sparse.csr_matrix(
        (w.ravel(), idx.ravel(), np.arange(0, o * k + 1, k)), shape=(o, x.shape[axis])
    )
    moved = np.moveaxis(x, axis, 0)  # [I, ...]
    y = op @ moved.reshape(moved.shape[0], -1)  # [O, prod(...)]
    return np.moveaxis(y.reshape(o, *moved.shape[1:]), 0, axis)


_RESIZE_CHUNK_VALUES = 1 << 25  # source values resized at once (128 MiB as float32)


def resize_bicubic(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Antialiased bicubic resize of uint8 frames, as torchvision's ``resize(BICUBIC, antialias)``.

    Frames are resized a few at a time (each on its own: the result does not depend on the
    chunks), so the float32 working copy stays near 128 MiB whatever the frame count.

    Args:
      frames: uint8 [F, H, W, C] (or [H, W, C]).
      height, width: the output size.

    Returns:
      uint8 [F, height, width, C] (or [height, width, C]).
    """
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4):
        raise ValueError(
            f"resize_bicubic: expected uint8 [F, H, W, C] or [H, W, C], got {frames.dtype} "
            f"{frames.shape}"
        )
    h_axis, w_axis = frames.ndim - 3, frames.ndim - 2
    if frames.shape[h_axis] == height and frames.shape[w_axis] == width:
        return frames.copy()  # the unit-scale filter is the identity
    if frames.ndim == 4 and len(frames) > 1:  # a few frames at a time: bounded float32 memory
        step = max(1, _RESIZE_CHUNK_VALUES // max(1, int(np.prod(frames.shape[1:]))))
        if step < len(frames):
            return np.concatenate(
                [
                    resize_bicubic(frames[i : i + step], height, width)
                    for i in range(0, len(frames), step)
                ]
            )
    x = frames.astype(np.float32)
    if frames.shape[w_axis] != width:
        x = _resize_axis(x, width, w_axis)
    if frames.shape[h_axis] != height:
        x = _resize_axis(x, height, h_axis)
    return np.rint(np.clip(x, 0.0, 255.0)).astype(np.uint8)


def normalize(frames: np.ndarray) -> np.ndarray:
    """uint8 [..., C] -> float32 ``(x / 255 - mean) / std`` with the CLIP statistics.

    Computed as the fused ``(x - 255 * mean) / (255 * std)`` in float32 of the transformers
    torchvision backend (``TorchvisionBackend.rescale_and_normalize``).
    """
    mean = np.asarray(OPENAI_CLIP_MEAN, np.float32) * np.float32(255.0)
    std = np.asarray(OPENAI_CLIP_STD, np.float32) * np.float32(255.0)
    return (frames.astype(np.float32) - mean) / std


def patchify(
    frames: np.ndarray,
    *,
    patch_size: int = PATCH_SIZE,
    merge_size: int = MERGE_SIZE,
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Cut frames into the flat patch rows of the Qwen2-VL vision tower.

    Frames are padded to a multiple of ``temporal_patch_size`` by repeating the last one. Rows are
    ordered (T, Gh/M, Gw/M, M, M) so that each group of M*M consecutive rows is one merged token;
    each row holds (C, Tp, Ph, Pw) values, as ``Qwen2VLVideoProcessor.patchify`` produces.

    Args:
      frames: float [F, H, W, C], H and W multiples of ``patch_size * merge_size``.

    Returns:
      (patches [T*Gh*Gw, C*Tp*Ph*Pw], (T, Gh, Gw)).
    """
    f, h, w, c = frames.shape
    factor = patch_size * merge_size
    if h % factor or w % factor:
        raise ValueError(f"patchify: frame size {h}x{w} (HxW) is not a multiple of {factor}")
    if pad := -f % temporal_patch_size:
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)], axis=0)
    t, gh, gw = (f + pad) // temporal_patch_size, h // patch_size, w // patch_size
    m, p = merge_size, patch_size
    x = frames.reshape(t, temporal_patch_size, gh // m, m, p, gw // m, m, p, c)
    x = x.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7)  # [T, Gh/M, Gw/M, M, M, C, Tp, Ph, Pw]
    return x.reshape(t * gh * gw, c * temporal_patch_size * p * p), (t, gh, gw)


def _check_frames(x: np.ndarray, ndim: int, name: str) -> None:
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != ndim or x.shape[-1] != 3:
        dims = "[H, W, 3]" if ndim == 3 else "[F, H, W, 3]"
        got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{name}: expected a uint8 {dims} array, got {got}")


def process_images(
    images: Sequence[np.ndarray],
    *,
    min_pixels: int = IMAGE_MIN_PIXELS,
    max_pixels: int = IMAGE_MAX_PIXELS,
    patch_size: int = PATCH_SIZE,
    merge_size: int = MERGE_SIZE,
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Images -> (pixel_values, image_grid_thw), as transformers' ``Qwen2VLImageProcessor``.

    Each image is resized to ``smart_resize`` of its size, normalised, repeated to
    ``temporal_patch_size`` frames and patchified; the rows of all images are concatenated.

    Args:
      images: uint8 [H, W, 3] arrays (RGB), sizes may differ.

    Returns:
      pixel_values float32 [sum_i Gh_i*Gw_i, 3*Tp*Ph*Pw] and image_grid_thw int64 [N, 3]
      (each row ``[1, Gh, Gw]``).
    """
    rows, grids = [], []
    for i, image in enumerate(images):
        _check_frames(image, 3, f"process_images: images[{i}]")
        h, w = smart_resize(
            image.shape[0],
            image.shape[1],
            factor=patch_size * merge_size,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
        )
        x = normalize(resize_bicubic(image, h, w))[None]  # [1, H, W, C]
        x = np.repeat(x, temporal_patch_size, axis=0)  # [Tp, H, W, C]
        patches, grid = patchify(
            x, patch_size=patch_size, merge_size=merge_size, temporal_patch_size=temporal_patch_size
        )
        rows.append(patches)
        grids.append(grid)
    if not rows:
        raise ValueError("process_images: expected at least one image")
    return np.concatenate(rows, axis=0), np.asarray(grids, np.int64)


def process_video(
    video: np.ndarray,
    *,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int | None = None,
    total_pixels: int = VIDEO_TOTAL_PIXELS,
    patch_size: int = PATCH_SIZE,
    merge_size: int = MERGE_SIZE,
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Sampled frames -> (pixel_values_videos, video_grid_thw), as qwen_vl_utils + transformers.

    The frames are resized to ``smart_resize(H, W, factor=28, min_pixels, video_max_pixels(F))``
    (qwen_vl_utils ``fetch_video``: the per-frame cap shrinks as the frame count grows), then
    normalised and patchified as ``Qwen2VLVideoProcessor`` does (an odd frame count is padded by
    repeating the last frame).

    Args:
      video: uint8 [F, H, W, 3] sampled frames (e.g. from ``load_video``).
      min_pixels, max_pixels, total_pixels: the per-video pixel budget (see ``video_max_pixels``).

    Returns:
      pixel_values_videos float32 [T*Gh*Gw, 3*Tp*Ph*Pw] and video_grid_thw int64 [1, 3].
    """
    _check_frames(video, 4, "process_video: video")
    f, h, w, _ = video.shape
    if f == 0:
        raise ValueError("process_video: video has no frames")
    rh, rw = video_size(
        f,
        h,
        w,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        total_pixels=total_pixels,
        patch_size=patch_size,
        merge_size=merge_size,
    )
    # Frames already at the size (`load_video(resize=video_size)`) are normalised as they are.
    x = normalize(video if (h, w) == (rh, rw) else resize_bicubic(video, rh, rw))  # [F, H', W', C]
    patches, grid = patchify(
        x, patch_size=patch_size, merge_size=merge_size, temporal_patch_size=temporal_patch_size
    )
    return patches, np.asarray([grid], np.int64)
