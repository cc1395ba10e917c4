"""Runs a small GRPO stage on the synthetic data (a subprocess worker for the resume and
multi-process tests).

    python -m tests.training.grpo_worker --data DIR --workdir DIR --steps 3 --mesh 1,2,1 \
        [--process-id 0 --num-processes 2 --port 12345]

`prepare(data_dir)` (called by the tests in-process) builds the dataset and its tokenizer once,
so concurrent workers only read them. The policy starts from a random init, and the reward is a
plug-in (`completion_parity_test`: the parity of the completion's length in characters) that
varies across random completions, so every step has a learning signal. Every record a worker's train
pipeline turns into a prompt is appended to `DIR/decoded_<process>.txt`.
"""

import argparse
import json
import os

import jax

from vlmm_jax import rewards


@rewards.register("completion_parity_test", overwrite=True)
def completion_parity(completion: str, example) -> float:
    del example
    return float(len(completion) % 2)  # word counts tie too often: 8 tokens are often 1 word


def config(data_dir: str, steps: int = 3, mesh=(1, -1, 1)):
    from vlmm_jax.config_dicts import grpo_defaults, synthetic_model

    c = grpo_defaults("tiny")
    c.model = synthetic_model()
    c.model.num_layers = 2
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = mesh
    c.data.dir = os.path.join(data_dir, "tfds")
    c.data.tokenizer = os.path.join(data_dir, "tokenizer")
    s = c.data.synthetic
    s.num_train, s.num_val, s.num_test, s.frames, s.size = 24, 8, 8, 8, 56
    c.data.tokenizer_corpus, c.data.vocab_size, c.data.max_length = 24, 512, 512
    c.train.steps = steps
    c.optimizer.learning_rate, c.optimizer.total_steps = 1e-3, steps
    c.checkpoint.every, c.checkpoint.async_save = 1, False
    g = c.grpo
    g.group_size, g.prompts_per_step, g.max_new_tokens = 2, 2, 6
    g.rewards = {"completion_parity_test": 1.0, "format": 0.5}
    g.correctness = "completion_parity_test"
    g.beta = 0.04  # full fine-tuning: the reference is a copy of the initial weights
    g.dynamic_sampling = False
    g.eval_examples, g.eval_batch_size = 2, 2
    return c


def prepare(data_dir: str) -> None:
    """Builds the synthetic dataset and trains its tokenizer under `data_dir` (once)."""
    from vlmm_jax.config_dicts import build_model_config
    from vlmm_jax.data import synthetic_data

    c = config(data_dir)
    synthetic_data.prepare(c, build_model_config(c.model), data_dir)


def log_decoded(path: str) -> None:
    """Appends the id of every record the train pipeline decodes to `path`."""
    from vlmm_jax.data import synthetic_data

    original = synthetic_data.SyntheticSample.__call__

    def call(self, record):
        if "/train/" in record.example.id:
            with open(path, "a") as f:
                f.write(record.example.id + "\n")
        return original(self, record)

    synthetic_data.SyntheticSample.__call__ = call


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--mesh", default="1,-1,1")
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    jax.config.update("jax_default_matmul_precision", "highest")
    if args.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=f"localhost:{args.port}",
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    from vlmm_jax.training.grpo_loop import train_grpo

    os.makedirs(args.workdir, exist_ok=True)
    log_decoded(os.path.join(args.workdir, f"decoded_{jax.process_index()}.txt"))
    c = config(args.data, args.steps, tuple(int(x) for x in args.mesh.split(",")))
    c.export_hf_dir = os.path.join(args.workdir, "export")
    figures = train_grpo(c, args.workdir)
    if jax.process_index() == 0:
        print("RESULT " + json.dumps(figures, default=str))


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main()
