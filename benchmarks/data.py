"""Input-pipeline throughput (examples/s): decode -> sample -> process -> tokenize -> batch.

Writes `--videos` real mp4 files (H.264, `--frames` frames of 448x448 at 16 fps, moving
gradients) with PyAV and a Video-R1-style annotation JSON into a temporary directory, trains a
tiny tokenizer on the questions, then runs `vlmm_jax.data.make_pipeline` over the file
(`read_examples`, 16 frames per video at 448x448: grid (8, 32, 32), 2048 visual tokens) with
`worker_count=0` (this process) and `worker_count=2` (grain worker processes), for
`--epochs` passes each. Steady-state figures exclude the first batch (worker start-up, the first
`rope_index` compile); `total_*` include it. Prints JSON; `ratio_2_over_0` > 1 means the two
workers are faster.

    python benchmarks/data.py [--videos 16] [--frames 64] [--epochs 2] [--batch 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import av
import numpy as np

from vlmm_jax.data import (
    BatchOptions,
    VisionOptions,
    make_pipeline,
    read_examples,
    train_tokenizer,
)
from vlmm_jax.models.config import tiny

SIDE = 448
NFRAMES = 16
OPTIONS = ["A. red", "B. blue", "C. green", "D. white"]


def write_video(path: str, frames: int, seed: int, fps: int = 16) -> None:
    """A real H.264 mp4 of `frames` 448x448 frames: a colour gradient drifting over time."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, 3).astype(np.float32)  # per-channel offsets
    y, x = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.height = s.width = SIDE
        s.pix_fmt = "yuv420p"
        for t in range(frames):
            ramp = (0.3 * (x + y) + 4.0 * t)[..., None] * np.array([1.0, 0.7, 0.4])
            img = ((base + ramp) % 256).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def write_dataset(root: str, videos: int, frames: int) -> str:
    """`videos` mp4 files and a Video-R1 JSON (multiple choice, with a chain of thought)."""
    os.makedirs(os.path.join(root, "videos"), exist_ok=True)
    records = []
    for i in range(videos):
        rel = f"./videos/clip{i}.mp4"
        write_video(os.path.join(root, rel), frames, seed=i)
        records.append(
            {
                "problem_id": i,
                "problem": f"What colour dominates clip {i} at the end?",
                "data_type": "video",
                "problem_type": "multiple choice",
                "options": OPTIONS,
                "process": f"<think>The gradient of clip {i} drifts towards blue.</think>",
                "solution": f"<answer>{'ABCD'[i % 4]}</answer>",
                "path": rel,
                "data_source": "synthetic",
            }
        )
    path = os.path.join(root, "annotations.json")
    with open(path, "w") as f:
        json.dump(records, f)
    return path


def run(examples, tok, config, *, workers: int, epochs: int, batch: int) -> dict:
    vision = VisionOptions(
        nframes=NFRAMES, min_pixels=SIDE * SIDE, max_pixels=SIDE * SIDE, total_pixels=10**9
    )
    pipe = make_pipeline(
        examples,
        tok,
        config,
        BatchOptions(batch_size=batch, max_length=4096, packing=False),
        mode="sft",
        vision=vision,
        num_epochs=epochs,
        worker_count=workers,
    )
    start = time.perf_counter()
    it = iter(pipe)
    first = next(it)
    first_s = time.perf_counter() - start
    n_first = len(first["ids"])
    n, grid = 0, first["video_grid_thw"][0].tolist() if "video_grid_thw" in first else None
    steady = time.perf_counter()
    for b in it:
        n += len(b["ids"])
    end = time.perf_counter()
    return {
        "examples": n_first + n,
        "first_batch_s": round(first_s, 3),
        "examples_per_s": round(n / (end - steady), 3),
        "total_examples_per_s": round((n_first + n) / (end - start), 3),
        "video_grid_thw": grid,
        "row_tokens": int(first["input_ids"].shape[1]),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        path = write_dataset(root, args.videos, args.frames)
        write_s = time.perf_counter() - start
        examples = read_examples(path)
        texts = [ex.prompt(think=True) for ex in examples] + OPTIONS
        tok = train_tokenizer(texts * 4, 512, os.path.join(root, "tokenizer"))
        config = tiny(512).replace(**tok.model_token_ids())
        kw = dict(epochs=args.epochs, batch=args.batch)
        zero = run(examples, tok, config, workers=0, **kw)
        two = run(examples, tok, config, workers=2, **kw)
    print(
        json.dumps(
            {
                "benchmark": "data",
                "machine": f"{platform.machine()} {os.cpu_count()} cpus",
                "config": {
                    "videos": args.videos,
                    "source_frames": args.frames,
                    "source_px": f"{SIDE}x{SIDE}",
                    "sampled_frames": NFRAMES,
                    "frame_px": f"{SIDE}x{SIDE}",
                    "batch": args.batch,
                    "epochs": args.epochs,
                    "format": examples.format,
                    "write_videos_s": round(write_s, 2),
                },
                "workers_0": zero,
                "workers_2": two,
                "ratio_2_over_0": round(two["examples_per_s"] / zero["examples_per_s"], 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
