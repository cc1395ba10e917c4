"""Annotation formats: each read from fixtures in the published shapes, and every bad input."""

import json
import logging

import pytest

from vlmm_jax.data.formats import FORMATS, read_examples
from vlmm_jax.data.records import (
    GROUNDING_QUESTION,
    PROBLEM_TYPES,
    AnnotationError,
    Example,
)

# Records in the shapes their authors publish (field sets as in Video-R1-260k.json /
# Video-R1-COT-165k.json, Time-R1's train_2k5.json and tvgbench.json, the TimeZero Charades-STA
# json, MVBench task files and Video-MME rows).
VIDEO_R1 = [
    {
        "problem_id": 2,
        "problem": "What appears on the screen in Russian during the missile's ascent?",
        "data_type": "video",
        "problem_type": "multiple choice",
        "options": ["A. A subscription notification", "B. A command", "C. A warning", "D. News"],
        "solution": "<answer>A</answer>",
        "path": "./LLaVA-Video-178K/videos/ytb_7nRmsEw7nsE.mp4",
        "data_source": "LLaVA-Video-178K/30_60_s_youtube_v0_1",
    },
    {
        "problem_id": 7,
        "problem": "What is the value of x in the figure?",
        "data_type": "image",
        "problem_type": "numerical",
        "options": [],
        "process": "<think>Let me think. The angles sum to 180, so x = 3.5.</think>",
        "solution": "<answer>3.5</answer>",
        "path": "./Math/images/geo_17.png",
        "data_source": "Multimath-300k",
    },
]
TIME_R1 = [
    {
        "video": "./dataset/timer1/videos/timerft_data/QtWT8rxUuNk.mp4",
        "duration": 93.2932,
        "timestamp": [1.0, 4.0],
        "sentence": "A purple hanger on a purple background demonstrates how to hang a sweater.",
        "qid": "my|cosmo|QtWT8rxUuNk|A purple hanger",
        "video_start": None,
        "video_end": None,
        "difficulty": 50.0,
        "pred": [0.0, 3.0],
    },
    {
        "video": "./dataset/timer1/videos/timerft_data/LWvcLI0lcFQ.mp4",
        "duration": 153.3,
        "timestamp": [0.0, 9.0],
        "sentence": "A man in military uniform walks down a hallway.",
        "qid": "my|yt-temporal|LWvcLI0lcFQ|A man",
    },
]
TVGBENCH = {
    "path": "./dataset/timer1/videos/tvgbench_data/KWZSA.mp4",
    "question": "a person was sitting at a table.",
    "answer": "13.4-28.1",
    "start": None,
    "end": None,
    "duration": 30.12,
    "question_type": "video temporal grounding",
    "dataset_name": "charades",
    "qsemtype": "Human Pose",
}
CHARADES = {
    "3MSZA": {
        "duration": 30.96,
        "timestamps": [[24.3, 30.4], [0.0, 6.1]],
        "sentences": ["person turn a light on.", "person opening a door."],
    },
    "AO8RW": {"duration": 33.71, "timestamps": [[0.0, 6.9]], "sentences": ["a person is ..."]},
}
MVBENCH = [  # MVBench task json: `candidates` and the answer as option text
    {
        "video": "166583.webm",
        "question": "What is the action performed by the person in the video?",
        "candidates": ["Not sure", "Scattering something down", "Piling something up"],
        "answer": "Piling something up",
    }
]
VIDEO_MME = [  # Video-MME rows: lettered options, letter answer, duration bucket, task type
    {
        "video_id": "001",
        "videoID": "fFjv93ACGo8",
        "duration": "short",
        "domain": "Knowledge",
        "sub_category": "Humanity & History",
        "question_id": "001-1",
        "task_type": "Counting Problem",
        "question": "When demonstrating the Germany modern Christmas tree, which color is absent?",
        "options": ["A. Gold.", "B. White.", "C. Red.", "D. Green."],
        "answer": "C",
    }
]


def _touch(root, *rels):
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x00")


