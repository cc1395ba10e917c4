"""Time-R1's temporal-grounding GRPO of Qwen2.5-VL-3B-Instruct (reward: tIoU v2 + format).

    python -m vlmm_jax.main --config=configs/grpo_qwen2_5_vl_3b_time_r1.py --workdir=DIR \
        --config.init_from=/models/Qwen2.5-VL-3B-Instruct \
        --config.data.path=/data/Time-R1/dataset/timer1/annotations/train_2k5.json \
        --config.data.media_root=/data/Time-R1 \
        --config.data.validation_path=/data/Time-R1/dataset/timer1/annotations/tvgbench.json

Time-R1's published settings (xiaomi-research/time-r1 `scripts/posttrain/train_rl.sh`, `main.py`):
G=8, 200-token completions, rewards `iou_v2` + `format`, temperature 1, 1 device x 1 prompt x 2
accumulation = 2 prompts per step, 5 epochs of the 2.5k-example set, frozen vision tower
(`--fix_vit`), TRL 0.16 defaults otherwise (lr 1e-6, beta 0.04); videos at 2 fps with
16*28*28 to a 3584*28*28 total pixel budget.
"""

from vlmm_jax.config_dicts import grpo_defaults, model_config_dict
from vlmm_jax.data import annotation_data


def get_config():
    config = grpo_defaults("qwen2_5_vl_3b")
    config.model = model_config_dict(
        "qwen2_5_vl_3b",
        dtype="bfloat16",  # compute in bf16 (Time-R1: --bf16)
        param_dtype="float32",  # fp32 master weights and optimizer state
        scan_layers=True,  # one compiled decoder layer
        remat_policy="full",  # --gradient_checkpointing true
        attention_implementation="auto",  # Pallas kernels on TPU / GPU, XLA on a CPU
    )
    config.init_from = "/models/Qwen2.5-VL-3B-Instruct"  # local HF checkpoint
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, -1, 1  # FSDP over all devices

    annotation_data.add_defaults(config)  # data.source = "annotations"
    d = config.data
    d.path = "/data/Time-R1/dataset/timer1/annotations/train_2k5.json"  # Time-R1's 2.5k set
    d.format = "time_r1"  # {video, duration, timestamp, sentence}
    d.media_root = "/data/Time-R1"  # its `./dataset/...` paths are relative to the repo root
    d.validation_path = ""  # e.g. TVGBench (tvgbench.json); "": hold out a fraction
    d.validation_fraction = 0.05  # ~125 held-out queries when no validation file is given
    d.max_length = 8192  # prompt tokens (--max_prompt_length 8192)
    d.num_workers = 4  # grain processes decoding videos
    d.fps = 2.0  # qwen_vl_utils' sampling rate
    d.min_pixels = 16 * 28 * 28  # Time-R1's per-frame floor
    d.total_pixels = 3584 * 28 * 28  # Time-R1's per-video budget (frames shrink with length)

    o = config.optimizer
    o.learning_rate = 1e-6  # TRL GRPOConfig default (the script sets none)
    o.schedule = "linear"  # transformers' Trainer default
    o.warmup_steps = 0
    o.end_lr_ratio = 0.0
    o.b2 = 0.999  # Trainer's AdamW default
    o.weight_decay = 0.0  # Trainer default
    o.max_grad_norm = 1.0  # Trainer default
    o.freeze = ("vision", "merger")  # --fix_vit true: the whole visual module stays fixed

    config.train.steps = 6250  # 5 epochs x 2500 examples / 2 prompts per step
    o.total_steps = config.train.steps
    config.checkpoint.every = 50  # --save_steps 50

    g = config.grpo
    g.group_size = 8  # --num_generations 8
    g.prompts_per_step = 2  # 1 device x per_device_train_batch_size 1 x accumulation 2
    g.max_new_tokens = 200  # --max_completion_length 200
    g.temperature = 1.0  # --temperature 1.0
    g.top_p = 1.0
    g.rewards = {"tiou_v2": 1.0, "format": 1.0}  # --reward_funcs iou_v2 format
    g.loss_type = "grpo"  # TRL 0.16: per-sequence token mean, then batch mean
    g.beta = 0.04  # TRL 0.16 default (k3)
    g.kl_estimator = "k3"
    g.advantage_scale = "group"
    g.dynamic_sampling = False  # train_rl.sh: no sample filtering
    g.temporal = False  # T-GRPO is Video-R1's; grounding has no shuffled-frame bonus
    g.eval_every = 0  # greedy mIoU-style reward on validation at the end only
    g.eval_batch_size = 8
    g.eval_examples = 128
    return config
