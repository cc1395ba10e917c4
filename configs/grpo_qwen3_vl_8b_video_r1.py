"""T-GRPO of the Qwen3-VL-8B cold-start model on Video-R1-260k.

    python -m vlmm_jax.main --config=configs/grpo_qwen3_vl_8b_video_r1.py --workdir=DIR \
        --config.init_from=DIR/sft_hf \
        --config.data.path=/data/Video-R1-data/Video-R1-260k.json \
        --config.data.media_root=/data/Video-R1-data

`init_from`: the export of `configs/sft_qwen3_vl_8b_video_r1.py` (or OneThinker's released
OneThink/OneThinker-SFT-Qwen3-8B). The RL settings are OneThinker's (tulerfeng/OneThinker
`EasyR1/local_scripts/run_onethinker_rl.sh` over `EasyR1/examples/config_ema_grpo_64.yaml`):
G = 8 at temperature 1.0 and top-p 1.0, lr 2e-6, weight decay 1e-2, gradient clipping at 1.0,
a k3 ("low_var_kl") KL loss of weight 1e-2, online filtering of groups whose accuracy is all 0
or all 1, 2 fps video. On top, Video-R1's T-GRPO (alpha 0.3, mu 0.8) and its 16 frames of
100,352 pixels (the SFT recipe's budget; Qwen3-VL budgets all frames together).

What differs from OneThinker, and why: its EMA-GRPO advantage (per-task moving std) is not
implemented here, so the advantage is GRPO's group normalisation; its 4096-token completions
are cut to Video-R1's 768 and its 128-prompt rollouts to 8 prompts per step (one per chip), so
that the update fits a v5p-8 (`python -m vlmm_jax.main --config=... --config.job=aot
--config.aot.topology=v5p-8`); scale `grpo.prompts_per_step` with the slice.
"""

from vlmm_jax.config_dicts import grpo_defaults, model_config_dict
from vlmm_jax.data import annotation_data

FRAMES = 16
FRAME_PIXELS = 128 * 28 * 28  # Video-R1's per-frame cap (OneThinker's SFT video_max_pixels)


def get_config():
    config = grpo_defaults("qwen3_vl_8b")
    config.model = model_config_dict(
        "qwen3_vl_8b",
        dtype="bfloat16",  # compute in bf16
        param_dtype="float32",  # fp32 master weights and optimizer state
        scan_layers=True,  # one compiled decoder layer: fast compiles at 8B
        remat_policy="full",  # recompute activations in the backward (gradient checkpointing)
        attention_implementation="auto",  # Pallas kernels on TPU / GPU, XLA on a CPU
    )
    config.init_from = "/models/OneThinker-SFT-Qwen3-8B"  # the SFT recipe's HF export
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, -1, 1  # FSDP over all devices

    annotation_data.add_defaults(config)  # data.source = "annotations"
    d = config.data
    d.path = "/data/Video-R1-data/Video-R1-260k.json"  # the RL file (answers, no CoT)
    d.format = "video_r1"
    d.media_root = "/data/Video-R1-data"  # its `./X/...` paths are relative to this folder
    d.validation_fraction = 0.001  # ~260 held-out prompts for greedy accuracy
    d.max_length = 16384  # prompt tokens (EasyR1 max_prompt_length: 16384)
    d.num_workers = 8  # grain processes decoding videos
    d.fps = 2.0  # EasyR1 video_fps: 2.0
    d.max_frames = FRAMES
    d.max_pixels = FRAMES * FRAME_PIXELS  # Qwen3-VL: the budget of all frames of a video
    d.image_max_pixels = 1048576  # EasyR1 max_pixels (image examples)
    d.micro_batches = 4  # each rollout's update in 4 accumulated micro-batches (v5p-8 fit)

    o = config.optimizer
    o.learning_rate = 2e-6  # run_onethinker_rl.sh worker.actor.optim.lr=2e-6
    o.schedule = "constant"  # EasyR1: lr_warmup_ratio 0, no decay
    o.warmup_steps = 0
    o.b2 = 0.999  # AdamW default
    o.weight_decay = 1e-2  # optim.weight_decay: 1.0e-2
    o.max_grad_norm = 1.0  # actor.max_grad_norm: 1.0

    config.train.steps = 1200  # Video-R1 reports ~1.2k RL steps
    o.total_steps = config.train.steps
    config.checkpoint.every = 100  # trainer.save_freq=100

    g = config.grpo
    g.group_size = 8  # rollout.n: 8
    g.prompts_per_step = 8  # one prompt per v5p-8 chip (OneThinker: 128 on 32 GPUs)
    g.max_new_tokens = 768  # Video-R1's completion budget (OneThinker: 4096)
    g.temperature = 1.0  # rollout.temperature: 1.0
    g.top_p = 1.0  # rollout.top_p: 1.0
    g.rewards = {"accuracy": 1.0, "format": 1.0}  # Video-R1's reward_funcs, summed
    g.loss_type = "grpo"  # per-sequence token mean, then batch mean
    g.importance_level = "token"
    g.eps_low = g.eps_high = 0.2  # EasyR1's default clip ratios
    g.beta = 1e-2  # use_kl_loss with kl_coef: 1.0e-2
    g.kl_estimator = "k3"  # kl_penalty: low_var_kl
    g.advantage_scale = "group"  # GRPO's (r - mean) / (std + eps); EMA-GRPO not implemented
    g.adv_eps = 1e-4
    g.num_iterations = 1  # one update per rollout (old log-probs = current)
    g.dynamic_sampling = True  # online_filtering (on accuracy there; here on the summed reward)
    g.temporal = True  # T-GRPO: shuffled-frame rollouts, temporal bonus
    g.temporal_alpha = 0.3  # Video-R1's alpha
    g.temporal_mu = 0.8  # Video-R1's mu
    g.eval_every = 100  # greedy accuracy on the validation prompts
    g.eval_batch_size = 16
    g.eval_examples = 256
    return config
