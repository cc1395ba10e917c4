"""The main job: SFT -> GRPO (T-GRPO) -> test-time scaling on the embedded synthetic dataset.

    python -m vlmm_jax.main --config=configs/quickstart.py --workdir=/tmp/vlmm_quickstart

Builds the synthetic video dataset and a tokenizer, cold-starts a small Video-LMM with
chain-of-thought SFT, improves it with GRPO from verifiable rewards, and evaluates greedy
decoding after every stage plus self-consistency@16, adaptive self-consistency and beam search
at the end, all on the held-out test split. Sized for a 2-core CPU in well under 15 minutes;
`configs/synthetic_benchmark.py` is the same pipeline at the size of the README's table.
Running it again with the same workdir skips finished stages and resumes an interrupted one.
"""

from vlmm_jax.config_dicts import pipeline_defaults


def get_config():
    c = pipeline_defaults()
    s = c.data.synthetic
    s.num_train, s.num_val, s.num_test = 2000, 200, 200
    s.frames, s.size = 8, 84  # 4 temporal x 6x6 patches, merged 2x2: 36 video tokens
    s.difficulty = "easy"

    sft = c.sft
    c.data.batch_size = 4  # packed rows of 1024 tokens
    sft.train.steps = 120
    sft.train.eval_every = 40
    sft.train.eval_batches = 2
    sft.optimizer.learning_rate = 2e-3
    sft.optimizer.warmup_steps = 12
    sft.optimizer.total_steps = sft.train.steps
    sft.checkpoint.every = 40

    rl = c.rl
    rl.train.steps = 20
    rl.optimizer.learning_rate = 2e-5
    rl.optimizer.total_steps = rl.train.steps
    rl.checkpoint.every = 10
    rl.grpo.group_size = 8
    rl.grpo.prompts_per_step = 4
    rl.grpo.max_new_tokens = 96
    rl.grpo.eval_examples = 32  # validation split, at the end of the stage

    e = c.eval
    e.num_examples = 100  # the first 100 questions of the test split, for every stage
    e.max_new_tokens = 96
    return c
