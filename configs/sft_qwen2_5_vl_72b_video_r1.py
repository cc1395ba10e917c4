"""Chain-of-thought SFT of Qwen2.5-VL-72B-Instruct on Video-R1-COT-165k, sized for a v5p-64.

    python -m vlmm_jax.main --config=configs/sft_qwen2_5_vl_72b_video_r1.py --workdir=DIR \
        --config.init_from=/models/Qwen2.5-VL-72B-Instruct \
        --config.data.path=/data/Video-R1-data/Video-R1-COT-165k.json \
        --config.data.media_root=/data/Video-R1-data

`configs/sft_qwen2_5_vl_7b_video_r1.py` at 72B: the same data, optimizer and schedule, FSDP over
every chip, 8k tokens per row and one row per chip of a v5p-64 (32 chips, 32 rows of 8192
tokens per step). `--config.job=aot --config.aot.topology=v5p-64` compiles its step for that
slice on a CPU host and reports what each chip holds (the README's "Will it fit?").
"""

import os
import runpy


def get_config():
    path = os.path.join(os.path.dirname(__file__), "sft_qwen2_5_vl_7b_video_r1.py")
    config = runpy.run_path(path)["get_config"]()
    from vlmm_jax.config_dicts import model_config_dict

    runtime = {
        k: config.model[k]
        for k in ("dtype", "param_dtype", "scan_layers", "remat_policy", "attention_implementation")
    }
    config.model = model_config_dict("qwen2_5_vl_72b", **runtime)
    config.init_from = "/models/Qwen2.5-VL-72B-Instruct"
    config.data.batch_size = 32  # one row per chip of a v5p-64
    config.data.max_length = 8192
    config.train.steps = 165_600 // 32  # one epoch
    config.optimizer.total_steps = config.train.steps
    return config
