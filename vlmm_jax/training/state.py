"""Train state, created directly sharded: `eval_shape` -> logical specs -> `jit(out_shardings)`.

No full unsharded copy of the parameters ever exists on one device.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vlmm_jax.training.mesh import logical_shardings


@struct.dataclass
class TrainState:
    step: jax.Array  # int32 []
    params: dict
    opt_state: optax.OptState
    rng: jax.Array  # a typed PRNG key


def _replicated(mesh: Mesh):
    return NamedSharding(mesh, PartitionSpec())


def _key(k) -> str:
    return str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))


def state_shardings(abstract_boxed_params, tx, mesh: Mesh, rules) -> TrainState:
    """Shardings of the whole train state: params by their logical names; each optimizer-state
    leaf like the parameter it tracks (matched by key-path suffix and shape: optax states nest
    the param tree under their own keys); everything else (counts, scalars) replicated."""
    param_sh = logical_shardings(abstract_boxed_params, mesh, rules)
    params = nn.meta.unbox(abstract_boxed_params)
    by_path = {
        tuple(_key(k) for k in path): (leaf.shape, sh)
        for (path, leaf), sh in zip(
            jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(param_sh), strict=True
        )
    }

    def like_param(path, leaf):
        keys = tuple(_key(k) for k in path)
        for i in range(len(keys)):
            hit = by_path.get(keys[i:])
            if hit is not None and hit[0] == leaf.shape:
                return hit[1]
        return _replicated(mesh)

    opt_sh = jax.tree_util.tree_map_with_path(like_param, jax.eval_shape(tx.init, params))
    return TrainState(
        step=_replicated(mesh), params=param_sh, opt_state=opt_sh, rng=_replicated(mesh)
    )


def create_train_state(
    init_params: Callable[[jax.Array], dict],
    abstract_boxed_params,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    rules,
    rng: jax.Array,
) -> tuple[TrainState, TrainState]:
    """Initialises params and optimizer state straight onto their shardings.

    Args:
      init_params: `key -> params` (unboxed); traced under jit, never materialised unsharded.
      abstract_boxed_params: `jax.eval_shape` of the boxed init (carries logical axis names).
    Returns:
      (state, shardings) where `shardings` is a TrainState of `NamedSharding`s.
    """
    shardings = state_shardings(abstract_boxed_params, tx, mesh, rules)

    def init(key):
        init_key, state_key = jax.random.split(key)
        params = init_params(init_key)
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=state_key
        )

    with jax.set_mesh(mesh):
        state = jax.jit(init, out_shardings=shardings)(rng)
    return state, shardings


def state_from_params(params, tx, shardings: TrainState, rng: jax.Array) -> TrainState:
    """A fresh train state around existing (e.g. loaded, already sharded) parameters."""
    init = jax.jit(
        lambda p, k: TrainState(
            step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p), rng=k
        ),
        out_shardings=shardings,
    )
    return init(params, rng)
