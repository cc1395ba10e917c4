"""The Qwen chat format (against transformers' rendering of Qwen2.5-VL's template), the loss mask,
visual token expansion, positions and samples built from real videos written here with PyAV."""

from __future__ import annotations

import av
import jax
import numpy as np
import pytest

from vlmm_jax.data.chat import (
    VisionOptions,
    build_sample,
    load_visual,
    num_visual_tokens,
    render_chat,
    sample_positions,
    sft_response,
    tokenize_chat,
)
from vlmm_jax.data.records import AnnotationError, Example
from vlmm_jax.data.tokenizer import train_tokenizer
from vlmm_jax.models import config as model_config
from vlmm_jax.models.positions import rope_index

_rope_index = jax.jit(rope_index, static_argnums=1)  # one compile, not one per eager op

# Small videos: frames of at most 56x84 pixels stay at that size (grid 4x6 patches per frame).
VISION = VisionOptions(nframes=4, min_pixels=28 * 28, max_pixels=56 * 84, total_pixels=10**9)
CORPUS = ["How many red circles appear?", "The square moves left.", "I count three circles."] * 10


def write_video(path, n=8, size=(56, 84), rate=4, seed=0) -> str:
    """A small real mp4 (random colours per frame)."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=rate)
        s.height, s.width = size
        s.pix_fmt = "yuv420p"
        for _ in range(n):
            img = np.broadcast_to(rng.integers(0, 255, 3, dtype=np.uint8), (*size, 3)).copy()
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return str(path)


def make_example(i: int, video: str | None = None, image: str | None = None, **kw) -> Example:
    fields = dict(
        id=f"ex{i}",
        question=f"How many red circles appear in clip {i}?",
        answer=str(i % 5),
        problem_type="numerical",
        chain_of_thought=f"I count {i % 5} circles.",
        video=video,
        image=image,
        source=f"annotations.json:{i + 1}",
    )
    fields.update(kw)
    return Example(**fields)


def tiny_setup(tmp_path_factory):
    tok = train_tokenizer(CORPUS, 400, tmp_path_factory.mktemp("tok"))
    cfg = model_config.tiny(512).replace(**tok.model_token_ids())
    return tok, cfg


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_setup(tmp_path_factory)


CONVERSATIONS = [
    [{"role": "user", "content": "Hello"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Count."}]},
        {"role": "assistant", "content": "<think>one</think><answer>1</answer>"},
    ],
    [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": [{"type": "video"}, {"type": "image"}, {"text": "And?"}]},
    ],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("gen", [False, True])
@pytest.mark.parametrize("vision_id", [False, True])
def test_render_matches_transformers_chat_template(setup, messages, gen, vision_id):
    transformers = pytest.importorskip("transformers")
    tok, _ = setup
    hf = transformers.AutoTokenizer.from_pretrained(tok.path.rsplit("/", 1)[0])
    want = hf.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=gen, add_vision_id=vision_id
    )
    assert render_chat(messages, add_generation_prompt=gen, add_vision_id=vision_id) == want


def test_render_hand_written():
    messages = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Q?"}]},
        {"role": "assistant", "content": "A."},
    ]
    assert render_chat(messages, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Q?<|im_end|>\n"
        "<|im_start|>assistant\nA.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_loss_mask_covers_assistant_content_and_im_end(setup):
    tok, _ = setup
    messages = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Q1?"}]},
        {"role": "assistant", "content": "First answer."},
        {"role": "user", "content": "Q2?"},
        {"role": "assistant", "content": "Second one."},
    ]
    ids, mask = tokenize_chat(messages, tok, video_tokens=[6])
    text = tok.decode(ids[mask], skip_special_tokens=False)
    assert text == "First answer.<|im_end|>Second one.<|im_end|>"
    assert (ids == tok.video_pad_id).sum() == 6
    run = np.flatnonzero(ids == tok.video_pad_id)
    assert np.all(np.diff(run) == 1)
    assert ids[run[0] - 1] == tok.vision_start_id and ids[run[-1] + 1] == tok.vision_end_id
    # Without expansion the ids are exactly the tokenization of the rendered text.
    ids1, _ = tokenize_chat(messages, tok, video_tokens=[1])
    assert list(ids1) == list(tok.encode(render_chat(messages)))
    with pytest.raises(ValueError, match="1 video placeholders but 2 video token counts"):
        tokenize_chat(messages, tok, video_tokens=[6, 6])


def test_sft_sample_from_a_real_video(setup, tmp_path):
    tok, cfg = setup
    ex = make_example(3, video=write_video(tmp_path / "v.mp4"))
    s = build_sample(ex, tok, cfg, options=VISION)
    grid = s["video_grid_thw"]
    assert grid.tolist() == [[2, 4, 6]] and s["pixel_values_videos"].shape == (48, 1176)
    n_vis = num_visual_tokens(grid[0], 2)
    assert n_vis == 12 and (s["input_ids"] == tok.video_pad_id).sum() == n_vis
    # 8 frames at 4 fps sampled to 4 frames: sample_fps = 2, seconds per grid = 2 / 2.
    np.testing.assert_allclose(s["second_per_grid_ts"], [1.0])
    target = tok.decode(s["input_ids"][s["loss_mask"]], skip_special_tokens=False)
    assert target == sft_response(ex) + "<|im_end|>"
    assert target == "<think>I count 3 circles.</think><answer>3</answer><|im_end|>"
    assert "First think step by step" in tok.decode(s["input_ids"])
    want, _ = _rope_index(
        s["input_ids"][None],
        cfg,
        video_grid_thw=grid,
        second_per_grid_ts=s["second_per_grid_ts"],
    )
    np.testing.assert_array_equal(s["position_ids"], np.asarray(want)[:, 0])
    assert s["num_tokens"] == len(s["input_ids"]) and s["num_patches"] == 48


def test_rl_sample_ends_with_the_generation_prompt(setup, tmp_path):
    tok, cfg = setup
    ex = make_example(1, video=write_video(tmp_path / "v.mp4"), chain_of_thought=None)
    s = build_sample(ex, tok, cfg, mode="rl", options=VISION)
    text = tok.decode(s["input_ids"], skip_special_tokens=False)
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n") and not s["loss_mask"].any()
    assert "First think step by step" in text  # RL prompts always ask for reasoning
    sft = build_sample(ex, tok, cfg, options=VISION)  # no chain of thought: answer only
    target = tok.decode(sft["input_ids"][sft["loss_mask"]], skip_special_tokens=False)
    assert target == "<answer>1</answer><|im_end|>"


def test_image_and_text_only_samples(setup, tmp_path):
    from PIL import Image

    tok, cfg = setup
    path = tmp_path / "im.png"
    Image.fromarray(np.full((60, 90, 3), 200, np.uint8)).save(path)
    opts = VisionOptions(image_min_pixels=28 * 28, image_max_pixels=56 * 84)
    s = build_sample(make_example(0, image=str(path)), tok, cfg, options=opts)
    assert s["image_grid_thw"].tolist() == [[1, 4, 6]]
    assert (s["input_ids"] == tok.image_pad_id).sum() == 6
    t = build_sample(make_example(0), tok, cfg)
    assert "pixel_values" not in t and t["num_patches"] == 0
    np.testing.assert_array_equal(t["position_ids"], np.tile(np.arange(t["num_tokens"]), (3, 1)))


def test_sample_positions_pad_and_slice(setup):
    _, cfg = setup
    ids = np.array([1, 2, cfg.video_token_id, cfg.video_token_id, 3], np.int32)
    pos = sample_positions(ids, cfg, video_grid_thw=np.array([[2, 2, 4]]), length_multiple=8)
    want, _ = _rope_index(ids[None], cfg, video_grid_thw=np.array([[2, 2, 4]]))
    np.testing.assert_array_equal(pos, np.asarray(want)[:, 0])


def test_missing_and_corrupt_videos_name_file_and_source(setup, tmp_path):
    tok, cfg = setup
    ex = make_example(7, video=str(tmp_path / "gone.mp4"))
    with pytest.raises(AnnotationError, match=r"annotations.json:8: cannot read media .*gone.mp4"):
        build_sample(ex, tok, cfg, options=VISION)
    try:
        load_visual(ex)
    except AnnotationError as e:
        assert e.kind == "missing_media" and e.source == "annotations.json:8"
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 255, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(AnnotationError, match=r"bad.mp4") as e:
        load_visual(make_example(2, video=str(bad)))
    assert e.value.kind == "bad_media" and "annotations.json:3" in str(e.value)


def test_tokenizer_config_mismatch_is_reported(setup):
    tok, _ = setup
    with pytest.raises(ValueError, match="tokenizer.model_token_ids"):
        build_sample(make_example(0), tok, model_config.tiny(512))
    with pytest.raises(ValueError, match="mode must be one of"):
        build_sample(make_example(0), tok, setup[1], mode="dpo")
