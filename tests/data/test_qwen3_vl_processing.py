"""Parity of the NumPy Qwen3-VL processor with transformers 5's Qwen3-VL processors.

torchvision cannot be installed beside the CPU torch here, so transformers' torchvision-backed
processors cannot import it. They are still run, for real, with ``tvF`` (torchvision's
``transforms.v2.functional``) replaced by the ``_Tvf`` shim below: its ``resize`` transcribes
torchvision's ``resize_image`` (on CPU a uint8 BICUBIC resize goes to torch's native uint8
``interpolate``; other dtypes to float, then clamp and round) and its ``normalize`` torchvision's
``normalize_image`` (``sub_(mean).div_(std)``). Everything else is transformers' code:

* ``Qwen3VLVideoProcessor`` (``models/qwen3_vl/video_processing_qwen3_vl.py``): ``smart_resize``,
  ``sample_frames``, ``resize``, ``patchify``, ``_preprocess``, ``get_num_of_video_patches``;
* ``Qwen2VLImageProcessor`` (``models/qwen2_vl/image_processing_qwen2_vl.py``, which Qwen3-VL
  uses), loaded from its file under a fake ``torchvision`` package that holds the shim, and
  ``Qwen2VLImageProcessorPil`` (PIL backend), which runs as it is;
* ``Qwen3VLProcessor`` (``models/qwen3_vl/processing_qwen3_vl.py``): ``_calculate_timestamps``,
  ``replace_video_token``, ``_process_videos`` and ``ProcessorMixin.get_text_with_replacements``
  on an instance built without a tokenizer (only the token strings it reads are set).
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import sys
import types

import numpy as np
import pytest

from vlmm_jax.data import qwen3_vl_processing as q3

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from packaging import version  # noqa: E402
from transformers import image_processing_backends as hf_backends  # noqa: E402
from transformers import video_processing_utils as hf_video_utils  # noqa: E402
from transformers.image_utils import (  # noqa: E402
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    PILImageResampling,
)
from transformers.video_utils import VideoMetadata  # noqa: E402

# The lazy `transformers.models.*` attributes are dummies without torchvision; the modules are not.
hf_video = importlib.import_module("transformers.models.qwen3_vl.video_processing_qwen3_vl")
hf_processing = importlib.import_module("transformers.models.qwen3_vl.processing_qwen3_vl")
hf_pil = importlib.import_module("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl")

RNG = np.random.default_rng(0)
CHECKPOINT_SIZE = {
    "shortest_edge": q3.CHECKPOINT_VIDEO_MIN_PIXELS,
    "longest_edge": q3.CHECKPOINT_VIDEO_MAX_PIXELS,
}


def _noise(*shape: int) -> np.ndarray:
    return RNG.integers(0, 256, (*shape, 3), dtype=np.uint8)


# --- the torchvision shim -------------------------------------------------------------------
class _InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


class _Tvf(types.ModuleType):
    """The part of ``torchvision.transforms.v2.functional`` transformers calls here."""

    InterpolationMode = _InterpolationMode

    @staticmethod
    def resize(image, size, interpolation=_InterpolationMode.BILINEAR, antialias=True):
        # torchvision 0.2x ``resize_image``, tensor path.
        assert interpolation is _InterpolationMode.BICUBIC and antialias, (interpolation, antialias)
        *lead, c, h, w = image.shape
        if (h, w) == tuple(size):
            return image
        x = image.reshape(-1, c, h, w)
        native = image.dtype == torch.uint8 and image.device.type == "cpu"
        y = torch.nn.functional.interpolate(
            x if native else x.float(), size=list(size), mode="bicubic", antialias=True
        )
        if not native and image.dtype == torch.uint8:
            y = y.clamp_(0, 255).round_().to(torch.uint8)
        return y.reshape(*lead, c, *size)

    @staticmethod
    def normalize(image, mean, std, inplace=False):
        # torchvision ``normalize_image``.
        mean = torch.as_tensor(mean, dtype=image.dtype).view(-1, 1, 1)
        std = torch.as_tensor(std, dtype=image.dtype).view(-1, 1, 1)
        return (image.sub_(mean) if inplace else image.sub(mean)).div_(std)

    @staticmethod
    def grayscale_to_rgb(image):
        return (
            image if image.shape[-3] == 3 else image.expand(*image.shape[:-3], 3, *image.shape[-2:])
        )

    def __getattr__(self, name):
        raise AttributeError(f"the test's torchvision shim has no tvF.{name}; extend _Tvf")


_TVF = _Tvf("torchvision.transforms.v2.functional")


@pytest.fixture
def torchvision_shim(monkeypatch):
    """Point transformers' torchvision backend at the shim for one test."""
    for module in (hf_backends, hf_video_utils, hf_video):
        monkeypatch.setattr(module, "tvF", _TVF, raising=False)
    mapping = {PILImageResampling.BICUBIC: _InterpolationMode.BICUBIC}
    monkeypatch.setattr(hf_backends, "pil_torch_interpolation_mapping", mapping)


