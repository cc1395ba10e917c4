"""Will it fit? Every shipped real recipe compiled for TPU slices on this CPU host (libtpu).

    python benchmarks/aot.py [--recipes sft_qwen2_5_vl_7b_video_r1,...] \
        [--topologies v5e-8,v5e-16,v5p-8,v5p-64] [--jobs 2] [--out DIR] [--markdown]

Each (recipe, topology) pair runs the `aot` job (`vlmm_jax.aot.run_aot`) in its own process,
so libtpu's per-slice environment and the host memory of one compile never leak into the next
(`--jobs` of them at a time).
Prints one JSON object: per recipe and topology, the job's report (per program: argument,
temporary, output bytes per chip, peak, HBM, headroom, fits, compile seconds, FLOPs) or the
error that stopped it; `--markdown` also prints the README's "Will it fit?" table (peak GiB per
chip of the largest program, and which program that is). Nothing is executed on a device, so
the figures do not depend on the host's load; compile times do (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = [
    "sft_qwen2_5_vl_7b_video_r1",
    "grpo_qwen2_5_vl_7b_video_r1",
    "grpo_qwen2_5_vl_3b_time_r1",
]
TOPOLOGIES = ["v5e-8", "v5e-16", "v5p-8", "v5p-64"]
GIB = 1024**3


def compile_recipe(recipe: str, topology: str, workdir: str, overrides=()) -> dict:
    """The aot job's report for one pair, or `{"error": ...}` when it did not compile or fit."""
    cmd = [
        sys.executable,
        "-m",
        "vlmm_jax.main",
        f"--config={os.path.join(ROOT, 'configs', recipe + '.py')}",
        f"--workdir={workdir}",
        "--config.job=aot",
        f"--config.aot.topology={topology}",
        *overrides,
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    path = os.path.join(workdir, "aot.json")
    report = {}
    if os.path.exists(path):
        with open(path) as f:
            report = json.load(f)
    if proc.returncode != 0:
        lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
        report["error"] = lines[-1][:2000] if lines else f"exit status {proc.returncode}"
    return report


def largest(report: dict) -> tuple[str, dict] | None:
    rows = [(k, r) for k, r in report.get("programs", {}).items() if "peak_bytes" in r]
    return max(rows, key=lambda kr: kr[1]["peak_bytes"]) if rows else None


def markdown(results: dict, topologies: list[str]) -> str:
    """Rows: recipes; columns: slices. A cell that fits gives the peak GiB per chip of the
    largest program; one that does not names the programs that fail and why."""
    lines = [
        "| recipe | " + " | ".join(topologies) + " |",
        "|---|" + "---|" * len(topologies),
    ]
    for recipe, per_slice in results.items():
        cells = []
        for topology in topologies:
            report = per_slice[topology]
            programs = report.get("programs", {})
            failed = {k: r for k, r in programs.items() if not r.get("fits", False)}
            top = largest(report)
            if not programs:
                cells.append("error: " + report.get("error", "")[:120])
            elif failed:
                cells.append("**no**: " + "; ".join(_why(k, r) for k, r in failed.items()))
            else:
                name, row = top
                cells.append(
                    f"fits: {row['peak_bytes'] / GIB:.1f} / {row['hbm_bytes'] / GIB:.0f} GiB "
                    f"({name}, headroom {row['headroom_bytes'] / GIB:.1f})"
                )
        lines.append(f"| `{recipe}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _why(name: str, row: dict) -> str:
    if "error" not in row:
        return f"{name} {row['peak_bytes'] / GIB:.1f} GiB"
    error = row["error"]
    if "RESOURCE_EXHAUSTED" in error and "temporaries (" in error:
        return f"{name} temporaries {error.split('temporaries (')[1].split(')')[0]}"
    return f"{name} {error.split(':')[0]}"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--topologies", default=",".join(TOPOLOGIES))
    parser.add_argument("--jobs", type=int, default=1, help="compiles run at once")
    parser.add_argument("--out", default=None, help="keep each pair's aot.json under DIR")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    recipes, topologies = args.recipes.split(","), args.topologies.split(",")
    out = args.out or tempfile.mkdtemp(prefix="vlmm_aot_")
    load_before = os.getloadavg()
    pairs = [(r, t) for r in recipes for t in topologies]
    with ThreadPoolExecutor(args.jobs) as pool:
        reports = pool.map(lambda rt: compile_recipe(*rt, os.path.join(out, *rt)), pairs)
        results = {r: {} for r in recipes}
        for (recipe, topology), report in zip(pairs, reports, strict=True):
            results[recipe][topology] = report
    summary = {
        "benchmark": "aot",
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "results": results,
    }
    print(json.dumps(summary, indent=1))
    if args.markdown:
        print(markdown(results, topologies))
    return summary


if __name__ == "__main__":
    main()
