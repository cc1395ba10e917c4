"""Qwen3-VL samples: the chat template against transformers' rendering of the published template,
and a sample built from a real video against transformers' own Qwen3-VL processor (frame sampling,
uint8 resize, pixels, grid, the timestamped prompt) on the same decoded frames."""

from __future__ import annotations

import dataclasses
import hashlib

import av
import numpy as np
import pytest

from tests.data.test_chat import CONVERSATIONS, CORPUS, make_example, write_video
from tests.data.test_qwen3_vl_processing import (  # noqa: F401
    CHECKPOINT_SIZE,
    _hf_processor,
    hf_image_processor,
    hf_video,
    torchvision_shim,
)
from vlmm_jax.data import qwen3_vl_processing as q3
from vlmm_jax.data.chat import (
    VIDEO_PLACEHOLDER,
    build_sample,
    example_messages,
    load_visual,
    render_chat,
    sft_response,
    tokenize_chat,
)
from vlmm_jax.data.processors import VisionOptions, frames_visual, save_processor_configs
from vlmm_jax.data.tokenizer import chat_template, train_tokenizer
from vlmm_jax.models import config as model_config

transformers = pytest.importorskip("transformers")

# Qwen3-VL-8B-Instruct's `chat_template` (5292 bytes), as its tokenizer_config.json ships it.
QWEN3_VL_TEMPLATE_SHA256 = "3636d0f0bd6bef02654cdffdc447b79cb2cef8ab02cc75267345946291a489e4"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tok = train_tokenizer(CORPUS, 400, tmp_path_factory.mktemp("tok"), model_type="qwen3_vl")
    cfg = model_config.tiny_qwen3(512).replace(**tok.model_token_ids())
    hf = transformers.AutoTokenizer.from_pretrained(tok.path.rsplit("/", 1)[0])
    return tok, cfg, hf


def test_the_template_is_the_published_one(setup):
    text = chat_template("qwen3_vl")
    assert hashlib.sha256(text.encode()).hexdigest() == QWEN3_VL_TEMPLATE_SHA256
    assert setup[2].chat_template == text  # what an export's tokenizer_config.json carries


SYSTEM_PARTS = [
    {"role": "system", "content": [{"type": "text", "text": "Be "}, {"text": "brief."}]},
    {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Count."}]},
    {"role": "assistant", "content": [{"type": "text", "text": "<answer>1</answer>"}]},
]


@pytest.mark.parametrize("messages", [*CONVERSATIONS, SYSTEM_PARTS])
@pytest.mark.parametrize("gen", [False, True])
@pytest.mark.parametrize("vision_id", [False, True])
def test_render_matches_the_qwen3_vl_template(setup, messages, gen, vision_id):
    want = setup[2].apply_chat_template(
        messages, tokenize=False, add_generation_prompt=gen, add_vision_id=vision_id
    )
    got = render_chat(
        messages, add_generation_prompt=gen, add_vision_id=vision_id, model_type="qwen3_vl"
    )
    assert got == want
    assert got.startswith("<|im_start|>system\n") == (messages[0]["role"] == "system")


def test_render_refuses_what_the_template_would_drop():
    late_system = [
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": "Be brief."},  # the Qwen3-VL template skips it
    ]
    with pytest.raises(ValueError, match=r"messages\[1\] has role 'system'"):
        render_chat(late_system, model_type="qwen3_vl")
    with pytest.raises(ValueError, match="model_type must be one of"):
        render_chat(late_system, model_type="llava")


def _all_frames(path: str) -> np.ndarray:
    with av.open(path) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.mark.parametrize("mode", ["sft", "rl"])
def test_video_sample_matches_transformers_processor(setup, tmp_path, torchvision_shim, mode):  # noqa: F811
    """13 frames at 4 fps: Qwen3-VL samples int(13 / 4 * 2) = 6 frames (Qwen2.5-VL's rule would
    give 4), 3 temporal groups, each `<t seconds>` in the prompt."""
    tok, cfg, hf = setup
    path = write_video(tmp_path / "v.mp4", n=13, size=(70, 90), rate=4)
    ex = make_example(3, video=path)
    sample = build_sample(ex, tok, cfg, mode=mode)

    # The checkpoints' video_preprocessor_config.json size, which our defaults follow.
    proc = _hf_processor(hf_video.Qwen3VLVideoProcessor(size=CHECKPOINT_SIZE))
    ref, (ref_text,) = proc._process_videos(
        [_all_frames(path)],
        video_metadata=[{"total_num_frames": 13, "fps": 4.0}],
        do_sample_frames=True,
        return_metadata=True,
        cap_pixels_per_frame=False,
        return_tensors="np",
    )
    np.testing.assert_array_equal(ref["video_metadata"][0].frames_indices, [0, 2, 5, 7, 10, 12])
    np.testing.assert_array_equal(sample["video_grid_thw"], ref["video_grid_thw"])
    assert sample["video_grid_thw"].tolist() == [[3, 4, 6]]  # 70x90 -> 64x96
    diff = np.abs(sample["pixel_values_videos"] - ref["pixel_values_videos"]).max()
    assert diff <= 1e-5
    assert "second_per_grid_ts" not in sample  # Qwen3-VL's time is in the text
    np.testing.assert_allclose(sample["video_timestamps"], [0.25, 1.5, 2.75])

    messages = example_messages(ex, response=sft_response(ex) if mode == "sft" else None)
    text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=mode == "rl")
    text = text.replace(VIDEO_PLACEHOLDER, ref_text)  # transformers >= 5.25, 4.x and vLLM
    assert text.count("seconds>") == 3 and "<0.2 seconds>" in text
    assert not text.startswith("<|im_start|>system")  # no default system turn
    np.testing.assert_array_equal(sample["input_ids"], hf(text)["input_ids"])
    target = tok.decode(sample["input_ids"][sample["loss_mask"]], skip_special_tokens=False)
    assert target == ("" if mode == "rl" else sft_response(ex) + "<|im_end|>")


