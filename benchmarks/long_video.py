"""Decoding a long video: peak memory and time, resizing each frame as it is decoded against
decoding every sampled frame first and resizing the stack after.

Writes a `--minutes`-long 1280x720 H.264 video (`--fps` frames per second, moving gradients) with
PyAV, then loads it as the data pipeline does (`chat.load_visual`: Qwen's 2 fps sampling capped
at 768 frames, the processor's pixel budget) in a fresh subprocess per run, so each run's peak
resident memory (`ru_maxrss`) is its own:

  * resize_while_decoding: `load_video(resize=video_size)`, then `process_video` (what the
    pipeline does);
  * decode_then_resize: `load_video` at the source size, then `process_video` (the frames of
    every sample held at 720p until the resize).

Both give the same `pixel_values_videos` (checked). Runs interleave (A, B, A, B, ...) after a
warm-up each; each child reports its own decode seconds and peak RSS. Prints JSON.

    python benchmarks/long_video.py [--minutes 10] [--fps 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import av
import numpy as np

if __package__ in (None, ""):  # `python benchmarks/X.py`: the repository root on sys.path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.harness import interleaved  # noqa: E402

HEIGHT, WIDTH = 720, 1280
MODES = ("resize_while_decoding", "decode_then_resize")


def write_video(path: str, seconds: float, fps: int) -> None:
    """An H.264 mp4 of `seconds` x `fps` frames of 1280x720: a gradient drifting over time."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        s.height, s.width, s.pix_fmt = HEIGHT, WIDTH, "yuv420p"
        for t in range(int(seconds * fps)):
            ramp = (0.1 * (x + y) + 3.0 * t)[..., None] * np.array([1.0, 0.7, 0.4], np.float32)
            frame = av.VideoFrame.from_ndarray((ramp % 256).astype(np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def child(path: str, mode: str) -> None:
    """One load in this process; prints its seconds, peak RSS and a checksum."""
    from vlmm_jax.data.chat import DEFAULT_VISION
    from vlmm_jax.data.video import load_video
    from vlmm_jax.data.vision_processing import process_video, video_size

    o = DEFAULT_VISION
    budget = dict(min_pixels=o.min_pixels, max_pixels=o.max_pixels, total_pixels=o.total_pixels)
    resize = (lambda f, h, w: video_size(f, h, w, **budget)) if mode == MODES[0] else None
    start = time.perf_counter()
    frames, _ = load_video(path, fps=o.fps, max_frames=o.max_frames, resize=resize)
    pixels, grid = process_video(frames, **budget)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    out = {
        "seconds": seconds,
        "peak_rss_bytes": peak,
        "frames": int(len(frames)),
        "grid": grid[0].tolist(),
        "checksum": float(np.float64(pixels).sum()),
    }
    print("RESULT " + json.dumps(out))


def launch(path: str, mode: str, reports: dict) -> None:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", path, mode],
        capture_output=True,
        text=True,
        check=False,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"{mode}: the child failed: {proc.stderr[-2000:]}")
    reports[mode].append(json.loads(line[len("RESULT ") :]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--fps", type=int, default=2, help="frames per second of the written video")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as root:
        path = os.path.join(root, "long.mp4")
        start = time.perf_counter()
        write_video(path, args.minutes * 60, args.fps)
        write_s = time.perf_counter() - start
        reports: dict[str, list] = {m: [] for m in MODES}
        timing = interleaved(
            {m: (lambda m=m: launch(path, m, reports)) for m in MODES}, repeats=args.repeats
        )
        size = os.path.getsize(path)
    runs = {m: r[1:] for m, r in reports.items()}  # the first of each is the warm-up
    checks = {
        m: {(x["frames"], tuple(x["grid"]), x["checksum"]) for x in r} for m, r in runs.items()
    }
    assert checks[MODES[0]] == checks[MODES[1]], checks

    def stats(values):
        return {"median": float(np.median(values)), "min": min(values), "max": max(values)}

    figures = {
        m: {
            "seconds": stats([x["seconds"] for x in r]),
            "peak_rss_gib": stats([x["peak_rss_bytes"] / 2**30 for x in r]),
        }
        for m, r in runs.items()
    }
    a, b = (figures[m] for m in MODES)
    print(
        json.dumps(
            {
                "benchmark": "long_video",
                "video": {
                    "minutes": args.minutes,
                    "fps": args.fps,
                    "size": f"{WIDTH}x{HEIGHT}",
                    "bytes": size,
                    "write_s": round(write_s, 1),
                },
                "sampled_frames": runs[MODES[0]][0]["frames"],
                "video_grid_thw": runs[MODES[0]][0]["grid"],
                "figures": figures,
                "peak_rss_ratio": b["peak_rss_gib"]["median"] / a["peak_rss_gib"]["median"],
                "speedup": b["seconds"]["median"] / a["seconds"]["median"],
                "load_before": timing["load_before"],
                "load_after": timing["load_after"],
                "busy": timing["busy"],
                "repeats": args.repeats,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
