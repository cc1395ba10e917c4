"""vlmm_jax.rl: advantages and policy losses for RL from verifiable rewards (pure functions)."""

from vlmm_jax.rl.advantages import (
    SCALES,
    dynamic_sampling_mask,
    group_advantages,
    temporal_bonus,
)
from vlmm_jax.rl.losses import (
    IMPORTANCE_LEVELS,
    KL_ESTIMATORS,
    LOSS_TYPES,
    finalize_metrics,
    grpo_loss,
    kl_penalty,
)

__all__ = [
    "IMPORTANCE_LEVELS",
    "KL_ESTIMATORS",
    "LOSS_TYPES",
    "SCALES",
    "dynamic_sampling_mask",
    "finalize_metrics",
    "group_advantages",
    "grpo_loss",
    "kl_penalty",
    "temporal_bonus",
]
