"""Train state, created directly sharded (`jit(out_shardings)` from parameters already on their
shardings), and the guarded optimizer step every trainer applies.

No full unsharded copy of the parameters ever exists on one device.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vlmm_jax.mesh import logical_shardings


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


def state_from_params(params, tx, shardings: TrainState, rng: jax.Array) -> TrainState:
    """A fresh train state around existing (e.g. loaded, already sharded) parameters."""
    init = jax.jit(
        lambda p, k: TrainState(
            step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p), rng=k
        ),
        out_shardings=shardings,
    )
    return init(params, rng)


def apply_gradients(
    state: TrainState, grads, loss: jax.Array, *, tx: optax.GradientTransformation
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step, guarded: a non-finite `loss` or gradient norm leaves the parameters
    and optimizer state unchanged (the step counter still advances) and reports `skipped = 1`,
    so one bad batch cannot corrupt a run; loops stop after too many in a row.

    Returns (state, metrics): `grad_norm`, `update_norm`, `param_norm`, `skipped`.
    """
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)  # noqa: E731
    new_state = state.replace(
        step=state.step + 1,
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        rng=jax.random.fold_in(state.rng, state.step),
    )
    metrics = {
        "grad_norm": grad_norm,
        "update_norm": optax.tree.norm(updates),
        "param_norm": optax.tree.norm(new_state.params),
        "skipped": 1 - ok.astype(jnp.int32),
    }
    return new_state, metrics
