"""The synthetic video-reasoning dataset: config, per-example generation, TFDS build, reader.

    path = build_synthetic("~/data", num_train=4000, num_val=400, num_test=400)
    source = SyntheticSource(path, "train")      # grain RandomAccessDataSource
    example, frames, fps, tracks = source[0]     # Example, uint8 [F, H, W, 3], frames/s, objects

Storage is a TFDS dataset (`SyntheticVideo`, a `GeneratorBasedBuilder`) written as array_record
so grain reads it by index; TFDS builds and reads it without TensorFlow installed. Each record is
`{"video": zlib(uint8 [F, H, W] palette indices, level 1), "record": JSON}`, the JSON holding the
`Example` fields plus `seed`, `fps`, the video shape `[F, H, W, 3]` and the `[K, 3]` palette
(lossless: the frames are `palette[indices]`, like a palette PNG; no pickle anywhere). Flat-colour
frames compress ~200x, so the default dataset is about 15 MB. The directory is
`data_dir/synthetic_video/{config.name}/{VERSION}`; the name ends in a hash of the whole config,
so a different config never reuses a build and building the same config again does no work.

Seeds: example `i` of split `s` is generated from `np.random.default_rng([seed, SPLIT_BASE[s] +
i])`; the splits' seed ranges are disjoint, so they share no video. Example `i` asks the question
of task `tasks[i % len(tasks)]` (every split is balanced over the task families).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zlib
from typing import Any, NamedTuple

import numpy as np
import tensorflow_datasets as tfds

from vlmm_jax.data.records import Example
from vlmm_jax.data.synthetic.render import Track, render_indexed
from vlmm_jax.data.synthetic.scene import DIFFICULTIES, Layout
from vlmm_jax.data.synthetic.tasks import TASKS, Problem

VERSION = "1.3.0"  # Bump when a generator change alters any example.
SPLITS = ("train", "validation", "test")
SPLIT_BASE = {"train": 0, "validation": 1 << 40, "test": 2 << 40}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    """What to generate. Every field goes into the dataset's name hash.

    Attributes:
      num_train, num_val, num_test: examples per split (`train`, `validation`, `test`).
      seed: base seed; splits and examples derive disjoint seeds from it.
      frames: F, frames per video.
      height, width: frame size in pixels (multiples of 28 avoid any resize in the processor).
      fps: frames per second; every timestamp is `frame / fps`.
      difficulty: a key of `scene.DIFFICULTIES` (`easy`, `medium`, `hard`).
      tasks: the task families (keys of `tasks.TASKS`), used round-robin.
      quantum: frames per time slot; objects appear/disappear only on slot boundaries
        (2 = Qwen2.5-VL's temporal patch size).
      shuffle_options: shuffle multiple-choice options (else a fixed canonical order).
    """

    num_train: int = 4000
    num_val: int = 400
    num_test: int = 400
    seed: int = 0
    frames: int = 16
    height: int = 112
    width: int = 112
    fps: float = 4.0
    difficulty: str = "medium"
    tasks: tuple[str, ...] = tuple(TASKS)
    quantum: int = 2
    shuffle_options: bool = True

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if self.difficulty not in DIFFICULTIES:
            raise ValueError(
                f"SyntheticConfig.difficulty={self.difficulty!r}; expected one of "
                f"{sorted(DIFFICULTIES)}"
            )
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"SyntheticConfig.tasks has unknown {unknown}; known: {list(TASKS)}")
        counts = (self.num_train, self.num_val, self.num_test)
        if min(counts) < 0 or max(counts) >= 1 << 40:
            raise ValueError(f"split sizes must be in [0, 2**40), got {counts}")
        if not self.fps > 0:
            raise ValueError(f"SyntheticConfig.fps must be > 0, got {self.fps}")
        self.layout()  # Validates frames, size and quantum.

    def layout(self) -> Layout:
        return Layout(
            frames=self.frames,
            height=self.height,
            width=self.width,
            fps=float(self.fps),
            quantum=self.quantum,
            difficulty=DIFFICULTIES[self.difficulty],
        )

    def num_examples(self, split: str) -> int:
        _check_split(split)
        return {"train": self.num_train, "validation": self.num_val, "test": self.num_test}[split]

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "tasks": list(self.tasks), "version": VERSION}

    @property
    def fingerprint(self) -> str:
        blob = json.dumps(self.to_json(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def name(self) -> str:
        """The TFDS config name: readable sizes plus the config hash."""
        return f"{self.difficulty}-f{self.frames}-{self.height}x{self.width}-{self.fingerprint}"


class SyntheticRecord(NamedTuple):
    """One example with its video.

    Attributes:
      example: the question record (`video` is None: the frames come with it).
      frames: uint8 [F, H, W, 3] rendered video.
      fps: frames per second of `frames` (sets `second_per_grid_ts`).
      tracks: the scene's objects (colour, shape, radius, centre and visibility per frame), the
        ground truth of `perception.describe`'s dense targets.
    """

    example: Example
    frames: np.ndarray
    fps: float
    tracks: tuple[Track, ...] = ()


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def example_seed(split: str, index: int) -> int:
    """The per-example seed; the three splits' ranges never intersect."""
    _check_split(split)
    return SPLIT_BASE[split] + index


def generate_problem(config: SyntheticConfig, split: str, index: int) -> Problem:
    """The `index`-th problem of `split` (scene + question), deterministic in its arguments."""
    if not 0 <= index < config.num_examples(split):
        raise IndexError(f"{split} has {config.num_examples(split)} examples, asked for {index}")
    rng = np.random.default_rng([config.seed, example_seed(split, index)])
    task = TASKS[config.tasks[index % len(config.tasks)]]
    return task(rng, config.layout(), config.shuffle_options)


def problem_to_example(problem: Problem, *, id: str, source: str = "") -> Example:
    """The `records.Example` of a generated problem."""
    return Example(
        id=id,
        question=problem.question,
        answer=problem.answer,
        problem_type=problem.problem_type,
        options=problem.options,
        chain_of_thought=problem.chain_of_thought,
        timestamps=problem.timestamps,
        boxes=None if problem.boxes is None else tuple(tuple(map(float, b)) for b in problem.boxes),
        duration=problem.scene.duration,
        data_source="synthetic",
        category=problem.task,
        source=source,
    )


def generate_example(config: SyntheticConfig, split: str, index: int) -> SyntheticRecord:
    """The `index`-th example of `split` with its rendered frames, without touching disk."""
    example, indices, palette, tracks = _generate_indexed(config, split, index)
    return SyntheticRecord(example, palette[indices], float(config.fps), tracks)


def _generate_indexed(config: SyntheticConfig, split: str, index: int):
    problem = generate_problem(config, split, index)
    example = problem_to_example(
        problem,
        id=f"synthetic/{split}/{index:06d}",
        source=f"synthetic:{config.name}:{split}:{index}",
    )
    return (example, *render_indexed(problem.scene), problem.scene.tracks)


def _track_json(track: Track) -> dict[str, Any]:
    return {
        "color": track.color,
        "shape": track.shape,
        "radius": track.radius,
        "xy": track.xy.tolist(),
        "visible": track.visible.astype(int).tolist(),
    }


def _track_from_json(d: dict[str, Any]) -> Track:
    return Track(
        color=d["color"],
        shape=d["shape"],
        radius=int(d["radius"]),
        xy=np.asarray(d["xy"], np.int32).reshape(-1, 2),
        visible=np.asarray(d["visible"], bool),
    )


def target_completion(example: Example) -> str:
    """The SFT target: `<think>{chain of thought}</think><answer>{answer}</answer>`."""
    return f"<think>{example.chain_of_thought or ''}</think><answer>{example.answer}</answer>"


# ----------------------------------------------------------------------------- storage
def _encode(config: SyntheticConfig, split: str, index: int) -> dict[str, Any]:
    example, indices, palette, tracks = _generate_indexed(config, split, index)
    meta = {
        "tracks": [_track_json(t) for t in tracks],
        "seed": example_seed(split, index),
        "fps": float(config.fps),
        "shape": list(indices.shape),
        "palette": palette.tolist(),
    }
    return {
        "video": zlib.compress(indices.tobytes(), 1),
        "record": json.dumps({**_fields(example), **meta}, sort_keys=True),
    }


def _fields(example: Example) -> dict[str, Any]:
    return {f.name: getattr(example, f.name) for f in dataclasses.fields(example)}


def _decode(features: dict[str, Any]) -> SyntheticRecord:
    text = features["record"]
    fields = json.loads(text.decode() if isinstance(text, bytes) else text)
    shape, fps = tuple(fields.pop("shape")), float(fields.pop("fps"))
    palette = np.asarray(fields.pop("palette"), np.uint8)
    fields.pop("seed")
    tracks = tuple(_track_from_json(t) for t in fields.pop("tracks"))
    fields["options"] = tuple(fields["options"])
    if fields["timestamps"] is not None:
        fields["timestamps"] = tuple(fields["timestamps"])
    if fields["boxes"] is not None:
        fields["boxes"] = tuple(tuple(b) for b in fields["boxes"])
    indices = np.frombuffer(zlib.decompress(features["video"]), np.uint8).reshape(shape)
    return SyntheticRecord(Example(**fields), palette[indices], fps, tracks)


@dataclasses.dataclass
class _BuilderConfig(tfds.core.BuilderConfig):
    synthetic: SyntheticConfig | None = None


class SyntheticVideo(tfds.core.GeneratorBasedBuilder):
    """TFDS builder of the procedural video-reasoning dataset (generated locally, no download)."""

    RELEASE_NOTES = {VERSION: "Shapes that move, appear and disappear; seven task families."}
    VERSION = tfds.core.Version(VERSION)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        # Nothing is downloaded, so there is no checksums file beside the code to look up; TFDS's
        # lookup of this path for an editable install imports `importlib_resources`, which it
        # does not declare as a dependency.
        return None

    def __init__(self, config: SyntheticConfig | None = None, *, data_dir: str, **kwargs):
        config = config or SyntheticConfig()
        super().__init__(
            data_dir=data_dir,
            config=_BuilderConfig(
                name=config.name, description=json.dumps(config.to_json()), synthetic=config
            ),
            file_format="array_record",
            **kwargs,
        )

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config.synthetic
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=tfds.features.FeaturesDict(
                {
                    "video": tfds.features.Tensor(shape=(), dtype=np.object_),
                    "record": tfds.features.Text(),
                }
            ),
            metadata=tfds.core.MetadataDict(synthetic=config.to_json()),
            disable_shuffling=True,  # Index i of a split is example i (grain shuffles).
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        config = self.builder_config.synthetic
        return {
            split: self._generate_examples(split)
            for split in SPLITS
            if config.num_examples(split) > 0
        }

    def _generate_examples(self, split: str):
        config = self.builder_config.synthetic
        for index in range(config.num_examples(split)):
            yield index, _encode(config, split, index)


def build_synthetic(
    data_dir: str | os.PathLike,
    *,
    num_train: int = 4000,
    num_val: int = 400,
    num_test: int = 400,
    seed: int = 0,
    frames: int = 16,
    size: int | tuple[int, int] = 112,
    fps: float = 4.0,
    difficulty: str = "medium",
    tasks: tuple[str, ...] = tuple(TASKS),
    quantum: int = 2,
    shuffle_options: bool = True,
    progress: bool = False,
) -> str:
    """Generates the dataset under `data_dir` unless this exact config is already built.

    Args:
      data_dir: the TFDS data directory (created if missing).
      num_train, num_val, num_test: examples per split.
      seed, frames, fps, difficulty, tasks, quantum, shuffle_options: see `SyntheticConfig`.
      size: frame side in pixels, or `(height, width)`.
      progress: show TFDS's progress bars.
    Returns:
      The dataset directory, to pass to `SyntheticSource(path, split)`.
    """
    height, width = (size, size) if isinstance(size, int) else size
    config = SyntheticConfig(
        num_train=num_train,
        num_val=num_val,
        num_test=num_test,
        seed=seed,
        frames=frames,
        height=height,
        width=width,
        fps=fps,
        difficulty=difficulty,
        tasks=tuple(tasks),
        quantum=quantum,
        shuffle_options=shuffle_options,
    )
    return build_from_config(config, data_dir, progress=progress)


def build_from_config(
    config: SyntheticConfig, data_dir: str | os.PathLike, *, progress: bool = False
) -> str:
    """`build_synthetic` for a ready `SyntheticConfig`; returns the dataset directory."""
    builder = SyntheticVideo(config, data_dir=os.fspath(os.path.expanduser(data_dir)))
    if not builder.is_prepared():
        tfds.display_progress_bar(progress)
        try:
            builder.download_and_prepare()
        finally:
            tfds.display_progress_bar(True)
    return os.fspath(builder.data_dir)


class SyntheticSource:
    """Random access to one split of a built dataset: `source[i] -> SyntheticRecord`.

    A grain `RandomAccessDataSource` (`__len__`, `__getitem__`); picklable (the file handles
    are reopened lazily in each worker process).
    """

    def __init__(self, path: str | os.PathLike, split: str):
        _check_split(split)
        self.path, self.split = os.fspath(path), split
        self._source = None
        self._config: dict[str, Any] | None = None

    def _open(self):
        if self._source is None:
            if not os.path.isfile(os.path.join(self.path, "dataset_info.json")):
                raise FileNotFoundError(
                    f"{self.path}: no built synthetic dataset here (dataset_info.json missing); "
                    "call build_synthetic(data_dir, ...) and pass the path it returns"
                )
            builder = tfds.builder_from_directory(self.path)
            if self.split not in builder.info.splits:
                raise ValueError(
                    f"{self.path}: split {self.split!r} was not built "
                    f"(has {sorted(builder.info.splits)})"
                )
            self._config = dict(builder.info.metadata["synthetic"])
            self._source = builder.as_data_source(split=self.split)
        return self._source

    @property
    def config(self) -> dict[str, Any]:
        """The `SyntheticConfig` fields (and `version`) the dataset was built with."""
        self._open()
        return self._config

    def __len__(self) -> int:
        return len(self._open())

    def __getitem__(self, index: int) -> SyntheticRecord:
        source = self._open()
        if not -len(source) <= index < len(source):
            raise IndexError(f"{self.path} {self.split}: index {index} of {len(source)}")
        return _decode(source[int(index) % len(source)])

    def __getstate__(self):
        return {"path": self.path, "split": self.split}

    def __setstate__(self, state):
        self.__init__(state["path"], state["split"])

    def __repr__(self) -> str:
        return f"SyntheticSource({self.path!r}, {self.split!r})"
