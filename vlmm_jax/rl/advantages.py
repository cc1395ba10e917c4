"""Group-relative advantages, DAPO's dynamic-sampling filter and Video-R1's temporal bonus.

Pure `jnp` functions, jit-able. Rewards of one rollout batch come either flat,
`[num_groups * G]` with the `G` completions of a prompt adjacent (the layout TRL and Video-R1
use), or already grouped, `[num_groups, G]`; every function returns the layout it was given.

Choices, matching the reference trainers (TRL `GRPOTrainer`, Video-R1 `grpo_trainer.py`):
- the standard deviation is the unbiased one (`torch.std`, i.e. `ddof=1`); a group of one
  completion has std 0 (TRL's convention), so its advantage is 0;
- `eps` is added to the std, not under the square root, and defaults to TRL's `1e-4`;
- `scale="batch"` centres on the group mean and divides by the std of the whole batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SCALES = ("group", "batch", "none")


def _grouped(x: jax.Array, num_generations: int | None, name: str) -> jax.Array:
    """`[num_groups * G]` or `[num_groups, G]` -> `[num_groups, G]`."""
    x = jnp.asarray(x)
    if x.ndim == 2:
        if num_generations is not None and x.shape[1] != num_generations:
            raise ValueError(
                f"{name}: grouped shape {x.shape} has G={x.shape[1]}, "
                f"but num_generations={num_generations}"
            )
        return x
    if x.ndim != 1:
        raise ValueError(f"{name}: expected [num_groups * G] or [num_groups, G], got {x.shape}")
    if num_generations is None:
        raise ValueError(f"{name}: flat shape {x.shape} needs num_generations")
    if num_generations < 1 or x.shape[0] % num_generations:
        raise ValueError(
            f"{name}: flat length {x.shape[0]} is not a multiple of num_generations="
            f"{num_generations}"
        )
    return x.reshape(-1, num_generations)


def _std(x: jax.Array, axis) -> jax.Array:
    """Unbiased std (`torch.std`); 0 where there is a single element."""
    n = x.size if axis is None else x.shape[axis]
    if n < 2:
        return jnp.zeros_like(jnp.mean(x, axis=axis, keepdims=True))
    return jnp.std(x, axis=axis, ddof=1, keepdims=True)


def group_advantages(
    rewards: jax.Array,
    num_generations: int | None = None,
    *,
    scale: str = "group",
    eps: float = 1e-4,
) -> jax.Array:
    """Group-relative advantages `A_i = (r_i - mean_group(r)) / (std + eps)`.

    Args:
      rewards: `[num_groups * G]` (with `num_generations=G`) or `[num_groups, G]`, the summed
        reward of each completion.
      num_generations: `G`, required for flat rewards.
      scale: `"group"` (GRPO: divide by the group's std), `"batch"` (divide by the std of all
        rewards in the batch) or `"none"` (Dr. GRPO: mean-centred only).
      eps: added to the std before dividing.

    Returns:
      Advantages with the shape of `rewards`, float32 (or wider).
    """
    if scale not in SCALES:
        raise ValueError(f"group_advantages: scale={scale!r}, expected one of {SCALES}")
    shape = jnp.shape(rewards)
    r = _grouped(rewards, num_generations, "group_advantages")  # [num_groups, G]
    r = r.astype(jnp.promote_types(r.dtype, jnp.float32))
    centred = r - jnp.mean(r, axis=1, keepdims=True)
    if scale == "group":
        centred = centred / (_std(r, axis=1) + eps)
    elif scale == "batch":
        centred = centred / (_std(r, axis=None) + eps)
    return centred.reshape(shape)


def dynamic_sampling_mask(
    rewards: jax.Array, num_generations: int | None = None, *, atol: float = 0.0
) -> jax.Array:
    """DAPO dynamic sampling: which groups carry a learning signal.

    A group whose rewards are all equal (all right or all wrong) has zero advantage everywhere
    and only dilutes the batch; DAPO drops it and samples more prompts.

    Args:
      rewards: `[num_groups * G]` (with `num_generations`) or `[num_groups, G]`.
      num_generations: `G`, required for flat rewards.
      atol: rewards closer than this count as equal.

    Returns:
      `bool [num_groups]`, True where `max(r) - min(r) > atol` within the group.
    """
    r = _grouped(rewards, num_generations, "dynamic_sampling_mask")
    return (jnp.max(r, axis=1) - jnp.min(r, axis=1)) > atol


def temporal_bonus(
    ordered_accuracy: jax.Array,
    shuffled_accuracy: jax.Array,
    *,
    alpha: float = 0.3,
    mu: float = 0.8,
    threshold: float = 0.1,
) -> tuple[jax.Array, jax.Array]:
    """Video-R1's T-GRPO temporal bonus (Feng et al. 2025, `trainer/grpo_trainer.py`).

    For each prompt, `p` is the mean accuracy reward of the `G` completions on ordered frames and
    `p~` that of the completions on shuffled frames. When `p >= mu * p~` the model is credited
    for using temporal order: every ordered completion whose accuracy reward is `> threshold`
    gets `+alpha` on its accuracy reward. Shuffled completions never get a bonus and never
    enter the loss. The reference compares `>=`, so a group at 0 accuracy in both passes
    qualifies but has no correct completion to reward.

    The reference averages over the per-device batch, which holds one prompt; here each group
    is one prompt. Image prompts get no bonus: the caller zeroes their rows.

    Args:
      ordered_accuracy: `[num_groups, G]` accuracy rewards on ordered frames (`[G]`: one group).
      shuffled_accuracy: `[num_groups, G_s]` on shuffled frames (Video-R1: `G_s = G / 2`).
      alpha: the bonus.
      mu: how much of the shuffled accuracy the ordered one must reach.
      threshold: accuracy above which a completion counts as correct.

    Returns:
      `(bonus, applied)`: `bonus` with the shape of `ordered_accuracy` (0 or `alpha`), to add to
      the accuracy reward; `applied`, `bool [num_groups]` (scalar for 1-D input), whether the
      condition held (Video-R1 logs its mean as `temporal_rewards`).
    """
    o = jnp.asarray(ordered_accuracy)
    s = jnp.asarray(shuffled_accuracy)
    if o.ndim != s.ndim or o.ndim not in (1, 2) or (o.ndim == 2 and o.shape[0] != s.shape[0]):
        raise ValueError(
            "temporal_bonus: expected ordered [num_groups, G] and shuffled [num_groups, G_s] "
            f"(or both 1-D for one group), got {o.shape} and {s.shape}"
        )
    o = o.astype(jnp.promote_types(o.dtype, jnp.float32))
    s = s.astype(jnp.promote_types(s.dtype, jnp.float32))
    applied = jnp.mean(o, axis=-1) >= mu * jnp.mean(s, axis=-1)  # [num_groups]
    correct = o > threshold
    bonus = jnp.where(correct & applied[..., None], alpha, 0.0).astype(o.dtype)
    return bonus, applied