@pytest.fixture
def hf_image_processor(monkeypatch, torchvision_shim):
    """transformers' (torchvision) ``Qwen2VLImageProcessor`` with Qwen3-VL's checkpoint config.

    Its module imports torchvision unconditionally, so it is executed from its file while
    ``sys.modules`` holds a fake ``torchvision`` package around the shim; all is undone after.
    """
    v2 = types.ModuleType("torchvision.transforms.v2")
    v2.functional = _TVF
    for name, module in {
        "torchvision": types.ModuleType("torchvision"),
        "torchvision.transforms": types.ModuleType("torchvision.transforms"),
        "torchvision.transforms.v2": v2,
        "torchvision.transforms.v2.functional": _TVF,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    name = "transformers.models.qwen2_vl.image_processing_qwen2_vl"
    spec = importlib.util.spec_from_file_location(
        name, hf_pil.__file__.replace("image_processing_pil_qwen2_vl", "image_processing_qwen2_vl")
    )
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # (transformers inspects the class's source)
    spec.loader.exec_module(module)
    return module.Qwen2VLImageProcessor(
        patch_size=q3.PATCH_SIZE,
        merge_size=q3.MERGE_SIZE,
        temporal_patch_size=q3.TEMPORAL_PATCH_SIZE,
        image_mean=list(q3.IMAGE_MEAN),
        image_std=list(q3.IMAGE_STD),
        size={"shortest_edge": q3.IMAGE_MIN_PIXELS, "longest_edge": q3.IMAGE_MAX_PIXELS},
    )


def _hf_processor(video_processor=None):
    """A ``Qwen3VLProcessor`` without a tokenizer: only the token strings its text code reads."""
    proc = hf_processing.Qwen3VLProcessor.__new__(hf_processing.Qwen3VLProcessor)
    proc.image_token, proc.video_token = "<|image_pad|>", q3.VIDEO_PAD
    proc.vision_start_token, proc.vision_end_token = q3.VISION_START, q3.VISION_END
    proc.video_processor = video_processor or hf_video.Qwen3VLVideoProcessor()
    return proc


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.float64) - b).max())


# --- constants ------------------------------------------------------------------------------
def test_constants_match_transformers():
    vp = hf_video.Qwen3VLVideoProcessor
    assert (vp.patch_size, vp.merge_size, vp.temporal_patch_size) == (16, 2, 2)
    assert (q3.PATCH_SIZE, q3.MERGE_SIZE, q3.TEMPORAL_PATCH_SIZE, q3.FACTOR) == (16, 2, 2, 32)
    assert tuple(vp.image_mean) == q3.IMAGE_MEAN == tuple(IMAGENET_STANDARD_MEAN)
    assert tuple(vp.image_std) == q3.IMAGE_STD == tuple(IMAGENET_STANDARD_STD)
    assert vp.size == {"shortest_edge": q3.VIDEO_MIN_PIXELS, "longest_edge": q3.VIDEO_MAX_PIXELS}
    assert (vp.fps, vp.min_frames, vp.max_frames) == (q3.FPS, q3.MIN_FRAMES, q3.MAX_FRAMES)
    assert vp.max_video_tokens == q3.MAX_VIDEO_TOKENS


# --- sizes ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "h, w",
    [
        (70, 90),
        (10, 10),
        (1, 150),
        (31, 33),
        (255, 257),
        (300, 4000),
        (5000, 5000),
        (4100, 4100),
        (4095, 4097),
        (1080, 1920),
        (17, 3300),
        (3333, 20),
    ],
)
@pytest.mark.parametrize("budget", [(q3.IMAGE_MIN_PIXELS, q3.IMAGE_MAX_PIXELS), (3136, 1003520)])
def test_smart_resize_matches_transformers(h, w, budget):
    lo, hi = budget
    ref = hf_pil.smart_resize(h, w, factor=32, min_pixels=lo, max_pixels=hi)
    assert q3.smart_resize(h, w, min_pixels=lo, max_pixels=hi) == ref


