"""Procedural videos: coloured shapes that move, appear and disappear on a background.

A `Scene` is the ground truth (one `Track` per object: colour, shape, radius, per-frame centre
and visibility); `render_video(scene)` draws it with NumPy only, so the same scene always gives
the same bytes. There is no anti-aliasing and no pixel noise: an object's pixels are exactly its
palette colour, which is what lets tests re-derive every answer from the pixels alone.

Geometry conventions (shared with the question generators and the tests):
  * Pixel coordinates are `(x, y)` with `x` to the right and `y` downwards, origin top-left.
  * Every shape of radius `r` centred at integer `(x, y)` covers exactly the square
    `x - r .. x + r`, `y - r .. y + r` (inclusive), so its box is
    `[x - r, y - r, x + r + 1, y + r + 1]` (end-exclusive, as `box()` returns it).
  * Frame `f` shows time `f / fps` seconds; it covers `[f / fps, (f + 1) / fps)`.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

# Saturated colours far apart in RGB, none close to the mid-grey backgrounds or the dark clutter.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 100, 245),
    "yellow": (245, 220, 40),
    "magenta": (220, 60, 220),
    "cyan": (40, 215, 225),
    "orange": (250, 140, 20),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
# The processor's normalisation mean (OpenAI CLIP's), then tints within 6 levels of it: a
# background patch is ~0 after normalisation, so the few object patches carry the signal. On
# near-black backgrounds (-1.5 per channel once normalised) every background patch is a large
# constant input that drowns objects of a few pixels, and the synthetic recipes' model, trained
# from scratch, learns to ignore the video (`benchmarks/visual_pathway.py`).
BACKGROUNDS = ((123, 117, 104), (117, 117, 110), (128, 119, 100), (120, 121, 106), (126, 113, 108))


@functools.lru_cache(maxsize=256)
def stencil(shape: str, radius: int) -> np.ndarray:
    """bool [2r+1, 2r+1] mask of `shape`; every shape touches all four sides of the square."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    if radius < 1:
        raise ValueError(f"shape radius must be >= 1, got {radius}")
    d = np.arange(-radius, radius + 1)
    dy, dx = d[:, None], d[None, :]
    if shape == "circle":
        mask = dx * dx + dy * dy <= radius * radius
    elif shape == "square":
        mask = np.ones((2 * radius + 1,) * 2, bool)
    elif shape == "triangle":  # Apex on top, base on the bottom row.
        mask = 2 * np.abs(dx) <= dy + radius
    elif shape == "diamond":
        mask = np.abs(dx) + np.abs(dy) <= radius
    else:  # cross: a plus sign with arms a third of the radius thick.
        arm = max(1, radius // 3)
        mask = (np.abs(dx) <= arm) | (np.abs(dy) <= arm)
    mask.setflags(write=False)
    return mask


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Track:
    """One object over the whole video.

    Attributes:
      color: a key of COLORS.
      shape: one of SHAPES.
      radius: half the side of the object's square footprint, in pixels.
      xy: int32 [F, 2] centre `(x, y)` per frame (defined on invisible frames too).
      visible: bool [F] whether the object is drawn in each frame.
    """

    color: str
    shape: str
    radius: int
    xy: np.ndarray
    visible: np.ndarray

    @property
    def name(self) -> str:
        """How questions refer to it: `"red circle"`."""
        return f"{self.color} {self.shape}"

    def box(self, frame: int) -> tuple[int, int, int, int]:
        """`[x1, y1, x2, y2]` end-exclusive pixel box at `frame`."""
        x, y = (int(v) for v in self.xy[frame])
        r = self.radius
        return (x - r, y - r, x + r + 1, y + r + 1)

    def runs(self) -> list[tuple[int, int]]:
        """Maximal visible intervals as `(first, last)` frame indices, inclusive, in order."""
        v = np.concatenate([[False], self.visible, [False]]).astype(np.int8)
        edges = np.flatnonzero(np.diff(v))
        return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Scene:
    """Everything `render_video` draws.

    Attributes:
      height, width: frame size in pixels.
      fps: frames per second (sets every timestamp).
      background: RGB of the plain background.
      gradient: amplitude of a horizontal brightness ramp added to the background (0: none).
      clutter: static grey rectangles `(x1, y1, x2, y2, grey)` drawn under the objects.
      tracks: the objects, drawn in order (tracks never overlap where both are visible).
    """

    height: int
    width: int
    fps: float
    background: tuple[int, int, int]
    tracks: tuple[Track, ...]
    gradient: int = 0
    clutter: tuple[tuple[int, int, int, int, int], ...] = ()

    @property
    def num_frames(self) -> int:
        return int(self.tracks[0].visible.shape[0]) if self.tracks else 0

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def render_indexed(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Draws the scene as palette indices: `(indices, palette)` with `palette[indices]` the video.

    Returns:
      indices: uint8 [F, H, W] palette index of every pixel.
      palette: uint8 [K, 3] RGB colours (background levels, clutter greys, object colours).
    """
    f, h, w = scene.num_frames, scene.height, scene.width
    ramp = np.linspace(0, scene.gradient, w).round().astype(np.int64)
    levels, column = np.unique(ramp, return_inverse=True)
    colors = [np.clip(np.asarray(scene.background) + level, 0, 255) for level in levels]
    background = np.broadcast_to(column.astype(np.uint8)[None, :], (h, w)).copy()
    for x1, y1, x2, y2, grey in scene.clutter:
        background[y1:y2, x1:x2] = len(colors)
        colors.append(np.full(3, grey))
    indices = np.empty((f, h, w), np.uint8)
    indices[:] = background[None]
    for track in scene.tracks:
        mask = stencil(track.shape, track.radius)
        index, r = len(colors), track.radius
        colors.append(np.asarray(COLORS[track.color]))
        for i in np.flatnonzero(track.visible):
            x, y = (int(v) for v in track.xy[i])
            if not (r <= x < w - r and r <= y < h - r):
                raise ValueError(
                    f"render: {track.name} at frame {i} centred at ({x}, {y}) with radius {r} "
                    f"leaves the {w}x{h} frame"
                )
            indices[i, y - r : y + r + 1, x - r : x + r + 1][mask] = index
    if len(colors) > 256:
        raise ValueError(f"render: {len(colors)} colours do not fit a uint8 palette")
    return indices, np.stack(colors).astype(np.uint8)


def render_video(scene: Scene) -> np.ndarray:
    """Draws the scene: uint8 [F, H, W, 3], the same bytes for the same scene."""
    indices, palette = render_indexed(scene)
    return palette[indices]
