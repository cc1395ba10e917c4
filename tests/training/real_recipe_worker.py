"""Runs one real recipe (configs/*_r1.py) for one step at a shrunken size on fake CPU devices
(a subprocess worker for `test_real_recipes.py`); prints `RESULT {json}` at the end.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 \
        python -m tests.training.real_recipe_worker --recipe sft_qwen2_5_vl_7b_video_r1 --dir DIR

Writes into DIR: small mp4s (PyAV), Video-R1 and Time-R1 annotation files pointing at them, and
a tiny random Hugging Face Qwen2.5-VL or Qwen3-VL checkpoint (transformers, the recipe's family)
with a tokenizer trained on the annotations; then loads the recipe with runpy, overrides only
model-independent fields (the model is whatever `init_from` holds) and runs `train_sft` /
`train_grpo`.
"""

import argparse
import json
import os
import runpy

from vlmm_jax.data.toy import shrink_recipe, time_r1_records, video_r1_records, write_video

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_data(root, family="qwen2_5_vl"):
    """Videos, annotation files, and the tiny checkpoint (with its tokenizer) under `root`."""
    os.makedirs(os.path.join(root, "videos"), exist_ok=True)
    for i in range(3):
        write_video(os.path.join(root, "videos", f"v{i}.mp4"), seed=i)
    files = {
        "video_r1.json": video_r1_records(4),
        "video_r1_val.json": video_r1_records(2),
        "time_r1.json": time_r1_records(4),
    }
    for name, records in files.items():
        with open(os.path.join(root, name), "w") as f:
            json.dump(records, f)
    write_checkpoint(os.path.join(root, "ckpt"), files, family)


def _hf_config(tok, vocab, family):
    """transformers' config of a 2-layer, width-64 model of `family` with the tokenizer's ids."""
    import transformers

    rope = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4}
    text = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        bos_token_id=None,
        eos_token_id=tok.eos_id,
        pad_token_id=tok.pad_id,
    )
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64)
    ids = dict(
        image_token_id=tok.image_pad_id,
        video_token_id=tok.video_pad_id,
        vision_start_token_id=tok.vision_start_id,
        vision_end_token_id=tok.vision_end_id,
    )
    if family == "qwen3_vl":
        return transformers.Qwen3VLConfig(
            text_config=dict(
                **text, head_dim=16, rope_parameters={**rope, "mrope_interleaved": True}
            ),
            vision_config=dict(**vision, num_position_embeddings=16, deepstack_visual_indexes=[0]),
            **ids,
        )
    return transformers.Qwen2_5_VLConfig(
        text_config=dict(**text, rope_parameters=rope),
        vision_config=dict(
            **vision, fullatt_block_indexes=[1], window_size=56, tokens_per_second=2
        ),
        **ids,
    )


def write_checkpoint(path, files, family="qwen2_5_vl"):
    """A random model of `family` written by transformers, sized to a tokenizer trained on the
    data (its tokenizer_config.json carries the family's chat template)."""
    import torch
    import transformers

    from vlmm_jax.data.tokenizer import train_tokenizer

    texts = [json.dumps(r) for records in files.values() for r in records]
    tok = train_tokenizer(texts * 4, 400, path, model_type=family)
    vocab = -(-tok.vocab_size // 128) * 128
    cls = {
        "qwen2_5_vl": transformers.Qwen2_5_VLForConditionalGeneration,
        "qwen3_vl": transformers.Qwen3VLForConditionalGeneration,
    }[family]
    torch.manual_seed(0)
    model = cls._from_config(_hf_config(tok, vocab, family), dtype=torch.float32)
    model.save_pretrained(path)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--recipe", required=True)
    p.add_argument("--dir", required=True)
    args = p.parse_args()
    root = os.path.join(args.dir, "data")
    write_data(root, "qwen3_vl" if "qwen3_vl" in args.recipe else "qwen2_5_vl")
    path = os.path.join(ROOT, "configs", f"{args.recipe}.py")
    workspace = {
        "root": root,
        "checkpoint": os.path.join(root, "ckpt"),
        **{k: os.path.join(root, f"{k}.json") for k in ("video_r1", "video_r1_val", "time_r1")},
    }
    config = shrink_recipe(runpy.run_path(path)["get_config"](), workspace)
    workdir = os.path.join(args.dir, "run")
    if config.job == "sft":
        from vlmm_jax.training.trainer import train_sft

        figures = train_sft(config, workdir)
    else:
        from vlmm_jax.training.grpo_loop import train_grpo

        figures = train_grpo(config, workdir)
    import jax

    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    out = {"figures": figures, "results": results, "devices": jax.device_count()}
    print("RESULT " + json.dumps(out, default=str))


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main()
