"""Supervised fine-tuning: masked next-token cross-entropy, the jitted train and eval steps.

Batches (see `vlmm_jax.data`) carry a leading micro-batch axis M for gradient accumulation:
  input_ids, loss_mask, segment_ids: `[M, B, L]`;  position_ids: `[M, 3, B, L]`;
  optional visual_pixels `[M, B, P, C]` and vision_layout `{name: [M, B, ...]}`.
The loss is normalised per target token over the whole global batch (all micro-batches, all
devices), so packed and padded batches of the same samples give the same loss and gradients.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from vlmm_jax.policy import Policy
from vlmm_jax.training.state import TrainState, apply_gradients


def target_weights(batch, *, train_on_prompt: bool = False, visual_token_ids=()) -> jax.Array:
    """`[B, L-1]` weights of the targets `input_ids[:, 1:]`.

    A target counts when it is an assistant token (`loss_mask`), or with `train_on_prompt` any
    real token except visual placeholders; never across a packed-sample boundary or padding.
    """
    ids, seg = batch["input_ids"], batch["segment_ids"]
    same_sample = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] != 0)
    if train_on_prompt:
        keep = jnp.ones_like(same_sample)
        for t in visual_token_ids:
            keep &= ids[:, 1:] != t
    else:
        keep = batch["loss_mask"][:, 1:].astype(bool)
    return (same_sample & keep).astype(jnp.float32)


def target_logprobs(params, batch, *, policy: Policy, train_on_prompt: bool = False):
    """Forward one `[B, L]` batch; returns `logp [B, L-1]` of each target `input_ids[:, 1:]`,
    its weight (`target_weights`) and `correct` (the target is the argmax).

    The policy runs on `params` as trained (with LoRA adapters, only they get gradients) and
    computes the targets' log-probs with its chunked LM head (`Policy.token_stats`).
    """
    live = policy.with_params(params)
    out = live.apply(
        batch["input_ids"],
        segment_ids=batch["segment_ids"],
        position_ids=batch["position_ids"],
        visual_pixels=batch.get("visual_pixels"),
        vision_layout=batch.get("vision_layout"),
        return_logits=False,
    )
    c = policy.config
    w = target_weights(
        batch,
        train_on_prompt=train_on_prompt,
        visual_token_ids=(c.image_token_id, c.video_token_id),
    )
    stats = live.token_stats(out.hidden_states[:, :-1], batch["input_ids"][:, 1:])
    return stats["logp"], w, stats["correct"]


def micro_batch_sums(params, batch, *, policy: Policy, train_on_prompt: bool):
    """Forward one micro-batch; returns (ce_sum, {tokens, correct})."""
    logp, w, correct = target_logprobs(
        params, batch, policy=policy, train_on_prompt=train_on_prompt
    )
    ce = -jnp.sum(logp * w)
    return ce, {"tokens": jnp.sum(w), "correct": jnp.sum(correct * w)}


def _micro(batch, i):
    return jax.tree.map(lambda x: x[i], batch)


def train_step(
    state: TrainState,
    batch: dict,
    *,
    policy: Policy,
    tx: optax.GradientTransformation,
    train_on_prompt: bool = False,
) -> tuple[TrainState, dict]:
    """One optimizer step over M accumulated micro-batches (a `lax.scan` inside the jit).

    A step whose loss or gradients are not finite leaves the state unchanged (apart from the
    step counter) and reports `skipped = 1`; the host loop stops after too many in a row.
    Metrics are sums plus denominators (normalised on the host).
    """
    sums = functools.partial(micro_batch_sums, policy=policy, train_on_prompt=train_on_prompt)
    grad_fn = jax.value_and_grad(sums, has_aux=True)

    def body(carry, i):
        grads, ce, tokens, correct = carry
        (ce_mb, aux), g = grad_fn(state.params, _micro(batch, i))
        grads = jax.tree.map(jnp.add, grads, g)
        return (grads, ce + ce_mb, tokens + aux["tokens"], correct + aux["correct"]), None

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    init = (zeros, jnp.float32(0), jnp.float32(0), jnp.float32(0))
    (grads, ce, tokens, correct), _ = jax.lax.scan(
        body, init, jnp.arange(batch["input_ids"].shape[0])
    )
    denom = jnp.maximum(tokens, 1.0)
    grads = jax.tree.map(lambda g: g / denom, grads)
    new_state, step_metrics = apply_gradients(state, grads, ce / denom, tx=tx)
    return new_state, {"loss_sum": ce, "tokens": tokens, "correct": correct, **step_metrics}


def eval_step(params, batch, *, policy: Policy, train_on_prompt: bool = False) -> dict:
    """Loss and token-accuracy sums over the M micro-batches of an eval batch."""
    sums = functools.partial(micro_batch_sums, policy=policy, train_on_prompt=train_on_prompt)

    def body(carry, i):
        ce, aux = sums(params, _micro(batch, i))
        return jax.tree.map(jnp.add, carry, {"loss_sum": ce, **aux}), None

    init = {"loss_sum": jnp.float32(0), "tokens": jnp.float32(0), "correct": jnp.float32(0)}
    out, _ = jax.lax.scan(body, init, jnp.arange(batch["input_ids"].shape[0]))
    return out
