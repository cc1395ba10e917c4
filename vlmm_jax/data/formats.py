"""Readers for the annotation files users bring, all producing `records.Example`.

Formats (`FORMATS` maps the name to its record reader):

- `video_r1`: Video-R1-260k.json / Video-R1-COT-165k.json, a JSON list of
  `{problem_id, problem, data_type: "video"|"image", problem_type, options: ["A. ...", ...],
  solution: "<answer>B</answer>", process (COT file only), path: "./X/...", data_source}`.
- `time_r1`: Time-R1 temporal grounding, JSON list or JSONL of
  `{video, duration, timestamp: [s, e], sentence, qid?}`; TVGBench's
  `{path, question, answer: "s-e", duration}` is read too.
- `charades_sta`: `{vid: {"duration": d, "timestamps": [[s, e], ...], "sentences": [...]}}`
  (the TimeZero / Time-R1 Charades-STA json); one example per sentence, the video is
  `{media_root}/{vid}.mp4` (or .mkv / .webm / ...).
- `mcq`: multiple-choice benchmarks (MVBench / Video-MME style), JSON list or JSONL of
  `{video, question, options (list, or dict letter -> text), answer (letter or option text),
  task/category?, duration?}`; MVBench's `candidates` is read as `options`.

Grounding sentences become `records.GROUNDING_QUESTION.format(event=sentence)`, the sentence
stripped of surrounding whitespace and one trailing period. Media paths are resolved against
`media_root` (default: the annotation file's directory).

Bad input, and examples no reward could score (`rewards.check_example`), raise `AnnotationError`
naming `file:line`; with `on_error="skip"` bad examples are skipped, every one recorded in
`ExampleReader.stats`, and reading fails once the skipped fraction exceeds `max_skip_fraction`.
Files are parsed with `json` only (no eval, no pickle).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vlmm_jax import rewards
from vlmm_jax.data.records import (
    GROUNDING_QUESTION,
    PROBLEM_TYPES,
    AnnotationError,
    Example,
    ReadStats,
    canonical_problem_type,
)

_log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
_WS = re.compile(r"[ \t\n\r]*")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)
_THINK_TAG = re.compile(r"^\s*<think>(.*)</think>\s*$", re.S)
_PREFIXED_OPTION = re.compile(r"^\s*\(?([A-Za-z])[.):]\s*(.*)$", re.S)
_LETTER = re.compile(r"^\(?([A-Za-z])\)?\.?$")
_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)\s*$")
_SPAN = re.compile(r"^\s*(\d+\.?\d*)\s*(?:-|to|,)\s*(\d+\.?\d*)\s*$")


@dataclasses.dataclass(slots=True)
class _Raw:
    """One top-level record: a list element, a JSONL line, or a `key: value` pair."""

    source: str  # file:line
    index: int
    value: Any = None
    key: str | None = None
    error: AnnotationError | None = None  # set for a malformed JSONL line


class _Ctx:
    """What record readers need besides the record."""

    def __init__(self, path: Path, media_root: Path, check_media: bool):
        self.path, self.media_root, self.check_media = path, media_root, check_media

    def default_id(self, raw: _Raw) -> str:
        return f"{self.path.stem}-{raw.index}"

    def media(self, source: str, rel: Any, field: str, try_extensions: bool = False) -> str:
        """Absolute path of `rel` under media_root; AnnotationError if missing and checked."""
        if not isinstance(rel, str) or not rel.strip():
            raise AnnotationError(source, f"field {field!r} must be a non-empty path, got {rel!r}")
        path = os.path.normpath(os.path.join(self.media_root, os.path.expanduser(rel)))
        candidates = [path]
        if try_extensions and not os.path.splitext(path)[1]:  # a bare video id (Charades-STA)
            candidates = [path + ext for ext in VIDEO_EXTENSIONS]
        if not self.check_media:
            return candidates[0]
        for candidate in candidates:
            if os.path.isfile(candidate):
                return candidate
        raise AnnotationError(
            source,
            f"{field} file not found: {', '.join(candidates)} (media_root="
            f"{self.media_root}; pass media_root= to resolve relative paths elsewhere, or "
            "check_media=False to skip this check)",
            kind="missing_media",
        )


class _Rec:
    """A record's fields; errors name the record's file:line and format."""

    def __init__(self, raw: _Raw, fmt: str):
        if not isinstance(raw.value, dict):
            kind = type(raw.value).__name__
            raise AnnotationError(raw.source, f"record must be a JSON object ({fmt}), got {kind}")
        self.fields, self.src, self.fmt = raw.value, raw.source, fmt

    def opt(self, *names: str) -> Any:
        for name in names:
            if (value := self.fields.get(name)) is not None:
                return value
        return None

    def req(self, *names: str) -> Any:
        value = self.opt(*names)
        if value is None:
            alts = " or ".join(repr(n) for n in names)
            msg = f"record is missing required field {alts} (format {self.fmt})"
            raise AnnotationError(self.src, msg, "missing_field")
        return value

    def text(self, *names: str, required: bool = True) -> str | None:
        value = self.req(*names) if required else self.opt(*names)
        return None if value is None else _text(value, self.src, names[0])


def _text(value: Any, source: str, field: str) -> str:
    if type(value) is str:
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise AnnotationError(source, f"field {field!r} must be a string, got {value!r}")
    return str(value)


def _number(value: Any, source: str, field: str, positive: bool = False) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        need = "a positive number" if positive else "a non-negative number"
        raise AnnotationError(source, f"field {field!r} must be {need}, got {value!r}")
    return value


def _span(value: Any, source: str, field: str) -> tuple[float, float]:
    if isinstance(value, str) and (m := _SPAN.match(value)):
        value = [m.group(1), m.group(2)]
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        msg = f"field {field!r} must be [start, end] seconds, got {value!r}"
        raise AnnotationError(source, msg)
    start, end = (_number(v, source, field) for v in value)
    if start > end:
        raise AnnotationError(source, f"field {field!r} has start > end: {value!r}")
    return start, end


def _answer_text(solution: str) -> str:
    """The text inside the last `<answer>` tags, or the whole string stripped."""
    found = _ANSWER_TAG.findall(solution)
    return (found[-1] if found else solution).strip()


def _scorable(ex: Example) -> Example | AnnotationError:
    """`ex`, or the AnnotationError of an example no reward could score."""
    try:
        rewards.check_example(ex.to_reward_example())
    except ValueError as e:
        kind = "bad_value" if ex.problem_type in PROBLEM_TYPES else "unknown_problem_type"
        return AnnotationError(ex.source, f"cannot score this {ex.problem_type} example: {e}", kind)
    return ex


def _grounding(source: str, ex_id: str, sentence: str, span, duration, **fields) -> Example:
    event = sentence.strip()
    event = event[:-1].rstrip() if event.endswith(".") else event
    if not event:
        raise AnnotationError(source, "empty grounding sentence")
    return Example(
        id=ex_id,
        question=GROUNDING_QUESTION.format(event=event),
        answer=f"{span[0]:.2f} to {span[1]:.2f}",
        problem_type="temporal grounding",
        timestamps=span,
        duration=duration,
        source=source,
        **fields,
    )


def _options(value: Any, source: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Returns (letters, texts) from a list (prefixed "A. x" or bare) or a letter -> text dict."""
    if isinstance(value, dict):
        letters = tuple(str(k).strip().upper() for k in value)
        if not all(len(k) == 1 and k.isalpha() for k in letters):
            raise AnnotationError(source, f"option keys must be letters, got {list(value)}")
        return letters, tuple(_text(v, source, "options").strip() for v in value.values())
    if not isinstance(value, list) or not value:
        raise AnnotationError(source, f"'options' must be a non-empty list or dict, got {value!r}")
    items = [_text(v, source, "options") for v in value]
    letters = tuple(chr(ord("A") + i) for i in range(len(items)))
    found = [_PREFIXED_OPTION.match(s) for s in items]
    if all(m and m.group(1).upper() == k for m, k in zip(found, letters, strict=True)):
        return letters, tuple(m.group(2).strip() for m in found)
    return letters, tuple(s.strip() for s in items)


