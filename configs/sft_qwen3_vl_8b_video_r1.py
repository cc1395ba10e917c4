"""Chain-of-thought SFT of Qwen3-VL-8B-Instruct on Video-R1-COT-165k (the cold start).

    python -m vlmm_jax.main --config=configs/sft_qwen3_vl_8b_video_r1.py --workdir=DIR \
        --config.init_from=/models/Qwen3-VL-8B-Instruct \
        --config.data.path=/data/Video-R1-data/Video-R1-COT-165k.json \
        --config.data.media_root=/data/Video-R1-data \
        --config.export_hf_dir=DIR/sft_hf

The optimizer follows OneThinker's Qwen3-VL cold start (tulerfeng/OneThinker
`LLaMA-Factory/examples/train_full/onethinker_qwen3_sft.yaml`): lr 1e-5 cosine with 2% warmup,
weight decay 1e-6, bf16, the vision tower and its mergers frozen, 2 fps video. The data budget is
Video-R1's (`src/scripts/run_sft_video.sh`): 16 frames of 128*28*28 = 100,352 pixels, which is
also OneThinker's `video_max_pixels`; Qwen3-VL's video processor budgets all frames together, so
the cap is 16 times that. OneThinker allows up to 128 frames (`video_maxlen`); raise
`data.max_frames` and `data.max_pixels` together for that. The batch is Video-R1's 16 samples per
step. The export is what `configs/grpo_qwen3_vl_8b_video_r1.py` starts from.
"""

from vlmm_jax.config_dicts import model_config_dict, sft_defaults
from vlmm_jax.data import annotation_data

FRAMES = 16
FRAME_PIXELS = 128 * 28 * 28  # 100,352: Video-R1's per-frame cap, OneThinker's video_max_pixels


def get_config():
    config = sft_defaults("qwen3_vl_8b")
    config.model = model_config_dict(
        "qwen3_vl_8b",
        dtype="bfloat16",  # compute in bf16 (OneThinker: bf16: true)
        param_dtype="float32",  # fp32 master weights and optimizer state
        scan_layers=True,  # one compiled decoder layer: fast compiles at 8B
        remat_policy="full",  # recompute activations in the backward (gradient_checkpointing)
        attention_implementation="auto",  # Pallas kernels on TPU / GPU, XLA on a CPU
    )
    config.init_from = "/models/Qwen3-VL-8B-Instruct"  # local HF checkpoint (config + weights)
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, -1, 1  # FSDP over all devices

    annotation_data.add_defaults(config)  # data.source = "annotations"
    d = config.data
    d.path = "/data/Video-R1-data/Video-R1-COT-165k.json"  # the SFT cold-start file
    d.format = "video_r1"  # its `process` field is the chain of thought
    d.media_root = "/data/Video-R1-data"  # its `./X/...` paths are relative to this folder
    d.validation_fraction = 0.005  # ~800 held-out examples for eval loss / token accuracy
    d.batch_size = 16  # Video-R1: 8 devices x 1 sample x 2 accumulation
    d.packing = False  # one sample per row
    d.max_length = 4096  # ~800 video tokens (8 frame groups) + question + chain of thought
    d.num_workers = 8  # grain processes decoding videos
    d.fps = 2.0  # OneThinker video_fps: 2
    d.max_frames = FRAMES
    d.max_pixels = FRAMES * FRAME_PIXELS  # Qwen3-VL: the budget of all frames of a video
    d.image_max_pixels = 802816  # OneThinker image_max_pixels

    o = config.optimizer
    o.learning_rate = 1e-5  # OneThinker learning_rate: 1.0e-5
    o.schedule = "cosine"  # lr_scheduler_type: cosine
    o.end_lr_ratio = 0.0  # cosine to zero
    o.b2 = 0.999  # Trainer's AdamW default
    o.weight_decay = 1e-6  # weight_decay: 1.0e-6
    o.max_grad_norm = 1.0  # Trainer default
    o.freeze = ("vision", "merger")  # freeze_vision_tower, freeze_multi_modal_projector: true

    config.train.steps = 10_350  # one epoch: ~165.6k examples / 16 per step
    o.total_steps = config.train.steps
    o.warmup_steps = 207  # warmup_ratio: 0.02
    config.train.log_every = 10
    config.train.eval_every = 500
    config.train.eval_batches = 16
    config.checkpoint.every = 500
    config.export_hf_dir = ""  # set (e.g. DIR/sft_hf) to hand the model to the GRPO recipe
    config.export_dtype = "bfloat16"  # the released checkpoints' dtype
    return config
