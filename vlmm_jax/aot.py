"""Proof of fit: compile a recipe's real programs for a TPU slice on this (CPU) host.

    python -m vlmm_jax.main --config=configs/grpo_qwen2_5_vl_7b_video_r1.py --workdir=DIR \
        --config.job=aot --config.aot.topology=v5p-8 [--config.aot.step_time=12.5]

The programs are built by the code training runs (`SFTRun.jitted`, `GRPO`'s jitted log-prob,
gradient and optimizer programs, the `Sampler`'s generate), on the slice's devices
(`chips.topology_devices`, through libtpu), at the recipe's largest shapes, and compiled with
nothing executed; no data, checkpoint or tokenizer is read (the model is `config.model`).

  sft    train_step     one optimizer step: `data.batch_size` rows of `data.max_length` tokens,
                        each with the largest visual item the data settings allow
  grpo   rollout        the sampler: prefill + decode loop, `prompts_per_step` prompts of
                        `max_length` tokens x G samples x `max_new_tokens`
         rollout_shuffled   T-GRPO's G/2 samples on shuffled frames
         logp           the reference (beta > 0) / old-policy (num_iterations > 1) pass
         update         loss and gradients of one update piece (a micro-batch of groups)
         optimizer      the guarded optimizer step
         eval           the in-loop greedy eval (`eval_batch_size` prompts)
  eval   generate       greedy (`eval.batch_size` prompts, `eval.max_new_tokens`)

Per program and chip: argument, temporary, output and aliased bytes (`memory_analysis()`), and
the peak = arguments + temporaries + outputs - aliased + the resident buffers the program does
not take (the optimizer state during a rollout, the reference weights during an update); the
chip's HBM (`chips.CHIPS`), the headroom left after the runtime's reserve
(`chips.RUNTIME_RESERVE`) and the compile time; the FLOPs XLA counts (it counts
one trip of a while loop, so the decode loop and scanned layers are under-counted: see
`flops_note`), and for the training programs the model FLOPs (6 N tokens + attention) and the
MFU at `aot.step_time`. Writes `DIR/aot.json`, prints a table, and raises `DoesNotFit` (the job
exits non-zero) naming every program that fails to compile or to fit.

Every row also has `sharded_argument_bytes`: the per-chip bytes of the program's arguments as
their shardings lay them out, which the compiled `argument_bytes` should match (up to TPU
layout padding). `--config.aot.compile=False` stops there: each program is traced and lowered
with its shardings (seconds, not the minutes of a 7B compile), and only those bytes are
reported, with no memory analysis and no fit verdict: a quick look at how a recipe shards on a
slice too large to compile for here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from vlmm_jax import hosts
from vlmm_jax.chips import GIB, RUNTIME_RESERVE, Slice, parse_slice, topology_devices
from vlmm_jax.data.annotation_data import vision_options
from vlmm_jax.data.processors import processor
from vlmm_jax.inference.sampler import Sampler, _generate
from vlmm_jax.inference.sampling import Greedy
from vlmm_jax.models.positions import vision_layout
from vlmm_jax.policy import Policy
from vlmm_jax.training.grpo import GRPO, rollout_method, split_trainable
from vlmm_jax.training.trainer import SFTRun

PATCH_MULTIPLE = 256  # the pipelines' default patch bucket


class DoesNotFit(RuntimeError):
    """Some program failed to compile or needs more than the chip's HBM."""


@dataclasses.dataclass
class Program:
    """A jitted program: `lower()` lowers it with `arguments` (abstract, sharded); `resident_in`:
    bytes per chip of the run's resident buffers it takes as arguments (so the rest stay
    resident beside it)."""

    name: str
    lower: Callable[[], Any]
    arguments: Any
    resident_in: int
    model_flops: float | None = None


# ----------------------------------------------------------------------------- shapes
def per_chip_bytes(tree) -> int:
    """Bytes per device of a pytree of sharded abstract (or concrete) arrays."""
    total = 0
    for x in jax.tree.leaves(tree):
        shape = x.sharding.shard_shape(x.shape) if getattr(x, "sharding", None) else x.shape
        total += int(np.prod(shape)) * x.dtype.itemsize
    return total