def test_budgets_count_all_frames(setup, tmp_path):
    """max_pixels bounds the whole video (not each frame), as the Qwen3-VL video processor."""
    tok, cfg, _ = setup
    path = write_video(tmp_path / "v.mp4", n=13, size=(70, 90), rate=4)
    budget = 6 * 64 * 96  # exactly the 6 sampled frames at 64x96
    for cap, hw in [(budget, (4, 6)), (budget - 1, (4, 4))]:
        v = load_visual(
            make_example(0, video=path), VisionOptions(max_pixels=cap), model_type="qwen3_vl"
        )
        assert v["video_grid_thw"].tolist() == [[3, *hw]]
    v = load_visual(
        make_example(0, video=path), VisionOptions(total_pixels=budget - 1), model_type="qwen3_vl"
    )
    assert v["video_grid_thw"].tolist() == [[3, 4, 4]]  # total_pixels: the same whole-video cap


def test_frames_kept_at_their_size_by_hand():
    """4 frames of 64x64 at 2 fps: groups (0, 1) and (2, 3) -> (0 + 0.5) / 2 and (1 + 1.5) / 2."""
    frames = np.zeros((4, 64, 64, 3), np.uint8)
    v = frames_visual(frames, 2.0, "qwen3_vl")
    assert v["video_grid_thw"].tolist() == [[2, 4, 4]]
    np.testing.assert_allclose(v["video_timestamps"], [0.25, 1.25])
    v = frames_visual(frames[[0, 2]], 2.0, "qwen3_vl", ordinals=[0, 3], total=4)
    np.testing.assert_allclose(v["video_timestamps"], [0.75])


def test_tokenize_errors_name_the_mismatch(setup):
    tok = setup[0]
    messages = [{"role": "user", "content": [{"type": "video"}, {"text": "Q?"}]}]
    ids, _ = tokenize_chat(
        messages, tok, video_tokens=[6], model_type="qwen3_vl", video_timestamps=[[0.5, 2.0]]
    )
    text = tok.decode(ids, skip_special_tokens=False)
    pads = "<|video_pad|>" * 3
    assert text == (
        "<|im_start|>user\n<0.5 seconds><|vision_start|>" + pads + "<|vision_end|>"
        "<2.0 seconds><|vision_start|>" + pads + "<|vision_end|>Q?<|im_end|>\n"
    )
    with pytest.raises(ValueError, match="video 0 has 5 tokens, not a multiple of its 2"):
        tokenize_chat(
            messages, tok, video_tokens=[5], model_type="qwen3_vl", video_timestamps=[[0, 1]]
        )
    with pytest.raises(ValueError, match="1 video token counts but 0 video timestamp lists"):
        tokenize_chat(messages, tok, video_tokens=[6], model_type="qwen3_vl")
    with pytest.raises(ValueError, match="video_timestamps are for qwen3_vl"):
        tokenize_chat(messages, tok, video_tokens=[6], video_timestamps=[[0.5]])


