"""The GRPO family of clipped policy losses as one pure function.

Shapes: `B` completions in the (micro-)batch, `T` completion tokens. All per-token arrays are
`[B, T]` log-probabilities of the sampled tokens; `mask` is 1 on real completion tokens.

Per token, with ratio `r` (token- or sequence-level, see `importance_level`) and advantage `A`:

    pg   = max(-A * r, -A * clip(r, 1 - eps_low, 1 + eps_high))       # PPO clip, clip-higher
    pg   = min(pg, -dual_clip * A)   where A < 0                        # dual clip (optional)
    loss = pg + beta * kl(logp, ref_logp)                               # k1 / k2 / k3

and the per-token losses are aggregated by `loss_type`:

| loss_type | aggregation | reference |
| --- | --- | --- |
| `grpo` | mean over each sequence's tokens, then mean over sequences | DeepSeekMath |
| `bnpo` | mean over the tokens of each piece, averaged over the `num_chunks` pieces | TRL |
| `dr_grpo` | sum over tokens / (B * max_completion_length) | Dr. GRPO (Liu et al.) |
| `dapo` | sum over tokens / tokens of the *global* batch | DAPO (Yu et al.) |

Gradient accumulation and multi-host: with `num_global_tokens` (`dapo`) or
`num_global_sequences` (`grpo`, `dr_grpo`) set to the totals of the full optimizer batch, each
micro-batch's loss is its exact share, and summing the micro-batch losses (and gradients) over
micro-batches and hosts gives the full-batch loss. `bnpo` is a local mean by definition (TRL:
the token mean of each per-device micro-batch, averaged over gradient-accumulation steps);
here a piece is one `grpo_loss` call over the batch it is given (a rollout chunk or
micro-batch, all devices), and with `num_chunks` pieces each contributes its token mean /
`num_chunks`, so the summed losses are the mean of the pieces' token means.

Metrics are returned as masked sums plus the token count (`num_tokens`), so they can be summed
over micro-batches and hosts before `finalize_metrics` turns them into means.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
IMPORTANCE_LEVELS = ("token", "sequence", "sequence_token")


def _kl_k1(log_ratio_ref: jax.Array) -> jax.Array:
    return -log_ratio_ref


def _kl_k2(log_ratio_ref: jax.Array) -> jax.Array:
    return 0.5 * jnp.square(log_ratio_ref)


def _kl_k3(log_ratio_ref: jax.Array) -> jax.Array:
    return jnp.exp(log_ratio_ref) - log_ratio_ref - 1.0


# Schulman's estimators of KL(pi || pi_ref) from samples y ~ pi, as functions of
# d = log pi_ref(y) - log pi(y): k1 = -d (unbiased), k2 = d^2 / 2 (biased, low variance),
# k3 = e^d - d - 1 (unbiased, >= 0; the GRPO paper's choice).
KL_ESTIMATORS = {"k1": _kl_k1, "k2": _kl_k2, "k3": _kl_k3}


def kl_penalty(
    logp: jax.Array, ref_logp: jax.Array, *, estimator: str = "k3", clamp: float | None = None
) -> jax.Array:
    """Per-token KL estimate to the reference policy.

    Args:
      logp: `[B, T]` log-probs of the sampled tokens under the policy.
      ref_logp: `[B, T]` under the reference policy.
      estimator: `"k1"`, `"k2"` or `"k3"` (see `KL_ESTIMATORS`).
      clamp: if set, clip the estimate to `[-clamp, clamp]` (Video-R1 clamps k3 at 100).

    Returns:
      `[B, T]` per-token estimates (unmasked).
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator={estimator!r}, expected one of {tuple(KL_ESTIMATORS)}")
    kl = KL_ESTIMATORS[estimator](ref_logp - logp)
    if clamp is not None:
        kl = jnp.clip(kl, -clamp, clamp)
    return kl