def _abstract(shape, dtype, sharding) -> jax.ShapeDtypeStruct:
    if not jax.dtypes.issubdtype(dtype, jax.dtypes.extended):  # PRNG keys stay as they are
        dtype = jnp.dtype(dtype)
    return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharding)


def _like(tree, shardings):
    return jax.tree.map(lambda x, s: _abstract(x.shape, x.dtype, s), tree, shardings)


def _replicated(tree, mesh):
    rep = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda x: _abstract(np.shape(x), x.dtype, rep), tree)


def max_patches(config: ml_collections.ConfigDict) -> int:
    """Patch rows of the largest visual item one sample can hold under the data settings (the
    model family's pixel budgets, `processors.processor(...).max_patches`)."""
    d, v = config.data, config.model.vision
    if d.source == "synthetic":
        s = d.synthetic
        return (s.frames // v.temporal_patch_size) * (s.size // v.patch_size) ** 2
    if d.source != "annotations":
        t, h, w = d.video_grid
        return t * h * w
    model_type = config.model.get("model_type", "qwen2_5_vl")
    proc = processor(model_type, v)
    return proc.max_patches(d.nframes or d.max_frames, vision_options(d))


def _grid(patches: int, config) -> np.ndarray:
    """A one-item grid `[1, 3]` of exactly `patches` patch rows (1 x merge x rest)."""
    m = config.model.vision.spatial_merge_size
    return np.array([[1, m, patches // m]])


def prompt_shapes(config, b: int, t: int, mesh) -> dict:
    """Abstract rows-layout prompts: `b` prompts of `t` tokens, each with the largest item."""
    p = -(-max_patches(config) // PATCH_MULTIPLE) * PATCH_MULTIPLE
    v = config.model.vision
    layout = vision_layout(_grid(p, config), _vision_config(config), batch_items=False)
    out = {
        "input_ids": ((b, t), np.int32),
        "attention_mask": ((b, t), np.int32),
        "position_ids": ((3, b, t), np.int32),
        "rope_deltas": ((b, 1), np.int32),
        "visual_pixels": (
            (b, p, v.in_channels * v.temporal_patch_size * v.patch_size**2),
            np.float32,
        ),
    }
    arrays = {k: _rows_abstract(k, shape, dtype, mesh) for k, (shape, dtype) in out.items()}
    arrays["vision_layout"] = {
        k: _rows_abstract(k, (b, *a.shape), a.dtype, mesh) for k, a in layout.items()
    }
    return arrays


def _rows_abstract(key, shape, dtype, mesh):
    axis = 1 if key == "position_ids" else 0
    return _abstract(shape, dtype, hosts.row_sharding(mesh, len(shape), axis, shape[axis]))


def _vision_config(config):
    from vlmm_jax.config_dicts import build_model_config

    return build_model_config(config.model).vision


def sft_batch_shapes(config, mesh) -> dict:
    """The abstract `[M, B/M, ...]` SFT batch (one sample per row, the largest item each)."""
    d = config.data
    m, b, length = d.micro_batches, d.batch_size // d.micro_batches, d.max_length
    rows = prompt_shapes(config, b, length, mesh)
    out = {
        "input_ids": rows["input_ids"],
        "loss_mask": rows["input_ids"],
        "segment_ids": rows["input_ids"],
        "position_ids": rows["position_ids"],
        "visual_pixels": rows["visual_pixels"],
        "vision_layout": rows["vision_layout"],
    }
    return jax.tree.map(lambda x: _abstract((m, *x.shape), x.dtype, None), out)


# ----------------------------------------------------------------------------- programs
class IdsTokenizer:
    """The special ids of the model config, for building the programs without a tokenizer."""

    def __init__(self, model_config):
        c = model_config
        self.pad_id = c.pad_token_id or 0
        self._kw = {
            "eos_ids": tuple({c.eos_token_id, self.pad_id}),
            "pad_id": self.pad_id,
            "suppress_ids": (
                c.vision_start_token_id,
                c.vision_end_token_id,
                c.image_token_id,
                c.video_token_id,
            ),
        }

    def generation_kwargs(self):
        return dict(self._kw)


def _policy(run: SFTRun, params) -> Policy:
    return run.policy.with_params(params)


def _generate_program(run, name, sampler, policy, prompts, *, method, n, max_new, resident):
    mesh = run.mesh
    b = prompts["input_ids"].shape[0]
    aux = _replicated({"row_ids": np.zeros(b * n, np.int32), "stops": sampler.stop_arrays()}, mesh)
    rng = _abstract((), jax.random.key(0).dtype, NamedSharding(mesh, PartitionSpec()))

    def lower():
        with policy.context():
            return _generate.lower(
                sampler,
                policy,
                prompts,
                rng,
                aux["row_ids"],
                aux["stops"],
                method=method,
                num_samples=n,
                max_new=max_new,
            )

    return Program(name, lower, (policy, prompts, rng, aux), resident)


def sft_programs(run: SFTRun) -> list[Program]:
    abstract, shardings = run.state_shardings()
    state = _like(abstract, shardings)
    batch = sft_batch_shapes(run.config, run.mesh)
    d = run.config.data
    tokens = d.batch_size * d.max_length
    patches = d.batch_size * batch["visual_pixels"].shape[2]
    step = run.jitted("train", batch)
    flops = model_flops(run, tokens, patches, d.max_length)
    return [
        Program(
            "train_step",
            lambda: step.lower(state, batch),
            (state, batch),
            per_chip_bytes(state),
            flops,
        )
    ]


def grpo_programs(run: SFTRun) -> list[Program]:
    g, d = run.config.grpo, run.config.data
    abstract, shardings = run.state_shardings()
    state = _like(abstract, shardings)
    params = state.params
    grpo = GRPO(
        run.policy,
        run.tx,
        IdsTokenizer(run.model_config),
        g,
        state_shardings=shardings,
        micro_batches=d.micro_batches,
        trainable=run.trainable,
    )
    mesh, t, n = run.mesh, d.max_length, g.max_new_tokens
    b = g.prompts_per_step
    prompts = prompt_shapes(run.config, b, t, mesh)
    policy = _policy(run, params)
    params_bytes = per_chip_bytes(params)
    progs = [
        _generate_program(
            run,
            "rollout",
            grpo.sampler,
            policy,
            prompts,
            method=rollout_method(g),
            n=g.group_size,
            max_new=n,
            resident=params_bytes,
        )
    ]
    if g.temporal:
        progs.append(
            _generate_program(
                run,
                "rollout_shuffled",
                grpo.sampler,
                policy,
                prompts,
                method=rollout_method(g),
                n=g.group_size // 2,
                max_new=n,
                resident=params_bytes,
            )
        )
    pb = b // d.micro_batches  # prompts per update piece
    piece = {
        "prompts": prompt_shapes(run.config, pb, t, mesh),
        **_rows(
            {
                "tokens": ((pb * g.group_size, n), np.int32),
                "mask": ((pb * g.group_size, n), np.float32),
                "advantages": ((pb * g.group_size,), np.float32),
            },
            mesh,
        ),
    }
    logps = {}
    if g.beta > 0:
        logps["ref_logp"] = _rows({"x": ((pb * g.group_size, n), np.float32)}, mesh)["x"]
    if g.num_iterations > 1:
        logps["old_logp"] = (
            logps.get("ref_logp") or _rows({"x": ((pb * g.group_size, n), np.float32)}, mesh)["x"]
        )
    if logps:
        # The reference pass has the policy's shapes (LoRA: the base, adapters off).
        progs.append(
            Program(
                "logp", lambda: grpo.logp_fn.lower(policy, piece), (policy, piece), params_bytes
            )
        )
    norms = _replicated(
        {
            "num_global_tokens": np.float32(0),
            "num_global_sequences": np.float32(0),
            "num_chunks": np.int32(1),
        },
        mesh,
    )
    full = {**piece, **logps}
    tokens = b * g.group_size * (t + n)
    flops = model_flops(run, tokens, b * piece["prompts"]["visual_pixels"].shape[1], t + n)
    trained, frozen = split_trainable(params, run.trainable)
    progs.append(
        Program(
            "update",
            lambda: grpo.grad_fn.lower(trained, frozen, full, norms),
            (trained, frozen, full, norms),
            params_bytes,
            flops,
        )
    )
    loss = _abstract((), np.float32, NamedSharding(mesh, PartitionSpec()))
    progs.append(
        Program(
            "optimizer",
            lambda: grpo.apply_fn.lower(state, trained, loss),
            (state, trained, loss),
            per_chip_bytes(state),
        )
    )
    eval_prompts = prompt_shapes(run.config, g.eval_batch_size, t, mesh)
    progs.append(
        _generate_program(
            run,
            "eval",
            grpo.sampler,
            policy,
            eval_prompts,
            method=Greedy(),
            n=1,
            max_new=n,
            resident=params_bytes,
        )
    )
    return progs


def _rows(spec: dict, mesh) -> dict:
    return {k: _rows_abstract(k, shape, dtype, mesh) for k, (shape, dtype) in spec.items()}


def eval_programs(run: SFTRun) -> list[Program]:
    e = run.config.eval
    abstract, shardings = run.state_shardings()
    params = _like(abstract.params, shardings.params)
    sampler = Sampler(
        run.model,
        max_new_tokens=e.max_new_tokens,
        **IdsTokenizer(run.model_config).generation_kwargs(),
    )
    length = run.config.data.max_length
    prompts = prompt_shapes(run.config, e.batch_size, length, run.mesh)
    return [
        _generate_program(
            run,
            "generate",
            sampler,
            _policy(run, params),
            prompts,
            method=Greedy(),
            n=1,
            max_new=e.max_new_tokens,
            resident=per_chip_bytes(params),
        )
    ]


def model_flops(run: SFTRun, tokens: int, patches: int, length: int) -> float:
    """Training FLOPs of one step (forward + backward), as MaxText counts them: 6 x parameters
    x tokens for the decoder (patches for the vision tower) plus the causal attention term
    6 x layers x heads x head_dim x tokens x length (the QK^T and AV matmuls, halved by the
    causal mask)."""
    c = run.model_config
    text = vision = 0
    for path, x in jax.tree_util.tree_leaves_with_path(run.abstract_params):
        top = str(getattr(path[0], "key", ""))
        if top == "lora":
            continue
        if top == "visual":
            vision += int(np.prod(x.shape))
        else:
            text += int(np.prod(x.shape))
    t = c.text
    attention = 6 * t.num_layers * t.num_heads * t.resolved_head_dim * tokens * length
    return float(6 * text * tokens + 6 * vision * patches + attention)


PROGRAMS = {"sft": sft_programs, "grpo": grpo_programs, "eval": eval_programs}


def recipe_kind(config) -> str:
    if "grpo" in config:
        return "grpo"
    if "eval" in config and "checkpoint_dir" in config:
        return "eval"
    return "sft"


# ----------------------------------------------------------------------------- the job
def compile_programs(config: ml_collections.ConfigDict, slice_: Slice) -> dict[str, Any]:
    """Compiles the recipe's programs for `slice_`; returns the report (see the docstring)."""
    devices = topology_devices(slice_)
    run = SFTRun(config, "/tmp/unused", devices=devices, prepare_data=False)
    programs = PROGRAMS[recipe_kind(config)](run)
    resident = per_chip_bytes(_like(*run.state_shardings()))
    if config.get("grpo") is not None and config.grpo.beta > 0 and not run.lora:
        ref = jax.tree.map(  # the KL reference, kept in the compute dtype (grpo_loop)
            lambda x: jax.ShapeDtypeStruct(x.shape, run.policy.dtype), run.abstract_params
        )
        resident += per_chip_bytes(_like(ref, run.param_shardings()))
    hbm = slice_.chip.hbm_bytes
    rows = {}
    for p in programs:
        start = time.perf_counter()
        sharded = {"sharded_argument_bytes": per_chip_bytes(p.arguments)}
        try:
            lowered = p.lower()
            if not config.aot.compile:
                rows[p.name] = {**sharded, "lower_s": round(time.perf_counter() - start, 1)}
                continue
            compiled = lowered.compile()
        except Exception as e:  # reported, and the job fails naming the program
            rows[p.name] = {"error": f"{type(e).__name__}: {str(e)[:2000]}"}
            continue
        mem = compiled.memory_analysis()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        peak = (
            mem.argument_size_in_bytes
            + mem.temp_size_in_bytes
            + mem.output_size_in_bytes
            - mem.alias_size_in_bytes
            + max(0, resident - p.resident_in)
        )
        row = {
            **sharded,
            "argument_bytes": int(mem.argument_size_in_bytes),
            "temp_bytes": int(mem.temp_size_in_bytes),
            "output_bytes": int(mem.output_size_in_bytes),
            "alias_bytes": int(mem.alias_size_in_bytes),
            "other_resident_bytes": int(max(0, resident - p.resident_in)),
            "peak_bytes": int(peak),
            "hbm_bytes": int(hbm),
            "headroom_bytes": int(hbm - RUNTIME_RESERVE - peak),
            "fits": bool(peak <= hbm - RUNTIME_RESERVE),
            "compile_s": round(time.perf_counter() - start, 1),
            "xla_flops": float((cost or {}).get("flops", 0.0)),
            "flops_note": "XLA counts one trip of each while loop / scan (decode loop, "
            "scanned layers): a lower bound",
        }
        if p.model_flops is not None:
            row["model_flops"] = p.model_flops
            step = config.aot.step_time
            if step:
                peak_flops = slice_.chip.peak_bf16_flops * slice_.num_chips
                row["mfu"] = p.model_flops / (step * peak_flops)
        rows[p.name] = row
    return {
        "compiled": bool(config.aot.compile),
        "topology": slice_.name,
        "chip": slice_.chip.name,
        "chips": slice_.num_chips,
        "mesh": dict(run.mesh.shape),
        "attention": run.model_config.attention_implementation,
        "resident_bytes": int(resident),
        "programs": rows,
    }


def table(report: dict[str, Any]) -> str:
    """A markdown table of the report, GiB per chip."""
    head = (
        "| program | arguments | temporaries | outputs | peak | HBM | headroom | fits | compile s |"
    )
    lines = [head, "|" + "---|" * 9]
    gib = lambda x: f"{x / GIB:.2f}"  # noqa: E731
    for name, r in report["programs"].items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error'][:80]} |" + " |" * 7)
            continue
        if "argument_bytes" not in r:  # lowered only: the arguments as sharded
            row = f"| {name} | {gib(r['sharded_argument_bytes'])} |" + " - |" * 6
            lines.append(row + f" lowered in {r['lower_s']} s |")
            continue
        lines.append(
            f"| {name} | {gib(r['argument_bytes'])} | {gib(r['temp_bytes'])} | "
            f"{gib(r['output_bytes'])} | {gib(r['peak_bytes'])} | {gib(r['hbm_bytes'])} | "
            f"{gib(r['headroom_bytes'])} | {'yes' if r['fits'] else 'NO'} | {r['compile_s']} |"
        )
    return "\n".join(lines)


def run_aot(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """The `aot` job: compile, write `workdir/aot.json`, print the table; raises `DoesNotFit`."""
    slice_ = parse_slice(config.aot.topology)
    report = compile_programs(config, slice_)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "aot.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"{slice_.name}: {slice_.num_chips} x {slice_.chip.name}, mesh {report['mesh']}")
    print(table(report))
    bad = [
        f"{name}: {r['error']}"
        if "error" in r
        else f"{name}: needs {r['peak_bytes'] / GIB:.2f} "
        f"GiB per chip, the chip has {r['hbm_bytes'] / GIB:.2f}"
        for name, r in report["programs"].items()
        if "error" in r or not r.get("fits", True)
    ]
    if bad:
        raise DoesNotFit(f"{slice_.name}: " + "; ".join(bad))
    return report


__all__ = ["DoesNotFit", "compile_programs", "parse_slice", "run_aot", "table"]