def test_geometry_mismatch_is_refused(setup, tmp_path):
    tok, cfg, _ = setup
    bad = cfg.replace(vision=dataclasses.replace(cfg.vision, patch_size=14))
    with pytest.raises(ValueError, match=r"Qwen3-VL's processor is built for \(16, 2, 2\)"):
        build_sample(make_example(0, video=str(tmp_path / "v.mp4")), tok, bad)
    assert q3.PATCH_SIZE == 16


def test_sample_logits_match_transformers(setup, tmp_path):
    """A video sample from a file, through our data path (timestamps, pixels, positions from
    `sample_positions`), gives transformers' logits, which computes its own positions from the
    ids and grid (`get_rope_index`): the timestamp text between frame groups included."""
    import jax
    import jax.numpy as jnp
    import torch

    from tests.models.test_qwen3_vl_parity import build_hf_model
    from vlmm_jax.models import from_pretrained

    tok = setup[0]
    hf = build_hf_model()
    for key, value in tok.model_token_ids().items():
        if key.endswith("_token_id") and key not in ("eos_token_id", "pad_token_id"):
            setattr(hf.config, key, value)
    hf.save_pretrained(tmp_path / "hf")
    hf = transformers.Qwen3VLForConditionalGeneration.from_pretrained(
        tmp_path / "hf", attn_implementation="eager", dtype=torch.float32
    ).eval()
    model, params = from_pretrained(str(tmp_path / "hf"))
    cfg = model.config.replace(**tok.model_token_ids())
    path = write_video(tmp_path / "v.mp4", n=13, size=(70, 90), rate=4)
    s = build_sample(make_example(1, video=path), tok, cfg, mode="rl")

    ids = s["input_ids"][None].astype(np.int64)  # [1, L]
    kinds = np.where(ids == tok.video_pad_id, 2, 0).astype(np.int32)
    with torch.no_grad():
        want = hf(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.ones_like(torch.from_numpy(ids)),
            pixel_values_videos=torch.from_numpy(s["pixel_values_videos"]),
            video_grid_thw=torch.from_numpy(s["video_grid_thw"]),
            mm_token_type_ids=torch.from_numpy(kinds),
        ).logits.numpy()
    fn = jax.jit(
        lambda p, i, x, pos: (
            model.apply(
                {"params": p},
                i,
                pixel_values_videos=x,
                video_grid_thw=s["video_grid_thw"],
                position_ids=pos,
            ).logits
        )
    )
    got = fn(
        params,
        jnp.asarray(ids, jnp.int32),
        jnp.asarray(s["pixel_values_videos"]),
        jnp.asarray(s["position_ids"][:, None]),
    )
    assert np.abs(np.asarray(got) - want).max() <= 1e-4


def test_exported_processor_configs_prepare_what_we_prepare(
    tmp_path,
    torchvision_shim,  # noqa: F811
    hf_image_processor,  # noqa: F811
):
    """transformers' processors, loaded from the configs an export writes, give our pixels."""
    save_processor_configs(str(tmp_path), "qwen3_vl")
    path = write_video(tmp_path / "v.mp4", n=13, size=(70, 90), rate=4)
    ours = load_visual(make_example(0, video=path), model_type="qwen3_vl")
    vp = hf_video.Qwen3VLVideoProcessor.from_pretrained(tmp_path)
    ref = vp(
        videos=[_all_frames(path)],
        video_metadata=[{"total_num_frames": 13, "fps": 4.0}],
        return_tensors="np",
    )
    np.testing.assert_array_equal(ours["video_grid_thw"], ref["video_grid_thw"])
    assert np.abs(ours["pixel_values_videos"] - ref["pixel_values_videos"]).max() <= 1e-5

    from PIL import Image

    Image.fromarray(_all_frames(path)[3]).save(tmp_path / "im.png")
    ours = load_visual(make_example(0, image=str(tmp_path / "im.png")), model_type="qwen3_vl")
    ip = type(hf_image_processor).from_pretrained(tmp_path)
    ref = ip(images=[_all_frames(path)[3]], return_tensors="np")
    np.testing.assert_array_equal(ours["image_grid_thw"], ref["image_grid_thw"])
    assert np.abs(ours["pixel_values"] - ref["pixel_values"]).max() <= 1e-5
