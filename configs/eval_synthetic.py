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

import ml_collections

from vlmm_jax.config_dicts import sft_defaults, synthetic_data_defaults, synthetic_model


def get_config():
    config = sft_defaults("tiny")
    synthetic_data_defaults(config)
    config.model = synthetic_model()  # the synthetic recipes' architecture
    config.job = "eval"
    config.stage = "eval"  # name in results.json and of predictions_<stage>.jsonl
    config.init_from = ""  # a Hugging Face directory (ours or a real Qwen2.5-VL)
    config.checkpoint_dir = ""  # or an orbax folder of a stage (WORKDIR/checkpoints/STAGE)
    config.checkpoint_step = -1  # its step; -1: the latest
    config.checkpoint.async_save = False  # nothing is saved; kept for the shared run setup

    e = config.eval = ml_collections.ConfigDict()
    e.strategy = "greedy"  # greedy | self_consistency | adaptive_consistency | beam_search
    #                        | best_of_n | sparse_to_dense
    e.split = "test"  # synthetic split (ignored with annotations)
    e.annotations = ""  # an annotation file in any read_examples format; empty: the split
    e.format = ""  # its format (empty: detected)
    e.media_root = ""  # where its relative video paths start (empty: the file's folder)
    e.fps = 2.0  # annotation files: frames sampled per second of video
    e.num_frames = 0  # frames per video; 0: the dataset's own sampling (all synthetic frames)
    e.max_pixels = 0  # annotation files: per-frame pixel cap (0: qwen_vl_utils' default)
    e.total_pixels = 20480 * 28 * 28  # annotation files: per-video pixel budget
    e.num_examples = 0  # evaluate the first N examples; 0: all
    e.batch_size = 16  # greedy: prompts per generate call
    e.patch_multiple = 256  # greedy: patch rows per batch rounded up (fewer compiled shapes)
    e.max_new_tokens = 128  # decode budget per completion
    e.temperature = 0.7  # sampled strategies: softmax temperature
    e.top_p = 0.95  # sampled strategies: nucleus
    e.num_samples = 8  # self_consistency / best_of_n / sparse_to_dense n; adaptive: the max
    e.round_size = 4  # adaptive_consistency: samples per round
    e.stopping = "beta"  # adaptive_consistency: beta (Aggarwal et al. 2023) | margin
    e.threshold = 0.95  # adaptive_consistency: beta confidence to stop at
    e.margin = 3  # adaptive_consistency: vote margin to stop at (stopping=margin)
    e.beam_width = 4  # beam_search
    e.length_alpha = 1.0  # beam_search: length-penalty exponent
    e.scorer = "mean_logprob"  # best_of_n: mean_logprob or a vlmm_jax.rewards name (format)
    e.frame_levels = (4, 8, 16)  # sparse_to_dense: ascending frame counts
    e.agreement = 1.0  # sparse_to_dense: vote share that stops at a level
    return config
