"""Dense perception targets of a synthetic video: the vision-language alignment data.

Real Video-LMMs first learn to see on captions (LLaVA's and Qwen-VL's alignment stage) and only
then to reason. The generator knows every object of every video, so the embedded dataset gives
that stage for free: `describe(tracks, ...)` lists each object with its colour, shape, the
coarse cell it is in when it appears and when it leaves, and the intervals it is visible:

    red triangle: top left to top right, 0.50 to 2.00; blue circle: centre, 0.00 to 4.00

Cells are the 3x3 grid of the frame (`CELLS`), coarse enough for the model's merged tokens
(at 84 px a merged token covers exactly one cell) and still exact. Objects come in the order
they first appear (then by name); times are `frame / fps` seconds with two decimals, intervals
end-exclusive, as in the temporal-grounding task's answers.
"""

from __future__ import annotations

import dataclasses

from vlmm_jax.data.records import Example
from vlmm_jax.data.synthetic.render import Track

CELLS = (
    ("top left", "top", "top right"),
    ("left", "centre", "right"),
    ("bottom left", "bottom", "bottom right"),
)
QUESTION = "List every object in the video: its colour and shape, where it is and when it is seen."
CATEGORY = "perception"


def cell(x: int, y: int, width: int, height: int) -> str:
    """The 3x3 grid cell (`CELLS`) holding pixel `(x, y)` of a `width x height` frame."""
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"pixel ({x}, {y}) lies outside the {width}x{height} frame")
    return CELLS[3 * y // height][3 * x // width]


def _place(track: Track, width: int, height: int) -> str:
    runs = track.runs()
    first, last = runs[0][0], runs[-1][1]
    a = cell(*(int(v) for v in track.xy[first]), width, height)
    b = cell(*(int(v) for v in track.xy[last]), width, height)
    return a if a == b else f"{a} to {b}"


def describe(tracks: tuple[Track, ...], fps: float, width: int, height: int) -> str:
    """The perception target of a scene's `tracks` (see the module docstring)."""
    if not tracks:
        raise ValueError("describe: a scene without objects")
    ordered = sorted(tracks, key=lambda t: (t.runs()[0][0], t.name))
    parts = []
    for t in ordered:
        spans = " and ".join(f"{a / fps:.2f} to {(b + 1) / fps:.2f}" for a, b in t.runs())
        parts.append(f"{t.name}: {_place(t, width, height)}, {spans}")
    return "; ".join(parts)


def perception_example(example: Example, tracks: tuple[Track, ...], fps: float, size) -> Example:
    """`example` (same id and video) asking for the dense perception target instead of its
    task's question; answer only, no chain of thought. `size`: `(height, width)` in pixels."""
    height, width = size
    return dataclasses.replace(
        example,
        question=QUESTION,
        answer=describe(tracks, fps, width, height),
        problem_type="free-form",
        options=(),
        chain_of_thought=None,
        timestamps=None,
        boxes=None,
        category=CATEGORY,
        solution="",
    )
