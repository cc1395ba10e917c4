"""LoRA: low-rank adapters on chosen kernels, kept in the params tree, merged for export.

Adapters live under a top-level `"lora"` key that mirrors the path of the kernel they adapt:

    params["lora"]["decoder"]["layers_0"]["q"] = {"a": [D, r], "b": [r, N*H], "scale": []}

The model never sees them: `effective_params(params)` returns the base tree with each adapted
kernel replaced by `W + scale * reshape(A @ B)` (the base under `stop_gradient`, so gradients
reach only the adapters), `base_params(params)` drops them (the frozen reference model of GRPO,
no copy of any weight), and `merge(params)` is the plain checkpoint to export.

Each kernel is flattened to a matrix `[in, out]` the way the model's einsum contracts it: the
leading `in_dims` axes are contracted with the activation, the rest are outputs.

| kernel (path ends in)              | shape          | in        | out       |
| ---------------------------------- | -------------- | --------- | --------- |
| decoder `q`, `k`, `v`              | `[D, N, H]`    | D         | N*H (K*H) |
| decoder `o`, vision `proj`         | `[N, H, D]`    | N*H       | D         |
| `mlp/gate`, `mlp/up`               | `[D, F]`       | D         | F         |
| `mlp/down`                         | `[F, D]`       | F         | D         |
| vision `qkv`                       | `[D, 3, N, H]` | D         | 3*N*H     |
| merger `fc1`, `fc2`, `patch_embed` | `[I, O]`       | I         | O         |
| `lm_head`                          | `[D, V]`       | D         | V         |
| `embed_tokens` (a lookup table)    | `[V, D]`       | V         | D         |

With `scan_layers=True` the layers are stacked (`decoder/layers/q [L, D, N, H]`) and so are
their adapters: `a [L, in, r]`, `b [L, r, out]`. `b` starts at zero, so training starts exactly
at the base model; `a` is uniform in `+-1/sqrt(in)` (PEFT's default, Kaiming-uniform with
`a=sqrt(5)`); `scale = alpha / rank`, stored as a float32 scalar next to `a` and `b` (under
`stop_gradient`, so an optimizer over `^lora/` leaves it unchanged; `TRAIN_ONLY` excludes it).

Materialising the effective weight costs one `[in, r] @ [r, out]` per kernel per step; the
gradient of the full kernel is formed in the backward pass and projected onto A and B.
"""

from __future__ import annotations

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp

LORA = "lora"
# The optimizer's `train_only` regex for LoRA runs: the adapter matrices, not their scales.
TRAIN_ONLY = r"^lora/.*/(a|b)$"
# Input axes of each adaptable kernel, by the last component of its path (see the table above).
KERNEL_IN_DIMS = {
    "q": 1,
    "k": 1,
    "v": 1,
    "o": 2,
    "gate": 1,
    "up": 1,
    "down": 1,
    "qkv": 1,
    "proj": 2,
    "fc1": 1,
    "fc2": 1,
    "patch_embed": 1,
    "lm_head": 1,
    "embed_tokens": 1,
}
# Path components naming `nn.scan`-stacked layers: their params carry a leading `[L]` axis.
STACKED = ("layers", "blocks")


def _key(k) -> str:
    return str(getattr(k, "key", getattr(k, "idx", k)))


def _flat(tree, is_leaf=None) -> dict[str, object]:
    leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=is_leaf)
    return {"/".join(_key(k) for k in path): leaf for path, leaf in leaves}


def _get(tree: dict, path: str):
    for k in path.split("/"):
        tree = tree[k]
    return tree


def _set(tree: dict, path: str, value) -> None:
    *parents, last = path.split("/")
    for k in parents:
        tree = tree.setdefault(k, {})
    tree[last] = value


