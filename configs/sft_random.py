"""SFT of a tiny model on random tokens around random videos: a smoke test of the machinery.

    python -m vlmm_jax.main --config=configs/sft_random.py --workdir=/tmp/sft_random

Expected: the loss falls below its initial ~6.2 (ln 512) within 30 steps on CPU.
"""

from vlmm_jax.config_dicts import sft_defaults


def get_config():
    config = sft_defaults("tiny")
    config.train.steps = 30
    config.train.eval_every = 15
    config.optimizer.total_steps = 30
    config.checkpoint.every = 10
    return config