def _write_json(path, data):
    path.write_text(json.dumps(data, indent=4))
    return path


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def video_r1(tmp_path):
    _touch(tmp_path, *(r["path"] for r in VIDEO_R1))
    return _write_json(tmp_path / "Video-R1-COT-165k.json", VIDEO_R1)


def test_video_r1(video_r1, tmp_path):
    reader = read_examples(video_r1)
    assert reader.format == "video_r1" and len(reader) == 2
    mc, num = reader
    assert mc.id == "2" and mc.problem_type == "multiple choice"
    assert mc.answer == "A" and mc.solution == "<answer>A</answer>"
    assert mc.options == tuple(VIDEO_R1[0]["options"])
    assert mc.video == str(tmp_path / "LLaVA-Video-178K/videos/ytb_7nRmsEw7nsE.mp4")
    assert mc.image is None and mc.chain_of_thought is None
    assert mc.data_source == "LLaVA-Video-178K/30_60_s_youtube_v0_1"
    # The record's line in the pretty-printed file (the second line holds its opening brace).
    assert mc.source == f"{video_r1}:2"
    assert num.image == str(tmp_path / "Math/images/geo_17.png") and num.video is None
    assert num.answer == "3.5"
    assert num.chain_of_thought == "Let me think. The angles sum to 180, so x = 3.5."
    assert reader.stats.total == 2 and reader.stats.kept == 2 and not reader.stats.skipped


def test_video_r1_reward_example_and_prompt(video_r1):
    mc = read_examples(video_r1)[0]
    reward = mc.to_reward_example()
    assert reward["problem_type"] == "multiple choice"
    assert reward["solution"] == "<answer>A</answer>"
    assert reward["options"] == VIDEO_R1[0]["options"]
    prompt = mc.prompt()
    assert prompt.startswith(VIDEO_R1[0]["problem"] + "\nOptions:\nA. A subscription")
    assert "<think>" in prompt and "<answer>" in prompt
    assert "<think>" not in mc.prompt(think=False)


def test_media_root_override(tmp_path):
    ann_dir, media = tmp_path / "ann", tmp_path / "media"
    ann_dir.mkdir()
    _touch(media, *(r["path"] for r in VIDEO_R1))
    path = _write_json(ann_dir / "Video-R1-260k.json", VIDEO_R1)
    with pytest.raises(AnnotationError, match="not found"):
        read_examples(path)
    reader = read_examples(path, media_root=media)
    assert reader[0].video.startswith(str(media.resolve()))


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_time_r1(tmp_path, suffix):
    _touch(tmp_path, *(r["video"] for r in TIME_R1))
    writer = _write_json if suffix == ".json" else _write_jsonl
    path = writer(tmp_path / f"train_2k5{suffix}", TIME_R1)
    reader = read_examples(path)
    assert reader.format == "time_r1" and len(reader) == 2
    ex = reader[0]
    assert ex.problem_type == "temporal grounding"
    assert ex.timestamps == (1.0, 4.0) and ex.duration == 93.2932
    assert ex.answer == "1.00 to 4.00" and ex.solution == "<answer>1.00 to 4.00</answer>"
    event = "A purple hanger on a purple background demonstrates how to hang a sweater"
    assert ex.question == GROUNDING_QUESTION.format(event=event)
    assert ex.id == TIME_R1[0]["qid"]
    assert ex.video == str(tmp_path / "dataset/timer1/videos/timerft_data/QtWT8rxUuNk.mp4")
    reward = ex.to_reward_example()
    assert reward["timestamp"] == [1.0, 4.0] and reward["solution"] == [1.0, 4.0]
    assert reward["duration"] == 93.2932 and reward["problem_type"] == "temporal grounding"
    if suffix == ".jsonl":
        assert reader[1].source == f"{path}:2"


def test_tvgbench_shape_reads_as_time_r1(tmp_path):
    _touch(tmp_path, TVGBENCH["path"])
    reader = read_examples(_write_json(tmp_path / "tvgbench.json", [TVGBENCH]))
    assert reader.format == "time_r1"
    ex = reader[0]
    assert ex.timestamps == (13.4, 28.1) and ex.category == "Human Pose"
    assert ex.data_source == "charades"


