"""The one boundary between the model and everything that calls it: `Policy`.

A `Policy` is a pytree. Its data are the parameters as trained (the base tree, plus LoRA adapters
under `"lora"`: see `models.lora`) and, for full fine-tuning with a KL penalty, a frozen copy of the
initial parameters; the model, the mesh and the logical-axis rules are static. Every pillar calls
the model through it:

    SFT loss            policy.apply(...) -> hidden states; policy.token_stats(hidden, targets)
    GRPO rollouts       Sampler(...)(policy, prompts): LoRA folded in once per call
    GRPO log-probs      policy.completion_stats(prompts, completions, group=G)
    reference pass      policy.reference().completion_stats(...)
    greedy eval, TTS    Sampler / BeamSearch / ModelGenerator with the policy
    export              policy.merged()

LoRA, the mesh context and the logical sharding rules live here and nowhere else: `apply` runs the
model on `weights()` (each adapted kernel `W + scale * A @ B`, the base under `stop_gradient`),
and every jitted program that runs the model is made with `policy.jit(...)`, which traces and runs
it under `policy.context()`, so the model's `constrain()` calls shard its activations.

Prompts come in one of two layouts (both left-padded, `input_ids [B, T]`, `attention_mask [B, T]`):
  flat  transformers' inputs: `pixel_values [P, C]`, `pixel_values_videos [P, C]`, the grids and
        `second_per_grid_ts`, plus the host-computed `vision_layout` (`prompt_layout`);
  rows  `position_ids [3, B, T]`, `rope_deltas [B, 1]` and, with vision, `visual_pixels [B, P, C]`
        with per-row `vision_layout` leaves `[B, ...]` (`data.packing.collate_rows`, layout
        "rows"): every array has a batch axis, so prompts shard over the mesh and across hosts.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import Mesh

from vlmm_jax.models import CACHE_AXES, Qwen2_5_VL, init_cache
from vlmm_jax.models.layers import constrain
from vlmm_jax.models.lora import LORA, base_params, effective_params, merge
from vlmm_jax.models.text import Cache

FLAT_VISION_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "pixel_values_videos",
    "video_grid_thw",
    "second_per_grid_ts",
)
ROW_KEYS = ("position_ids", "rope_deltas", "visual_pixels")
# The batch axis of each prompt array (every other key, vision_layout leaves included: axis 0).
BATCH_AXIS = {"position_ids": 1}


def is_rows(prompts: Mapping[str, Any]) -> bool:
    """Whether `prompts` are in the rows layout (they carry `position_ids`)."""
    return prompts.get("position_ids") is not None


def model_inputs(prompts: Mapping[str, Any]) -> dict[str, Any]:
    """The model's keyword arguments for a prompt batch in either layout (see the docstring)."""
    keys = ("input_ids", "attention_mask", "vision_layout")
    keys += ROW_KEYS if is_rows(prompts) else FLAT_VISION_KEYS
    return {k: prompts[k] for k in keys if prompts.get(k) is not None}


def repeat_rows(prompts: Mapping[str, Any], n: int) -> dict[str, Any]:
    """Each row of a rows-layout prompt batch repeated `n` times (prompt-major)."""
    if not is_rows(prompts):
        raise ValueError("repeat_rows: flat prompts repeat with `sampler.repeat_prompts`")

    def rep(path, x):
        axis = BATCH_AXIS.get(str(getattr(path[0], "key", "")), 0)
        return jnp.repeat(x, n, axis=axis)

    return jax.tree_util.tree_map_with_path(rep, dict(prompts))


def fan_out(cache: Cache, n: int) -> Cache:
    """Repeats every row of a cache `n` times (prompt-major), as `jnp.repeat` on the batch axes."""
    if n == 1:
        return cache
    out = {
        "k": jnp.repeat(cache["k"], n, axis=1),
        "v": jnp.repeat(cache["v"], n, axis=1),
        "segment_ids": jnp.repeat(cache["segment_ids"], n, axis=0),
        "index": cache["index"],
    }
    return nn.with_logical_constraint(out, CACHE_AXES)


