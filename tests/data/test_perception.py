"""Dense perception targets: the `describe` string re-derived from the pixels alone, the stored
tracks read back from the TFDS build, and the grid cells by hand."""

import numpy as np
import pytest

from tests.data.test_synthetic import _boxes, _centre, _shape_of
from vlmm_jax.data.synthetic import (
    COLORS,
    SyntheticConfig,
    SyntheticSource,
    build_synthetic,
    generate_example,
)
from vlmm_jax.data.synthetic.perception import CELLS, cell, describe, perception_example
from vlmm_jax.data.synthetic.render import Track
from vlmm_jax.rewards import REGISTRY

CONFIG = SyntheticConfig(num_train=28, num_val=0, num_test=0, frames=8, height=84, width=84)


def test_cells_by_hand():
    assert cell(0, 0, 84, 84) == "top left"
    assert cell(27, 27, 84, 84) == "top left"
    assert cell(28, 27, 84, 84) == "top"
    assert cell(42, 42, 84, 84) == "centre"
    assert cell(83, 83, 84, 84) == "bottom right"
    assert cell(0, 60, 84, 112) == CELLS[1][0] == "left"  # 60 * 3 // 112 = 1
    with pytest.raises(ValueError, match=r"\(84, 0\) lies outside the 84x84 frame"):
        cell(84, 0, 84, 84)


def test_describe_by_hand():
    visible = np.array([0, 0, 1, 1, 0, 0, 1, 1], bool)
    xy = np.stack([np.arange(8) * 8 + 10, np.full(8, 70)], 1).astype(np.int32)
    a = Track(color="red", shape="circle", radius=5, xy=xy, visible=visible)
    b = Track(
        color="blue",
        shape="cross",
        radius=5,
        xy=np.full((8, 2), 42, np.int32),
        visible=np.array([0, 0, 1, 1, 1, 1, 0, 0], bool),
    )
    # Both first seen at frame 2: by name, blue first. red: x 26 (bottom left) at frame 2,
    # x 66 (bottom right) at frame 7; visible frames 2-3 and 6-7 at 4 fps.
    assert describe((a, b), 4.0, 84, 84) == (
        "blue cross: centre, 0.50 to 1.50; red circle: bottom left to bottom right, "
        "0.50 to 1.00 and 1.50 to 2.00"
    )


def _derived(frames, fps):
    """`describe` from the pixels: colours present, shape, cell of the box centre, runs."""
    h, w = frames.shape[1:3]
    parts = []
    for color in COLORS:
        boxes = _boxes(frames, color)
        seen = [i for i, b in enumerate(boxes) if b is not None]
        if not seen:
            continue
        first, last = (cell(*map(int, _centre(boxes[f])), w, h) for f in (seen[0], seen[-1]))
        place = first if first == last else f"{first} to {last}"
        runs, start = [], seen[0]
        for a, b in zip(seen, [*seen[1:], None], strict=True):
            if b != a + 1:
                runs.append(f"{start / fps:.2f} to {(a + 1) / fps:.2f}")
                start = b
        parts.append((seen[0], f"{color} {_shape_of(frames, color)}", place, " and ".join(runs)))
    parts.sort()
    return "; ".join(f"{name}: {place}, {spans}" for _, name, place, spans in parts)


@pytest.mark.parametrize("index", range(14))
def test_describe_rederived_from_pixels(index):
    record = generate_example(CONFIG, "train", index)
    got = describe(record.tracks, record.fps, 84, 84)
    assert got == _derived(record.frames, record.fps)


def test_tracks_and_perception_examples_read_back(tmp_path):
    path = build_synthetic(tmp_path, num_train=7, num_val=0, num_test=0, frames=8, size=84)
    source = SyntheticSource(path, "train")
    config = SyntheticConfig(num_train=7, num_val=0, num_test=0, frames=8, height=84, width=84)
    for i in range(7):
        stored, fresh = source[i], generate_example(config, "train", i)
        assert len(stored.tracks) == len(fresh.tracks) >= 1
        for s, f in zip(stored.tracks, fresh.tracks, strict=True):
            assert (s.name, s.radius) == (f.name, f.radius)
            np.testing.assert_array_equal(s.xy, f.xy)
            np.testing.assert_array_equal(s.visible, f.visible)
        ex = perception_example(stored.example, stored.tracks, stored.fps, (84, 84))
        assert (ex.id, ex.category, ex.problem_type) == (
            stored.example.id,
            "perception",
            "free-form",
        )
        assert ex.chain_of_thought is None and ex.options == ()
        assert ex.solution == f"<answer>{ex.answer}</answer>"
        assert REGISTRY["accuracy"](ex.solution, ex.to_reward_example()) == 1.0