def test_jsonl_detected_by_content(tmp_path):
    _touch(tmp_path, *(r["video"] for r in TIME_R1))
    path = _write_jsonl(tmp_path / "annotations.json", TIME_R1)  # JSONL under a .json name
    assert len(read_examples(path)) == 2
    one = _write_jsonl(tmp_path / "one.json", TIME_R1[:1])  # a single JSONL record
    assert read_examples(one)[0].timestamps == (1.0, 4.0)
    bom = tmp_path / "bom.json"
    bom.write_text("\ufeff" + json.dumps(TIME_R1), encoding="utf-8")
    assert len(read_examples(bom)) == 2


def test_charades_sta(tmp_path):
    _touch(tmp_path / "videos", "3MSZA.mp4", "AO8RW.mkv")
    path = _write_json(tmp_path / "charades_test.json", CHARADES)
    reader = read_examples(path, media_root=tmp_path / "videos")
    assert reader.format == "charades_sta" and len(reader) == 3
    first, second, third = reader
    assert first.id == "3MSZA_0" and second.id == "3MSZA_1" and third.id == "AO8RW_0"
    assert first.question == GROUNDING_QUESTION.format(event="person turn a light on")
    assert first.timestamps == (24.3, 30.4) and first.duration == 30.96
    assert first.video.endswith("3MSZA.mp4") and third.video.endswith("AO8RW.mkv")
    assert "3MSZA" in first.source and first.source.startswith(f"{path}:2")


def test_mcq_mvbench_and_video_mme(tmp_path):
    _touch(tmp_path, "166583.webm", "fFjv93ACGo8.mp4", "001.mp4")
    mvbench = read_examples(_write_json(tmp_path / "action_sequence.json", MVBENCH))
    assert mvbench.format == "mcq"
    ex = mvbench[0]
    assert ex.options == ("A. Not sure", "B. Scattering something down", "C. Piling something up")
    assert ex.answer == "C" and ex.solution == "<answer>C</answer>"
    assert ex.video == str(tmp_path / "166583.webm")
    mme = read_examples(_write_jsonl(tmp_path / "videomme.jsonl", VIDEO_MME))[0]
    assert mme.options == ("A. Gold.", "B. White.", "C. Red.", "D. Green.")
    assert mme.answer == "C" and mme.id == "001-1"
    assert mme.duration is None and mme.duration_category == "short"
    assert mme.category == "Counting Problem"
    assert mme.video == str(tmp_path / "001.mp4")  # video_id resolved with an extension


@pytest.mark.parametrize(
    "options, answer, letter",
    [
        ({"A": "red", "B": "blue"}, "B", "B"),
        (["red", "blue", "green"], "green", "C"),
        (["red", "blue"], "(B)", "B"),
        (["(A) red", "(B) blue"], "A", "A"),
        (["red", "blue"], "<answer>b</answer>", "B"),
        (["red", "blue"], "B. blue", "B"),
    ],
)
def test_mcq_option_and_answer_shapes(tmp_path, options, answer, letter):
    rec = {"video": "v.mp4", "question": "Which colour?", "options": options, "answer": answer}
    ex = read_examples(_write_json(tmp_path / "q.json", [rec]), check_media=False)[0]
    assert ex.answer == letter
    assert all(o[0] in "ABC" and o[1:3] == ". " for o in ex.options)
    assert ex.options[0].endswith("red")


def test_explicit_format_and_registry(video_r1):
    assert set(FORMATS) == {"video_r1", "time_r1", "charades_sta", "mcq"}
    assert len(read_examples(video_r1, format="video_r1")) == 2
    with pytest.raises(ValueError, match="unknown format"):
        read_examples(video_r1, format="nope")
    with pytest.raises(AnnotationError, match="missing required field 'sentence'"):
        read_examples(video_r1, format="time_r1")


