"""Tiny random Qwen2.5-VL checkpoints built locally with transformers (no download)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 512
IMAGE, VIDEO, VSTART, VEND = VOCAB - 2, VOCAB - 1, VOCAB - 4, VOCAB - 3


def hf_config(tie: bool = False):
    return transformers.Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=VOCAB,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4},
            bos_token_id=None,
            eos_token_id=VOCAB - 5,
            pad_token_id=0,
            tie_word_embeddings=tie,
        ),
        vision_config=dict(
            depth=3,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            fullatt_block_indexes=[1],
            window_size=56,  # 2x2 merged tokens per window
            tokens_per_second=2,
        ),
        image_token_id=IMAGE,
        video_token_id=VIDEO,
        vision_start_token_id=VSTART,
        vision_end_token_id=VEND,
        tie_word_embeddings=tie,
    )


def build_hf_model(tie: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    model = transformers.Qwen2_5_VLForConditionalGeneration._from_config(
        hf_config(tie), attn_implementation="eager", dtype=torch.float32
    )
    return randomize(model)


def randomize(model):
    """Random biases and norm scales too, so every tensor matters; a learned position table at
    unit scale, so that a wrong interpolation tap shows. Returns the model in eval mode."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ("norm" in name or "ln_q" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif "pos_embed" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_tiny")
    build_hf_model().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def hf_model(hf_dir):
    return transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(
        hf_dir, attn_implementation="eager", dtype=torch.float32
    ).eval()


class Prompt:
    """Builds token ids with expanded vision placeholders, and the matching pixel inputs."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.ids, self.images, self.videos, self.spg = [], [], [], []

    def text(self, n):
        self.ids += self.rng.integers(1, VOCAB - 8, n).tolist()
        return self

    def _vision(self, token, grid):
        self.ids += [VSTART] + [token] * (int(np.prod(grid)) // 4) + [VEND]

    def image(self, h, w):
        self.images.append((1, h, w))
        self._vision(IMAGE, (1, h, w))
        return self

    def video(self, t, h, w, seconds_per_grid=1.0):
        self.videos.append((t, h, w))
        self.spg.append(seconds_per_grid)
        self._vision(VIDEO, (t, h, w))
        return self


def batch_inputs(prompts, pad_left=True, patch=14):
    """Pads prompts to one batch; returns numpy inputs in transformers' layout (`patch`: the
    vision tower's patch size)."""
    length = max(len(p.ids) for p in prompts)
    ids = np.zeros((len(prompts), length), np.int64)
    mask = np.zeros_like(ids)
    for i, p in enumerate(prompts):
        sl = slice(length - len(p.ids), length) if pad_left else slice(0, len(p.ids))
        ids[i, sl], mask[i, sl] = p.ids, 1
    rng = np.random.default_rng(1)
    out = {"input_ids": ids, "attention_mask": mask}
    images = [g for p in prompts for g in p.images]
    videos = [g for p in prompts for g in p.videos]
    if images:
        out["image_grid_thw"] = np.array(images, np.int64)
        n = int(np.prod(images, axis=1).sum())
        out["pixel_values"] = rng.normal(size=(n, 3 * 2 * patch * patch)).astype(np.float32)
    if videos:
        out["video_grid_thw"] = np.array(videos, np.int64)
        n = int(np.prod(videos, axis=1).sum())
        out["pixel_values_videos"] = rng.normal(size=(n, 3 * 2 * patch**2)).astype(np.float32)
        out["second_per_grid_ts"] = np.array([s for p in prompts for s in p.spg], np.float32)
    return out


def hf_logits(model, inputs):
    kw = {k: torch.from_numpy(v) for k, v in inputs.items()}
    ids = inputs["input_ids"]
    kw["mm_token_type_ids"] = torch.from_numpy(
        np.where(ids == IMAGE, 1, np.where(ids == VIDEO, 2, 0)).astype(np.int32)
    )
    with torch.no_grad():
        return model(**kw).logits.numpy()