def test_smart_resize_hits_the_budgets():
    # Below 256*256: beta = sqrt(65536 / 6300) = 3.23, 225.8 x 290.3 ceiled to 256 x 320.
    assert q3.smart_resize(70, 90) == (256, 320)
    # Above 4096**2: beta = sqrt(5000*4000 / 4096**2) = 1.09, 4579 x 3663 floored to 32.
    assert q3.smart_resize(5000, 4000) == (4576, 3648)
    assert q3.smart_resize(300, 300) == (288, 288)  # in budget: nearest multiple of 32
    for h, w in [(1, 201), (201, 1)]:
        with pytest.raises(ValueError):
            hf_pil.smart_resize(h, w, factor=32)
        with pytest.raises(ValueError, match="aspect ratio"):
            q3.smart_resize(h, w)
    with pytest.raises(ValueError, match="positive"):
        q3.smart_resize(0, 10)


@pytest.mark.parametrize(
    "f, h, w",
    [
        (5, 70, 90),
        (4, 70, 90),
        (2, 7, 100),
        (3, 31, 20),
        (768, 1080, 1920),
        (33, 1080, 1920),
        (9, 240, 426),
        (2, 2000, 3000),
        (17, 33, 4000),
        (101, 480, 640),
    ],
)
@pytest.mark.parametrize(
    "budget",
    [(q3.VIDEO_MIN_PIXELS, q3.VIDEO_MAX_PIXELS), (4096, 25165824), (128 * 32 * 32, 10**9)],
)
def test_video_smart_resize_matches_transformers(f, h, w, budget):
    lo, hi = budget
    ref = hf_video.smart_resize(f, h, w, temporal_factor=2, factor=32, min_pixels=lo, max_pixels=hi)
    assert q3.video_smart_resize(f, h, w, min_pixels=lo, max_pixels=hi) == ref


def test_video_smart_resize_budget_counts_frames_and_errors():
    # 33 frames (32 after rounding) of 1088x1920 exceed 25165824: beta = sqrt(33*1080*1920 / max).
    assert q3.video_smart_resize(33, 1080, 1920, min_pixels=4096, max_pixels=25165824) == (
        640,
        1152,
    )
    assert q3.video_smart_resize(5, 70, 90) == (160, 192)  # below 128*32*32 over 4 frames
    for f, h, w in [(1, 64, 64), (0, 64, 64), (2, 10, 3000)]:  # 1 frame; ratio 300 after upscale
        with pytest.raises(ValueError):
            hf_video.smart_resize(f, h, w, factor=32)
        with pytest.raises(ValueError, match="num_frames|aspect ratio"):
            q3.video_smart_resize(f, h, w)


@pytest.mark.parametrize("cap", [False, True])
@pytest.mark.parametrize("size", [None, CHECKPOINT_SIZE])
@pytest.mark.parametrize("f, h, w", [(5, 70, 90), (12, 768, 1344), (64, 1080, 1920), (2, 64, 64)])
def test_video_size_matches_transformers_patch_count(f, h, w, size, cap):
    kwargs = {} if size is None else {"size": size}
    vp = hf_video.Qwen3VLVideoProcessor(cap_pixels_per_frame=cap, **kwargs)
    ref = vp.get_num_of_video_patches(f, h, w, videos_kwargs={"cap_pixels_per_frame": cap})
    size = size or vp.size
    rh, rw = q3.video_size(
        f,
        h,
        w,
        min_pixels=size["shortest_edge"],
        max_pixels=size["longest_edge"],
        cap_pixels_per_frame=cap,
    )
    assert -(-f // 2) * (rh // 16) * (rw // 16) == ref


# --- frame sampling, timestamps, prompt ----------------------------------------------------
@pytest.mark.parametrize(
    "total, video_fps, kwargs",
    [
        (5, 10.0, {}),
        (3, 30.0, {}),
        (1, 30.0, {}),
        (100, 30.0, {}),
        (1001, 29.97, {}),
        (36000, 30.0, {}),
        (7200, 23.976, {"fps": 0.5}),
        (250, 24.0, {"fps": 1.3}),
        (90, None, {}),
        (60, 30.0, {"num_frames": 7}),
        (5, 30.0, {"num_frames": 10}),
        (1000, 59.94, {"fps": 4}),
    ],
)
def test_sample_frame_indices_matches_transformers(total, video_fps, kwargs):
    vp = hf_video.Qwen3VLVideoProcessor()
    ref = vp.sample_frames(VideoMetadata(total_num_frames=total, fps=video_fps), **kwargs)
    ours = q3.sample_frame_indices(total, video_fps, **kwargs)
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours, ref)


