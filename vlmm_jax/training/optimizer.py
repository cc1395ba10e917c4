"""Optax optimizer from config: AdamW, warmup + cosine/linear/constant, clipping, frozen parts,
per-part learning-rate multipliers.

Frozen parameters get `optax.set_to_zero()`: no optimizer state, and since their updates do not
depend on the gradients, XLA drops the weight-gradient computation for them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import optax

# Named parts of the model that a recipe may freeze, as regexes over parameter paths. The merger
# part holds every projection into the decoder: Qwen3-VL's DeepStack mergers too (ms-swift's
# "aligner" for Qwen3-VL: merger + deepstack_merger_list).
PARTS = {
    "vision": r"^visual/(patch_embed|pos_embed|blocks)",
    "merger": r"^visual/(merger|deepstack_merger_\d+)/",
    "llm": r"^(decoder/|embed_tokens|lm_head)",
    "embeddings": r"^(embed_tokens|lm_head)",
}


def schedule(cfg: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup to `learning_rate`, then `cosine`, `linear` (to `end_lr_ratio`), `constant`."""
    peak, warmup, total = cfg.learning_rate, cfg.warmup_steps, cfg.total_steps
    end = peak * cfg.get("end_lr_ratio", 0.0)
    decay_steps = max(total - warmup, 1)
    if cfg.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=end / peak if peak else 0.0)
    elif cfg.schedule == "linear":
        decay = optax.linear_schedule(peak, end, decay_steps)
    elif cfg.schedule == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise ValueError(
            f"optimizer.schedule={cfg.schedule!r}: expected 'cosine', 'linear' or 'constant'"
        )
    if warmup <= 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def trainable_labels(params, *, freeze: Sequence[str] = (), train_only: str | None = None):
    """A pytree of "train" / "freeze" labels: parts named in `freeze` (keys of `PARTS` or
    regexes) are frozen; with `train_only` (a regex), everything not matching it is frozen."""
    patterns = [re.compile(PARTS.get(p, p)) for p in freeze]
    only = re.compile(train_only) if train_only else None

    def label(path, _):
        name = path_str(path)
        if only is not None and not only.search(name):
            return "freeze"
        return "freeze" if any(p.search(name) for p in patterns) else "train"

    return jax.tree_util.tree_map_with_path(label, params)


def _decay_mask(params):
    """Weight decay on matrices only, not on norms and biases (known by name: a bias split into
    heads, such as `q_bias [N, H]`, or stacked by a scan over layers is not 1D)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x.ndim >= 2 and not path_str(path).endswith(("scale", "bias")), params
    )


def lr_labels(labels, multipliers) -> Any:
    """`labels` with each trained leaf relabelled `"lr:<key>"` for the first key of
    `multipliers` (a part of `PARTS` or a regex over parameter paths) its path matches."""
    patterns = [(key, re.compile(PARTS.get(key, key))) for key in multipliers]

    def relabel(path, label):
        if label != "train":
            return label
        name = path_str(path)
        return next((f"lr:{key}" for key, p in patterns if p.search(name)), label)

    return jax.tree_util.tree_map_with_path(relabel, labels)


def make_optimizer(
    cfg: ml_collections.ConfigDict, params, *, train_only: str | None = None
) -> optax.GradientTransformation:
    """AdamW with the schedule of `cfg` (`config.optimizer`): the global norm of the trained
    gradients clipped, frozen parts zeroed, and parts named in `cfg.lr_multipliers` (a part of
    `PARTS` or a regex -> a factor) at that multiple of the schedule's learning rate."""
    multipliers = {k: float(m) for k, m in (cfg.get("lr_multipliers", None) or {}).items()}
    multipliers = {k: m for k, m in multipliers.items() if m != 1.0}
    labels = trainable_labels(params, freeze=tuple(cfg.freeze), train_only=train_only)
    if not any(x == "train" for x in jax.tree.leaves(labels)):
        raise ValueError(f"optimizer.freeze={tuple(cfg.freeze)} leaves nothing to train")
    labels = lr_labels(labels, multipliers)
    unused = sorted(set(multipliers) - {x[3:] for x in jax.tree.leaves(labels) if x[:3] == "lr:"})
    if unused:
        raise ValueError(
            f"optimizer.lr_multipliers: {unused} match no trained parameter (parts: "
            f"{sorted(PARTS)}, or regexes over paths such as 'visual/merger/')"
        )

    def adamw(factor):
        lr = schedule(cfg)
        return optax.adamw(
            lr if factor == 1 else lambda step: factor * lr(step),
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            mask=_decay_mask,
        )

    transforms = {"train": adamw(1), "freeze": optax.set_to_zero()}
    transforms.update({f"lr:{k}": adamw(m) for k, m in multipliers.items()})
    trained = jax.tree.map(lambda x: x != "freeze", labels)
    clip = optax.clip_by_global_norm(cfg.max_grad_norm) if cfg.max_grad_norm else None
    return optax.chain(
        optax.masked(clip, trained) if clip else optax.identity(),  # norm of trained leaves
        optax.multi_transform(transforms, labels),
    )