def _mcq_answer(value: Any, letters: tuple[str, ...], texts: tuple[str, ...], src: str) -> str:
    """The option letter `value` names: a letter, "(B)", "B. text", or an option's text."""
    if not isinstance(value, str):  # an integer is ambiguous: 0- or 1-based?
        raise AnnotationError(src, f"answer must be an option letter or text, got {value!r}")
    answer = _answer_text(value)
    for pattern in (_LETTER, _PREFIXED_OPTION):
        if (m := pattern.match(answer)) and m.group(1).upper() in letters:
            return m.group(1).upper()
    for fold in (str.strip, lambda s: " ".join(s.split()).lower()):
        for letter, text in zip(letters, texts, strict=True):
            if fold(text) == fold(answer):
                return letter
    msg = f"answer {answer!r} is neither an option letter {list(letters)} nor an option text"
    raise AnnotationError(src, msg)


# ----------------------------------------------------------------------------- record readers


def read_video_r1(raw: _Raw, ctx: _Ctx) -> list[Example]:
    """Video-R1-260k / Video-R1-COT-165k record -> one Example."""
    rec = _Rec(raw, "video_r1")
    problem, solution = rec.text("problem"), rec.text("solution")
    data_type = rec.req("data_type")
    if data_type not in ("video", "image"):
        msg = f"data_type must be 'video' or 'image', got {data_type!r}"
        raise AnnotationError(rec.src, msg)
    try:
        problem_type = canonical_problem_type(rec.req("problem_type"))
    except ValueError as e:
        raise AnnotationError(rec.src, str(e), "unknown_problem_type") from None
    options = rec.opt("options") or []
    if not isinstance(options, list):
        raise AnnotationError(rec.src, f"field 'options' must be a list, got {options!r}")
    media = ctx.media(rec.src, rec.req("path"), data_type)
    cot = rec.text("process", required=False)
    if cot is not None:
        cot = (m.group(1) if (m := _THINK_TAG.match(cot)) else cot).strip()
    ex_id = rec.opt("problem_id")
    return [
        Example(
            id=str(ex_id) if ex_id is not None else ctx.default_id(raw),
            question=problem,
            answer=_answer_text(solution),
            problem_type=problem_type,
            solution=solution,
            options=tuple(_text(o, rec.src, "options") for o in options),
            video=media if data_type == "video" else None,
            image=media if data_type == "image" else None,
            chain_of_thought=cot,
            data_source=rec.text("data_source", required=False),
            source=rec.src,
        )
    ]