def test_sample_frame_indices_by_hand():
    # int(100 / 30 * 2) = 6 frames over [0, 99]: 59.4 -> 59 and 79.2 -> 79 (not 60, 80).
    np.testing.assert_array_equal(q3.sample_frame_indices(100, 30.0), [0, 20, 40, 59, 79, 99])
    # 5 frames at 10 fps give int(1.0) = 1, raised to min_frames 4: an even count is not forced.
    np.testing.assert_array_equal(q3.sample_frame_indices(5, 10.0), [0, 1, 3, 4])
    np.testing.assert_array_equal(q3.sample_frame_indices(3, 30.0), [0, 1, 2])  # <= total
    assert len(q3.sample_frame_indices(36000, 30.0)) == 768  # max_frames
    assert len(q3.sample_frame_indices(299, 29.97, fps=1)) == 9  # int(9.977): truncated, odd
    with pytest.raises(ValueError, match="mutually exclusive"):
        q3.sample_frame_indices(10, 30.0, fps=2, num_frames=4)


@pytest.mark.parametrize(
    "indices, video_fps",
    [
        ([0, 20, 40, 59, 79, 99], 30.0),
        ([0, 20, 40, 60, 80], 30.0),
        ([0], 24.0),
        ([0, 1, 3, 4], 10.0),
        (list(range(0, 1001, 37)), 29.97),
        ([3, 3, 3], 23.976),
        ([0, 7, 15], None),
    ],
)
def test_frame_group_timestamps_match_transformers(indices, video_fps):
    calc = hf_processing.Qwen3VLProcessor._calculate_timestamps
    ref = calc(None, np.asarray(indices), 24 if video_fps is None else video_fps, 2)
    np.testing.assert_array_equal(q3.frame_group_timestamps(indices, video_fps), ref)


def test_frame_group_timestamps_by_hand():
    # Groups (0, 20), (40, 60), (80, 80 repeated): the mean of each, not its first frame.
    ts = q3.frame_group_timestamps([0, 20, 40, 60, 80], 30.0)
    np.testing.assert_allclose(ts, [10 / 30, 50 / 30, 80 / 30], rtol=0, atol=1e-15)
    text = q3.video_prompt(ts, 2)
    assert text == (
        "<0.3 seconds><|vision_start|><|video_pad|><|video_pad|><|vision_end|>"
        "<1.7 seconds><|vision_start|><|video_pad|><|video_pad|><|vision_end|>"
        "<2.7 seconds><|vision_start|><|video_pad|><|video_pad|><|vision_end|>"
    )


@pytest.mark.parametrize(
    "indices, video_fps, grid",
    [
        ([0, 20, 40, 59, 79, 99], 30.0, (3, 4, 6)),
        ([0, 1, 3, 4], 10.0, (2, 10, 12)),
        ([0, 2, 5, 7, 10], 4.0, (3, 2, 2)),
        (list(range(0, 300, 25)), 29.97, (6, 8, 14)),
    ],
)
def test_video_prompt_matches_replace_video_token(indices, video_fps, grid):
    proc = _hf_processor()
    meta = VideoMetadata(total_num_frames=indices[-1] + 1, fps=video_fps, frames_indices=indices)
    inputs = {"video_grid_thw": np.asarray([grid]), "video_metadata": [meta]}
    ref = proc.replace_video_token(inputs, video_idx=0)
    t, gh, gw = grid
    ours = q3.video_prompt(q3.frame_group_timestamps(indices, video_fps), gh * gw // 4)
    assert ours == ref
    assert ours.count("seconds>") == t
    # transformers 5.0-5.24 replace the pad only, keeping the template's wrapper around the
    # expansion; 5.25 replaces the whole placeholder, as transformers 4 and vLLM do.
    text = f"<|im_start|>user\n{q3.VIDEO_PLACEHOLDER}Describe.<|im_end|>"
    expanded, _ = proc.get_text_with_replacements([text], videos_replacements=[ref])
    if version.parse(transformers.__version__) >= version.parse("5.25"):
        assert expanded[0] == text.replace(q3.VIDEO_PLACEHOLDER, ours)
    else:
        wrapped = q3.VISION_START + ours + q3.VISION_END
        assert expanded[0] == text.replace(q3.VIDEO_PLACEHOLDER, wrapped)


# --- pixels ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "src, dst",
    [
        ((70, 90), (160, 192)),
        ((70, 90), (64, 96)),
        ((333, 517), (224, 320)),
        ((50, 50), (50, 80)),
        ((50, 50), (96, 50)),
        ((7, 300), (32, 1344)),
        ((1000, 30), (320, 32)),
        ((1, 1), (32, 32)),
    ],
)
def test_resize_bicubic_uint8_matches_torch_uint8_kernel(src, dst):
    x = _noise(2, *src)
    t = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    ref = torch.nn.functional.interpolate(t, size=dst, mode="bicubic", antialias=True)
    np.testing.assert_array_equal(q3.resize_bicubic_uint8(x, *dst), ref.permute(0, 2, 3, 1))
    np.testing.assert_array_equal(q3.resize_bicubic_uint8(x[0], *dst), ref[0].permute(1, 2, 0))


