"""SFT (chain of thought) of a small Video-LMM from scratch on the embedded synthetic dataset.

    python -m vlmm_jax.main --config=configs/sft_synthetic.py --workdir=/tmp/sft_synthetic

Builds the dataset (~15 s) and a 1k-token tokenizer, then trains on CPU; the token accuracy of
the held-out split rises well above its start within a few hundred steps.
"""

from vlmm_jax.config_dicts import sft_defaults, synthetic_data_defaults, synthetic_model


def get_config():
    config = sft_defaults("tiny")
    synthetic_data_defaults(config)
    config.model = synthetic_model()
    config.data.batch_size = 4  # packed rows of 1024 tokens (~3 samples each)
    config.train.steps = 300
    config.train.eval_every = 100
    config.train.eval_batches = 4
    config.optimizer.learning_rate = 2e-3
    config.optimizer.warmup_steps = 20
    config.optimizer.total_steps = 300
    config.checkpoint.every = 100
    config.export_hf_dir = ""  # set to export a Hugging Face checkpoint
    return config