def read_time_r1(raw: _Raw, ctx: _Ctx) -> list[Example]:
    """Time-R1 (or TVGBench) temporal grounding record -> one Example."""
    rec = _Rec(raw, "time_r1")
    sentence = rec.text("sentence", "question")
    span = _span(rec.req("timestamp", "answer"), rec.src, "timestamp")
    duration = _number(rec.req("duration"), rec.src, "duration", positive=True)
    video = ctx.media(rec.src, rec.req("video", "path"), "video", try_extensions=True)
    ex_id = rec.text("qid", "id", required=False)
    return [
        _grounding(
            rec.src,
            ex_id if ex_id is not None else ctx.default_id(raw),
            sentence,
            span,
            duration,
            video=video,
            data_source=rec.text("dataset_name", "data_source", required=False),
            category=rec.text("qsemtype", "category", required=False),
        )
    ]


def read_charades_sta(raw: _Raw, ctx: _Ctx) -> list[Example | AnnotationError]:
    """One `vid: {duration, timestamps, sentences}` entry -> one Example per sentence."""
    rec, vid = _Rec(raw, "charades_sta"), raw.key
    duration = _number(rec.req("duration"), rec.src, "duration", positive=True)
    spans, sentences = rec.req("timestamps"), rec.req("sentences")
    if not isinstance(spans, list) or not isinstance(sentences, list):
        raise AnnotationError(rec.src, "'timestamps' and 'sentences' must be lists")
    if len(spans) != len(sentences):
        msg = f"{len(spans)} timestamps but {len(sentences)} sentences for video {vid!r}"
        raise AnnotationError(rec.src, msg)
    try:
        video = ctx.media(rec.src, vid, "video", try_extensions=True)
    except AnnotationError as e:
        return [e] * len(sentences)  # every sentence of a missing video counts as skipped
    out: list[Example | AnnotationError] = []
    for j, (span, sentence) in enumerate(zip(spans, sentences, strict=True)):
        where = f"{rec.src} (video {vid!r}, sentence {j})"
        try:
            sentence, span = _text(sentence, where, "sentences"), _span(span, where, "timestamps")
            out.append(_grounding(where, f"{vid}_{j}", sentence, span, duration, video=video))
        except AnnotationError as e:
            out.append(e)
    return out


