"""The Qwen3-VL visual processor in NumPy: frame sampling, resize, normalise, patchify, timestamps.

Produces the ``pixel_values`` / ``pixel_values_videos`` rows, ``*_grid_thw`` and the per-video
prompt text that transformers' Qwen3-VL processors produce (transformers 5.24):

* images: ``Qwen2VLImageProcessor`` (``models/qwen2_vl/image_processing_qwen2_vl.py``), which
  ``AutoImageProcessor`` maps ``qwen3_vl`` to, with Qwen3-VL's patch 16 and 0.5 mean/std;
* videos: ``Qwen3VLVideoProcessor`` (``models/qwen3_vl/video_processing_qwen3_vl.py``):
  ``sample_frames``, ``smart_resize`` (a budget for all frames, not per frame), ``patchify``;
* prompt: ``Qwen3VLProcessor.replace_video_token`` / ``_calculate_timestamps``
  (``models/qwen3_vl/processing_qwen3_vl.py``): one ``<t seconds>`` per temporal patch.

What differs from Qwen2.5-VL (``vision_processing.py``): patch 16 (factor 32), mean/std 0.5, the
video budget counts all frames (``t * h * w``), frames are sampled by ``int(T / video_fps * fps)``
with no rounding to an even count (``patchify`` repeats the last frame instead), and the prompt
carries each temporal patch's mid time.

Resizing: transformers' torchvision backend calls ``tvF.resize(uint8, BICUBIC, antialias=True)``;
on CPU torchvision hands the uint8 tensor to torch's native uint8 kernel
(``_do_native_uint8_resize_on_cpu``), the PIL-SIMD algorithm: float64 Keys (a = -0.5) weights
rounded to int16 fixed point, a width pass rounded to uint8, then a height pass.
``resize_bicubic_uint8`` transcribes that bit for bit. It differs from
``vision_processing.resize_bicubic`` (the float path torchvision takes on GPU) by up to ~24 grey
levels on white noise and 1 level on natural images, because of the uint8 rounding between passes.

Dimension letters: N images, F frames, H/W height/width in pixels, C channels (3), T/Gh/Gw the
temporal/height/width patch grid, G temporal groups, O output pixels along a resized axis,
I input pixels along it, K filter taps, P patch rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.sparse

from vlmm_jax.data import vision_processing

# Vision tower geometry: Qwen3VLVideoProcessor.patch_size / merge_size / temporal_patch_size.
PATCH_SIZE = 16
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
FACTOR = PATCH_SIZE * MERGE_SIZE  # a merged token covers 32x32 pixels
MAX_RATIO = 200

# ``image_utils.IMAGENET_STANDARD_MEAN`` / ``_STD``, Qwen3VLVideoProcessor.image_mean / image_std
# (the checkpoints' preprocessor_config.json gives the same 0.5 for images).
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)

# Image budget. transformers' source has no Qwen3-VL image defaults (Qwen2VLImageProcessor's
# class defaults are Qwen2-VL's 56*56 / 28*28*1280); these are the size.shortest_edge /
# longest_edge of the released Qwen3-VL checkpoints' preprocessor_config.json.
IMAGE_MIN_PIXELS = 256 * 256  # 65536
IMAGE_MAX_PIXELS = 4096 * 4096  # 16777216

# Video budget (all frames together): Qwen3VLVideoProcessor.size class defaults.
VIDEO_MIN_PIXELS = 128 * 32 * 32
VIDEO_MAX_PIXELS = 32 * 32 * 768
# The released checkpoints' video_preprocessor_config.json overrides them with these.
CHECKPOINT_VIDEO_MIN_PIXELS = 4096
CHECKPOINT_VIDEO_MAX_PIXELS = 25165824
# Qwen3VLVideoProcessor.max_video_tokens: the per-frame cap of ``cap_pixels_per_frame``.
MAX_VIDEO_TOKENS = 768

# Frame sampling: Qwen3VLVideoProcessor.fps / min_frames / max_frames, and the 24 fps that
# ``sample_frames`` and ``Qwen3VLProcessor.replace_video_token`` assume without metadata.
FPS = 2.0
MIN_FRAMES = 4
MAX_FRAMES = 768
DEFAULT_VIDEO_FPS = 24.0

VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
VIDEO_PAD = "<|video_pad|>"
# What Qwen3-VL's chat template writes for a video; the processor replaces VIDEO_PAD only.
VIDEO_PLACEHOLDER = VISION_START + VIDEO_PAD + VISION_END


# ----------------------------------------------------------------------------- sizes
def smart_resize(
    height: int,
    width: int,
    *,
    factor: int = FACTOR,
    min_pixels: int = IMAGE_MIN_PIXELS,
    max_pixels: int = IMAGE_MAX_PIXELS,
) -> tuple[int, int]:
    """Image target (height, width): multiples of ``factor``, area in ``[min_pixels, max_pixels]``.

    transformers' ``qwen2_vl.image_processing_qwen2_vl.smart_resize`` (the Qwen2-VL rule of
    ``vision_processing.smart_resize``) with Qwen3-VL's factor and image budget.

    Raises:
      ValueError: a side is not positive or the aspect ratio exceeds 200.
    """
    return vision_processing.smart_resize(
        height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels
    )


def video_smart_resize(
    num_frames: int,
    height: int,
    width: int,
    *,
    temporal_factor: int = TEMPORAL_PATCH_SIZE,
    factor: int = FACTOR,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int = VIDEO_MAX_PIXELS,
) -> tuple[int, int]:
    """Frame target (height, width) of a ``num_frames``-frame video, as ``Qwen3VLVideoProcessor``.

    transformers' ``qwen3_vl.video_processing_qwen3_vl.smart_resize``: frames with a side below
    ``factor`` are first scaled up (``int`` of the scaled sides) until both reach it; each side is
    rounded to a multiple of ``factor`` and the frame count to one of ``temporal_factor``; when
    ``t * h * w`` leaves ``[min_pixels, max_pixels]`` both sides are rescaled by
    ``beta = sqrt(num_frames * height * width / max_pixels)`` (or ``sqrt(min_pixels / ...)``)
    and floored (ceiled) to ``factor``. The budget is for the whole video.

    Raises:
      ValueError: ``num_frames < temporal_factor`` (transformers rejects 1-frame videos), a side
        is not positive, or the aspect ratio exceeds 200.
    """
    if num_frames < temporal_factor:
        raise ValueError(
            f"video_smart_resize: num_frames={num_frames} is below temporal_factor="
            f"{temporal_factor}; Qwen3-VL's video processor needs at least {temporal_factor} frames"
        )
    if height <= 0 or width <= 0:
        raise ValueError(
            f"video_smart_resize: expected positive height and width, got {height}x{width}"
        )
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_RATIO:
        raise ValueError(
            f"video_smart_resize: absolute aspect ratio must be at most {MAX_RATIO}, got "
            f"{ratio:.1f} for {height}x{width} (HxW) frames"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    t_bar = round(num_frames / temporal_factor) * temporal_factor
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt(num_frames * height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def video_max_pixels(
    num_frames: int,
    *,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int = VIDEO_MAX_PIXELS,
    cap_pixels_per_frame: bool = False,
    max_video_tokens: int = MAX_VIDEO_TOKENS,
    factor: int = FACTOR,
) -> int:
    """The ``max_pixels`` that ``Qwen3VLVideoProcessor.resize`` passes to ``video_smart_resize``.

    ``max_pixels`` itself, or with ``cap_pixels_per_frame`` (qwen-vl-utils' per-frame cap,
    transformers' opt-in) ``num_frames * max(min(max_video_tokens * factor**2,
    max_pixels // num_frames), int(min_pixels * 1.05))``.
    """
    if not cap_pixels_per_frame:
        return max_pixels
    if num_frames <= 0:
        raise ValueError(f"video_max_pixels: expected num_frames > 0, got {num_frames}")
    frame_cap = max_video_tokens * factor * factor
    per_frame = max(min(frame_cap, max_pixels // num_frames), int(min_pixels * 1.05))
    return per_frame * num_frames


def video_size(
    num_frames: int,
    height: int,
    width: int,
    *,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int = VIDEO_MAX_PIXELS,
    cap_pixels_per_frame: bool = False,
    max_video_tokens: int = MAX_VIDEO_TOKENS,
) -> tuple[int, int]:
    """The (height, width) ``process_video`` resizes ``num_frames`` frames of ``height x width``
    to; `video.load_video(resize=...)` takes it to resize frames as they are decoded."""
    cap = video_max_pixels(
        num_frames,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        cap_pixels_per_frame=cap_pixels_per_frame,
        max_video_tokens=max_video_tokens,
    )
    return video_smart_resize(num_frames, height, width, min_pixels=min_pixels, max_pixels=cap)


# ----------------------------------------------------------------------------- sampling and text
def sample_frame_indices(
    total_frames: int,
    video_fps: float | None,
    *,
    fps: float | None = None,
    num_frames: int | None = None,
    min_frames: int = MIN_FRAMES,
    max_frames: int = MAX_FRAMES,
) -> np.ndarray:
    """Indices of the frames ``Qwen3VLVideoProcessor.sample_frames`` keeps, int64 [F].

    ``F = min(max(int(total_frames / video_fps * fps), min_frames), max_frames, total_frames)``
    (``fps`` defaults to 2; ``video_fps=None`` means 24, as transformers assumes), or
    ``num_frames`` as given (not clamped, so it may repeat frames); then
    ``linspace(0, total_frames - 1, F).round()`` (half to even). F may be odd: ``process_video``
    repeats the last frame to fill the last temporal patch.

    Raises:
      ValueError: both ``fps`` and ``num_frames`` given, or a count / rate is not positive.
    """
    if fps is not None and num_frames is not None:
        raise ValueError(
            f"sample_frame_indices: fps={fps} and num_frames={num_frames} are mutually exclusive"
        )
    if total_frames <= 0:
        raise ValueError(f"sample_frame_indices: expected total_frames > 0, got {total_frames}")
    video_fps = DEFAULT_VIDEO_FPS if video_fps is None else video_fps
    if video_fps <= 0:
        raise ValueError(f"sample_frame_indices: expected video_fps > 0, got {video_fps}")
    if num_frames is None:
        fps = FPS if fps is None else fps
        if fps <= 0:
            raise ValueError(f"sample_frame_indices: expected fps > 0, got {fps}")
        n = int(total_frames / video_fps * fps)
        num_frames = min(max(n, min_frames), max_frames, total_frames)
    elif num_frames <= 0:
        raise ValueError(f"sample_frame_indices: expected num_frames > 0, got {num_frames}")
    return np.linspace(0, total_frames - 1, num_frames).round().astype(np.int64)


def frame_group_timestamps(
    indices: Sequence[int] | np.ndarray,
    video_fps: float | None,
    merge_size: int = TEMPORAL_PATCH_SIZE,
) -> np.ndarray:
    """Seconds of each temporal group of sampled frames, float64 [G], G = ceil(F / merge_size).

    ``Qwen3VLProcessor._calculate_timestamps``, which ``replace_video_token`` calls with the
    video processor's ``temporal_patch_size`` as ``merge_size``: the indices are padded to a
    multiple of ``merge_size`` by repeating the last, turned into seconds (``index /
    video_fps``, ``None`` meaning 24), and each group gets the mean of its first and last frame.

    Args:
      indices: int [F] frame indices in the source video (``sample_frame_indices``).
      video_fps: the source video's frame rate.
    """
    idx = [int(i) for i in np.asarray(indices).reshape(-1)]
    if not idx:
        raise ValueError("frame_group_timestamps: indices is empty; expected at least one frame")
    video_fps = DEFAULT_VIDEO_FPS if video_fps is None else video_fps
    if video_fps <= 0:
        raise ValueError(f"frame_group_timestamps: expected video_fps > 0, got {video_fps}")
    idx += [idx[-1]] * (-len(idx) % merge_size)
    seconds = [i / video_fps for i in idx]  # Python floats, as transformers
    groups = range(0, len(seconds), merge_size)
    return np.asarray([(seconds[g] + seconds[g + merge_size - 1]) / 2 for g in groups])


def video_prompt(timestamps: Sequence[float] | np.ndarray, tokens_per_group: int) -> str:
    """The text ``Qwen3VLProcessor.replace_video_token`` substitutes for one ``<|video_pad|>``.

    Per temporal group ``<{t:.1f} seconds><|vision_start|>`` + ``<|video_pad|>`` *
    ``tokens_per_group`` + ``<|vision_end|>``. It replaces the template's whole
    ``VIDEO_PLACEHOLDER``, as transformers >= 5.25, 4.x and vLLM do (``chat.tokenize_chat``);
    transformers 5.0 to 5.24 replaced only its ``<|video_pad|>``, leaving a second
    ``<|vision_start|>`` / ``<|vision_end|>`` pair around the result.

    Args:
      timestamps: float [G] (``frame_group_timestamps``), one per temporal patch (grid_t).
      tokens_per_group: merged tokens per temporal patch, ``grid_h * grid_w // merge_size**2``.
    """
    if tokens_per_group <= 0:
        raise ValueError(f"video_prompt: expected tokens_per_group > 0, got {tokens_per_group}")
    frame = VISION_START + VIDEO_PAD * tokens_per_group + VISION_END
    return "".join(f"<{float(t):.1f} seconds>" + frame for t in np.asarray(timestamps).ravel())


# ----------------------------------------------------------------------------- pixels
def _cubic64(x: np.ndarray) -> np.ndarray:
    """Keys' cubic kernel, a = -0.5, in float64 (torch's ``HelperInterpCubic::aa_filter``)."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def _int16_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Taps of torch's uint8 antialiased bicubic along one axis: indices [O, K], int16-valued
    weights [O, K] (int64) and their fixed-point precision.

    torch ``UpSampleKernel.cpp``: ``_compute_indices_min_size_weights_aa`` (float64 weights on
    PIL's window) then ``_compute_index_ranges_int16_weights`` (the largest precision at which
    twice the largest weight fits in int16; weights rounded half away from zero).
    """
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1.0 else 2.0  # the kernel widens by the scale to shrink
    taps = math.ceil(support) * 2 + 1
    inv_scale = 1.0 / scale if scale >= 1.0 else 1.0
    center = scale * (np.arange(out_size) + 0.5)  # [O]
    lo = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
    hi = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size)
    size = np.clip(hi - lo, 0, taps)
    j = np.arange(taps)  # [K]
    w = _cubic64((j[None, :] + lo[:, None] - center[:, None] + 0.5) * inv_scale)  # [O, K]
    w = np.where(j[None, :] < size[:, None], w, 0.0)
    total = np.zeros(out_size)
    for k in range(taps):  # sequential float64 sum, as torch
        total += w[:, k]
    w = np.where(total[:, None] != 0, w / np.where(total == 0, 1.0, total)[:, None], w)
    w_max = float(w.max())
    precision = 0
    while precision < 22 and int(0.5 + w_max * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    v = w * (1 << precision)
    w16 = np.where(v < 0, np.trunc(v - 0.5), np.trunc(v + 0.5)).astype(np.int64)
    idx = np.minimum(lo[:, None] + j[None, :], in_size - 1)  # padded taps weigh 0
    return idx, w16, precision


def _resize_axis_uint8(x: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """One fixed-point pass along ``axis`` of uint8 x: ``clip((2**(p-1) + sum x*w) >> p)``."""
    idx, w16, precision = _int16_weights(x.shape[axis], out_size)  # [O, K]
    o, k = idx.shape
    op = scipy.sparse.csr_matrix(
        (w16.ravel(), idx.ravel(), np.arange(0, o * k + 1, k)), shape=(o, x.shape[axis])
    )
    moved = np.moveaxis(x, axis, 0)  # [I, ...]
    acc = op @ moved.reshape(moved.shape[0], -1).astype(np.int64)  # [O, prod(...)], exact
    y = np.clip((acc + (1 << (precision - 1))) >> precision, 0, 255).astype(np.uint8)
    return np.moveaxis(y.reshape(o, *moved.shape[1:]), 0, axis)


_RESIZE_CHUNK_VALUES = 1 << 24  # source values resized at once (128 MiB as int64)


def resize_bicubic_uint8(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Antialiased bicubic resize of uint8 frames, bit-exact to torch's CPU uint8 kernel.

    What ``torchvision.transforms.v2.functional.resize(uint8, BICUBIC, antialias=True)`` runs on
    CPU, so what transformers' torchvision-backed processors produce there: width pass, uint8
    rounding, height pass (a pass is skipped when its side keeps its size).

    Args:
      frames: uint8 [F, H, W, C] (or [H, W, C]).
      height, width: the output size.

    Returns:
      uint8 [F, height, width, C] (or [height, width, C]).
    """
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim not in (3, 4):
        got = (
            f"{frames.dtype} {frames.shape}"
            if isinstance(frames, np.ndarray)
            else type(frames).__name__
        )
        raise ValueError(
            f"resize_bicubic_uint8: expected frames uint8 [F, H, W, C] or [H, W, C], got {got}"
        )
    if height <= 0 or width <= 0:
        raise ValueError(f"resize_bicubic_uint8: expected a positive size, got {height}x{width}")
    if frames.ndim == 4 and len(frames) > 1:  # a few frames at a time: bounded int64 memory
        step = max(1, _RESIZE_CHUNK_VALUES // max(1, int(np.prod(frames.shape[1:]))))
        if step < len(frames):
            return np.concatenate(
                [
                    resize_bicubic_uint8(frames[i : i + step], height, width)
                    for i in range(0, len(frames), step)
                ]
            )
    h_axis, w_axis = frames.ndim - 3, frames.ndim - 2
    x = frames
    if x.shape[w_axis] != width:
        x = _resize_axis_uint8(x, width, w_axis)
    if x.shape[h_axis] != height:
        x = _resize_axis_uint8(x, height, h_axis)
    return x if x is not frames else frames.copy()


def normalize(
    frames: np.ndarray,
    mean: Sequence[float] = IMAGE_MEAN,
    std: Sequence[float] = IMAGE_STD,
) -> np.ndarray:
    """uint8 [..., C] -> float32 ``(x / 255 - mean) / std``, computed as the fused
    ``(x - 255 * mean) / (255 * std)`` in float32 of ``TorchvisionBackend.rescale_and_normalize``.
    """
    m = np.asarray(mean, np.float32) * np.float32(255.0)
    s = np.asarray(std, np.float32) * np.float32(255.0)
    return (frames.astype(np.float32) - m) / s


def _check_uint8(x: object, dims: str, name: str) -> None:
    """Raise unless x is a uint8 RGB array of the ``dims`` layout, e.g. "[F, H, W, 3]"."""
    ndim = dims.count(",") + 1
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != ndim or x.shape[-1] != 3:
        got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{name}: expected a uint8 {dims} RGB array, got {got}")


def _patchify(x: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    return vision_processing.patchify(
        x, patch_size=PATCH_SIZE, merge_size=MERGE_SIZE, temporal_patch_size=TEMPORAL_PATCH_SIZE
    )


def process_images(
    images: np.ndarray | Sequence[np.ndarray],
    *,
    min_pixels: int = IMAGE_MIN_PIXELS,
    max_pixels: int = IMAGE_MAX_PIXELS,
) -> tuple[np.ndarray, np.ndarray]:
    """Images -> (pixel_values, image_grid_thw), as transformers' Qwen3-VL image processor.

    Each image is resized to ``smart_resize`` of its size (``resize_bicubic_uint8``), normalised
    with mean/std 0.5 and cut into patch rows ordered (Gh/2, Gw/2, 2, 2), each holding
    (C, Tp, 16, 16) values with the image repeated over Tp = 2; images are concatenated in order.

    Args:
      images: uint8 [N, H, W, 3], or a sequence of uint8 [H, W, 3] of any sizes (RGB).

    Returns:
      pixel_values float32 [sum_i Gh_i*Gw_i, 3*2*16*16] and image_grid_thw int64 [N, 3] (each
      row ``[1, Gh, Gw]``).
    """
    if isinstance(images, np.ndarray):  # one [H, W, 3] image too is refused: wrap it in a list
        _check_uint8(images, "[N, H, W, 3]", "process_images: images")
    if len(images) == 0:
        raise ValueError("process_images: images is empty; expected at least one image")
    rows, grids = [], []
    for i, image in enumerate(images):
        _check_uint8(image, "[H, W, 3]", f"process_images: images[{i}]")
        h, w = smart_resize(*image.shape[:2], min_pixels=min_pixels, max_pixels=max_pixels)
        x = normalize(resize_bicubic_uint8(image, h, w))[None]  # [1, H', W', C]
        patches, grid = _patchify(np.repeat(x, TEMPORAL_PATCH_SIZE, axis=0))
        rows.append(patches)
        grids.append(grid)
    return np.concatenate(rows, axis=0), np.asarray(grids, np.int64)


def process_video(
    frames: np.ndarray,
    *,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int = VIDEO_MAX_PIXELS,
    cap_pixels_per_frame: bool = False,
    max_video_tokens: int = MAX_VIDEO_TOKENS,
) -> tuple[np.ndarray, np.ndarray]:
    """Sampled frames -> (pixel_values_videos, video_grid_thw), as ``Qwen3VLVideoProcessor``.

    All frames are resized to ``video_size(F, H, W)`` (``resize_bicubic_uint8``; frames already
    at that size are kept), normalised with mean/std 0.5, padded to an even count by repeating
    the last frame and cut into rows ordered (T, Gh/2, Gw/2, 2, 2), each holding (C, Tp, 16, 16)
    values.

    Args:
      frames: uint8 [F, H, W, 3] sampled frames (``sample_frame_indices``), F >= 2.
      min_pixels, max_pixels: the budget of all frames together (``size.shortest_edge`` /
        ``longest_edge``; the checkpoints use ``CHECKPOINT_VIDEO_*_PIXELS``).
      cap_pixels_per_frame, max_video_tokens: transformers' opt-in per-frame cap
        (``video_max_pixels``); off by default, as in transformers 5.24.

    Returns:
      pixel_values_videos float32 [T*Gh*Gw, 3*2*16*16] and video_grid_thw int64 [1, 3].
    """
    _check_uint8(frames, "[F, H, W, 3]", "process_video: frames")
    f, h, w, _ = frames.shape
    if f == 0:
        raise ValueError(f"process_video: frames has no frames (shape {frames.shape})")
    rh, rw = video_size(
        f,
        h,
        w,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        cap_pixels_per_frame=cap_pixels_per_frame,
        max_video_tokens=max_video_tokens,
    )
    x = normalize(frames if (h, w) == (rh, rw) else resize_bicubic_uint8(frames, rh, rw))
    patches, grid = _patchify(x)  # [T*Gh*Gw, C*Tp*Ph*Pw]
    return patches, np.asarray([grid], np.int64)