def _layout(path: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(stacked leading axes, in, out) of the kernel at `path`: its matrix view."""
    parts = path.split("/")
    lead = 1 if any(p in STACKED for p in parts[:-1]) else 0
    in_dims = KERNEL_IN_DIMS[parts[-1]]
    body = shape[lead:]
    if len(body) <= in_dims:
        raise ValueError(f"LoRA: kernel {path} of shape {shape} has no output axes")
    return lead, math.prod(body[:in_dims]), math.prod(body[in_dims:])


def target_paths(params, targets: str) -> list[str]:
    """Paths of the adaptable kernels (names in `KERNEL_IN_DIMS`) that `targets` searches into.

    Leaves matched by `targets` that are not kernels (norm scales, biases) are ignored.
    Raises:
      ValueError when no kernel matches, listing some of the kernel paths there are.
    """
    pattern = re.compile(targets)
    flat = _flat({k: v for k, v in params.items() if k != LORA})
    kernels = [p for p in flat if p.split("/")[-1] in KERNEL_IN_DIMS and jnp.ndim(flat[p]) >= 2]
    hits = [p for p in kernels if pattern.search(p)]
    if not hits:
        shown = ", ".join(kernels[:12]) + (", ..." if len(kernels) > 12 else "")
        raise ValueError(
            f"lora.targets={targets!r} matches none of the {len(kernels)} adaptable kernel paths "
            f"(regex searched over paths such as: {shown})"
        )
    return hits


def add_lora(params: dict, *, targets: str, rank: int, alpha: float, rng: jax.Array) -> dict:
    """`params` plus zero-effect adapters under `"lora"` on every kernel `targets` matches.

    Args:
      params: the base parameters (plain dict, as `init_params` / `load_params` return them).
      targets: regex searched in each kernel's '/'-joined path, e.g.
        `r"^decoder/layers.*/(q|k|v|o|mlp/(gate|up|down))$"`.
      rank: r, the adapters' inner size.
      alpha: the LoRA alpha; the update is scaled by `alpha / rank`.
      rng: PRNG key for `a`.
    Returns:
      A new top-level dict sharing the base leaves, with `"lora"` added: per adapted kernel
      `a [(L,) in, r]` (float32, uniform +-1/sqrt(in)), `b [(L,) r, out]` (float32 zeros) and
      `scale []` (float32, alpha / rank).
    """
    if rank <= 0:
        raise ValueError(f"lora.rank must be positive, got {rank}")
    if LORA in params:
        raise ValueError("add_lora: params already carry adapters under 'lora'")
    paths = target_paths(params, targets)
    flat = _flat(params)
    adapters: dict = {}
    for path, key in zip(paths, jax.random.split(rng, len(paths)), strict=True):
        shape = tuple(jnp.shape(flat[path]))
        lead, n_in, n_out = _layout(path, shape)
        stack = shape[:lead]
        bound = 1.0 / float(n_in) ** 0.5
        a = jax.random.uniform(key, (*stack, n_in, rank), jnp.float32, -bound, bound)
        entry = {
            "a": a,
            "b": jnp.zeros((*stack, rank, n_out), jnp.float32),
            "scale": jnp.asarray(alpha / rank, jnp.float32),
        }
        _set(adapters, path, entry)
    return {**params, LORA: adapters}


def abstract_with_lora(abstract_boxed: dict, *, targets: str, rank: int, alpha: float) -> dict:
    """The boxed abstract params (`abstract_params`) with the adapters `add_lora` would add.

    Each adapter carries logical axes derived from its kernel's: `a` gets the name of the
    kernel's first input axis and `lora_rank`, `b` gets `lora_rank` and the name of the first
    output axis (e.g. `q` `("embed", "heads", "head_dim")` -> a `("embed", "lora_rank")`,
    b `("lora_rank", "heads")`), both behind `layers` when stacked; `scale` is replicated.
    """
    is_boxed = lambda x: isinstance(x, nn.LogicallyPartitioned)  # noqa: E731
    plain = nn.meta.unbox(abstract_boxed)
    shapes = jax.eval_shape(
        lambda p: add_lora(p, targets=targets, rank=rank, alpha=alpha, rng=jax.random.key(0)),
        plain,
    )[LORA]
    boxed = _flat(abstract_boxed, is_leaf=is_boxed)
    adapters: dict = {}
    for path, leaf in _flat(shapes).items():
        kernel_path, name = path.rsplit("/", 1)
        kernel = boxed[kernel_path]
        lead, _, _ = _layout(kernel_path, kernel.value.shape)
        in_dims = KERNEL_IN_DIMS[kernel_path.split("/")[-1]]
        stack, body = tuple(kernel.names[:lead]), tuple(kernel.names[lead:])
        names = {
            "a": (*stack, body[0], "lora_rank"),
            "b": (*stack, "lora_rank", body[in_dims]),
            "scale": (),
        }[name]
        _set(adapters, path, nn.LogicallyPartitioned(leaf, names))
    return {**abstract_boxed, LORA: adapters}


def base_params(params: dict) -> dict:
    """The base model's parameters without the adapters (shared leaves, no copy)."""
    return {k: v for k, v in params.items() if k != LORA}


def _adapted(params: dict, *, freeze_base: bool) -> dict:
    if LORA not in params:
        return params
    base = base_params(params)
    if freeze_base:
        base = jax.tree.map(jax.lax.stop_gradient, base)
    out = jax.tree.map(lambda x: x, base)  # fresh containers; leaves shared
    for path, ab in _flat(params[LORA], is_leaf=lambda x: isinstance(x, dict) and "a" in x).items():
        w = _get(base, path)
        delta = jnp.matmul(ab["a"].astype(jnp.float32), ab["b"].astype(jnp.float32))  # [.., I, O]
        delta = delta * jax.lax.stop_gradient(ab["scale"])
        _set(out, path, (w.astype(jnp.float32) + delta.reshape(w.shape)).astype(w.dtype))
    return out


def effective_params(params: dict) -> dict:
    """The params the model runs with: each adapted kernel `W + scale * (A @ B)` (reshaped to
    W's shape, in W's dtype, computed in float32), base leaves under `stop_gradient`.

    Differentiable with respect to the adapters only; params without `"lora"` are returned
    unchanged.
    """
    return _adapted(params, freeze_base=True)


def merge(params: dict) -> dict:
    """A plain checkpoint (the base tree, adapters folded in) for `save_pretrained`."""
    return _adapted(params, freeze_base=False)