def read_mcq(raw: _Raw, ctx: _Ctx) -> list[Example]:
    """Multiple-choice benchmark record (MVBench / Video-MME style) -> one Example."""
    rec = _Rec(raw, "mcq")
    question = rec.text("question")
    letters, texts = _options(rec.req("options", "candidates"), rec.src)
    answer = _mcq_answer(rec.req("answer"), letters, texts, rec.src)
    video, video_id, image = rec.opt("video", "video_path", "path"), rec.opt("video_id"), None
    if video is not None or video_id is not None:
        by_id = video is None
        video = ctx.media(rec.src, video_id if by_id else video, "video", try_extensions=by_id)
    if rec.opt("image") is not None:
        image = ctx.media(rec.src, rec.opt("image"), "image")
    if video is None and image is None:
        msg = "record needs a 'video' (or 'video_path', 'path', 'video_id') or 'image' field"
        raise AnnotationError(rec.src, msg, "missing_field")
    duration, duration_category = rec.opt("duration"), None
    if isinstance(duration, str) and not _NUMBER.match(duration):
        duration, duration_category = None, duration  # Video-MME's "short" / "medium" / "long"
    elif duration is not None:
        duration = _number(duration, rec.src, "duration", positive=True)
    ex_id = rec.text("id", "question_id", "qid", required=False)
    return [
        Example(
            id=ex_id if ex_id is not None else ctx.default_id(raw),
            question=question,
            answer=answer,
            problem_type="multiple choice",
            options=tuple(f"{k}. {t}" for k, t in zip(letters, texts, strict=True)),
            video=video,
            image=image,
            duration=duration,
            duration_category=duration_category,
            data_source=rec.text("data_source", required=False),
            category=rec.text("task", "task_type", "category", "sub_category", required=False),
            source=rec.src,
        )
    ]


Reader = Callable[[_Raw, _Ctx], list]
FORMATS: dict[str, Reader] = {
    "video_r1": read_video_r1,
    "time_r1": read_time_r1,
    "charades_sta": read_charades_sta,
    "mcq": read_mcq,
}


# ----------------------------------------------------------------------------- file loading


class _TrailingData(Exception):
    """A JSON object followed by more data: the file is JSONL, not JSON."""


def _json_error(path: Path, e: json.JSONDecodeError) -> AnnotationError:
    return AnnotationError(
        f"{path}:{e.lineno}:{e.colno}", f"malformed JSON: {e.msg}", "malformed_json"
    )


