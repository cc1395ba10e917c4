"""A toy Video-R1 / Time-R1 workspace: small mp4s, annotation files, a random checkpoint.

For trying the real recipes (`configs/*_r1.py`) end to end without downloads: on a CPU, in a
notebook or a test, the same code paths run as on a real checkpoint and dataset, just tiny.

    root/videos/v{i}.mp4          a coloured square crossing a dark background (PyAV, H.264)
    root/video_r1.json            Video-R1 records (multiple choice, with a `process` CoT)
    root/video_r1_val.json        more of the same, for validation
    root/time_r1.json             Time-R1 records (temporal grounding)
    root/checkpoint/              a random Qwen2.5-VL (Hugging Face layout) with its tokenizer
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

QUESTIONS = ("What colour is the square?", "Which way does the square move?")


def write_video(path: str, frames: int = 16, fps: int = 8, size=(56, 56), seed: int = 0) -> None:
    """An H.264 mp4 of `frames` frames: a randomly coloured square moving right."""
    import av

    rng = np.random.default_rng(seed)
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        colour = rng.integers(0, 255, 3, dtype=np.uint8)
        for i in range(frames):
            img = np.full((*size, 3), 40, np.uint8)
            x = 4 + 2 * i
            img[20:36, x : x + 16] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def video_r1_records(n: int, num_videos: int = 3) -> list[dict]:
    """Video-R1-format multiple-choice records (`process` holds the chain of thought)."""
    return [
        {
            "problem_id": i,
            "problem": QUESTIONS[i % 2],
            "data_type": "video",
            "problem_type": "multiple choice",
            "options": ["A. red", "B. green", "C. left", "D. right"],
            "process": f"<think>The square is seen in clip {i}; it moves right.</think>",
            "solution": "<answer>D</answer>",
            "path": f"./videos/v{i % num_videos}.mp4",
            "data_source": "toy",
        }
        for i in range(n)
    ]


def time_r1_records(n: int, num_videos: int = 3) -> list[dict]:
    """Time-R1-format temporal grounding records."""
    return [
        {
            "video": f"./videos/v{i % num_videos}.mp4",
            "duration": 2.0,
            "timestamp": [0.5, 1.5],
            "sentence": "The square crosses the middle.",
            "qid": f"q{i}",
        }
        for i in range(n)
    ]


def write_random_checkpoint(path: str, texts: list[str], *, vocab_size: int = 400) -> str:
    """A random tiny Qwen2.5-VL in Hugging Face layout, with a tokenizer trained on `texts`."""
    from vlmm_jax.data.tokenizer import train_tokenizer
    from vlmm_jax.models import Qwen2_5_VL, init_params, save_pretrained
    from vlmm_jax.models.config import tiny

    tok = train_tokenizer(texts, vocab_size, path)
    config = tiny(-(-tok.vocab_size // 128) * 128).replace(**tok.model_token_ids())
    model = Qwen2_5_VL(config)
    save_pretrained(model, init_params(model, jax.random.key(0)), path)
    return path


def write_workspace(root: str, *, num_train: int = 4, num_val: int = 2) -> dict[str, str]:
    """Writes everything listed in the module docstring under `root`; returns the paths."""
    os.makedirs(os.path.join(root, "videos"), exist_ok=True)
    for i in range(3):
        write_video(os.path.join(root, "videos", f"v{i}.mp4"), seed=i)
    files = {
        "video_r1": video_r1_records(num_train),
        "video_r1_val": video_r1_records(num_val),
        "time_r1": time_r1_records(num_train),
    }
    paths = {"root": root, "checkpoint": os.path.join(root, "checkpoint")}
    for name, records in files.items():
        paths[name] = os.path.join(root, f"{name}.json")
        with open(paths[name], "w") as f:
            json.dump(records, f)
    texts = [json.dumps(r) for records in files.values() for r in records]
    write_random_checkpoint(paths["checkpoint"], texts * 4)
    return paths


def shrink_recipe(config, workspace: dict[str, str], *, steps: int = 1):
    """A real recipe (`configs/*_r1.py`) pointed at a toy workspace at a toy size.

    Only model-independent fields change: the model is whatever `init_from` (the workspace's
    checkpoint) holds; `steps` steps, small batches, 4 frames of at most 56x56 pixels, the
    mesh FSDP over all devices. Returns `config`, changed in place.
    """
    config.init_from = workspace["checkpoint"]
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, -1, 1
    d = config.data
    d.media_root = workspace["root"]
    d.max_length = 512
    d.num_workers = 0
    d.max_frames, d.fps = 4, 2.0
    d.min_pixels, d.max_pixels = 28 * 28, 56 * 56
    d.on_error = "raise"
    config.train.steps = steps
    config.optimizer.total_steps = steps
    config.checkpoint.async_save = False
    config.export_hf_dir = ""
    if config.job == "sft":
        d.path, d.validation_path = workspace["video_r1"], workspace["video_r1_val"]
        d.batch_size = 4  # one row per device on 4 devices
        config.train.eval_every, config.train.eval_batches = 0, 1
        return config
    d.path = workspace["time_r1" if d.format == "time_r1" else "video_r1"]
    d.validation_fraction = 0.5  # 2 train, 2 validation prompts: full batches of 2
    g = config.grpo
    g.group_size, g.prompts_per_step, g.max_new_tokens = 2, 2, 8
    g.eval_examples, g.eval_batch_size, g.eval_every = 2, 2, 0
    config.checkpoint.every = 1
    return config
