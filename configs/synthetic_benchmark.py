"""The main job at the size of the README's results table (about an hour on a 2-core CPU).

    python -m vlmm_jax.main --config=configs/synthetic_benchmark.py --workdir=/tmp/vlmm_benchmark

The same stages as `configs/quickstart.py`, with the standalone recipes' settings:
`configs/sft_synthetic.py` (16-frame 112x112 videos, 300 SFT steps) and
`configs/grpo_synthetic.py` (T-GRPO, G=8); every evaluation (greedy and the test-time-scaling
strategies) on the whole test split (400 questions).
"""

import os
import runpy

from vlmm_jax.config_dicts import PIPELINE_SHARED, pipeline_defaults, stage_fields


def recipe(name):
    return runpy.run_path(os.path.join(os.path.dirname(__file__), f"{name}.py"))["get_config"]()


def get_config():
    c = pipeline_defaults()
    sft, rl = recipe("sft_synthetic"), recipe("grpo_synthetic")
    for key in PIPELINE_SHARED:
        c[key] = sft[key]
    c.sft, c.rl = stage_fields(sft), stage_fields(rl)
    c.eval.num_examples = 0  # the whole test split
    c.eval.max_new_tokens = rl.grpo.max_new_tokens
    return c