def _scan_json(text: str, path: Path) -> tuple[str, list[_Raw]]:
    """Splits a JSON list or object into its top-level records, each with its line number."""
    decoder = json.JSONDecoder()
    line, counted = 1, 0

    def where(pos: int) -> str:  # called with increasing positions: count newlines once
        nonlocal line, counted
        line, counted = line + text.count("\n", counted, pos), pos
        return f"{path}:{line}"

    def fail(pos: int, msg: str):
        raise json.JSONDecodeError(msg, text, pos)

    pos = _WS.match(text, 0).end()
    opening = text[pos : pos + 1]
    if opening not in ("[", "{"):
        value = json.loads(text)  # raises with the right position if malformed
        raise AnnotationError(
            str(path), f"top level must be a JSON list or object, got {type(value).__name__}"
        )
    closing = "]" if opening == "[" else "}"
    records: list[_Raw] = []
    pos = _WS.match(text, pos + 1).end()
    if text.startswith(closing, pos):
        pos += 1
    else:
        while True:
            key = None
            if opening == "{":
                if not text.startswith('"', pos):
                    fail(pos, "Expecting property name enclosed in double quotes")
                key, pos = decoder.raw_decode(text, pos)
                pos = _WS.match(text, pos).end()
                if not text.startswith(":", pos):
                    fail(pos, "Expecting ':' delimiter")
                pos = _WS.match(text, pos + 1).end()
            start = pos
            value, pos = decoder.raw_decode(text, pos)
            records.append(_Raw(where(start), len(records), value, key))
            pos = _WS.match(text, pos).end()
            if text.startswith(",", pos):
                pos = _WS.match(text, pos + 1).end()
            elif text.startswith(closing, pos):
                pos += 1
                break
            else:
                fail(pos, f"Expecting ',' or '{closing}'")
    if _WS.match(text, pos).end() != len(text):
        if opening == "{":
            raise _TrailingData()
        fail(_WS.match(text, pos).end(), "Extra data")
    return ("dict" if opening == "{" else "list"), records


def _scan_jsonl(text: str, path: Path) -> list[_Raw]:
    records = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        src = f"{path}:{lineno}"
        try:
            records.append(_Raw(src, len(records), json.loads(line)))
        except json.JSONDecodeError as e:
            msg = f"malformed JSON line: {e.msg} (column {e.colno})"
            err = AnnotationError(src, msg, "malformed_json")
            records.append(_Raw(src, len(records), error=err))
    return records