def _seq_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Masked mean over T: `[B, T] -> [B, 1]` (0 for an empty sequence)."""
    return jnp.sum(x * mask, axis=1, keepdims=True) / jnp.maximum(
        jnp.sum(mask, axis=1, keepdims=True), 1.0
    )


def _log_importance_weights(
    logp: jax.Array, old_logp: jax.Array, mask: jax.Array, level: str
) -> jax.Array:
    """`[B, T]` log importance ratios at the given level."""
    log_ratio = logp - old_logp
    if level == "token":
        return log_ratio
    seq = _seq_mean(log_ratio, mask)  # [B, 1]: GSPO's log s_i = mean_t log(pi / pi_old)
    if level == "sequence":
        return jnp.broadcast_to(seq, log_ratio.shape)
    # GSPO-token: value sg[s_i], gradient of each token's own log-prob.
    return logp - jax.lax.stop_gradient(logp) + jax.lax.stop_gradient(seq)


def _aggregate(
    per_token: jax.Array,
    mask: jax.Array,
    loss_type: str,
    max_completion_length: int | None,
    num_global_tokens: jax.Array | float | None,
    num_global_sequences: jax.Array | float | None,
    num_chunks: jax.Array | int,
) -> jax.Array:
    """Reduce `[B, T]` per-token losses to a scalar according to `loss_type`."""
    num_seqs = per_token.shape[0] if num_global_sequences is None else num_global_sequences
    masked = per_token * mask
    if loss_type == "grpo":
        return jnp.sum(_seq_mean(per_token, mask)) / num_seqs
    if loss_type == "bnpo":
        return jnp.sum(masked) / jnp.maximum(jnp.sum(mask), 1.0) / num_chunks
    if loss_type == "dr_grpo":
        length = per_token.shape[1] if max_completion_length is None else max_completion_length
        return jnp.sum(masked) / (num_seqs * length)
    # dapo
    tokens = jnp.sum(mask) if num_global_tokens is None else num_global_tokens
    return jnp.sum(masked) / jnp.maximum(tokens, 1.0)


def grpo_loss(
    logp: jax.Array,
    old_logp: jax.Array | None,
    ref_logp: jax.Array | None,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    loss_type: str = "grpo",
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    kl_clamp: float | None = None,
    importance_level: str = "token",
    max_completion_length: int | None = None,
    num_global_tokens: jax.Array | float | None = None,
    num_global_sequences: jax.Array | float | None = None,
    num_chunks: jax.Array | int = 1,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Clipped policy-gradient loss of the GRPO family (see the module docstring).

    Args:
      logp: `[B, T]` log-probs of the completion tokens under the policy being trained.
      old_logp: `[B, T]` under the policy that sampled them; `None` means on-policy
        (`stop_gradient(logp)`: ratio 1, gradient the plain policy gradient).
      ref_logp: `[B, T]` under the reference policy; may be `None` when `beta == 0` (if given
        with `beta == 0`, the KL is still reported in the metrics).
      advantages: `[B]` one advantage per completion.
      mask: `[B, T]` 1 (or True) on completion tokens, 0 on padding.
      loss_type: `"grpo"`, `"bnpo"`, `"dr_grpo"` or `"dapo"`.
      eps_low, eps_high: the ratio is clipped to `[1 - eps_low, 1 + eps_high]` (DAPO's
        clip-higher when `eps_high > eps_low`; GSPO uses ~3e-4 / 4e-4 at sequence level).
      dual_clip: if set (> 1), for `A < 0` the per-token loss is capped at `dual_clip * |A|`
        (Ye et al. 2020), bounding the push-down of tokens whose ratio has exploded.
      beta: weight of the KL penalty; 0 skips it.
      kl_estimator: `"k1"`, `"k2"` or `"k3"`; kl_clamp: optional clamp of the estimate.
      importance_level: `"token"` (PPO/GRPO), `"sequence"` (GSPO: `s_i = exp(mean_t log
        ratio)`, one ratio per completion, clipped as a whole) or `"sequence_token"`
        (GSPO-token: value `sg[s_i]`, gradient through each token's log-prob).
      max_completion_length: the constant length of `dr_grpo` (default `T`).
      num_global_tokens: `dapo` normaliser, the number of completion tokens in the whole
        optimizer batch (all micro-batches, all hosts); default: this batch's.
      num_global_sequences: `grpo` / `dr_grpo` sequence count of the whole optimizer batch;
        default `B`.
      num_chunks: `bnpo`: how many pieces the optimizer batch was split into (each piece's
        token mean is divided by it); default 1.

    Returns:
      `(loss, metrics)`: the scalar loss and a dict of float32 scalars, all masked *sums*
      over tokens unless named otherwise: `num_tokens`, `num_sequences`, `pg_loss_sum`,
      `ratio_sum`, `clip_low_sum` (tokens with `A < 0` and `r < 1 - eps_low`), `clip_high_sum`
      (`A > 0` and `r > 1 + eps_high`), `dual_clip_sum` (`A < 0` and `r > dual_clip`), and
      `kl_sum` when `ref_logp` is given. `finalize_metrics` divides the sums by `num_tokens`.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r}, expected one of {LOSS_TYPES}")
    if importance_level not in IMPORTANCE_LEVELS:
        raise ValueError(
            f"importance_level={importance_level!r}, expected one of {IMPORTANCE_LEVELS}"
        )
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip={dual_clip} must be > 1 (or None)")
    if beta != 0.0 and ref_logp is None:
        raise ValueError(f"beta={beta} needs ref_logp, got None")
    if logp.ndim != 2 or mask.shape != logp.shape or advantages.shape != logp.shape[:1]:
        raise ValueError(
            "expected logp and mask [B, T] and advantages [B], got "
            f"logp {logp.shape}, mask {mask.shape}, advantages {advantages.shape}"
        )

    dtype = jnp.promote_types(logp.dtype, jnp.float32)
    mask = mask.astype(dtype)
    valid = mask > 0

    # Padding positions may hold anything (even inf); zero them before exp so that neither the
    # value nor the gradient (0 * inf) sees it.
    def clean(x):
        return jnp.where(valid, x.astype(dtype), 0.0)

    logp = clean(logp)
    old_logp = jax.lax.stop_gradient(logp) if old_logp is None else clean(old_logp)
    adv = advantages.astype(dtype)[:, None]  # [B, 1]

    ratio = jnp.exp(_log_importance_weights(logp, old_logp, mask, importance_level))  # [B, T]
    clipped = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
    pg = jnp.maximum(-adv * ratio, -adv * clipped)
    if dual_clip is not None:
        pg = jnp.where(adv < 0, jnp.minimum(pg, -dual_clip * adv), pg)
    per_token = pg

    kl = None
    if ref_logp is not None:
        kl = kl_penalty(logp, clean(ref_logp), estimator=kl_estimator, clamp=kl_clamp)
        if beta != 0.0:
            per_token = per_token + beta * kl

    loss = _aggregate(
        per_token,
        mask,
        loss_type,
        max_completion_length,
        num_global_tokens,
        num_global_sequences,
        num_chunks,
    )

    def msum(x):
        return jax.lax.stop_gradient(jnp.sum(x.astype(dtype) * mask))

    metrics = {
        "num_tokens": jnp.sum(mask),
        "num_sequences": jnp.asarray(logp.shape[0], dtype),
        "pg_loss_sum": msum(pg),
        "ratio_sum": msum(ratio),
        "clip_low_sum": msum((ratio < 1.0 - eps_low) & (adv < 0)),
        "clip_high_sum": msum((ratio > 1.0 + eps_high) & (adv > 0)),
    }
    if dual_clip is not None:
        metrics["dual_clip_sum"] = msum((ratio > dual_clip) & (adv < 0))
    if kl is not None:
        metrics["kl_sum"] = msum(kl)
    return loss, metrics


def finalize_metrics(metrics: Mapping[str, jax.Array | float]) -> dict[str, float]:
    """Host side: turn summed metrics into means (`x_sum / num_tokens` -> `x`).

    Works on the output of `grpo_loss` or on its element-wise sum over micro-batches and hosts.
    Keys without the `_sum` suffix are passed through.
    """
    tokens = max(float(metrics["num_tokens"]), 1.0)
    out = {}
    for key, value in metrics.items():
        if key.endswith("_sum"):
            out[key[: -len("_sum")]] = float(value) / tokens
        else:
            out[key] = float(value)
    return out
