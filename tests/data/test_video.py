"""load_video on small real videos written here with PyAV.

Each frame's colour encodes its index (a coarse code that survives lossy codecs), so the test
reads back which frames were sampled. The references are qwen_vl_utils' rules
(``vision_process.py``: ``smart_nframes`` and ``torch.linspace(0, total - 1, n).round()``),
transcribed below.
"""

from __future__ import annotations

import fractions
import math

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlmm_jax.data import video
from vlmm_jax.data.video import display_transform, load_video, smart_nframes


def _colour(i: int) -> np.ndarray:
    return np.array([(i % 8) * 32 + 16, (i // 8 % 8) * 32 + 16, 128], np.uint8)


def _index_of(frame: np.ndarray) -> int:
    r, g, _ = frame.reshape(-1, 3).mean(0)
    return round((r - 16) / 32) + 8 * round((g - 16) / 32)


def _write(path, codec="libx264", n=30, rate=30, size=(48, 64), gop=None, times_ms=None, **kw):
    """Writes ``n`` frames (HxW ``size``) whose colour encodes the frame index."""
    pix_fmt = kw.pop("pix_fmt", "yuv420p")
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.height, s.width = size
        s.pix_fmt = pix_fmt
        s.bit_rate = 4_000_000
        if gop:
            s.codec_context.gop_size = gop
        if times_ms is not None:  # variable frame rate: explicit timestamps in ms
            s.time_base = s.codec_context.time_base = fractions.Fraction(1, 1000)
        if "rotation" in kw:
            s.set_display_rotation(*kw.pop("rotation"))
        image = kw.pop("image", None)
        for i in range(n if times_ms is None else len(times_ms)):
            img = np.broadcast_to(_colour(i), (*size, 3)).copy() if image is None else image
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            if times_ms is not None:
                f.pts, f.time_base = times_ms[i], fractions.Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return str(path)


def _qwen_nframes(total_frames, video_fps, fps=2.0, min_frames=4, max_frames=None):
    """qwen_vl_utils ``smart_nframes`` (fps branch), transcribed; returns None where it raises."""
    lo = math.ceil(min_frames / 2) * 2
    hi = math.floor((min(768, total_frames) if max_frames is None else max_frames) / 2) * 2
    n = total_frames / video_fps * fps
    n = math.floor(min(min(max(n, lo), hi), total_frames) / 2) * 2
    return n if 2 <= n <= total_frames else None


def _qwen_indices(total, n):
    """``torch.linspace(0, total - 1, n).round().long()`` as qwen_vl_utils computes it."""
    import torch

    return torch.linspace(0, total - 1, n).round().long().tolist()


CONTAINERS = [
    ("mp4", "libx264", (48, 64), "yuv420p"),
    ("webm", "libvpx-vp9", (48, 64), "yuv420p"),
    ("webm", "libvpx", (32, 48), "yuv420p"),
    ("mkv", "libx264", (48, 64), "yuv420p"),
    ("avi", "mpeg4", (50, 70), "yuv420p"),  # not a multiple of 16
    ("mkv", "ffv1", (37, 53), "yuv444p"),  # odd sizes
]


@pytest.mark.parametrize("ext,codec,size,pix_fmt", CONTAINERS)
@pytest.mark.parametrize("kwargs", [{}, {"nframes": 10}, {"fps": 5.0}])
def test_containers_sample_qwen_indices(tmp_path, ext, codec, size, pix_fmt, kwargs):
    path = _write(tmp_path / f"v.{ext}", codec, n=45, size=size, gop=7, pix_fmt=pix_fmt)
    frames, sample_fps = load_video(path, **kwargs)
    n = kwargs.get("nframes") or _qwen_nframes(45, 30.0, fps=kwargs.get("fps", 2.0))
    assert frames.shape == (n, *size, 3) and frames.dtype == np.uint8
    assert [_index_of(f) for f in frames] == _qwen_indices(45, n)
    assert sample_fps == pytest.approx(n / 45 * 30.0)


@settings(max_examples=200, deadline=None)
@given(
    total=st.integers(1, 5000),
    video_fps=st.floats(1.0, 120.0),
    fps=st.floats(0.1, 8.0),
    min_frames=st.integers(1, 16),
)
def test_smart_nframes_matches_qwen(total, video_fps, fps, min_frames):
    ref = _qwen_nframes(total, video_fps, fps, min_frames)
    if ref is None:
        with pytest.raises(ValueError, match="nframes"):
            smart_nframes(total, video_fps, fps=fps, min_frames=min_frames, strict=True)
        assert smart_nframes(total, video_fps, fps=fps, min_frames=min_frames) == 2
    else:
        assert smart_nframes(total, video_fps, fps=fps, min_frames=min_frames, strict=True) == ref


def test_smart_nframes_fixed_count():
    assert smart_nframes(100, 30.0, nframes=7) == 8  # round(3.5) = 4 (half to even) -> 8
    assert smart_nframes(100, 30.0, nframes=5) == 4
    with pytest.raises(ValueError, match="nframes"):
        smart_nframes(100, 30.0, nframes=1)
    with pytest.raises(ValueError, match="total_frames"):
        smart_nframes(10, 30.0, nframes=12, strict=True)


def test_one_frame_and_short_videos_repeat_frames(tmp_path):
    one = _write(tmp_path / "one.mp4", n=1, rate=10)
    frames, sample_fps = load_video(one)
    assert frames.shape == (2, 48, 64, 3) and [_index_of(f) for f in frames] == [0, 0]
    assert sample_fps == pytest.approx(2 / 1 * 10)
    with pytest.raises(ValueError, match="one.mp4"):
        load_video(one, strict=True)
    short = _write(tmp_path / "short.mkv", n=5, rate=10)
    frames, _ = load_video(short, nframes=8)
    assert [_index_of(f) for f in frames] == _qwen_indices(5, 8)  # [0, 1, 1, 2, 2, 3, 3, 4]


def test_variable_frame_rate_samples_uniformly_in_time(tmp_path):
    # 20 frames 10 ms apart, then 10 frames 200 ms apart: 30 frames over 2 s.
    times = [10 * i for i in range(20)] + [200 * (i + 1) for i in range(10)]
    for ext in ("mkv", "mp4"):
        path = _write(tmp_path / f"vfr.{ext}", times_ms=times)
        frames, sample_fps = load_video(path, nframes=8)
        instants = np.linspace(0, 29, 8).round() * 2000 / 29  # the uniform time grid, in ms
        want = [int(np.argmin(np.abs(np.asarray(times) - t))) for t in instants]
        assert [_index_of(f) for f in frames] == want
        assert sample_fps == pytest.approx(8 / 30 * 29 / 2.0)  # video_fps from the timestamps


def test_only_sampled_frames_are_decoded(tmp_path, monkeypatch):
    path = _write(tmp_path / "long.mp4", n=300, size=(32, 32), gop=10)
    decoded = 0
    original = video._decode_frames

    def counting(*args):
        nonlocal decoded
        for frame in original(*args):
            decoded += 1
            yield frame

    monkeypatch.setattr(video, "_decode_frames", counting)
    frames, _ = load_video(path, nframes=4)
    assert [_index_of(f) for f in frames] == [i % 64 for i in _qwen_indices(300, 4)]
    assert decoded <= 4 * 10 + 8  # about one GOP per sampled frame, not all 300


@pytest.mark.parametrize(
    "rotation,expect",
    [
        ((90,), lambda x: np.rot90(x, 1)),
        ((-90,), lambda x: np.rot90(x, -1)),
        ((180,), lambda x: np.rot90(x, 2)),
        ((0, True), lambda x: x[:, ::-1]),
        ((0, False, True), lambda x: x[::-1]),
        ((90, True), lambda x: np.rot90(x, 1)[:, ::-1]),
    ],
)
def test_rotation_from_display_matrix(tmp_path, rotation, expect):
    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip("this PyAV cannot write a display matrix")
    image = np.zeros((32, 48, 3), np.uint8)
    image[:16, :16] = 255  # a bright top-left block shows the orientation
    image[:, :, 2] = np.linspace(0, 255, 48, dtype=np.uint8)[None]
    plain = _write(tmp_path / "plain.mkv", "ffv1", n=2, size=(32, 48), image=image)
    path = _write(tmp_path / "rot.mkv", "ffv1", n=2, size=(32, 48), image=image, rotation=rotation)
    upright, _ = load_video(plain, nframes=2)
    frames, _ = load_video(path, nframes=2)
    np.testing.assert_array_equal(frames[0], expect(upright[0]))


def test_display_transform_all_orientations():
    """The 8 axis-aligned FFmpeg display matrices, as ``av_display_rotation_set`` + flips write
    them (``[a, b, 0, c, d, 0, 0, 0, 1<<30]``, a point maps to (a*x + c*y, b*x + d*y))."""
    x = np.arange(2 * 3 * 1).reshape(2, 3, 1)
    one = 1 << 16

    def m(a, b, c, d):
        return np.array([a * one, b * one, 0, c * one, d * one, 0, 0, 0, 1 << 30])

    cases = {
        (1, 0, 0, 1): x,
        (0, -1, 1, 0): np.rot90(x, 1),  # rotation 90 (counter-clockwise)
        (0, 1, -1, 0): np.rot90(x, -1),
        (-1, 0, 0, -1): np.rot90(x, 2),
        (-1, 0, 0, 1): x[:, ::-1],
        (1, 0, 0, -1): x[::-1],
        (0, 1, 1, 0): x.transpose(1, 0, 2),
        (0, -1, -1, 0): np.rot90(x, 2).transpose(1, 0, 2),
    }
    for abcd, want in cases.items():
        np.testing.assert_array_equal(display_transform(x, m(*abcd)), want, err_msg=str(abcd))
    # The legacy ``rotate`` tag is clockwise.
    np.testing.assert_array_equal(display_transform(x, video._rotate_matrix(90)), np.rot90(x, -1))


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        load_video(tmp_path / "nope.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.mp4"):
        load_video(tmp_path / "empty.mp4")
    (tmp_path / "junk.webm").write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(ValueError, match="junk.webm"):
        load_video(tmp_path / "junk.webm")
    good = _write(tmp_path / "good.mp4", n=10)
    data = open(good, "rb").read()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # mp4 index is at the end
    with pytest.raises(ValueError, match="cut.mp4"):
        load_video(tmp_path / "cut.mp4")
    with av.open(str(tmp_path / "audio.wav"), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000, layout="mono")
        f = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        f.sample_rate, f.pts = 8000, 0
        for p in [*s.encode(f), *s.encode()]:
            c.mux(p)
    with pytest.raises(ValueError, match="audio.wav has no video stream"):
        load_video(tmp_path / "audio.wav")


def test_no_decodable_frames_and_truncated_tail(tmp_path):
    good = _write(tmp_path / "good.mkv", n=60)
    rng = np.random.default_rng(0)
    with av.open(good) as src, av.open(str(tmp_path / "noise.mkv"), "w") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for p in src.demux(src.streams.video[0]):
            if p.size:  # same timestamps, random payloads
                q = av.Packet(rng.bytes(p.size))
                q.pts, q.dts, q.time_base, q.stream = p.pts, p.dts, p.time_base, out
                dst.mux(q)
    with pytest.raises(ValueError, match="noise.mkv: no decodable video frames"):
        load_video(tmp_path / "noise.mkv")
    # A streaming container cut in half still yields the frames it holds.
    data = open(good, "rb").read()
    (tmp_path / "half.mkv").write_bytes(data[: len(data) // 2])
    frames, _ = load_video(tmp_path / "half.mkv", nframes=4)
    assert frames.shape[0] == 4 and _index_of(frames[0]) == 0


def test_sequential_fallback_when_seeking_fails(tmp_path, monkeypatch):
    path = _write(tmp_path / "v.mp4", n=45, gop=7)

    def no_seek(*args):
        raise av.error.PermissionError(1, "seek refused")

    monkeypatch.setattr(video, "_decode_seeking", no_seek)
    frames, _ = load_video(path, nframes=10)
    assert [_index_of(f) for f in frames] == _qwen_indices(45, 10)


@settings(max_examples=300, deadline=None)
@given(total=st.integers(1, 16_000), half=st.integers(1, 384))
def test_sample_indices_match_torch_linspace(total, half):
    assert video.sample_indices(total, 2 * half).tolist() == _qwen_indices(total, 2 * half)


def _textured(size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), np.uint8)


@pytest.mark.parametrize("rotation", [None, (90,)])
def test_resize_while_decoding_equals_resizing_after(tmp_path, rotation):
    """`resize` gives the frames that decoding first and resizing the stack after gives (the
    size chosen from the displayed frame: a 90-degree rotation swaps the sides)."""
    from vlmm_jax.data.vision_processing import resize_bicubic, video_size

    if rotation and not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip("this PyAV cannot write a display matrix")
    kw = {"rotation": rotation} if rotation else {}
    path = _write(tmp_path / "v.mkv", "ffv1", n=12, size=(70, 98), image=_textured((70, 98)), **kw)
    size = lambda f, h, w: video_size(f, h, w, min_pixels=28 * 28, max_pixels=56 * 84)  # noqa: E731
    full, fps_full = load_video(path, nframes=6)
    small, fps_small = load_video(path, nframes=6, resize=size)
    want = resize_bicubic(full, *size(6, *full.shape[1:3]))
    assert small.shape == want.shape and fps_small == fps_full
    np.testing.assert_array_equal(small, want)


def test_resize_while_decoding_holds_one_source_frame(tmp_path):
    """Peak host memory while loading 32 sampled frames of 448x448 resized to 56x56: one source
    frame and its float32 working copies (about 9 frames' worth of uint8 bytes), not the 32
    source frames that are then resized."""
    import tracemalloc

    path = _write(tmp_path / "v.mkv", "ffv1", n=32, size=(448, 448), image=_textured((448, 448)))
    source_frame = 448 * 448 * 3

    def peak(**kw):
        tracemalloc.start()
        frames, _ = load_video(path, nframes=32, **kw)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return frames, top

    full, full_peak = peak()
    small, small_peak = peak(resize=lambda f, h, w: (56, 56))
    assert full.shape == (32, 448, 448, 3) and small.shape == (32, 56, 56, 3)
    assert full_peak >= 32 * source_frame
    assert small_peak < 12 * source_frame, small_peak / source_frame
