"""Putting host batches onto the mesh, and a random-token batch source for tests and benchmarks.

A batch is a dict of arrays with a leading micro-batch axis M; the batch axis (B) that the mesh
shards is axis 1, except `position_ids [M, 3, B, L]` where it is axis 2.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vlmm_jax.models.config import ModelConfig
from vlmm_jax.models.positions import row_vision_inputs, sample_positions

_BATCH_AXIS = {"position_ids": 2}


def batch_shardings(batch: dict, mesh: Mesh) -> dict:
    """`NamedSharding`s sharding each leaf's batch axis over `data` x `fsdp`."""

    def spec(path, x):
        axis = _BATCH_AXIS.get(str(getattr(path[0], "key", "")), 1)
        parts = [None] * np.ndim(x)
        parts[axis] = ("data", "fsdp")
        return NamedSharding(mesh, PartitionSpec(*parts))

    return jax.tree_util.tree_map_with_path(spec, batch)


def shard_batch(host_batch: dict, mesh: Mesh) -> dict:
    """Global arrays from this process's rows (`make_array_from_process_local_data`)."""
    shardings = batch_shardings(host_batch, mesh)
    return jax.tree.map(
        lambda x, s: jax.make_array_from_process_local_data(s, np.asarray(x)),
        host_batch,
        shardings,
    )


def random_sample(config: ModelConfig, seed: int, *, text: int = 24, video=(2, 4, 4)):
    """One SFT sample: a short video between random text, the second half as the target.

    Returns a dict of numpy arrays: input_ids/loss_mask `[L]`, position_ids `[3, L]`,
    and the video `pixels [P, C]` with its `grid`.
    """
    rng = np.random.default_rng(seed)
    n_vis = int(np.prod(video)) // config.vision.merge_unit
    low, high = 1, config.text.vocab_size - 8
    ids = np.concatenate(
        [
            rng.integers(low, high, text // 2),
            [config.vision_start_token_id],
            np.full(n_vis, config.video_token_id),
            [config.vision_end_token_id],
            rng.integers(low, high, text - text // 2),
        ]
    ).astype(np.int32)
    loss_mask = np.zeros_like(ids)
    loss_mask[-(text // 2) :] = 1
    pos = sample_positions(ids, config, video_grid_thw=np.array([video]))
    pixels = rng.normal(size=(int(np.prod(video)), config.vision.patch_dim)).astype(np.float32)
    return {
        "input_ids": ids,
        "loss_mask": loss_mask,
        "position_ids": pos,
        "pixels": pixels,
        "grid": tuple(video),
    }


def pad_batch(samples: list[dict], config: ModelConfig, micro_batches: int = 1) -> dict:
    """Stacks samples one per row (right padding) into a `[M, B/M, ...]` SFT batch."""
    length = max(len(s["input_ids"]) for s in samples)
    b = len(samples)
    ids = np.zeros((b, length), np.int32)
    mask, seg = np.zeros_like(ids), np.zeros_like(ids)
    pos = np.zeros((3, b, length), np.int32)
    for i, s in enumerate(samples):
        n = len(s["input_ids"])
        ids[i, :n], mask[i, :n], seg[i, :n] = s["input_ids"], s["loss_mask"], 1
        pos[:, i, :n] = s["position_ids"]
    rows = [[(s["pixels"], s["grid"])] for s in samples]
    pixels, layout = row_vision_inputs(rows, config.vision)
    batch = {
        "input_ids": ids,
        "loss_mask": mask,
        "segment_ids": seg,
        "position_ids": pos,
        "visual_pixels": pixels,
        "vision_layout": layout,
    }
    return split_micro_batches(batch, micro_batches)


def split_micro_batches(batch: dict, micro_batches: int) -> dict:
    """`[B, ...]` leaves (position_ids `[3, B, L]`) -> `[M, B/M, ...]`."""

    def split(path, x):
        axis = _BATCH_AXIS.get(str(getattr(path[0], "key", "")), 1) - 1
        b = x.shape[axis]
        if b % micro_batches:
            raise ValueError(f"batch of {b} rows does not split into {micro_batches} micro-batches")
        x = np.moveaxis(x, axis, 0).reshape(
            micro_batches, b // micro_batches, *np.delete(x.shape, axis)
        )
        return np.moveaxis(x, 1, axis + 1)

    return jax.tree_util.tree_map_with_path(split, batch)