def test_resize_bicubic_uint8_chunks_and_identity(monkeypatch):
    x = _noise(5, 40, 52)
    whole = q3.resize_bicubic_uint8(x, 64, 96)
    monkeypatch.setattr(q3, "_RESIZE_CHUNK_VALUES", 40 * 52 * 3 * 2)  # 2 frames at a time
    np.testing.assert_array_equal(q3.resize_bicubic_uint8(x, 64, 96), whole)
    same = q3.resize_bicubic_uint8(x, 40, 52)
    np.testing.assert_array_equal(same, x)
    assert same is not x


def test_process_images_matches_transformers(hf_image_processor):
    images = [_noise(70, 90), _noise(37, 300), _noise(300, 37), _noise(64, 64)]
    ref = hf_image_processor(images=images, return_tensors="np")
    values, grid = q3.process_images(images)
    np.testing.assert_array_equal(grid, ref["image_grid_thw"])
    assert values.dtype == np.float32
    assert _max_diff(values, ref["pixel_values"]) <= 1e-5
    batch = np.stack([_noise(48, 80) for _ in range(3)])  # [N, H, W, 3]
    ref = hf_image_processor(images=list(batch), return_tensors="np")
    values, grid = q3.process_images(batch)
    np.testing.assert_array_equal(grid, ref["image_grid_thw"])
    assert _max_diff(values, ref["pixel_values"]) <= 1e-5


def test_process_images_matches_pil_processor_without_resize():
    # No resize (64x96 is in budget and a multiple of 32): layout and normalisation, no shim.
    image = _noise(64, 96)
    pil = hf_pil.Qwen2VLImageProcessorPil(
        patch_size=16,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        size={"shortest_edge": 1024, "longest_edge": q3.IMAGE_MAX_PIXELS},
    )
    ref = pil(images=[image], return_tensors="np")
    values, grid = q3.process_images([image], min_pixels=1024)
    np.testing.assert_array_equal(grid, ref["image_grid_thw"])
    np.testing.assert_array_equal(grid, [[1, 4, 6]])
    assert _max_diff(values, ref["pixel_values"]) <= 1e-5


@pytest.mark.parametrize(
    "f, h, w, init",
    [
        (5, 70, 90, {}),
        (5, 70, 90, {"size": CHECKPOINT_SIZE}),
        (4, 33, 130, {"size": CHECKPOINT_SIZE}),
        (6, 64, 96, {"size": CHECKPOINT_SIZE}),
        (2, 20, 20, {}),
        (
            3,
            120,
            200,
            {"size": CHECKPOINT_SIZE, "cap_pixels_per_frame": True, "max_video_tokens": 16},
        ),
    ],
)
def test_process_video_matches_transformers(torchvision_shim, f, h, w, init):
    video = _noise(f, h, w)
    init = {"cap_pixels_per_frame": False, **init}
    vp = hf_video.Qwen3VLVideoProcessor(**init)
    ref = vp(videos=[video], do_sample_frames=False, return_tensors="np")
    values, grid = q3.process_video(
        video,
        min_pixels=vp.size["shortest_edge"],
        max_pixels=vp.size["longest_edge"],
        cap_pixels_per_frame=init["cap_pixels_per_frame"],
        max_video_tokens=vp.max_video_tokens,
    )
    np.testing.assert_array_equal(grid, ref["video_grid_thw"])
    assert values.dtype == np.float32
    assert _max_diff(values, ref["pixel_values_videos"]) <= 1e-5