def test_example_validates_problem_type():
    with pytest.raises(ValueError, match="unknown problem_type"):
        Example(id="x", question="q", answer="a", problem_type="video eval")
    assert len(PROBLEM_TYPES) == 7


# ----------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_examples(tmp_path / "nope.json")


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"problem": "a"},\n  {"problem": "b",,}\n]\n')
    with pytest.raises(AnnotationError, match=r"bad\.json:3:\d+: malformed JSON") as e:
        read_examples(path)
    assert e.value.kind == "malformed_json"
    with pytest.raises(AnnotationError, match="malformed JSON"):  # not skippable: file unreadable
        read_examples(path, on_error="skip")


def test_malformed_jsonl_line(tmp_path):
    path = tmp_path / "t.jsonl"
    lines = [json.dumps(TIME_R1[0]), "{not json", json.dumps(TIME_R1[1])]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=r"t\.jsonl:2: malformed JSON line"):
        read_examples(path, check_media=False)
    reader = read_examples(path, check_media=False, on_error="skip", max_skip_fraction=0.5)
    assert len(reader) == 2 and reader.stats.by_kind == {"malformed_json": 1}
    assert reader.stats.skipped[0][0] == f"{path}:2"


def test_missing_required_field_names_file_line_and_field(tmp_path):
    rows = [dict(VIDEO_R1[0]), dict(VIDEO_R1[0])]
    del rows[1]["solution"]
    path = _write_json(tmp_path / "v.json", rows)
    line = [i for i, s in enumerate(path.read_text().splitlines(), 1) if s == "    {"][1]
    with pytest.raises(AnnotationError, match=rf"v\.json:{line}: .*missing required field 'so"):
        read_examples(path, check_media=False)


def test_unknown_problem_type(tmp_path):
    path = _write_json(tmp_path / "v.json", [dict(VIDEO_R1[0], problem_type="video eval")])
    message = r"v\.json:2: unknown problem_type 'video eval'"
    with pytest.raises(AnnotationError, match=message) as e:
        read_examples(path, check_media=False)
    assert e.value.kind == "unknown_problem_type"


UNSCORABLE = [  # Video-R1 records that parse but that no reward could ever score
    (dict(VIDEO_R1[1], solution="<answer>abc</answer>"), r"'solution' has no number: '<answer>abc"),
    (dict(VIDEO_R1[1], problem_type="regression", solution="<answer>nan</answer>"), "no number"),
    (
        dict(VIDEO_R1[1], problem_type="temporal grounding", solution="<answer>20 to 10</answer>"),
        r"'solution' must be finite with start <= end, got '<answer>20 to 10</answer>'",
    ),
    (
        dict(VIDEO_R1[1], problem_type="temporal grounding", solution="<answer>later</answer>"),
        "cannot read an interval",
    ),
    (
        dict(
            VIDEO_R1[1], problem_type="spatial grounding", solution="<answer>on the left</answer>"
        ),
        "cannot read a box",
    ),
]


@pytest.mark.parametrize("record, message", UNSCORABLE)
def test_unscorable_records_name_file_and_line(tmp_path, record, message):
    path = _write_json(tmp_path / "v.json", [VIDEO_R1[0], record])
    line = [i for i, s in enumerate(path.read_text().splitlines(), 1) if s == "    {"][1]
    with pytest.raises(AnnotationError, match=rf"v\.json:{line}: cannot score .*{message}") as e:
        read_examples(path, check_media=False)
    assert e.value.kind == "bad_value" and e.value.source == f"{path}:{line}"


def test_unscorable_records_are_skipped_and_counted(tmp_path):
    rows = [VIDEO_R1[0]] * 8 + [record for record, _ in UNSCORABLE[:2]]
    rows.append(dict(VIDEO_R1[1], solution="4"))  # tagless but numeric: kept (lenient reads it)
    path = _write_jsonl(tmp_path / "v.jsonl", rows)
    reader = read_examples(path, check_media=False, on_error="skip", max_skip_fraction=0.2)
    assert (reader.stats.total, reader.stats.kept, reader.stats.num_skipped) == (11, 9, 2)
    assert reader.stats.by_kind == {"bad_value": 2}
    assert [src for src, _ in reader.stats.skipped] == [f"{path}:9", f"{path}:10"]
    assert reader[8].solution == "4"


