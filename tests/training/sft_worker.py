"""Runs a few SFT steps on the random source and prints the losses as JSON (a subprocess worker
for the mesh-equivalence, multi-process and kill-and-resume tests).

    python -m tests.training.sft_worker --mesh 2,2,2 --steps 5 [--workdir DIR]
        [--process-id 0 --num-processes 2 --port 12345]
"""

import argparse
import json
import os

import jax


def config(mesh, steps, workdir_ckpt_every, schedule_steps=None):
    from vlmm_jax.config_dicts import sft_defaults

    c = sft_defaults("tiny")
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = mesh
    c.data.batch_size = 16  # two micro-batches of 8 rows: one row per device on 8 devices
    c.data.micro_batches = 2
    c.train.steps = steps
    c.train.eval_every = 0
    c.train.eval_batches = 0
    c.optimizer.total_steps = schedule_steps or steps
    c.optimizer.warmup_steps = 2
    c.checkpoint.every = workdir_ckpt_every
    c.checkpoint.best_metric = ""
    return c


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mesh", default="1,-1,1")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--workdir", default="")
    p.add_argument("--ckpt-every", type=int, default=1000)
    p.add_argument("--schedule-steps", type=int, default=0)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    if args.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=f"localhost:{args.port}",
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    mesh = tuple(int(x) for x in args.mesh.split(","))
    cfg = config(mesh, args.steps, args.ckpt_every, args.schedule_steps)
    if args.workdir:  # the full loop: checkpoints, resume, metrics.jsonl
        from vlmm_jax.training.trainer import train_sft

        train_sft(cfg, args.workdir)
        return
    from vlmm_jax.training.batches import shard_batch
    from vlmm_jax.training.data_sources import make_dataset
    from vlmm_jax.training.metrics import normalize
    from vlmm_jax.training.trainer import SFTRun

    run = SFTRun(cfg, "/tmp/unused")
    state = run.init_state()
    it = iter(make_dataset(cfg, run.model_config, "train"))
    losses = []
    for _ in range(args.steps):
        state, sums = run.run_step("train", state, shard_batch(next(it), run.mesh))
        losses.append(normalize(sums)["loss"])
    if jax.process_index() == 0:
        print(
            "LOSSES "
            + json.dumps({"mesh": args.mesh, "devices": jax.device_count(), "losses": losses})
        )


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main()
