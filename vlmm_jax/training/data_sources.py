"""SFT batch sources by name: grain datasets whose iterators checkpoint their position.

Each source maps `(config, model_config, split)` to a `grain.IterDataset` of host-local batches
in the layout of `training.sft` (a leading micro-batch axis). Examples are shuffled by
`config.data.seed` and grouped into global batches; each host keeps its rows of every batch.
"""

from __future__ import annotations

from collections.abc import Callable

import grain
import jax
import ml_collections

from vlmm_jax.hosts import host_batch_size
from vlmm_jax.models.config import ModelConfig
from vlmm_jax.training.batches import pad_batch, random_sample, split_micro_batches


def host_rows(ds: grain.MapDataset, global_batch: int) -> grain.MapDataset:
    """Groups a stream of examples into global batches and keeps this host's rows of each, so a
    step's global batch is the same whatever the number of hosts."""
    per_host = host_batch_size(global_batch)
    start = jax.process_index() * per_host
    return ds.batch(global_batch, drop_remainder=True, batch_fn=list).map(
        lambda rows: rows[start : start + per_host]
    )


def random_sft(
    config: ml_collections.ConfigDict, model_config: ModelConfig, split: str
) -> grain.IterDataset:
    """Random tokens around random short videos (tests, benchmarks, mesh checks)."""
    data = config.data
    offset = {"train": 0, "validation": 1_000_000, "test": 2_000_000}[split]
    ds = grain.MapDataset.range(data.num_examples)
    if split == "train":
        ds = ds.shuffle(seed=data.seed).repeat(None)
    video = tuple(data.video_grid)

    def batch(indices):
        samples = [
            random_sample(model_config, offset + int(i), text=16 + 8 * (int(i) % 3), video=video)
            for i in indices
        ]
        return pad_batch(samples, model_config, data.micro_batches)

    it = host_rows(ds, data.batch_size).map(batch).to_iter_dataset()
    if data.get("num_workers", 0):
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=data.num_workers))
    return it


def synthetic_sft(
    config: ml_collections.ConfigDict, model_config: ModelConfig, split: str, data
) -> grain.IterDataset:
    """The embedded synthetic dataset (`data.synthetic_data`), packed SFT batches."""
    from vlmm_jax.data.pipeline import BatchOptions, batch_arrays, make_pipeline
    from vlmm_jax.data.synthetic_data import SyntheticSample

    d = config.data
    train = split == "train"
    pipe = make_pipeline(
        data.split(split),
        data.tokenizer,
        model_config,
        BatchOptions(
            batch_size=host_batch_size(d.batch_size), max_length=d.max_length, packing=d.packing
        ),
        mode="sft",
        sample_fn=SyntheticSample(
            data.tokenizer, model_config, think=data.think, target=data.target
        ),
        seed=d.seed,
        shuffle=train,
        num_epochs=None if train else 1,
        worker_count=d.num_workers,
    )
    return pipe.map(lambda b: split_micro_batches(batch_arrays(b), d.micro_batches))


def annotations_sft(
    config: ml_collections.ConfigDict, model_config: ModelConfig, split: str, data
) -> grain.IterDataset:
    """An annotation file (`data.annotation_data`): real videos decoded by the default
    `SampleBuilder` in the pipeline, packed (or padded) SFT batches."""
    from vlmm_jax.data.pipeline import BatchOptions, batch_arrays, make_pipeline

    d = config.data
    train = split == "train"
    pipe = make_pipeline(
        data.split(split),
        data.tokenizer,
        model_config,
        BatchOptions(
            batch_size=host_batch_size(d.batch_size), max_length=d.max_length, packing=d.packing
        ),
        mode="sft",
        seed=d.seed,
        shuffle=train,
        num_epochs=None if train else 1,
        worker_count=d.num_workers,
        name=f"{d.path}:{split}",
        **data.pipeline_kwargs(),
    )
    return pipe.map(lambda b: split_micro_batches(batch_arrays(b), d.micro_batches))


SOURCES: dict[str, Callable[..., grain.IterDataset]] = {
    "random": random_sft,
    "synthetic": synthetic_sft,
    "annotations": annotations_sft,
}


def make_dataset(config, model_config: ModelConfig, split: str, data=None) -> grain.IterDataset:
    """Host-local SFT batches of `split`; `data` is the prepared dataset context, if any."""
    name = config.data.source
    if name not in SOURCES:
        raise ValueError(f"config.data.source={name!r} is not one of {sorted(SOURCES)}")
    if name == "random":
        return random_sft(config, model_config, split)
    return SOURCES[name](config, model_config, split, data)
