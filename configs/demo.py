"""Tiny random Video-LMM on a rendered 8-frame video: prints shapes, writes results.json.

    python -m vlmm_jax.main --config=configs/demo.py --workdir=/tmp/vlmm_demo
    python -m vlmm_jax.main --config=configs/demo.py --workdir=/tmp/vlmm_demo \
        --config.model.num_layers=4 --config.frames=16

Expected: a 1x65-token prompt (56 visual tokens), logits [1, 65, 512], 8 generated tokens.
"""

import ml_collections

from vlmm_jax.config_dicts import model_config_dict


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.job = "demo"  # which entry of vlmm_jax.main.JOBS runs
    config.seed = 0  # parameter init and video rendering
    config.frames = 8  # rendered video frames (pairs become one temporal patch)
    config.frame_size = 112  # rendered frame side in pixels (resized to a multiple of 28)
    config.new_tokens = 8  # greedy tokens decoded with the KV cache
    config.model = model_config_dict("tiny")  # decoder fields at top level, vision under .vision
    return config
