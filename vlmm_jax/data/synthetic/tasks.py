"""Question generators: one scene, one question, its verifiable answer and a template CoT.

Each task in `TASKS` draws the scene its question needs (object 0 is the one asked about) and
returns a `Problem`. The chain of thought cites timestamps and what is seen at them, in the form a
model can learn to produce: where an object is, as the 3x3 grid cell (`perception.CELLS`) that
one merged visual token covers, except where the answer itself is in pixels (distance, boxes).
The answer follows the `records.Example` conventions, so `vlmm_jax.rewards.REGISTRY["accuracy"]`
scores `<answer>{answer}</answer>` 1.0.

| task                 | problem_type       | asks                                     | order |
| -------------------- | ------------------ | ---------------------------------------- | ----- |
| `attribute`          | multiple choice    | shape of the X object / colour of the Y  | no    |
| `order`              | multiple choice    | which object appears first / last        | yes   |
| `direction`          | multiple choice    | which way X moves (left/right/up/down)   | yes   |
| `count`              | numerical          | how often X appears / how many objects   | no    |
| `distance`           | regression         | pixels X travels / its speed in px/s     | no    |
| `temporal_grounding` | temporal grounding | when X is visible, `start to end` (s)    | no    |
| `spatial_grounding`  | spatial grounding  | X's box `[x1, y1, x2, y2]` at t seconds  | no    |

"order" marks the tasks whose answer needs the frames in their order (`ORDER_TASKS`).
For `order`, objects appear at distinct times and each stays for the same time, so the reversed
video shows them in the reverse order and the duration on screen carries no hint of the order;
for `direction` the reversed video moves the other way. Shuffled frames give a different or
undeterminable answer (tests re-derive it from shuffled frames).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from vlmm_jax.data.synthetic.perception import cell
from vlmm_jax.data.synthetic.render import COLORS, SHAPES, Scene, Track
from vlmm_jax.data.synthetic.scene import (
    DIRECTIONS,
    Layout,
    ObjectSpec,
    max_speed_for,
    random_interval,
    random_runs,
    sample_scene,
)

LETTERS = "ABCDEFGH"


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Problem:
    """One generated question about one scene.

    Attributes:
      task: the key of TASKS that made it (the example's `category`).
      problem_type: one of `records.PROBLEM_TYPES`.
      question: the question, without options or answer-format instructions.
      answer: the bare answer (`records.Example.answer` conventions).
      chain_of_thought: the template reasoning, without `<think>` tags.
      scene: the ground truth the video is rendered from.
      options: `("A. text", ...)` for multiple choice.
      timestamps: `(start, end)` seconds for temporal grounding.
      boxes: `((x1, y1, x2, y2),)` pixels for spatial grounding.
    """

    task: str
    problem_type: str
    question: str
    answer: str
    chain_of_thought: str
    scene: Scene
    options: tuple[str, ...] = ()
    timestamps: tuple[float, float] | None = None
    boxes: tuple[tuple[int, int, int, int], ...] | None = None


def _sec(frame: int, layout: Layout) -> str:
    return f"{frame / layout.fps:.2f}s"


def _num(x: float) -> str:
    return f"{round(float(x), 2):g}"


def _at(track: Track, frame: int) -> str:
    x, y = (int(v) for v in track.xy[frame])
    return f"({x}, {y})"


def _in(track: Track, frame: int, layout: Layout) -> str:
    """Where the track is at `frame`, as the 3x3 grid cell a merged visual token can show."""
    x, y = (int(v) for v in track.xy[frame])
    return f"in the {cell(x, y, layout.width, layout.height)}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _num_objects(rng, layout: Layout, lo: int | None = None, hi: int | None = None) -> int:
    d_lo, d_hi = layout.difficulty.num_objects
    lo, hi = d_lo if lo is None else lo, d_hi if hi is None else hi
    return int(rng.integers(lo, max(lo, hi) + 1))


def _choices(rng, correct: str, pool: list[str], shuffle: bool, vocabulary: list[str], k: int = 4):
    """`k` options (correct + distractors, scene-based ones first) and the correct letter."""
    pool = [v for v in pool if v != correct]
    rest = [v for v in vocabulary if v != correct and v not in pool]
    texts = [correct, *(pool[i] for i in rng.permutation(len(pool)))]
    texts += [rest[i] for i in rng.permutation(len(rest))]
    texts = texts[:k]
    if shuffle:
        texts = [texts[i] for i in rng.permutation(len(texts))]
    else:
        texts.sort(key=vocabulary.index)
    letter = LETTERS[texts.index(correct)]
    return tuple(f"{LETTERS[i]}. {t}" for i, t in enumerate(texts)), letter


def _others(rng, layout: Layout, n: int, min_slots: int = 1) -> list[ObjectSpec]:
    return [
        ObjectSpec(visible=layout.mask([random_interval(rng, layout, min_slots)])) for _ in range(n)
    ]


# ----------------------------------------------------------------------------- multiple choice
def attribute(rng, layout: Layout, shuffle: bool) -> Problem:
    half = max(1, layout.num_slots // 2)
    scene = sample_scene(rng, layout, _others(rng, layout, _num_objects(rng, layout), half))
    target = scene.tracks[0]
    f0 = target.runs()[0][0]
    seen = f"It is first seen at {_sec(f0, layout)}, {_in(target, f0, layout)}."
    if rng.random() < 0.5:
        pool = [t.shape for t in scene.tracks]
        options, letter = _choices(rng, target.shape, pool, shuffle, list(SHAPES))
        question = f"What shape is the {target.color} object?"
        cot = f"I look for the {target.color} object. {seen} Its outline is a {target.shape}."
        cot += f" The option that says {target.shape} is {letter}."
    else:
        pool = [t.color for t in scene.tracks]
        options, letter = _choices(rng, target.color, pool, shuffle, list(COLORS))
        question = f"What colour is the {target.shape}?"
        cot = f"I look for the {target.shape}. {seen} Its colour is {target.color}."
        cot += f" The option that says {target.color} is {letter}."
    return Problem(
        task="attribute",
        problem_type="multiple choice",
        question=question,
        answer=letter,
        chain_of_thought=cot,
        scene=scene,
        options=options,
    )


def order(rng, layout: Layout, shuffle: bool) -> Problem:
    if layout.num_slots < 3:
        raise ValueError(
            f"the order task needs >= 3 time slots (frames >= 3 * quantum), got "
            f"frames={layout.frames}, quantum={layout.quantum}"
        )
    n = min(max(4, layout.difficulty.num_objects[1]), len(SHAPES), layout.num_slots - 1)
    # Every object stays for the same number of slots, so how long one is seen says nothing
    # about when it came (shuffled frames keep no trace of the order).
    stay = int(rng.integers(1, layout.num_slots - n + 2))
    starts = np.sort(rng.choice(layout.num_slots - stay + 1, size=n, replace=False))
    first = rng.random() < 0.5
    if not first:
        starts = starts[::-1]  # Object 0 is the answer: the last to appear.
    specs = [ObjectSpec(visible=layout.mask([(s, s + stay)])) for s in starts]
    scene = sample_scene(rng, layout, specs)
    target = scene.tracks[0]
    names = [t.name for t in scene.tracks]
    options, letter = _choices(rng, target.name, names, shuffle, sorted(names), k=n)
    by_time = sorted(scene.tracks, key=lambda t: t.runs()[0][0])
    seen = [f"the {t.name} at {_sec(t.runs()[0][0], layout)}" for t in by_time]
    which = "first" if first else "last"
    cot = (
        f"Objects appear one after another: {_join(seen)}. "
        f"The {which} to appear is the {target.name}: option {letter}."
    )
    return Problem(
        task="order",
        problem_type="multiple choice",
        question=f"Which object appears {which} in the video?",
        answer=letter,
        chain_of_thought=cot,
        scene=scene,
        options=options,
    )


def direction(rng, layout: Layout, shuffle: bool) -> Problem:
    run = random_interval(rng, layout, max(2, layout.num_slots // 2))
    visible = layout.mask([run])
    steps = int(visible.sum()) - 1
    r_max = layout.scale(layout.difficulty.radius[1])
    min_speed = max(1, min(layout.scale(2), max_speed_for(layout, r_max, steps)))
    way = str(rng.choice(list(DIRECTIONS)))
    target = ObjectSpec(visible=visible, direction=way, min_speed=min_speed)
    others = _others(rng, layout, _num_objects(rng, layout) - 1)
    scene = sample_scene(rng, layout, [target, *others])
    track = scene.tracks[0]
    f0, f1 = track.runs()[0]
    options, letter = _choices(rng, way, [], shuffle, list(DIRECTIONS))
    cot = (
        f"The {track.name} is first seen at {_sec(f0, layout)}, {_in(track, f0, layout)}, and "
        f"last seen at {_sec(f1, layout)}, {_in(track, f1, layout)}. It moves {way}: option "
        f"{letter}."
    )
    return Problem(
        task="direction",
        problem_type="multiple choice",
        question=f"In which direction does the {track.name} move?",
        answer=letter,
        chain_of_thought=cot,
        scene=scene,
        options=options,
    )


# ----------------------------------------------------------------------------- numbers
def _spans(track: Track, layout: Layout) -> list[str]:
    return [f"from {_sec(a, layout)} to {_sec(b + 1, layout)}" for a, b in track.runs()]


def count(rng, layout: Layout, shuffle: bool) -> Problem:
    del shuffle
    most = min(layout.difficulty.max_count, (layout.num_slots + 1) // 2)
    if rng.random() < 0.5:
        k = int(rng.integers(1, most + 1))
        specs = [ObjectSpec(visible=layout.mask(random_runs(rng, layout, k)))]
        for _ in range(_num_objects(rng, layout) - 1):
            runs = random_runs(rng, layout, int(rng.integers(1, most + 1)))
            specs.append(ObjectSpec(visible=layout.mask(runs)))
        scene = sample_scene(rng, layout, specs)
        track = scene.tracks[0]
        times = "time" if k == 1 else "times"
        cot = f"The {track.name} is visible {_join(_spans(track, layout))}: it appears {k} {times}."
        question = f"How many times does the {track.name} appear?"
    else:
        k = _num_objects(rng, layout, 1, min(len(SHAPES), layout.difficulty.num_objects[1] + 1))
        scene = sample_scene(rng, layout, _others(rng, layout, k))
        by_time = sorted(scene.tracks, key=lambda t: t.runs()[0][0])
        seen = [f"the {t.name} (from {_sec(t.runs()[0][0], layout)})" for t in by_time]
        noun = "object" if k == 1 else "different objects"
        cot = f"I see {_join(seen)}: {k} {noun}."
        question = "How many different objects appear in the video?"
    return Problem(
        task="count",
        problem_type="numerical",
        question=question,
        answer=str(k),
        chain_of_thought=cot,
        scene=scene,
    )


def distance(rng, layout: Layout, shuffle: bool) -> Problem:
    del shuffle
    visible = layout.mask([random_interval(rng, layout, max(2, layout.num_slots // 2))])
    way = str(rng.choice(list(DIRECTIONS)))
    target = ObjectSpec(visible=visible, direction=way, min_speed=1)
    others = _others(rng, layout, _num_objects(rng, layout) - 1)
    scene = sample_scene(rng, layout, [target, *others])
    track = scene.tracks[0]
    f0, f1 = track.runs()[0]
    travelled = int(np.abs(track.xy[f1] - track.xy[f0]).sum())  # Axis-aligned: one term is 0.
    axis = "x" if way in ("left", "right") else "y"
    seen = (
        f"The {track.name} is first seen at {_sec(f0, layout)} at {_at(track, f0)} and last seen "
        f"at {_sec(f1, layout)} at {_at(track, f1)}. It moves in a straight line along {axis}, "
        f"so it travels {travelled} pixels"
    )
    if rng.random() < 0.5:
        answer = str(travelled)
        question = f"How many pixels does the {track.name} travel while it is visible?"
        cot = seen + "."
    else:
        seconds = (f1 - f0) / layout.fps
        answer = _num(travelled / seconds)
        question = f"At what speed does the {track.name} move, in pixels per second?"
        cot = f"{seen} in {seconds:.2f} seconds, which is {answer} pixels per second."
    return Problem(
        task="distance",
        problem_type="regression",
        question=question,
        answer=answer,
        chain_of_thought=cot,
        scene=scene,
    )


# ----------------------------------------------------------------------------- grounding
def temporal_grounding(rng, layout: Layout, shuffle: bool) -> Problem:
    del shuffle
    run = random_interval(rng, layout, 1, layout.num_slots - 1)
    target = ObjectSpec(visible=layout.mask([run]))
    scene = sample_scene(
        rng, layout, [target, *_others(rng, layout, _num_objects(rng, layout) - 1)]
    )
    track = scene.tracks[0]
    f0, f1 = track.runs()[0]
    start, end = f0 / layout.fps, (f1 + 1) / layout.fps
    if f0 == 0:
        cot = f"The {track.name} is there from the first frame and disappears at {end:.2f}s."
    elif f1 + 1 == layout.frames:
        cot = (
            f"The {track.name} appears at {start:.2f}s and stays until the end of the video at "
            f"{end:.2f}s."
        )
    else:
        cot = f"The {track.name} appears at {start:.2f}s and disappears at {end:.2f}s."
    answer = f"{start:.2f} to {end:.2f}"
    return Problem(
        task="temporal_grounding",
        problem_type="temporal grounding",
        question=f"When is the {track.name} visible?",
        answer=answer,
        chain_of_thought=f"{cot} So it is visible from {answer} seconds.",
        scene=scene,
        timestamps=(start, end),
    )


def spatial_grounding(rng, layout: Layout, shuffle: bool) -> Problem:
    del shuffle
    half = max(1, layout.num_slots // 2)
    scene = sample_scene(rng, layout, _others(rng, layout, _num_objects(rng, layout), half))
    track = scene.tracks[0]
    frame = int(rng.choice(np.flatnonzero(track.visible)))
    box = track.box(frame)
    answer = "[" + ", ".join(map(str, box)) + "]"
    cot = (
        f"At {_sec(frame, layout)} the {track.name} is centred at {_at(track, frame)} and spans "
        f"{2 * track.radius + 1} pixels, so its box is {answer}."
    )
    return Problem(
        task="spatial_grounding",
        problem_type="spatial grounding",
        question=f"Where is the {track.name} at {frame / layout.fps:.2f} seconds?",
        answer=answer,
        chain_of_thought=cot,
        scene=scene,
        boxes=(box,),
    )


Task = Callable[[np.random.Generator, Layout, bool], Problem]
TASKS: dict[str, Task] = {
    "attribute": attribute,
    "order": order,
    "direction": direction,
    "count": count,
    "distance": distance,
    "temporal_grounding": temporal_grounding,
    "spatial_grounding": spatial_grounding,
}
# Tasks whose answer needs the frames in order (shuffling them destroys it).
ORDER_TASKS = ("order", "direction")
