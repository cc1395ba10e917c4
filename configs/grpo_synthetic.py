"""GRPO (with T-GRPO) of the SFT model on the embedded synthetic dataset, on CPU.

    python -m vlmm_jax.main --config=configs/sft_synthetic.py --workdir=/tmp/syn \
        --config.export_hf_dir=/tmp/syn/sft_hf
    python -m vlmm_jax.main --config=configs/grpo_synthetic.py --workdir=/tmp/syn \
        --config.init_from=/tmp/syn/sft_hf

Rewards: accuracy (+0.3 temporal bonus when ordered frames beat shuffled ones) and format.
"""

from vlmm_jax.config_dicts import grpo_defaults, synthetic_model


def get_config():
    config = grpo_defaults("tiny")
    config.model = synthetic_model()  # the SFT recipe's architecture
    config.init_from = ""  # the SFT stage's Hugging Face export
    config.train.steps = 40
    config.optimizer.learning_rate = 2e-5
    config.optimizer.total_steps = 40
    config.grpo.group_size = 8
    config.grpo.prompts_per_step = 4
    config.grpo.max_new_tokens = 96
    return config