@struct.dataclass(kw_only=True)
class Policy:
    """The model with its trained parameters, mesh and rules (see the module docstring).

    Attributes:
      params: the parameters as trained (base tree, `"lora"` adapters when LoRA is on); None in
        a template that only carries the static fields (`with_params` fills it).
      reference_params: full fine-tuning with a KL penalty: the frozen initial parameters (a
        LoRA policy's reference is its base tree, no copy); None otherwise.
      model: the Flax module. mesh, rules: the device mesh and logical-axis rules (None: run
        wherever the arrays are, with no sharding constraints).
      logits_chunk: positions per chunk of the LM head in `token_stats` (the fp32 logits of
        `[B, logits_chunk, V]` are the peak, recomputed in the backward pass).
    """

    params: Any = None
    reference_params: Any = None
    model: Qwen2_5_VL = struct.field(pytree_node=False)
    mesh: Mesh | None = struct.field(pytree_node=False, default=None)
    rules: tuple | None = struct.field(pytree_node=False, default=None)
    logits_chunk: int = struct.field(pytree_node=False, default=256)

    # ------------------------------------------------------------------ construction
    @property
    def config(self):
        return self.model.config

    @property
    def dtype(self) -> jnp.dtype:
        """The compute dtype."""
        return jnp.dtype(self.model.config.dtype)

    @property
    def has_lora(self) -> bool:
        return self.params is not None and LORA in self.params

    def with_params(self, params, reference_params=None) -> Policy:
        return self.replace(params=params, reference_params=reference_params)

    def reference(self) -> Policy:
        """The frozen reference policy: a LoRA policy's base weights (no copy), else the
        `reference_params` the run kept from its start.

        Raises:
          ValueError: a full fine-tuning policy created without `reference_params`.
        """
        if self.has_lora:
            return self.replace(params=base_params(self.params), reference_params=None)
        if self.reference_params is None:
            raise ValueError(
                "Policy.reference(): this policy keeps no reference parameters (full fine-tuning "
                "keeps them only when a KL penalty needs them, grpo.beta > 0)"
            )
        return self.replace(params=self.reference_params, reference_params=None)

    # ------------------------------------------------------------------ parameters
    def weights(self):
        """The parameters the model runs with: adapters folded in, differentiable with respect to
        the adapters only (the base under `stop_gradient`); plain params pass through."""
        return effective_params(self.params) if self.has_lora else self.params

    def merged(self):
        """A plain checkpoint tree (adapters folded in), for export and inference."""
        return merge(self.params) if self.has_lora else self.params

    def for_inference(self) -> Policy:
        """This policy with its adapters folded in once (call inside a jitted program, before a
        decode loop: each step then reads plain weights)."""
        return self.replace(params=self.merged(), reference_params=None) if self.has_lora else self

    # ------------------------------------------------------------------ mesh
    def context(self) -> contextlib.ExitStack:
        """The mesh and logical-axis rules to trace and run the model's programs under."""
        stack = contextlib.ExitStack()
        if self.mesh is not None:
            stack.enter_context(jax.set_mesh(self.mesh))
        if self.rules is not None:
            stack.enter_context(nn.logical_axis_rules(self.rules))
        return stack

    def jit(self, fn: Callable, **jit_kwargs) -> Callable:
        """`jax.jit(fn, **jit_kwargs)`, traced and run under `context()`."""
        jitted = jax.jit(fn, **jit_kwargs)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            with self.context():
                return jitted(*args, **kwargs)

        call.lower = lambda *a, **k: _lower(self, jitted, *a, **k)
        return call

    # ------------------------------------------------------------------ model calls
    def apply(self, *args, **kwargs):
        """`model.apply` on `weights()` (the model's `__call__` arguments)."""
        return self.model.apply({"params": self.weights()}, *args, **kwargs)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Vocabulary logits `[B, T, V]` fp32 for final hidden states `[B, T, D]`."""
        return self.model.apply({"params": self.weights()}, hidden, method=Qwen2_5_VL.logits)

    def prefill(self, prompts: Mapping[str, Any], cache: Cache):
        """Runs left-padded prompts (either layout) into `cache`; the LM head is skipped.

        Returns the model output: `cache`, `rope_deltas [B, 1]`, `hidden_states [B, T, D]`.
        """
        return self.apply(**model_inputs(prompts), cache=cache, return_logits=False)

    def token_stats(
        self, hidden: jax.Array, targets: jax.Array, *, temperature: float = 1.0
    ) -> dict[str, jax.Array]:
        """Per-position figures of `targets [B, T]` under `softmax(logits(hidden) / temperature)`.

        The LM head runs on chunks of `logits_chunk` positions under `jax.checkpoint`, so the
        fp32 logits never exist for all T at once, in the forward or the backward pass.

        Returns:
          `logp [B, T]` (log-prob of each target), `entropy [B, T]` and `correct [B, T]` (bool:
          the target is the argmax), all fp32 but `correct`.
        """
        b, t, d = hidden.shape
        c = min(self.logits_chunk, t)
        n = -(-t // c)

        @jax.checkpoint
        def chunk(h, y):  # [B, c, D], [B, c]
            z = self.logits(h) / temperature  # [B, c, V] fp32
            lse = jax.nn.logsumexp(z, axis=-1)
            logp = jnp.take_along_axis(z, y[..., None], axis=-1)[..., 0] - lse
            entropy = lse - jnp.sum(jax.nn.softmax(z, axis=-1) * z, axis=-1)
            return logp, entropy, jnp.argmax(z, axis=-1) == y

        if n == 1:
            logp, entropy, correct = chunk(hidden, targets)
        else:
            pad = n * c - t
            h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(b, n, c, d).swapaxes(0, 1)
            y = jnp.pad(targets, ((0, 0), (0, pad))).reshape(b, n, c).swapaxes(0, 1)
            outs = jax.lax.map(lambda xs: chunk(*xs), (h, y))  # each [n, B, c]
            logp, entropy, correct = (o.swapaxes(0, 1).reshape(b, n * c)[:, :t] for o in outs)
        return {"logp": logp, "entropy": entropy, "correct": correct}

    def completion_stats(
        self,
        prompts: Mapping[str, Any],
        completions: jax.Array,
        *,
        group: int,
        temperature: float = 1.0,
    ) -> dict[str, jax.Array]:
        """`token_stats` of sampled `completions [R, N]` (R = B * G, prompt-major), with one
        prompt pass per group.

        Each prompt (video included) is prefilled once; its KV cache is repeated for the G
        completions of its group, which run as one cached chunk attending to it. Gradients flow
        back through the repeat into the single prompt pass, so the vision tower and the
        prompt's decoder layers run once per group instead of G times.
        """
        ids = prompts["input_ids"]
        b, t = ids.shape
        n = completions.shape[1]
        cache = init_cache(self.config, b, t + n, self.dtype)
        out = self.prefill(prompts, cache)
        rope_deltas = jnp.repeat(out.rope_deltas, group, axis=0)
        cont = self.apply(
            completions,
            cache=fan_out(out.cache, group),
            rope_deltas=rope_deltas,
            return_logits=False,
        )
        last = jnp.repeat(out.hidden_states[:, -1:], group, axis=0)  # predicts completion[0]
        hidden = jnp.concatenate([last, cont.hidden_states[:, :-1]], axis=1)  # [R, N, D]
        hidden = constrain(hidden, ("batch", "length", "embed"))
        return self.token_stats(hidden, completions, temperature=temperature)


def _lower(policy: Policy, jitted, *args, **kwargs):
    with policy.context():
        return jitted.lower(*args, **kwargs)
