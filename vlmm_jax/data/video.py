"""Video decoding with PyAV and Qwen-style frame sampling.

``load_video`` returns the frames Qwen2.5-VL's utilities (qwen_vl_utils ``fetch_video``) would
sample: ``smart_nframes`` frames (by ``fps`` or a fixed ``nframes``), at the indices
``linspace(0, total_frames - 1, nframes).round()``, plus the effective sample fps, which sets
``second_per_grid_ts``. ``read_video`` is the same decoder under any sampling rule and resampler
(Qwen3-VL's are in ``processors``).

How only the sampled frames are decoded: one demux pass reads the packet headers (timestamps and
keyframe flags; no decoding) to count the frames and locate the keyframes. The sampled frames are
then visited in time order: when a keyframe lies between the last decoded frame and the next
target, the decoder seeks to that keyframe, otherwise it decodes forward. So a 1-hour video costs
about one GOP of decoding per sampled frame. Each sampled frame is converted to RGB (and, with
``resize``, to its output size) as soon as it is decoded, and the decoded picture is dropped: only
the converted frames are kept in memory, e.g. 768 frames at the processor's size rather than at
1080p (``resize`` is how the data pipeline calls it). Streams without packet timestamps or
keyframe flags, and files that cannot seek, are decoded once, front to back, keeping only the
sampled frames. A packet that fails to decode is skipped with a warning; sampled frames past the
last decodable one repeat it.

Timestamps, not decode order, identify frames: frame i is the i-th presentation timestamp. A
sampled index is turned into an instant on the uniform grid from the first to the last timestamp
and the frame nearest to that instant is returned: for constant frame rate video this is exactly
frame i; for variable frame rate video the samples are uniform in time (what the model's temporal
positions assume) rather than uniform in frame count.

Dimension letters: F frames, H height, W width, C channels (3, RGB).
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Iterator

import av
import numpy as np

from vlmm_jax.data.vision_processing import resize_bicubic

FRAME_FACTOR = 2
FPS = 2.0
FPS_MIN_FRAMES = 4
FPS_MAX_FRAMES = 768

_log = logging.getLogger(__name__)

# (sampled frames F, displayed height H, width W) -> the (height, width) each frame is resized to
Resize = Callable[[int, int, int], tuple[int, int]]
# (frame uint8 [H, W, 3], height, width) -> the frame resized, uint8 [height, width, 3]
Resample = Callable[[np.ndarray, int, int], np.ndarray]
# (total frames in the file, its frame rate) -> sorted ordinals of the frames to sample, int [F]
Sampler = Callable[[int, float], np.ndarray]


def round_by_factor(number: float, factor: int) -> int:
    """The multiple of ``factor`` closest to ``number`` (Python's round: half to even)."""
    return round(number / factor) * factor


def ceil_by_factor(number: float, factor: int) -> int:
    """The smallest multiple of ``factor`` >= ``number``."""
    return math.ceil(number / factor) * factor


def floor_by_factor(number: float, factor: int) -> int:
    """The largest multiple of ``factor`` <= ``number``."""
    return math.floor(number / factor) * factor


def smart_nframes(
    total_frames: int,
    video_fps: float,
    *,
    fps: float | None = FPS,
    nframes: int | None = None,
    min_frames: int = FPS_MIN_FRAMES,
    max_frames: int = FPS_MAX_FRAMES,
    strict: bool = False,
) -> int:
    """Number of frames to sample, as qwen_vl_utils ``smart_nframes``.

    With ``nframes``: rounded to an even count. Otherwise ``total_frames / video_fps * fps``
    clamped to ``[ceil2(min_frames), floor2(min(max_frames, total_frames))]`` and to
    ``total_frames``, then floored to an even count.

    qwen_vl_utils raises when the count is outside ``[2, total_frames]``. With ``strict=False``
    (the default) a video shorter than the count is instead sampled with repeated frames (the
    linspace indices repeat), and a fps-derived count below 2 becomes 2, so 1-frame videos work.

    Raises:
      ValueError: ``nframes`` rounds below 2, or (strict) the count exceeds ``total_frames``.
    """
    if nframes is not None:
        n = round_by_factor(nframes, FRAME_FACTOR)
    else:
        if fps is None or fps <= 0:
            raise ValueError(f"smart_nframes: need fps > 0 or nframes, got fps={fps}")
        lo = ceil_by_factor(min_frames, FRAME_FACTOR)
        hi = floor_by_factor(min(max_frames, total_frames), FRAME_FACTOR)
        n = total_frames / video_fps * fps
        n = floor_by_factor(min(min(max(n, lo), hi), total_frames), FRAME_FACTOR)
        if not strict:
            n = max(n, FRAME_FACTOR)
    if n < FRAME_FACTOR or (strict and n > total_frames):
        raise ValueError(
            f"nframes should be in [{FRAME_FACTOR}, {total_frames}] (total_frames), got {n} "
            f"(requested nframes={nframes}, fps={fps})"
        )
    return n


def sample_indices(total_frames: int, nframes: int) -> np.ndarray:
    """``linspace(0, total_frames - 1, nframes).round()`` as int64 [nframes] (halves to even).

    Computed in float64. qwen_vl_utils uses ``torch.linspace`` in float32, whose (vectorised,
    CPU-dependent) rounding moves an index by one frame at some exact .5 ties once
    ``total_frames`` exceeds ~17k; below that the two agree (checked on 37k (T, n) pairs).
    """
    return np.rint(np.linspace(0, total_frames - 1, nframes)).astype(np.int64)


def qwen2_5_vl_indices(
    total_frames: int,
    video_fps: float,
    *,
    fps: float | None = FPS,
    nframes: int | None = None,
    min_frames: int = FPS_MIN_FRAMES,
    max_frames: int = FPS_MAX_FRAMES,
    strict: bool = False,
) -> np.ndarray:
    """The ordinals qwen_vl_utils samples, int64 [F]: ``sample_indices`` of ``smart_nframes``."""
    n = smart_nframes(
        total_frames,
        video_fps,
        fps=fps,
        nframes=nframes,
        min_frames=min_frames,
        max_frames=max_frames,
        strict=strict,
    )
    return sample_indices(total_frames, n)


def display_transform(frame: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply the 90-degree-multiple part of an FFmpeg display matrix to one frame.

    FFmpeg maps a source pixel (x, y) to ``(a*x + c*y, b*x + d*y)`` (plus a shift), with
    ``matrix = [a, b, u, c, d, v, tx, ty, w]`` in 16.16 fixed point. Rotations by other angles
    (rare; FFmpeg's own autorotate falls back to a slow ``rotate`` filter) are snapped to the
    nearest multiple of 90 degrees.

    Args:
      frame: [H, W, C].
      matrix: the 9 int32 values of ``AV_FRAME_DATA_DISPLAYMATRIX``.

    Returns:
      the displayed frame, [H, W, C] or [W, H, C].
    """
    a, b, c, d = (float(matrix[i]) for i in (0, 1, 3, 4))
    if abs(a) + abs(d) >= abs(b) + abs(c):  # x' ~ a*x, y' ~ d*y
        out = frame[:, ::-1] if a < 0 else frame
        return np.ascontiguousarray(out[::-1] if d < 0 else out)
    out = frame.transpose(1, 0, 2)  # x' ~ c*y, y' ~ b*x
    out = out[::-1] if b < 0 else out
    return np.ascontiguousarray(out[:, ::-1] if c < 0 else out)


def _rotate_matrix(degrees_clockwise: float) -> np.ndarray:
    """Display matrix of the legacy ``rotate`` stream tag (clockwise degrees)."""
    theta = math.radians(-degrees_clockwise)  # FFmpeg's matrices rotate counter-clockwise
    cos, sin = round(math.cos(theta)), round(math.sin(theta))
    return np.array([cos, -sin, 0, sin, cos, 0, 0, 0, 1 << 14], np.int64) << 16


def _frame_display_matrix(frame: av.VideoFrame) -> np.ndarray | None:
    sides = frame.side_data
    # PyAV >= 18: a mapping {type: side data}; before, a sequence of side data.
    for side in sides.values() if hasattr(sides, "values") else sides:
        if "DISPLAYMATRIX" in str(side.type):
            return np.frombuffer(bytes(side)[:36], "<i4")
    return None


def _open(path: str) -> av.container.InputContainer:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_video: no such video file: {path}")
    try:
        container = av.open(path)
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise ValueError(f"load_video: cannot open {path} as a video container: {e}") from e
    if not container.streams.video:
        container.close()
        raise ValueError(f"load_video: {path} has no video stream")
    return container


def _index(container, stream, path: str) -> tuple[np.ndarray | None, np.ndarray, int]:
    """Demux (no decoding): sorted presentation timestamps [N] or None, keyframe pts, N."""
    pts, keys, count = [], [], 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the flush packet at the end of the stream
                continue
            count += 1
            ts = packet.pts if packet.pts is not None else packet.dts
            pts.append(ts)
            if packet.is_keyframe and ts is not None:
                keys.append(ts)
    except av.FFmpegError as e:
        if count == 0:
            raise ValueError(f"load_video: cannot read packets of {path}: {e}") from e
        _log.warning("load_video: %s: demuxing stopped after %d packets: %s", path, count, e)
    if count == 0:
        raise ValueError(f"load_video: {path} has no video frames")
    if any(t is None for t in pts) or len(set(pts)) != count:
        return None, np.zeros(0, np.int64), count
    return np.sort(np.asarray(pts, np.int64)), np.sort(np.asarray(keys, np.int64)), count


def _decode_frames(container, stream, path: str) -> Iterator[av.VideoFrame]:
    """Frames in presentation order; packets that fail to decode are skipped (and logged)."""
    skipped, error = 0, None
    try:
        for packet in container.demux(stream):
            try:
                yield from packet.decode()
            except av.InvalidDataError as e:
                skipped, error = skipped + 1, e
    except av.FFmpegError as e:  # a truncated or corrupt tail: keep what decoded so far
        _log.warning("load_video: %s: decoding stopped: %s", path, e)
    finally:
        if skipped:
            _log.warning(
                "load_video: %s: skipped %d undecodable packets (%s)", path, skipped, error
            )


class _Converter:
    """Decoded frame -> uint8 ``[H, W, 3]`` RGB, rotated for display (the first frame's display
    matrix, else the stream's legacy ``rotate`` tag) and resized by ``resample`` when ``resize``
    is given (the size chosen from the first frame). A frame is converted once per ``key``."""

    def __init__(self, stream, count: int, resize: Resize | None, resample: Resample):
        self.rotate = stream.metadata.get("rotate")
        self.count, self.resize, self.resample = count, resize, resample
        self.matrix, self.size, self.first = None, None, True
        self.done: dict = {}

    def __call__(self, frame: av.VideoFrame, key) -> np.ndarray:
        if key in self.done:
            return self.done[key]
        if self.first:
            self.matrix = _frame_display_matrix(frame)
            if self.matrix is None and self.rotate is not None:
                self.matrix = _rotate_matrix(float(self.rotate))
            self.first = False
        a = frame.to_ndarray(format="rgb24")  # [H, W, 3]
        if self.matrix is not None:
            a = display_transform(a, self.matrix)
        if self.resize is not None:
            if self.size is None:
                self.size = tuple(int(x) for x in self.resize(self.count, *a.shape[:2]))
            a = self.resample(a, *self.size)
        self.done[key] = a
        return a


def _decode_sequential(container, stream, wanted: np.ndarray, path: str, convert) -> list:
    """Decode front to back, converting the frames whose ordinal is in ``wanted`` [F]."""
    keep, last, wanted_set = {}, None, set(wanted.tolist())
    for i, frame in enumerate(_decode_frames(container, stream, path)):
        last = (i, frame)
        if i in wanted_set:
            keep[i] = convert(frame, i)
            if len(keep) == len(wanted_set):
                break
    # Ordinals past the last decodable frame (a corrupt tail) get that frame.
    missing = [i for i in wanted.tolist() if i not in keep]
    if missing and last is not None:
        tail = convert(last[1], last[0])
        keep.update(dict.fromkeys(missing, tail))
    return [keep.get(i) for i in wanted.tolist()]


def _decode_seeking(
    container, stream, targets: np.ndarray, keys: np.ndarray, path: str, convert
) -> dict[int, np.ndarray]:
    """Decode and convert the frames at sorted pts ``targets``, seeking to keyframes to skip
    ahead.

    Returns {target pts: converted frame}; a target the decoder never produced maps to the next
    frame it did produce (or the last one).
    """
    out: dict[int, np.ndarray] = {}
    frames, current, last, first = None, None, None, False
    for target in targets.tolist():
        if last is not None and last.pts is not None and last.pts >= target:
            out[target] = convert(last, last.pts)  # already passed: the target was not produced
            continue
        k = np.searchsorted(keys, target, side="right") - 1
        key = int(keys[k]) if k >= 0 else None
        if frames is None or (key is not None and current is not None and key > current):
            # Seek to the keyframe (not the target: with B-frames a seek by the target's pts may
            # land on a later keyframe) and restart the decoder there.
            container.seek(key if key is not None else 0, stream=stream, backward=True)
            frames = _decode_frames(container, stream, path)
            first = True
        for frame in frames:
            if frame.pts is None:
                continue
            if first and frame.pts > target:
                # Landed after the target (inexact index): restart from the beginning.
                container.seek(0, stream=stream)
                frames, first = _decode_frames(container, stream, path), False
                continue
            first, current, last = False, frame.pts, frame
            if frame.pts >= target:
                out[target] = convert(frame, frame.pts)
                break
        else:
            if last is None:
                return out
            out[target] = convert(last, last.pts)
    return out


def _video_fps(stream, pts: np.ndarray | None, total: int) -> float:
    """The container's average frame rate, or the timestamps' when they disagree by > 1% (VFR)."""
    rate = stream.average_rate or stream.guessed_rate
    declared = float(rate) if rate else None
    measured = None
    if pts is not None and total > 1 and pts[-1] > pts[0] and stream.time_base:
        measured = (total - 1) / float((pts[-1] - pts[0]) * stream.time_base)
    if declared and (measured is None or abs(measured / declared - 1) <= 0.01):
        return declared
    return measured or FPS  # with no rate anywhere only sample_fps depends on it


def load_video(
    path: str | os.PathLike,
    *,
    fps: float = FPS,
    nframes: int | None = None,
    min_frames: int = FPS_MIN_FRAMES,
    max_frames: int = FPS_MAX_FRAMES,
    strict: bool = False,
    resize: Resize | None = None,
) -> tuple[np.ndarray, float]:
    """Decode the Qwen2.5-VL-sampled frames of a video file (mp4, webm, mkv, avi, ...).

    Args:
      path: the video file.
      fps: frames to sample per second of video (ignored when ``nframes`` is given).
      nframes: a fixed number of frames to sample (rounded to even).
      min_frames, max_frames: bounds on the fps-derived count (see ``smart_nframes``).
      strict: raise, as qwen_vl_utils does, instead of repeating frames when the video has fewer
        frames than the count.
      resize: ``(F, H, W) -> (h, w)``: resize each frame (antialiased bicubic, as
        ``vision_processing.resize_bicubic``) to ``(h, w)`` as soon as it is decoded, so that no
        more than one frame is held at the source's size (``vision_processing.video_size`` gives
        the processor's size).

    Returns:
      (frames uint8 [F, H, W, 3] RGB (``[F, h, w, 3]`` with ``resize``), rotated as the display
      matrix says; sample_fps = ``F / total_frames * video_fps``, see ``read_video``).

    Raises:
      FileNotFoundError: no file at ``path``.
      ValueError: not a video, no decodable frame, or a bad frame count; the message names
        ``path``.
    """
    sample = functools.partial(
        qwen2_5_vl_indices,
        fps=fps,
        nframes=nframes,
        min_frames=min_frames,
        max_frames=max_frames,
        strict=strict,
    )
    frames, indices, video_fps, total = read_video(path, sample, resize=resize)
    return frames, len(indices) / max(total, 1e-6) * video_fps


def read_video(
    path: str | os.PathLike,
    sample: Sampler,
    *,
    resize: Resize | None = None,
    resample: Resample = resize_bicubic,
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Decode the frames that ``sample`` picks from a video file: any family's sampling rule.

    Args:
      path: the video file.
      sample: ``(total_frames, video_fps) -> ordinals [F]`` (sorted; repeats allowed).
      resize: as ``load_video``; ``resample`` does the resizing (default: the float bicubic).

    Returns:
      (frames uint8 [F, H, W, 3], the ordinals ``sample`` gave int64 [F], video_fps, total
      frames). video_fps is the container's average frame rate, or the rate measured from the
      timestamps when the two disagree by more than 1% (VFR).

    Raises:
      FileNotFoundError / ValueError: as ``load_video``; a ``ValueError`` of ``sample`` is
        re-raised with ``path`` in front.
    """
    path = os.fspath(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        pts, keys, total = _index(container, stream, path)
        video_fps = _video_fps(stream, pts, total)
    finally:
        container.close()
    try:
        ordinals = np.asarray(sample(total, video_fps), np.int64)  # [F]
    except ValueError as e:
        raise ValueError(f"load_video: {path}: {e}") from e
    idx = ordinals
    if pts is not None and total > 1:
        # The instant of ordinal i on the uniform grid, then the frame nearest to it.
        grid = pts[0] + idx * ((pts[-1] - pts[0]) / (total - 1))
        right = np.clip(np.searchsorted(pts, grid), 1, total - 1)
        left = right - 1
        idx = np.where(grid - pts[left] <= pts[right] - grid, left, right)
    frames = _decode(path, pts, keys, idx, resize, resample)
    return frames, ordinals, video_fps, total


def _decode(
    path: str,
    pts: np.ndarray | None,
    keys: np.ndarray,
    idx: np.ndarray,
    resize: Resize | None,
    resample: Resample,
) -> np.ndarray:
    """The frames at sorted-pts ordinals ``idx`` [F], converted (see ``_Converter``) as they are
    decoded: uint8 [F, H, W, 3]."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        chosen = None
        if pts is not None and len(keys):
            try:
                convert = _Converter(stream, len(idx), resize, resample)
                by_pts = _decode_seeking(
                    container, stream, np.unique(pts[idx]), keys, path, convert
                )
                chosen = [by_pts.get(int(t)) for t in pts[idx]]
            except av.FFmpegError as e:  # e.g. a file that cannot seek: decode front to back
                _log.warning("load_video: %s: seeking failed (%s), decoding sequentially", path, e)
                container.close()
                container = _open(path)
                stream = container.streams.video[0]
        if chosen is None:
            convert = _Converter(stream, len(idx), resize, resample)
            chosen = _decode_sequential(container, stream, idx, path, convert)
        if not chosen or any(f is None for f in chosen):
            raise ValueError(f"load_video: {path}: no decodable video frames")
        return np.stack(chosen)  # [F, H, W, 3]
    except av.FFmpegError as e:
        raise ValueError(f"load_video: cannot decode {path}: {e}") from e
    finally:
        container.close()