def test_video_sampling_and_prompt_end_to_end(torchvision_shim):
    """transformers' own sample -> process -> prompt path against ours, for a 37-frame video."""
    video, video_fps = _noise(37, 70, 90), 12.5
    proc = _hf_processor()
    out, (ref_text,) = proc._process_videos(
        [video],
        video_metadata=[{"total_num_frames": 37, "fps": video_fps}],
        do_sample_frames=True,
        return_metadata=True,
        cap_pixels_per_frame=False,
        return_tensors="np",
    )
    idx = q3.sample_frame_indices(37, video_fps)  # int(37 / 12.5 * 2) = 5: odd
    np.testing.assert_array_equal(out["video_metadata"][0].frames_indices, idx)
    values, grid = q3.process_video(video[idx])
    np.testing.assert_array_equal(grid, out["video_grid_thw"])
    assert _max_diff(values, out["pixel_values_videos"]) <= 1e-5
    text = q3.video_prompt(q3.frame_group_timestamps(idx, video_fps), grid[0, 1] * grid[0, 2] // 4)
    assert text == ref_text


def test_patch_rows_by_hand():
    """Row order (T, Gh/2, Gw/2, 2, 2) and (C, Tp, 16, 16) inside a row, on a labelled video."""
    f, h, w = 3, 64, 64  # grid (2, 4, 4); the 3rd frame is repeated into the 2nd temporal patch
    video = np.zeros((f, h, w, 3), np.uint8)
    py, px = np.mgrid[:h, :w] // 16
    for t in range(f):
        video[t] = np.stack([np.broadcast_to(40 * t, (h, w)), 10 * py, 10 * px], -1)
    values, grid = q3.process_video(video, min_pixels=1, max_pixels=10**9)
    np.testing.assert_array_equal(grid, [[2, 4, 4]])
    x = values.reshape(2, 2, 2, 2, 2, 3, 2, 16, 16)  # [T, Gh/2, Gw/2, 2, 2, C, Tp, 16, 16]
    level = (x * 127.5 + 127.5).round()
    t, by, bx, my, mx = np.meshgrid(*(np.arange(2),) * 5, indexing="ij")
    frame = 2 * t[..., None] + np.arange(2)  # [..., Tp]
    np.testing.assert_array_equal(level[..., 0, :, 0, 0], 40 * np.minimum(frame, f - 1))
    np.testing.assert_array_equal(level[..., 1, 0, 0, 0], 10 * (2 * by + my))  # patch row
    np.testing.assert_array_equal(level[..., 2, 0, 0, 0], 10 * (2 * bx + mx))  # patch column


# --- bad input ------------------------------------------------------------------------------
def test_bad_inputs_name_the_argument():
    good = _noise(4, 40, 40)
    with pytest.raises(ValueError, match=r"process_video: frames.*float32"):
        q3.process_video(good.astype(np.float32))
    with pytest.raises(ValueError, match=r"process_video: frames.*\(40, 40, 3\)"):
        q3.process_video(good[0])
    with pytest.raises(ValueError, match=r"process_video: frames has no frames"):
        q3.process_video(good[:0])
    with pytest.raises(ValueError, match=r"num_frames=1"):
        q3.process_video(good[:1])
    with pytest.raises(ValueError, match=r"process_images: images\[1\].*int64"):
        q3.process_images([good[0], good[1].astype(np.int64)])
    with pytest.raises(ValueError, match=r"process_images: images: .*\[N, H, W, 3\]"):
        q3.process_images(good[0])
    with pytest.raises(ValueError, match=r"process_images: images is empty"):
        q3.process_images([])
    with pytest.raises(ValueError, match=r"process_images: images\[0\].*\(40, 40\)"):
        q3.process_images([good[0, ..., 0]])
    with pytest.raises(ValueError, match="total_frames"):
        q3.sample_frame_indices(0, 30.0)
    with pytest.raises(ValueError, match="video_fps"):
        q3.sample_frame_indices(10, 0.0)
    with pytest.raises(ValueError, match="indices is empty"):
        q3.frame_group_timestamps([], 30.0)
    with pytest.raises(ValueError, match="tokens_per_group"):
        q3.video_prompt([0.5], 0)
    with pytest.raises(ValueError, match="resize_bicubic_uint8: expected frames uint8"):
        q3.resize_bicubic_uint8(good.astype(np.float32), 32, 32)