def _load(path: Path) -> tuple[str, list[_Raw]]:
    """Returns ("list" | "dict" | "lines", records); malformed JSON files raise here."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise AnnotationError(str(path), f"not UTF-8 text: {e}", "malformed_json") from None
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return "lines", _scan_jsonl(text, path)
    try:
        kind, records = _scan_json(text, path)
    except _TrailingData:
        return "lines", _scan_jsonl(text, path)
    except json.JSONDecodeError as e:
        raise _json_error(path, e) from None
    if kind == "dict" and not all(isinstance(r.value, dict) for r in records):
        return "lines", _scan_jsonl(text, path)  # one JSONL record, not a {key: record} object
    return kind, records


def detect_format(kind: str, records: list[_Raw], path: Path | str = "") -> str:
    """Names the format of already-loaded records from their keys (see module docstring)."""
    first = next((r.value for r in records if isinstance(r.value, dict)), {})
    keys = set(first)
    if kind == "dict":
        if "sentences" in keys or "timestamps" in keys:
            return "charades_sta"
    elif {"problem", "solution"} <= keys or {"problem", "problem_type", "path"} <= keys:
        return "video_r1"
    elif {"sentence", "timestamp"} & keys or "grounding" in str(first.get("question_type")):
        return "time_r1"
    elif "question" in keys and {"options", "candidates"} & keys:
        return "mcq"
    what = "entries of the JSON object" if kind == "dict" else "first record"
    msg = f"cannot detect the format from the {what}: keys {sorted(keys)}; pass format= one of"
    raise AnnotationError(str(path), f"{msg} {sorted(FORMATS)}", "unknown_format")


class ExampleReader(collections.abc.Sequence):
    """The examples of one annotation file: a random-access sequence, see `read_examples`.

    The whole file is parsed and validated on construction, so a bad file fails before training
    starts, and `len()` / indexing work (grain's MapDataset takes it as a source).

    Attributes:
      path: the annotation file.
      format: the format it was read as (a key of FORMATS).
      stats: ReadStats: total, kept, and every skipped example with its reason.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        format: str | None = None,
        media_root: str | os.PathLike | None = None,
        *,
        on_error: str = "raise",
        max_skip_fraction: float = 0.05,
        check_media: bool = True,
    ):
        self.path = Path(path).expanduser()
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if format is not None and format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; expected one of {sorted(FORMATS)}")
        if not 0.0 <= max_skip_fraction <= 1.0:
            raise ValueError(f"max_skip_fraction must be in [0, 1], got {max_skip_fraction}")
        if not self.path.is_file():
            what = "is not a file" if self.path.exists() else "does not exist"
            raise FileNotFoundError(f"annotation file {self.path} {what}")
        root = Path(media_root).expanduser() if media_root is not None else self.path.parent
        ctx = _Ctx(self.path, root.resolve(), check_media)

        kind, records = _load(self.path)
        if not records:
            raise AnnotationError(str(self.path), "no records in the file", "empty")
        self.format = format or detect_format(kind, records, self.path)
        if (kind == "dict") != (self.format == "charades_sta"):
            shape = "a JSON object" if kind == "dict" else "a list of records"
            raise AnnotationError(
                str(self.path), f"format {self.format!r} does not read {shape}", "unknown_format"
            )
        self.stats = ReadStats(path=str(self.path), format=self.format)
        self._examples = list(self._parse(records, ctx, on_error))
        self.stats.check(max_skip_fraction)
        if self.stats.skipped:
            stats = self.stats
            msg = "%s: skipped %d of %d examples %s; first: %s"
            kinds = dict(stats.by_kind)
            _log.warning(msg, self.path, stats.num_skipped, stats.total, kinds, stats.skipped[0][1])

    def _parse(self, records: list[_Raw], ctx: _Ctx, on_error: str) -> Iterator[Example]:
        reader = FORMATS[self.format]
        for raw in records:
            try:
                if raw.error is not None:
                    raise raw.error
                results = reader(raw, ctx)
            except AnnotationError as e:
                results = [e]
            for result in results:
                self.stats.total += 1
                if isinstance(result, Example):
                    result = _scorable(result)  # an Example, or why no reward could score it
                if isinstance(result, Example):
                    self.stats.kept += 1
                    yield result
                elif on_error == "raise":
                    raise result
                else:
                    self.stats.add_skip(result)

    def __len__(self) -> int:
        return len(self._examples)

    def __getitem__(self, index):
        return self._examples[index]

    def __repr__(self) -> str:
        return f"ExampleReader({str(self.path)!r}, format={self.format!r}, len={len(self)})"


def read_examples(
    path: str | os.PathLike,
    format: str | None = None,
    media_root: str | os.PathLike | None = None,
    *,
    on_error: str = "raise",
    max_skip_fraction: float = 0.05,
    check_media: bool = True,
) -> ExampleReader:
    """Reads an annotation file in any supported format into `Example` records.

    Args:
      path: the annotation file (.json or .jsonl; JSONL is also recognised by content).
      format: a key of FORMATS, or None to detect it from the content.
      media_root: directory relative video/image paths are resolved against (default: the
        annotation file's directory). Video-R1's `./X/...` paths are relative to the folder that
        holds Video-R1-260k.json; Time-R1's `./dataset/...` paths to the Time-R1 repository root.
      on_error: "raise" (default): the first bad example raises AnnotationError naming file:line.
        "skip": bad examples are skipped and recorded in `.stats`.
      max_skip_fraction: with on_error="skip", reading raises AnnotationError once more than
        this fraction of the file's examples was skipped.
      check_media: check that every referenced video/image file exists (a missing one is a bad
        example). False skips the filesystem checks (e.g. media on another host).

    Returns:
      An ExampleReader: iterate it (or index it) for Examples; `.stats` has the counts.

    Raises:
      FileNotFoundError: `path` does not exist.
      AnnotationError: malformed JSON, an undetectable format, a bad example (on_error="raise"),
        or too many skipped examples.
    """
    return ExampleReader(
        path,
        format,
        media_root,
        on_error=on_error,
        max_skip_fraction=max_skip_fraction,
        check_media=check_media,
    )
