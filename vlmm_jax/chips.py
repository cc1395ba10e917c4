"""TPU slices by name (`v5p-8`, `v5e-16`, ...): their topology, HBM and peak bf16 FLOP/s.

Chip figures are Google Cloud's published per-chip specifications (cloud.google.com/tpu/docs:
the "TPU v4", "TPU v5e", "TPU v5p" and "TPU v6e" system architecture pages): HBM capacity and
peak bf16 dense compute.

Slice names count TensorCores for v4 / v5p (2 per chip: `v5p-8` is 4 chips, 2x2x1) and chips
for v5e / v6e (`v5e-16` is 16 chips, 4x4), as Cloud TPU names them.
"""

from __future__ import annotations

import dataclasses
import os
import re

GIB = 1024**3
# What libtpu keeps for itself: a v5e chip (16 GiB) offers programs 15.75 GiB ("exceeds
# available HBM (15.75G)" in its out-of-memory errors); the same reserve is assumed elsewhere.
RUNTIME_RESERVE = GIB // 4


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    hbm_bytes: int
    peak_bf16_flops: float  # per chip, per second
    cores_per_chip: int  # in the slice name
    chips_per_host: tuple[int, int, int]
    dims: int  # 3: a 3D torus (v4, v5p); 2: a 2D slice (v5e, v6e)


CHIPS = {
    "v4": Chip("v4", 32 * GIB, 275e12, 2, (2, 2, 1), 3),
    "v5e": Chip("v5e", 16 * GIB, 197e12, 1, (2, 4, 1), 2),
    "v5p": Chip("v5p", 95 * GIB, 459e12, 2, (2, 2, 1), 3),
    "v6e": Chip("v6e", 32 * GIB, 918e12, 1, (2, 4, 1), 2),
}


# chips -> torus shape, as Cloud TPU lays slices out (3D for v4 / v5p, 2D for v5e / v6e).
GRIDS = {
    3: {
        4: (2, 2, 1),
        8: (2, 2, 2),
        16: (2, 2, 4),
        32: (2, 4, 4),
        64: (4, 4, 4),
        128: (4, 4, 8),
        256: (4, 8, 8),
        512: (8, 8, 8),
    },
    2: {
        1: (1, 1),
        4: (2, 2),
        8: (2, 4),
        16: (4, 4),
        32: (4, 8),
        64: (8, 8),
        128: (8, 16),
        256: (16, 16),
    },
}


@dataclasses.dataclass(frozen=True)
class Slice:
    """A named slice: `chip`, `num_chips` and the topology string `jax` takes ("v5p:2x2x1")."""

    name: str
    chip: Chip
    num_chips: int
    grid: tuple[int, ...]

    @property
    def topology(self) -> str:
        return f"{self.chip.name}:" + "x".join(map(str, self.grid))

    @property
    def chips_per_host(self) -> tuple[int, int, int]:
        if self.chip.dims == 2 and self.num_chips < 8:  # v5e-1, v5e-4: one host
            return (*self.grid, 1)
        return self.chip.chips_per_host


def parse_slice(name: str) -> Slice:
    """`"v5p-8"` -> 4 v5p chips, topology "v5p:2x2x1"; `"v5e-16"` -> 16 chips, "v5e:4x4"."""
    m = re.fullmatch(r"(v4|v5e|v5p|v6e)-(\d+)", name)
    chip = CHIPS[m.group(1)] if m else None
    chips = int(m.group(2)) // chip.cores_per_chip if m else 0
    grids = GRIDS[chip.dims] if m else {}
    if chips not in grids:
        raise ValueError(
            f"aot.topology={name!r}: expected <chip>-<size> with chip in {sorted(CHIPS)} and a "
            "slice size Cloud TPU offers (e.g. v5p-8, v5p-64, v5e-8, v5e-16, v6e-8)"
        )
    return Slice(name, chip, chips, grids[chips])


def topology_devices(slice_: Slice):
    """The slice's devices, for compiling on this (CPU) host with libtpu; nothing runs."""
    for key, value in (
        ("TPU_SKIP_MDS_QUERY", "1"),  # no metadata server on a CPU host
        ("TPU_ACCELERATOR_TYPE", slice_.name),
        ("TPU_WORKER_HOSTNAMES", "localhost"),
        ("TPU_WORKER_ID", "0"),
        # libtpu's lock on /tmp/libtpu_lockfile guards a TPU's chips; compiling opens none, and
        # without this two compiling processes (test workers, benchmarks/aot.py --jobs) clash.
        ("ALLOW_MULTIPLE_LIBTPU_LOAD", "1"),
    ):
        os.environ.setdefault(key, value)
    from jax.experimental import topologies

    try:
        desc = topologies.get_topology_desc(
            platform="tpu",
            topology_name=slice_.topology,
            chips_per_host_bounds=slice_.chips_per_host,
        )
    except Exception as e:  # libtpu missing or the topology unknown to it
        raise RuntimeError(
            f"cannot describe TPU topology {slice_.topology} ({slice_.name}): {e}. Compiling for "
            'a TPU from this host needs libtpu: pip install "jax[tpu]==<the installed jax>"'
        ) from e
    return desc.devices
