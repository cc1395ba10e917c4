"""Rows that live on several hosts: global batch arrays from per-host rows, and back.

Every host reads its own rows of each global batch (`data.pipeline` shards records per host in
blocks, so global batch k is the same whatever the number of hosts) and keeps the host-side work
(video decoding, rewards) for those rows. The model runs on global arrays whose batch axis is
sharded over the mesh axes `data` x `fsdp`:

    host rows [B_local, ...] --global_rows--> jax.Array [B, ...] (batch-sharded)
    jax.Array [R, ...] --local_rows--> this host's rows [R_local, ...] as NumPy

Process p's rows are rows `[p * B_local, (p + 1) * B_local)` of the global batch (the order of
`jax.make_array_from_process_local_data` on a mesh whose devices are grouped by process, as
`mesh.make_mesh` builds them), and a batch-sharded `[B * G, ...]` array derived from it keeps
each prompt's G rows on the devices (and so the host) of that prompt.

With one process all of this is the identity on data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vlmm_jax.policy import BATCH_AXIS

BATCH_MESH_AXES = ("data", "fsdp")


def batch_shards(mesh: Mesh) -> int:
    """How many ways the batch axis is split: `data` x `fsdp`."""
    return int(np.prod([mesh.shape[a] for a in BATCH_MESH_AXES if a in mesh.shape]))


def row_sharding(
    mesh: Mesh, ndim: int, axis: int, size: int, *, host_rows: bool = True
) -> NamedSharding:
    """Shards axis `axis` (of global size `size`) of an `ndim`-array over the batch mesh axes.

    A batch that does not split evenly is replicated instead (its work then runs on every
    device), unless its rows come from several hosts (`host_rows` with several processes).
    """
    spec = [None] * ndim
    if size % batch_shards(mesh) == 0:
        spec[axis] = BATCH_MESH_AXES
    elif host_rows and jax.process_count() > 1:
        raise ValueError(
            f"a global batch of {size} rows does not split over the mesh's "
            f"{batch_shards(mesh)} batch shards (data x fsdp); make the per-step batch a multiple"
        )
    return NamedSharding(mesh, PartitionSpec(*spec))


def global_rows(tree: Mapping[str, Any], mesh: Mesh | None, *, host_rows: bool = True):
    """Global batch-sharded arrays of a batch (every leaf has a batch axis: axis 0, or
    `policy.BATCH_AXIS[key]`).

    Args:
      tree: host arrays: this host's rows (`host_rows=True`, training: every host reads its
        own data), or every row of the batch, the same on every host (`host_rows=False`, e.g.
        evaluation, where each host builds the whole small batch).
      mesh: the mesh; None gives device arrays of the rows as they are.
    """
    if mesh is None:
        return jax.tree.map(jax.numpy.asarray, dict(tree))
    hosts = jax.process_count() if host_rows else 1

    def put(path, x):
        x = np.asarray(x)
        axis = BATCH_AXIS.get(str(getattr(path[0], "key", "")), 0)
        size = x.shape[axis] * hosts
        sharding = row_sharding(mesh, x.ndim, axis, size, host_rows=host_rows)
        if not host_rows and sharding.spec[axis] is not None:  # keep this host's slice
            local = size // jax.process_count()
            x = np.take(x, np.arange(local) + jax.process_index() * local, axis=axis)
        return jax.make_array_from_process_local_data(
            sharding, x, (*x.shape[:axis], size, *x.shape[axis + 1 :])
        )

    return jax.tree_util.tree_map_with_path(put, dict(tree))


def replicated(tree: Mapping[str, Any], mesh: Mesh | None) -> dict[str, Any]:
    """Host arrays, the same on every host, as global arrays replicated over the mesh (inputs
    without a batch axis, such as one flat prompt of the test-time scaling strategies)."""
    if mesh is None or jax.process_count() == 1:
        return jax.tree.map(jax.numpy.asarray, dict(tree))
    sharding = NamedSharding(mesh, PartitionSpec())
    put = lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x))  # noqa: E731
    return jax.tree.map(put, dict(tree))


def local_rows(x: jax.Array, axis: int = 0) -> np.ndarray:
    """This host's rows of a global array (all of it when fully addressable), as NumPy."""
    if x.is_fully_addressable:
        return np.asarray(x)
    spec = [None] * x.ndim
    spec[axis] = BATCH_MESH_AXES
    local = multihost_utils.global_array_to_host_local_array(
        x, x.sharding.mesh, PartitionSpec(*spec)
    )
    return np.asarray(local)


def all_rows(x: jax.Array) -> np.ndarray:
    """Every row of a global array, on every host, as NumPy."""
    if x.is_fully_addressable:
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def host_offset(local_rows_per_host: int) -> int:
    """The global index of this host's first row."""
    return jax.process_index() * local_rows_per_host


def all_hosts_sum(values) -> np.ndarray:
    """Element-wise sum of a small host array over all processes (float64)."""
    values = np.asarray(values, np.float64)
    if jax.process_count() == 1:
        return values
    return np.asarray(multihost_utils.process_allgather(values)).reshape(-1, *values.shape).sum(0)


def all_hosts_mean(figures: Mapping[str, float]) -> dict[str, float]:
    """The mean over processes of per-host figures with the same keys (each host's figure is a
    mean over the same number of rows, so this is the global mean); NaN figures (nothing to
    average on that host) are left out."""
    keys = sorted(figures)
    values = np.asarray([figures[k] for k in keys], np.float64)
    if jax.process_count() > 1:
        values = np.asarray(multihost_utils.process_allgather(values)).reshape(-1, len(keys))
    return {k: nanmean(v) for k, v in zip(keys, values.reshape(-1, len(keys)).T, strict=True)}


def nanmean(values) -> float:
    """The mean of the finite-or-infinite (non-NaN) values; NaN when there are none."""
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def all_hosts_max(values) -> np.ndarray:
    """Element-wise max of a small host array over all processes."""
    values = np.asarray(values)
    if jax.process_count() == 1:
        return values
    return np.asarray(multihost_utils.process_allgather(values)).reshape(-1, *values.shape).max(0)


def host_batch_size(global_batch: int) -> int:
    """This host's rows of a global batch of `global_batch` rows."""
    count = jax.process_count()
    if global_batch % count:
        raise ValueError(f"a global batch of {global_batch} rows does not split over {count} hosts")
    return global_batch // count