def test_missing_video(tmp_path):
    path = _write_json(tmp_path / "v.json", VIDEO_R1[:1])
    with pytest.raises(AnnotationError, match=r"v\.json:2: video file not found: .*ytb_7nR") as e:
        read_examples(path)
    assert e.value.kind == "missing_media"
    assert read_examples(path, check_media=False)[0].video.endswith("ytb_7nRmsEw7nsE.mp4")


@pytest.mark.parametrize(
    "record, message",
    [
        (dict(TIME_R1[0], timestamp=[5.0, 1.0]), "start > end"),
        (dict(TIME_R1[0], timestamp="soon"), r"\[start, end\]"),
        (dict(TIME_R1[0], duration=-3), "positive number"),
        (dict(TIME_R1[0], sentence=["a"]), "must be a string"),
    ],
)
def test_bad_values(tmp_path, record, message):
    path = _write_json(tmp_path / "t.json", [record])
    with pytest.raises(AnnotationError, match=message):
        read_examples(path, check_media=False)


def test_mcq_answer_not_in_options(tmp_path):
    rec = {"video": "v.mp4", "question": "q", "options": ["a", "b"], "answer": "c"}
    with pytest.raises(AnnotationError, match="neither an option letter"):
        read_examples(_write_json(tmp_path / "q.json", [rec]), check_media=False)


def test_undetectable_format_and_empty_file(tmp_path):
    path = _write_json(tmp_path / "x.json", [{"foo": 1}])
    with pytest.raises(AnnotationError, match=r"cannot detect.*\['foo'\]"):
        read_examples(path)
    with pytest.raises(AnnotationError, match="no records"):
        read_examples(_write_json(tmp_path / "e.json", []))


def test_skip_counts_every_bad_example_and_limits_fraction(tmp_path, caplog):
    _touch(tmp_path, *(r["video"] for r in TIME_R1))
    bad = [
        dict(TIME_R1[0], video="./missing.mp4"),
        {k: v for k, v in TIME_R1[0].items() if k != "timestamp"},
    ]
    rows = TIME_R1 * 4 + bad  # 8 good, 2 bad
    path = _write_jsonl(tmp_path / "t.jsonl", rows)
    with pytest.raises(AnnotationError, match="missing.mp4"):
        read_examples(path)  # on_error="raise" by default
    with caplog.at_level(logging.WARNING):
        reader = read_examples(path, on_error="skip", max_skip_fraction=0.2)
    assert len(reader) == 8 and list(reader) == list(reader[:])
    stats = reader.stats
    assert (stats.total, stats.kept, stats.num_skipped) == (10, 8, 2)
    assert stats.by_kind == {"missing_media": 1, "missing_field": 1}
    assert [src for src, _ in stats.skipped] == [f"{path}:9", f"{path}:10"]
    assert "skipped 2 of 10" in caplog.text
    with pytest.raises(AnnotationError, match=r"skipped 2 of 10 examples .*max_skip_fraction=0\.1"):
        read_examples(path, on_error="skip", max_skip_fraction=0.1)


def test_charades_missing_video_counts_each_sentence(tmp_path):
    _touch(tmp_path, "AO8RW.mp4")
    path = _write_json(tmp_path / "c.json", CHARADES)
    reader = read_examples(path, on_error="skip", max_skip_fraction=0.7)
    assert len(reader) == 1 and reader.stats.num_skipped == 2 and reader.stats.total == 3
    with pytest.raises(AnnotationError, match="3MSZA"):
        read_examples(path)


def test_bad_arguments(video_r1):
    with pytest.raises(ValueError, match="on_error"):
        read_examples(video_r1, on_error="ignore")
    with pytest.raises(ValueError, match="max_skip_fraction"):
        read_examples(video_r1, max_skip_fraction=1.5)
