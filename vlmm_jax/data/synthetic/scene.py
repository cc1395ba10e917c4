"""Random scenes under constraints: difficulty presets, time slots, non-overlapping tracks.

A question generator says what each object must do (`ObjectSpec`: when it is visible, which way
it moves, how fast) and `sample_scene` finds a scene that does it: unique colours and unique
shapes (so "the red circle" names one object), objects that stay inside the frame while visible
and never overlap one another while both are visible (so each object's pixels are all there).

Visibility changes only on *slot* boundaries, multiples of `Layout.quantum` frames (default 2,
Qwen2.5-VL's temporal patch size), so an appearance or a gap is never split inside one temporal
patch of the vision tower and every interval is exactly representable after patching.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vlmm_jax.data.synthetic.render import BACKGROUNDS, COLORS, SHAPES, Scene, Track

DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
_REFERENCE_SIDE = 112  # Radii and speeds of the presets are for a 112-pixel frame side.
_TRACK_TRIES = 20


@dataclasses.dataclass(frozen=True, kw_only=True)
class Difficulty:
    """How hard the videos are; sizes are for a 112-pixel side and scale with the frame.

    Attributes:
      name: the preset's name (goes into the dataset's config hash).
      num_objects: inclusive range of objects per scene (a task may ask for more or fewer).
      radius: inclusive range of shape radii in pixels.
      max_speed: fastest motion, pixels per frame.
      max_count: most appearances a counting question asks about.
      backgrounds: the scene's background is one of the first this many `render.BACKGROUNDS`
        (1: always the normalisation mean, the cleanest input).
      gradient: background brightness ramp amplitude (0: plain background).
      clutter: static grey rectangles under the objects.
    """

    name: str
    num_objects: tuple[int, int]
    radius: tuple[int, int]
    max_speed: int
    max_count: int
    backgrounds: int = len(BACKGROUNDS)
    gradient: int = 0
    clutter: int = 0


DIFFICULTIES = {
    "easy": Difficulty(
        name="easy", num_objects=(2, 3), radius=(11, 14), max_speed=4, max_count=3, backgrounds=1
    ),
    "medium": Difficulty(
        name="medium", num_objects=(2, 4), radius=(8, 12), max_speed=5, max_count=4, backgrounds=3
    ),
    "hard": Difficulty(
        name="hard",
        num_objects=(3, 5),
        radius=(5, 9),
        max_speed=6,
        max_count=5,
        gradient=40,
        clutter=3,
    ),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Layout:
    """The video's shape and clock.

    Attributes:
      frames: F, frames per video.
      height, width: frame size in pixels.
      fps: frames per second.
      quantum: frames per time slot; visibility changes only at slot boundaries.
      difficulty: the preset in use.
    """

    frames: int
    height: int
    width: int
    fps: float
    quantum: int
    difficulty: Difficulty

    def __post_init__(self):
        if self.frames < 2 * self.quantum or self.quantum < 1:
            raise ValueError(
                f"need quantum >= 1 and frames >= 2 * quantum, got frames={self.frames}, "
                f"quantum={self.quantum}"
            )
        if min(self.height, self.width) < 32:
            raise ValueError(f"frames must be at least 32x32, got {self.height}x{self.width}")

    @property
    def num_slots(self) -> int:
        return -(-self.frames // self.quantum)

    def slot_frame(self, slot: int) -> int:
        """First frame of `slot` (`num_slots` gives F, the end of the video)."""
        return min(slot * self.quantum, self.frames)

    def mask(self, runs: list[tuple[int, int]]) -> np.ndarray:
        """bool [F] visibility from `(first_slot, end_slot)` runs, end exclusive."""
        visible = np.zeros(self.frames, bool)
        for a, b in runs:
            visible[self.slot_frame(a) : self.slot_frame(b)] = True
        return visible

    def scale(self, pixels: int) -> int:
        return max(1, round(pixels * min(self.height, self.width) / _REFERENCE_SIDE))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ObjectSpec:
    """What one object must do.

    Attributes:
      visible: bool [F] visibility.
      direction: a key of DIRECTIONS for axis-aligned motion, `"any"` (each axis independently)
        or `"static"`.
      min_speed: slowest motion along the direction, pixels per frame (direction only).
    """

    visible: np.ndarray
    direction: str = "any"
    min_speed: int = 1


def random_runs(rng: np.random.Generator, layout: Layout, count: int) -> list[tuple[int, int]]:
    """`count` visible runs of >= 1 slot separated by gaps of >= 1 slot, placed at random."""
    slots = layout.num_slots
    extra = slots - (2 * count - 1)
    if count < 1 or extra < 0:
        raise ValueError(f"cannot fit {count} runs with gaps into {slots} slots")
    # Extra slots go to: count runs, count - 1 gaps, a lead and a trail.
    share = rng.multinomial(extra, np.full(2 * count + 1, 1.0 / (2 * count + 1)))
    runs, t = [], int(share[-2])  # share[-2] is the lead, share[-1] the trail.
    for i in range(count):
        length = 1 + int(share[i])
        runs.append((t, t + length))
        t += length + (1 + int(share[count + i]) if i < count - 1 else 0)
    return runs


def random_interval(
    rng: np.random.Generator, layout: Layout, min_slots: int = 1, max_slots: int | None = None
) -> tuple[int, int]:
    """One run of `min_slots..max_slots` slots at a random place, `(first, end)` exclusive."""
    slots = layout.num_slots
    max_slots = slots if max_slots is None else min(max_slots, slots)
    length = int(rng.integers(min(min_slots, max_slots), max_slots + 1))
    start = int(rng.integers(0, slots - length + 1))
    return start, start + length


def max_speed_for(layout: Layout, radius: int, frames_moving: int) -> int:
    """The fastest axis speed that keeps an object of `radius` inside over `frames_moving`."""
    span = min(layout.height, layout.width) - 1 - 2 * radius
    return min(layout.scale(layout.difficulty.max_speed), span // max(1, frames_moving))


def _velocity(rng, spec: ObjectSpec, layout: Layout, radius: int, steps: int):
    span_x = layout.width - 1 - 2 * radius
    span_y = layout.height - 1 - 2 * radius
    top = layout.scale(layout.difficulty.max_speed)
    if spec.direction == "static":
        return 0, 0
    if spec.direction == "any":  # At most half the top speed per axis: fewer collisions.
        vx_max = min(-(-top // 2), span_x // max(1, steps))
        vy_max = min(-(-top // 2), span_y // max(1, steps))
        return int(rng.integers(-vx_max, vx_max + 1)), int(rng.integers(-vy_max, vy_max + 1))
    ux, uy = DIRECTIONS[spec.direction]
    fit = (span_x if ux else span_y) // max(1, steps)
    fastest = min(top, fit)
    if fastest < spec.min_speed:
        return None
    speed = int(rng.integers(spec.min_speed, fastest + 1))
    return ux * speed, uy * speed


def _sample_track(rng, spec, layout, color, shape, radius, others, margin) -> Track | None:
    frames = np.flatnonzero(spec.visible)
    if frames.size == 0:
        raise ValueError("an object must be visible in at least one frame")
    f0, f1 = int(frames[0]), int(frames[-1])
    v = _velocity(rng, spec, layout, radius, f1 - f0)
    if v is None:
        return None
    start = []
    for vel, side in zip(v, (layout.width, layout.height), strict=True):
        lo = radius - min(0, vel * (f1 - f0))
        hi = side - 1 - radius - max(0, vel * (f1 - f0))
        if hi < lo:
            return None
        start.append(int(rng.integers(lo, hi + 1)))
    t = np.arange(-f0, layout.frames - f0)
    x, y = start[0] + v[0] * t, start[1] + v[1] * t
    for other in others:  # Boxes (plus a margin) must not touch where both are visible.
        both = spec.visible & other.visible
        reach = radius + other.radius + 1 + margin
        near = np.abs(x - other.xy[:, 0]) < reach
        near &= np.abs(y - other.xy[:, 1]) < reach
        if np.any(near & both):
            return None
    # Invisible frames keep the line's position, clamped into the frame.
    xy = np.stack([x, y], axis=1)
    np.maximum(xy, radius, out=xy)
    np.minimum(xy, [layout.width - 1 - radius, layout.height - 1 - radius], out=xy)
    return Track(
        color=color, shape=shape, radius=radius, xy=xy.astype(np.int32), visible=spec.visible
    )


def sample_scene(
    rng: np.random.Generator, layout: Layout, specs: list[ObjectSpec], *, tries: int = 50
) -> Scene:
    """A scene whose i-th track satisfies `specs[i]`; unique colours and shapes, no overlaps.

    Raises:
      ValueError: if no such scene was found in `tries` attempts (too many or too fast objects
        for the frame size).
    """
    d = layout.difficulty
    if not 1 <= len(specs) <= len(SHAPES):
        raise ValueError(f"a scene holds 1..{len(SHAPES)} objects, asked for {len(specs)}")
    r_lo, r_hi = layout.scale(d.radius[0]), layout.scale(d.radius[1])
    for _ in range(tries):
        colors = rng.choice(list(COLORS), size=len(specs), replace=False)
        shapes = rng.choice(SHAPES, size=len(specs), replace=False)
        tracks: list[Track] = []
        for spec, color, shape in zip(specs, colors, shapes, strict=True):
            for _ in range(_TRACK_TRIES):  # Re-draw one object before redrawing the scene.
                radius = int(rng.integers(r_lo, r_hi + 1))
                track = _sample_track(
                    rng, spec, layout, str(color), str(shape), radius, tracks, layout.scale(2)
                )
                if track is not None:
                    break
            if track is None:
                break
            tracks.append(track)
        else:
            return Scene(
                height=layout.height,
                width=layout.width,
                fps=layout.fps,
                background=BACKGROUNDS[int(rng.integers(d.backgrounds))],
                tracks=tuple(tracks),
                gradient=d.gradient,
                clutter=_clutter(rng, layout),
            )
    raise ValueError(
        f"no scene with {len(specs)} objects fits a {layout.width}x{layout.height} frame at "
        f"difficulty {d.name!r} after {tries} tries"
    )


def _clutter(rng, layout: Layout) -> tuple[tuple[int, int, int, int, int], ...]:
    rects = []
    for _ in range(layout.difficulty.clutter):
        w = int(rng.integers(layout.width // 8, layout.width // 3))
        h = int(rng.integers(layout.height // 8, layout.height // 3))
        x = int(rng.integers(0, layout.width - w))
        y = int(rng.integers(0, layout.height - h))
        rects.append((x, y, x + w, y + h, int(rng.integers(40, 80))))  # darker than backgrounds
    return tuple(rects)
