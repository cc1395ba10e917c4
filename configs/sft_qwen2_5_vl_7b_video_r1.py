"""Chain-of-thought SFT of Qwen2.5-VL-7B-Instruct on Video-R1-COT-165k (Video-R1's cold start).

    python -m vlmm_jax.main --config=configs/sft_qwen2_5_vl_7b_video_r1.py --workdir=DIR \
        --config.init_from=/models/Qwen2.5-VL-7B-Instruct \
        --config.data.path=/data/Video-R1-data/Video-R1-COT-165k.json \
        --config.data.media_root=/data/Video-R1-data \
        --config.export_hf_dir=DIR/sft_hf

Video-R1's published SFT settings (tulerfeng/Video-R1 `src/scripts/run_sft_video.sh`): lr 1e-6,
one epoch, 8 devices x 1 sample x 2 accumulation = 16 samples per step, gradient clipping at 5,
bf16; videos at 2 fps, at most 16 frames of at most 128*28*28 pixels. FSDP over every device of
a TPU slice (or GPU host); the architecture is read from `init_from`'s config.json. The export
is what `configs/grpo_qwen2_5_vl_7b_video_r1.py` starts from (Video-R1's Qwen2.5-VL-7B-COT-SFT).
"""

from vlmm_jax.config_dicts import model_config_dict, sft_defaults
from vlmm_jax.data import annotation_data


def get_config():
    config = sft_defaults("qwen2_5_vl_7b")
    config.model = model_config_dict(
        "qwen2_5_vl_7b",
        dtype="bfloat16",  # compute in bf16 (Video-R1: --bf16)
        param_dtype="float32",  # fp32 master weights and optimizer state
        scan_layers=True,  # one compiled decoder layer: fast compiles at 7B
        remat_policy="full",  # recompute activations in the backward (gradient_checkpointing)
        attention_implementation="auto",  # Pallas kernels on TPU / GPU, XLA on a CPU
    )
    config.init_from = "/models/Qwen2.5-VL-7B-Instruct"  # local HF checkpoint (config + weights)
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, -1, 1  # FSDP over all devices

    annotation_data.add_defaults(config)  # data.source = "annotations"
    d = config.data
    d.path = "/data/Video-R1-data/Video-R1-COT-165k.json"  # the SFT cold-start file
    d.format = "video_r1"  # its `process` field is the chain of thought
    d.media_root = "/data/Video-R1-data"  # its `./X/...` paths are relative to this folder
    d.validation_fraction = 0.005  # ~800 held-out examples for eval loss / token accuracy
    d.batch_size = 16  # 8 devices x per_device_train_batch_size 1 x gradient_accumulation 2
    d.packing = False  # one sample per row, as Video-R1 trains
    d.max_length = 4096  # ~1k video tokens (16 frames) + question + chain of thought
    d.num_workers = 8  # grain processes decoding videos
    d.fps = 2.0  # qwen_vl_utils' sampling rate
    d.max_frames = 16  # Video-R1 trains on 16 frames
    d.max_pixels = 128 * 28 * 28  # per frame (Video-R1's training resolution)
    d.image_max_pixels = 512 * 28 * 28  # Video-R1's --max_pixels 401408 for image examples

    o = config.optimizer
    o.learning_rate = 1e-6  # Video-R1 --learning_rate 1e-6
    o.schedule = "linear"  # transformers' Trainer default (decay to 0)
    o.warmup_steps = 0  # Trainer default
    o.end_lr_ratio = 0.0  # linear to zero
    o.b2 = 0.999  # Trainer's AdamW default
    o.weight_decay = 0.0  # Trainer default
    o.max_grad_norm = 5.0  # Video-R1 --max_grad_norm 5

    config.train.steps = 10_350  # one epoch: ~165.6k examples / 16 per step
    o.total_steps = config.train.steps
    config.train.log_every = 10
    config.train.eval_every = 500
    config.train.eval_batches = 16
    config.checkpoint.every = 500
    config.export_hf_dir = ""  # set (e.g. DIR/sft_hf) to hand the model to the GRPO recipe
    config.export_dtype = "bfloat16"  # the released checkpoints' dtype
    return config
