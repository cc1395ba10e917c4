"""The device mesh, logical-axis rules, and the shardings derived from them.

Parameters and activations carry logical axis names (`embed`, `mlp`, `heads`, ...); a rules
table maps each name to mesh axes, so a new parallelism layout is a config change:

    rules = (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("mlp", "tensor"), ...)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# FSDP over `fsdp`, tensor parallelism over `tensor`, batch over `data` x `fsdp`.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("cache_length", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("qkv", None),
    ("vocab", "tensor"),
    ("patch", None),
    ("layers", None),
    ("lora_rank", None),
)


def maybe_initialize_distributed(multihost: bool | None = None) -> None:
    """`jax.distributed.initialize()` when asked to, or when the environment names a
    coordinator (`JAX_COORDINATOR_ADDRESS`, as set by launchers); a no-op if already done.

    TPU pods and SLURM / Open MPI jobs are detected by JAX; elsewhere the process count and
    index come from `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` (with the coordinator address).
    """
    if multihost is None:
        multihost = bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))
    if multihost and not jax.distributed.is_initialized():
        env = {"num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}
        kwargs = {k: int(os.environ[v]) for k, v in env.items() if os.environ.get(v)}
        jax.distributed.initialize(**kwargs)


def mesh_shape(sizes: dict[str, int], num_devices: int) -> dict[str, int]:
    """Resolves one `-1` axis to "the rest" and checks the product equals `num_devices`."""
    sizes = {a: int(sizes.get(a, 1)) for a in MESH_AXES}
    unknown = [a for a, s in sizes.items() if s == -1]
    if len(unknown) > 1:
        raise ValueError(f"mesh: at most one axis may be -1, got {sizes}")
    if any(s == 0 or s < -1 for s in sizes.values()):
        raise ValueError(f"mesh: axis sizes must be positive or -1, got {sizes}")
    known = math.prod(s for s in sizes.values() if s != -1)
    if unknown:
        if num_devices % known:
            raise ValueError(
                f"mesh {sizes}: {num_devices} devices are not divisible by the fixed axes "
                f"(product {known})"
            )
        sizes[unknown[0]] = num_devices // known
    if math.prod(sizes.values()) != num_devices:
        raise ValueError(
            f"mesh {sizes} has {math.prod(sizes.values())} slots but there are "
            f"{num_devices} devices; set one axis to -1 to take the rest"
        )
    return sizes


def make_mesh(sizes: dict[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A `Mesh` with axes `data`, `fsdp`, `tensor` over all (or the given) devices."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(sizes, len(devices))
    dims = tuple(shape[a] for a in MESH_AXES)
    try:
        grid = mesh_utils.create_device_mesh(dims, devices=devices)
    except Exception:  # fake CPU devices / odd topologies: plain row-major order
        grid = np.asarray(devices).reshape(dims)
    return Mesh(grid, MESH_AXES)


def rules_from_config(rules) -> tuple[tuple[str, object], ...]:
    """Rules as a tuple of (logical name, mesh axis | tuple | None), validated."""
    out = []
    for entry in rules:
        name, axes = entry
        flat = (axes,) if isinstance(axes, str) else tuple(axes or ())
        bad = [a for a in flat if a not in MESH_AXES]
        if bad:
            raise ValueError(f"logical axis rule {name!r}: unknown mesh axes {bad}")
        out.append((name, tuple(axes) if isinstance(axes, (list, tuple)) else axes))
    return tuple(out)


def logical_shardings(boxed_tree, mesh: Mesh, rules) -> object:
    """`NamedSharding`s for a pytree of boxed (logically partitioned) abstract values."""
    specs = nn.get_partition_spec(boxed_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, rules)


def data_sharding(mesh: Mesh, ndim: int, batch_axis: int = 0) -> NamedSharding:
    """Shards axis `batch_axis` of an `ndim`-array over `data` x `fsdp`; the rest replicated."""
    spec = [None] * ndim
    spec[batch_axis] = ("data", "fsdp")
    return NamedSharding(mesh, PartitionSpec(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
