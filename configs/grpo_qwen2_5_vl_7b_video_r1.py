"""Video-R1's T-GRPO of the SFT cold-start model on Video-R1-260k.

    python -m vlmm_jax.main --config=configs/grpo_qwen2_5_vl_7b_video_r1.py --workdir=DIR \
        --config.init_from=DIR/sft_hf \
        --config.data.path=/data/Video-R1-data/Video-R1-260k.json \
        --config.data.media_root=/data/Video-R1-data

`init_from`: the export of `configs/sft_qwen2_5_vl_7b_video_r1.py` (or Video-R1's released
Qwen2.5-VL-7B-COT-SFT). Video-R1's published RL settings (tulerfeng/Video-R1
`src/scripts/run_grpo_video.sh`, README): G=8, lr 1e-6 cosine, weight decay 0.01, beta 0.04,
clipping at 5, 768-token completions, T-GRPO (alpha 0.3, mu 0.8), 16 frames of 128*28*28
pixels, about 1.2k steps, and its length control (`--len_control true`: +0.2 for correct
completions of 320 to 512 tokens when more than one group member is correct).
"""

from vlmm_jax.config_dicts import grpo_defaults, model_config_dict
from vlmm_jax.data import annotation_data


def get_config():
    config = grpo_defaults("qwen2_5_vl_7b")
    config.model = model_config_dict(
        "qwen2_5_vl_7b",
        dtype="bfloat16",  # compute in bf16 (Video-R1: --bf16)
        param_dtype="float32",  # fp32 master weights and optimizer state
        scan_layers=True,  # one compiled decoder layer: fast compiles at 7B
        remat_policy="full",  # recompute activations in the backward (gradient_checkpointing)
        attention_implementation="auto",  # Pallas kernels on TPU / GPU, XLA on a CPU
    )
    config.init_from = "/models/Qwen2.5-VL-7B-COT-SFT"  # the SFT recipe's HF export
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, -1, 1  # FSDP over all devices

    annotation_data.add_defaults(config)  # data.source = "annotations"
    d = config.data
    d.path = "/data/Video-R1-data/Video-R1-260k.json"  # the RL file (answers, no CoT)
    d.format = "video_r1"
    d.media_root = "/data/Video-R1-data"  # its `./X/...` paths are relative to this folder
    d.validation_fraction = 0.001  # ~260 held-out prompts for greedy accuracy
    d.max_length = 16384  # prompt tokens (Video-R1 --max_prompt_length 16384)
    d.num_workers = 8  # grain processes decoding videos
    d.fps = 2.0  # qwen_vl_utils' sampling rate
    d.max_frames = 16  # Video-R1 trains on 16 frames
    d.max_pixels = 128 * 28 * 28  # per frame (Video-R1's training resolution)
    d.image_max_pixels = 512 * 28 * 28  # Video-R1 --max_pixels 401408 (image examples)

    o = config.optimizer
    o.learning_rate = 1e-6  # Video-R1 --learning_rate 1e-6
    o.schedule = "cosine"  # --lr_scheduler_type cosine
    o.warmup_steps = 0  # Trainer default
    o.end_lr_ratio = 0.0  # cosine to zero
    o.b2 = 0.999  # Trainer's AdamW default
    o.weight_decay = 0.01  # --weight_decay 0.01
    o.max_grad_norm = 5.0  # --max_grad_norm 5

    config.train.steps = 1200  # Video-R1 reports ~1.2k RL steps
    o.total_steps = config.train.steps
    config.checkpoint.every = 100  # --save_steps 100

    g = config.grpo
    g.group_size = 8  # --num_generations 8
    g.prompts_per_step = 8  # 8 devices x per_device_train_batch_size 1
    g.max_new_tokens = 768  # --max_completion_length 768
    g.temperature = 1.0  # TRL's default rollout temperature
    g.top_p = 1.0
    g.rewards = {"accuracy": 1.0, "format": 1.0}  # Video-R1's reward_funcs, summed
    g.group_rewards = {  # --len_control true
        "length": {"weight": 1.0, "min_tokens": 320, "max_tokens": 512, "bonus": 0.2}
    }
    g.loss_type = "grpo"  # TRL 0.16: per-sequence token mean, then batch mean
    g.importance_level = "token"
    g.eps_low = g.eps_high = 0.2  # TRL's epsilon
    g.beta = 0.04  # --beta 0.04, k3 estimator
    g.kl_estimator = "k3"
    g.advantage_scale = "group"  # (r - mean) / (std + 1e-4)
    g.adv_eps = 1e-4
    g.num_iterations = 1  # one update per rollout (old log-probs = current)
    g.dynamic_sampling = False  # Video-R1 keeps all groups
    g.temporal = True  # T-GRPO (--temporal true): shuffled-frame rollouts, temporal bonus
    g.temporal_alpha = 0.3  # Video-R1's alpha
    g.temporal_mu = 0.8  # Video-R1's mu
    g.eval_every = 100  # greedy accuracy on the validation prompts
    g.eval_batch_size = 16
    g.eval_examples = 256
    return config
