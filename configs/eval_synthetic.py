"""Evaluate a model of the synthetic recipes on the synthetic test split, on CPU.

    python -m vlmm_jax.main --config=configs/sft_synthetic.py --workdir=/tmp/syn \
        --config.export_hf_dir=/tmp/syn/sft_hf
    python -m vlmm_jax.main --config=configs/eval_synthetic.py --workdir=/tmp/syn \
        --config.init_from=/tmp/syn/sft_hf --config.stage=eval_sft
    python -m vlmm_jax.main --config=configs/eval_synthetic.py --workdir=/tmp/syn \
        --config.checkpoint_dir=/tmp/syn/checkpoints/grpo --config.stage=eval_grpo \
        --config.eval.strategy=self_consistency --config.eval.num_samples=8

Writes `predictions_<stage>.jsonl`, the figures under `<stage>` in `results.json` and the table
of every evaluated stage in `results.md`. Keep the dataset fields (`data.*`) and the tokenizer
(the workdir's, trained by the SFT stage) of the run that made the model. An untrained model
scores near chance on the multiple-choice questions and ~0 elsewhere; the SFT recipe's model
answers in the `<think>...</think><answer>...</answer>` format and well above chance.
"""

from vlmm_jax.config_dicts import eval_defaults


def get_config():
    return eval_defaults()
