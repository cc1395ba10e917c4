"""The synthetic video-reasoning dataset: determinism, splits, answers re-derived from pixels,
shuffling, rewards, the TFDS build and its reader."""

import hashlib
import os
import pickle
import re
import time

import grain
import numpy as np
import pytest

from vlmm_jax.data.records import PROBLEM_TYPES, Example
from vlmm_jax.data.synthetic import (
    COLORS,
    ORDER_TASKS,
    SHAPES,
    SPLITS,
    TASKS,
    SyntheticConfig,
    SyntheticSource,
    build_synthetic,
    example_seed,
    generate_example,
    target_completion,
)
from vlmm_jax.data.synthetic import builder as builder_module
from vlmm_jax.data.synthetic.render import BACKGROUNDS
from vlmm_jax.data.vision_processing import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from vlmm_jax.rewards import REGISTRY

SMALL = SyntheticConfig(num_train=84, num_val=14, num_test=14)
TASK_NAMES = list(TASKS)


def _examples(config, split="train"):
    return [generate_example(config, split, i) for i in range(config.num_examples(split))]


@pytest.fixture(scope="module")
def small():
    return {split: _examples(SMALL, split) for split in SPLITS}


# ----------------------------------------------------------------------------- pixel oracle
# Re-derives answers from the frames alone: an object is the set of pixels of exactly its palette
# colour (colours are unique per video); its shape is read from the mask's geometry.
def _masks(frames, color):  # -> bool [F, H, W]
    rgb = frames.astype(np.int32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    r, g, b = COLORS[color]
    return packed == (r << 16) | (g << 8) | b


def _boxes(frames, color):  # -> list of (x1, y1, x2, y2) end-exclusive, or None if invisible
    out = []
    for m in _masks(frames, color):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        out.append(None if cols.size == 0 else (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1))
    return out


def _centre(box):
    return ((box[0] + box[2] - 1) / 2, (box[1] + box[3] - 1) / 2)


def _shape_of(frames, color):
    f = next(i for i, b in enumerate(_boxes(frames, color)) if b is not None)
    x1, y1, x2, y2 = _boxes(frames, color)[f]
    m = _masks(frames, color)[f, y1:y2, x1:x2]
    top, bottom = m[0].sum(), m[-1].sum()
    if m.mean() > 0.95:
        return "square"
    if bottom == m.shape[1] and top < bottom:
        return "triangle"
    if top > 1:
        return "cross"
    return "circle" if m.mean() > 0.6 else "diamond"


def _object(question):
    m = re.search(rf"({'|'.join(COLORS)}) ({'|'.join(SHAPES)})", question)
    return m.group(1), m.group(2)


def _option(example, letter):
    return {o[0]: o[3:] for o in example.options}[letter]


def _letter(example, text):
    return next((o[0] for o in example.options if o[3:] == text), None)


def _first_seen(frames, color):
    visible = np.flatnonzero(_masks(frames, color).any(axis=(1, 2)))
    return int(visible[0]) if visible.size else None


def derive(example: Example, frames: np.ndarray, fps: float):
    """The answer the frames give (None where they do not determine one)."""
    q = example.question
    if example.category == "attribute":
        if q.startswith("What shape"):
            color = re.search(r"the (\w+) object", q).group(1)
            return _letter(example, _shape_of(frames, color))
        shape = re.search(r"the (\w+)\?", q).group(1)
        present = [c for c in COLORS if _masks(frames, c).any()]
        return _letter(example, next(c for c in present if _shape_of(frames, c) == shape))
    if example.category == "order":
        firsts = {o[0]: _first_seen(frames, o[3:].split()[0]) for o in example.options}
        target = min(firsts.values()) if "first" in q else max(firsts.values())
        winners = [letter for letter, f in firsts.items() if f == target]
        return winners[0] if len(winners) == 1 else None
    if example.category == "direction":
        color, _ = _object(q)
        centres = np.array([_centre(b) for b in _boxes(frames, color) if b is not None])
        steps = np.diff(centres, axis=0)
        for way, (ux, uy) in {
            "left": (-1, 0),
            "right": (1, 0),
            "up": (0, -1),
            "down": (0, 1),
        }.items():
            if np.all(np.sign(steps[:, 0]) == ux) and np.all(np.sign(steps[:, 1]) == uy):
                return _letter(example, way)
        return None
    if example.category == "count":
        if q.startswith("How many different"):
            return str(sum(_masks(frames, c).any() for c in COLORS))
        visible = np.array([b is not None for b in _boxes(frames, _object(q)[0])], np.int8)
        return str(int(np.sum(np.diff(np.concatenate([[0], visible])) == 1)))
    if example.category == "distance":
        boxes = [(f, b) for f, b in enumerate(_boxes(frames, _object(q)[0])) if b is not None]
        (f0, b0), (f1, b1) = boxes[0], boxes[-1]
        travelled = float(np.hypot(*np.subtract(_centre(b1), _centre(b0))))
        return travelled if q.startswith("How many pixels") else travelled / ((f1 - f0) / fps)
    if example.category == "temporal_grounding":
        visible = np.flatnonzero([b is not None for b in _boxes(frames, _object(q)[0])])
        assert np.all(np.diff(visible) == 1), "one contiguous appearance"
        return (visible[0] / fps, (visible[-1] + 1) / fps)
    if example.category == "spatial_grounding":
        t = float(re.search(r"at ([\d.]+) seconds", q).group(1))
        return _boxes(frames, _object(q)[0])[round(t * fps)]
    raise AssertionError(example.category)


def _matches(example, derived):
    if example.category == "distance":
        return derived is not None and abs(derived - float(example.answer)) <= 0.005 + 1e-9
    if example.category == "temporal_grounding":
        return np.allclose(derived, example.timestamps)
    if example.category == "spatial_grounding":
        return tuple(map(float, derived)) == example.boxes[0]
    return derived == example.answer


# ----------------------------------------------------------------------------- tests
def test_deterministic_by_seed():
    a, b = generate_example(SMALL, "train", 5), generate_example(SMALL, "train", 5)
    assert a.frames.tobytes() == b.frames.tobytes() and a.example == b.example
    assert a.frames.dtype == np.uint8 and a.frames.shape == (16, 112, 112, 3)
    other = SyntheticConfig(num_train=84, num_val=14, num_test=14, seed=1)
    assert generate_example(other, "train", 5).frames.tobytes() != a.frames.tobytes()


def test_backgrounds_normalise_to_about_zero():
    """Background patches must be ~0 once the processor normalises them (near-black ones, at
    -1.5, drown small objects: benchmarks/visual_pathway.py); easy scenes use the mean itself."""
    mean, std = 255 * np.asarray(OPENAI_CLIP_MEAN), 255 * np.asarray(OPENAI_CLIP_STD)
    normalised = (np.asarray(BACKGROUNDS) - mean) / std
    assert np.abs(normalised).max() < 0.1 and np.abs(normalised[0]).max() < 0.01
    easy = SyntheticConfig(
        num_train=8, num_val=1, num_test=1, difficulty="easy", height=56, width=56
    )
    for i in range(8):
        frames = generate_example(easy, "train", i).frames.reshape(-1, 3)
        colours, counts = np.unique(frames, axis=0, return_counts=True)
        np.testing.assert_array_equal(colours[counts.argmax()], BACKGROUNDS[0])


def test_build_is_byte_identical(tmp_path):
    config = dict(num_train=14, num_val=7, num_test=7, frames=8, size=56)
    paths = [build_synthetic(tmp_path / d, **config) for d in ("one", "two")]
    names = sorted(n for n in os.listdir(paths[0]) if "array_record" in n)
    assert len(names) == 3 and names == sorted(
        n for n in os.listdir(paths[1]) if "array_record" in n
    )
    for name in names:
        with (
            open(os.path.join(paths[0], name), "rb") as f0,
            open(os.path.join(paths[1], name), "rb") as f1,
        ):
            assert f0.read() == f1.read(), name


def test_splits_disjoint(small):
    default = SyntheticConfig()
    seeds = {s: {example_seed(s, i) for i in range(default.num_examples(s))} for s in SPLITS}
    assert not (seeds["train"] & seeds["validation"] or seeds["train"] & seeds["test"])
    assert not seeds["validation"] & seeds["test"]
    videos = {s: {hashlib.sha1(r.frames.tobytes()).hexdigest() for r in small[s]} for s in SPLITS}
    assert len(videos["train"]) == len(small["train"])  # No repeated video inside a split either.
    assert not (videos["train"] & videos["validation"] or videos["train"] & videos["test"])
    assert not videos["validation"] & videos["test"]


def test_records_are_well_formed(small):
    for split in SPLITS:
        for record in small[split]:
            ex = record.example
            assert ex.problem_type in PROBLEM_TYPES and ex.category in TASKS
            assert ex.duration == pytest.approx(16 / 4.0) and record.fps == 4.0
            assert ex.chain_of_thought and re.search(r"\d\.\d\ds", ex.chain_of_thought)
            if ex.problem_type == "multiple choice":
                assert len(ex.options) >= 4 and ex.answer in "ABCDE"
                assert all(re.fullmatch(r"[A-E]\. \S.*", o) for o in ex.options)
            else:
                assert ex.options == ()
    counts = np.bincount([TASK_NAMES.index(r.example.category) for r in small["train"]])
    assert counts.min() == counts.max() == len(small["train"]) // len(TASKS)


def test_solutions_and_targets_score_one(small):
    accuracy, fmt = REGISTRY["accuracy"], REGISTRY["format"]
    for split in SPLITS:
        for record in small[split]:
            ex, reward_example = record.example, record.example.to_reward_example()
            assert accuracy(ex.solution, reward_example) == pytest.approx(1.0, abs=1e-6), ex
            target = target_completion(ex)
            assert accuracy(target, reward_example) == pytest.approx(1.0, abs=1e-6), target
            assert fmt(target, reward_example) == 1.0, target
            if ex.problem_type == "multiple choice":
                wrong = next(o[0] for o in ex.options if o[0] != ex.answer)
                assert accuracy(f"<answer>{wrong}</answer>", reward_example) == 0.0


@pytest.mark.parametrize("task", TASK_NAMES)
@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard"])
def test_answers_rederived_from_pixels(task, difficulty):
    config = SyntheticConfig(num_train=70, num_val=0, num_test=0, difficulty=difficulty)
    start = TASK_NAMES.index(task)
    for index in range(start, config.num_train, len(TASKS)):
        ex, frames, fps, _ = generate_example(config, "train", index)
        assert ex.category == task
        derived = derive(ex, frames, fps)
        assert _matches(ex, derived), (ex.question, ex.options, ex.answer, derived)


GRID = (("top left", "top", "top right"), ("left", "centre", "right"))
GRID += (("bottom left", "bottom", "bottom right"),)


@pytest.mark.parametrize("task", ["attribute", "direction"])
def test_chain_of_thought_cells_rederived_from_pixels(task):
    """Where the CoT says an object is first (and last) seen: the time and the 3x3 grid cell
    of its centre in that frame, read from the pixels; no pixel coordinates."""
    config = SyntheticConfig(num_train=70, num_val=0, num_test=0, frames=8, height=84, width=84)
    start = TASK_NAMES.index(task)
    cell_names = "|".join(c for row in GRID for c in row)
    for index in range(start, config.num_train, len(TASKS)):
        ex, frames, fps, _ = generate_example(config, "train", index)
        cot = ex.chain_of_thought
        assert not re.search(r"\(\d+, \d+\)", cot), cot
        if task == "attribute":
            color = re.search(rf"(?:the ({'|'.join(COLORS)}) object|colour is (\w+))", cot)
            color = color.group(1) or color.group(2)
        else:
            color = _object(ex.question)[0]
        seen = re.findall(rf"seen at ([\d.]+)s, in the ({cell_names})[.,]", cot)
        boxes = [(f, b) for f, b in enumerate(_boxes(frames, color)) if b is not None]
        expected = [boxes[0], boxes[-1]][: len(seen)]
        assert len(seen) == (1 if task == "attribute" else 2), cot
        for (seconds, name), (frame, box) in zip(seen, expected, strict=True):
            x, y = _centre(box)
            assert float(seconds) == pytest.approx(frame / fps), cot
            assert name == GRID[int(3 * y // 84)][int(3 * x // 84)], (cot, box)


@pytest.mark.parametrize("task", ORDER_TASKS)
def test_shuffling_frames_destroys_order_answers(task):
    """Reversed frames always give another (or no) answer; shuffled ones do no better than chance.

    The pixel oracle stands in for a model that reads the frames in the order given.
    """
    config = SyntheticConfig(num_train=210, num_val=0, num_test=0)
    rng = np.random.default_rng(0)
    kept, chance = [], []
    for index in range(TASK_NAMES.index(task), config.num_train, len(TASKS)):
        ex, frames, fps, _ = generate_example(config, "train", index)
        assert derive(ex, frames, fps) == ex.answer
        assert derive(ex, frames[::-1], fps) != ex.answer, ex.question
        for _ in range(5):
            kept.append(derive(ex, frames[rng.permutation(len(frames))], fps) == ex.answer)
            chance.append(1 / len(ex.options))
    kept, chance = np.mean(kept), np.mean(chance)
    print(f"{task}: shuffled frames keep the answer {kept:.2f} of the time (chance {chance:.2f})")
    assert kept < chance + 0.1


@pytest.fixture(scope="module")
def default_build(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("synthetic")
    start = time.perf_counter()
    path = build_synthetic(data_dir)
    seconds = time.perf_counter() - start
    size = sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))
    print(
        f"built the default synthetic dataset (4000/400/400) in {seconds:.1f}s, {size / 1e6:.1f} MB"
    )
    return path


def test_default_build_reads_back(default_build):
    config = SyntheticConfig()
    for split, n in (("train", 4000), ("validation", 400), ("test", 400)):
        source = SyntheticSource(default_build, split)
        assert len(source) == n
        for index in (0, 1, n - 1):
            got, want = source[index], generate_example(config, split, index)
            assert got.example == want.example and got.fps == want.fps
            assert got.frames.tobytes() == want.frames.tobytes()
    source = pickle.loads(pickle.dumps(SyntheticSource(default_build, "test")))
    assert source[-1].example.id == "synthetic/test/000399"
    assert source.config["num_train"] == 4000
    with pytest.raises(IndexError):
        source[400]
    shuffled = grain.MapDataset.source(source).shuffle(seed=0)
    ids = [shuffled[i].example.id for i in range(4)]
    assert (
        len(shuffled) == 400
        and len(set(ids)) == 4
        and ids != [source[i].example.id for i in range(4)]
    )


def test_building_twice_does_no_work(default_build, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("regenerated an example of a built dataset")

    monkeypatch.setattr(builder_module, "_encode", fail)
    mtime = os.path.getmtime(os.path.join(default_build, "dataset_info.json"))
    start = time.perf_counter()
    assert build_synthetic(os.path.dirname(os.path.dirname(os.path.dirname(default_build)))) == (
        default_build
    )
    print(f"second build_synthetic call: {time.perf_counter() - start:.3f}s")
    assert os.path.getmtime(os.path.join(default_build, "dataset_info.json")) == mtime


def test_bad_requests(tmp_path):
    with pytest.raises(ValueError, match="difficulty"):
        SyntheticConfig(difficulty="impossible")
    with pytest.raises(ValueError, match="tasks"):
        SyntheticConfig(tasks=("telepathy",))
    with pytest.raises(ValueError, match="split"):
        example_seed("dev", 0)
    with pytest.raises(FileNotFoundError, match="build_synthetic"):
        len(SyntheticSource(tmp_path, "train"))
