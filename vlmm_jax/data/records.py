"""The common example record every annotation format is read into, and its error types.

Trainers, rewards and pipelines only ever see `Example`; the readers in `formats.py` turn
Video-R1, Time-R1, Charades-STA and multiple-choice benchmark files into it.

Answer conventions (one per problem type, so rewards and SFT targets never branch on format):

| problem_type         | `answer`                          | `solution` (as given, or built) |
| -------------------- | --------------------------------- | ------------------------------- |
| `multiple choice`    | option letter, `"B"`              | `"<answer>B</answer>"`          |
| `numerical`, `regression`, `OCR`, `free-form` | the text inside `<answer>` | as given |
| `temporal grounding` | `"12.50 to 17.80"` (seconds)      | `"<answer>12.50 to 17.80</answer>"` |
| `spatial grounding`  | `"[x1, y1, x2, y2]"` per box      | `"<answer>...</answer>"`        |
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any

PROBLEM_TYPES = (
    "multiple choice",
    "numerical",
    "OCR",
    "free-form",
    "regression",
    "temporal grounding",
    "spatial grounding",
)

# Answer-format instructions appended to the question by `Example.prompt`. They follow the
# design of Video-R1's per-type suffixes (one sentence per problem type, answer in <answer> tags),
# worded here, and extended with the two grounding types.
TYPE_INSTRUCTIONS = {
    "multiple choice": (
        "Answer with the letter of the correct option only (e.g., A, B, C or D) "
        "inside <answer> </answer> tags."
    ),
    "numerical": "Answer with a single number (e.g., 42 or 3.14) inside <answer> </answer> tags.",
    "OCR": "Transcribe the text exactly as it appears, inside <answer> </answer> tags.",
    "free-form": "Give a short text answer inside <answer> </answer> tags.",
    "regression": "Answer with a single number (e.g., 42 or 3.14) inside <answer> </answer> tags.",
    "temporal grounding": (
        'Give the start and end times in seconds as "start to end" (e.g., 12.54 to 17.83) '
        "inside <answer> </answer> tags."
    ),
    "spatial grounding": (
        "Give the bounding box as [x1, y1, x2, y2] in pixels inside <answer> </answer> tags."
    ),
}
THINK_INSTRUCTION = "First think step by step inside <think> </think> tags."

# The question a grounding sentence becomes (Time-R1 / Charades-STA records carry only the event
# sentence). Same task statement as Time-R1's grounding prompt; the answer format comes from
# TYPE_INSTRUCTIONS["temporal grounding"].
GROUNDING_QUESTION = (
    'Determine the precise time period in the video during which the event "{event}" happens.'
)


class AnnotationError(ValueError):
    """A bad annotation file or record; the message starts with `file:line`.

    Attributes:
      source: `file:line` (plus record details) of the offending input.
      kind: one of `missing_file`, `malformed_json`, `unknown_format`, `missing_field`,
        `bad_value`, `unknown_problem_type`, `missing_media`, `too_many_skipped`, `empty`.
    """

    def __init__(self, source: str, message: str, kind: str = "bad_value"):
        super().__init__(f"{source}: {message}")
        self.source = source
        self.kind = kind


def canonical_problem_type(value: Any) -> str:
    """Returns the canonical spelling of `value` in PROBLEM_TYPES; ValueError if unknown."""
    if value in PROBLEM_TYPES:
        return value
    if isinstance(value, str):
        key = " ".join(value.replace("_", " ").replace("-", " ").split()).lower()
        for name in PROBLEM_TYPES:
            if key == name.replace("-", " ").lower():
                return name
    raise ValueError(f"unknown problem_type {value!r}; expected one of {list(PROBLEM_TYPES)}")


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Example:
    """One question about one video (or image), whatever file it came from.

    Attributes:
      id: stable identifier (Video-R1 `problem_id`, Time-R1 `qid`, `"{vid}_{i}"`, ...).
      question: the question text, without options and without answer-format instructions.
      answer: the bare answer, in the form of the table in this module's docstring.
      problem_type: one of PROBLEM_TYPES.
      solution: the answer as the source file gave it (Video-R1's `"<answer>B</answer>"`);
        built as `"<answer>{answer}</answer>"` when the file has no such field.
      options: `("A. text", "B. text", ...)` for multiple choice, else `()`.
      video: absolute path of the video, or None.
      image: absolute path of the image, or None.
      chain_of_thought: reasoning text (Video-R1-COT `process`) with its <think> tags removed.
      timestamps: `(start, end)` seconds of the answer span (temporal grounding), or None.
      boxes: `((x1, y1, x2, y2), ...)` in pixels (spatial grounding), or None.
      duration: video length in seconds, when the file gives it.
      duration_category: a benchmark's duration bucket (Video-MME `"short"`, ...), or None.
      data_source: dataset the record came from (Video-R1 `data_source`), or None.
      category: task / sub-task name (MVBench task, Video-MME `task_type`, ...), or None.
      source: `file:line` of the record, for error messages.
    """

    id: str
    question: str
    answer: str
    problem_type: str
    solution: str = ""
    options: tuple[str, ...] = ()
    video: str | None = None
    image: str | None = None
    chain_of_thought: str | None = None
    timestamps: tuple[float, float] | None = None
    boxes: tuple[tuple[float, float, float, float], ...] | None = None
    duration: float | None = None
    duration_category: str | None = None
    data_source: str | None = None
    category: str | None = None
    source: str = ""

    def __post_init__(self):
        if self.problem_type not in PROBLEM_TYPES:
            raise ValueError(
                f"{self.source or self.id}: unknown problem_type {self.problem_type!r}; "
                f"expected one of {list(PROBLEM_TYPES)}"
            )
        if self.timestamps is not None:
            start, end = self.timestamps
            if not (math.isfinite(start) and math.isfinite(end) and 0 <= start <= end):
                raise ValueError(
                    f"{self.source or self.id}: timestamps must be 0 <= start <= end, "
                    f"got {self.timestamps}"
                )
        if not self.solution:
            object.__setattr__(self, "solution", f"<answer>{self.answer}</answer>")

    def prompt(self, *, think: bool = True) -> str:
        """The user-turn text: question, options (one per line), answer-format instruction."""
        parts = [self.question.strip()]
        if self.options:
            parts.append("Options:\n" + "\n".join(self.options))
        if think:
            parts.append(THINK_INSTRUCTION)
        parts.append(TYPE_INSTRUCTIONS[self.problem_type])
        return "\n".join(parts)

    def to_reward_example(self) -> dict[str, Any]:
        """The fields `vlmm_jax.rewards.REGISTRY[name](completion, example)` reads.

        Named as in Video-R1's JSON (`problem_type`, `solution`, `options`) and Time-R1's
        (`timestamp`, `duration`). For temporal grounding `solution` is `[start, end]` seconds
        (as in Time-R1), for spatial grounding it is the list of boxes; otherwise it is the
        solution string, e.g. `"<answer>B</answer>"`.
        """
        out: dict[str, Any] = {
            "problem_id": self.id,
            "problem": self.question,
            "problem_type": self.problem_type,
            "solution": self.solution,
            "answer": self.answer,
            "options": list(self.options),
            "duration": self.duration,
        }
        if self.timestamps is not None:
            out["timestamp"] = list(self.timestamps)
            if self.problem_type == "temporal grounding":
                out["solution"] = list(self.timestamps)
        if self.boxes is not None:
            out["boxes"] = [list(b) for b in self.boxes]
            if self.problem_type == "spatial grounding":
                out["solution"] = [list(b) for b in self.boxes]
        return out


@dataclasses.dataclass
class ReadStats:
    """What reading one annotation file kept and skipped; nothing is dropped uncounted.

    Attributes:
      path: the annotation file.
      format: the format it was read as.
      total: examples the file describes (kept + skipped).
      kept: examples returned.
      skipped: `(source, message)` of every skipped example, in file order.
      by_kind: skipped count per AnnotationError kind.
    """

    path: str = ""
    format: str = ""
    total: int = 0
    kept: int = 0
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    by_kind: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    @property
    def skip_fraction(self) -> float:
        return len(self.skipped) / self.total if self.total else 0.0

    def add_skip(self, error: AnnotationError) -> None:
        self.skipped.append((error.source, str(error)))
        self.by_kind[error.kind] += 1

    def check(self, max_skip_fraction: float) -> None:
        """Raises AnnotationError(kind="too_many_skipped") above `max_skip_fraction`."""
        if self.skipped and self.skip_fraction > max_skip_fraction:
            first = "\n  ".join(msg for _, msg in self.skipped[:5])
            raise AnnotationError(
                self.path,
                f"skipped {self.num_skipped} of {self.total} examples ({self.skip_fraction:.2%}), "
                f"above max_skip_fraction={max_skip_fraction} ({dict(self.by_kind)}); "
                f"first errors:\n  {first}",
                kind="too_many_skipped",
            )
