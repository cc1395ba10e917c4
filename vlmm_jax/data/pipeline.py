"""grain pipelines: records -> (per host shard, shuffle, epochs) -> decode in workers -> batches.

    records (any sequence: ExampleReader, list of Example, ...)
      -> grain.MapDataset.source            random access
      -> [shard_index::shard_count]         per host (jax.process_index / process_count)
      -> shuffle(seed) -> repeat(epochs)    a new order every epoch, same on resume
         (or, with `host_block=b`: shuffle and repeat every record, then each host takes its
         block of b records from every global block of b * hosts: one prompt per row, so
         global batch k is the same for any host count)
      -> map(SampleBuilder)                 decode + tokenize + positions, in `worker_count`
                                            processes (grain mp_prefetch), or threads when 0
      -> batching (this process)            packed / padded SFT rows, left-padded RL prompts

`iter(make_pipeline(...))` is a grain `DatasetIterator`: `get_state()` is a JSON-serialisable dict
for the training checkpoint and `set_state(state)` resumes with the next unseen example: the
sample that did not fit into the last batch is read again, so the batch after a restore equals
the one the uninterrupted run produced. Skipped examples (`on_error="skip"`) are counted in
`ReadStats`, carried in that state, and the run fails once their fraction passes
`max_skip_fraction`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import grain
import jax
from absl import flags

from vlmm_jax.data.chat import DEFAULT_VISION, MODES, VisionOptions, build_sample
from vlmm_jax.data.packing import FIXED_SHAPE_KEYS, collate_rows, round_up
from vlmm_jax.data.records import AnnotationError, ReadStats
from vlmm_jax.data.tokenizer import Tokenizer
from vlmm_jax.models.config import ModelConfig

ON_ERROR = ("raise", "skip")


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchOptions:
    """How samples become batches (shapes are bucketed so a run compiles few programs)."""

    batch_size: int  # rows per batch, per host
    max_length: int  # tokens per row: the packing budget, and the cap of padded rows
    packing: bool = True  # SFT: several samples per row; False: one sample per padded row
    length_multiple: int = 64  # unpacked rows: length rounded up to a multiple (<= max_length)
    length_buckets: tuple[int, ...] | None = None  # or explicit row lengths (overrides multiple)
    max_patches: int | None = None  # visual patch rows per batch row (None: unbounded)
    visual_layout: str = "rows"  # "rows": visual_pixels [B, P, C]; "flat": transformers' layout
    patch_multiple: int = 256  # patch rows padded to a multiple (of the merge unit, 4)
    patch_buckets: tuple[int, ...] | None = None  # or explicit patch-row counts

    def __post_init__(self):
        if self.batch_size <= 0 or self.max_length <= 0:
            raise ValueError(
                f"BatchOptions: batch_size ({self.batch_size}) and max_length "
                f"({self.max_length}) must be positive"
            )


@dataclasses.dataclass(frozen=True)
class _Skipped:
    source: str
    message: str
    kind: str


class SampleBuilder:
    """`record -> build_sample(...)` (picklable: it runs in grain worker processes).

    With `on_error="skip"`, an `AnnotationError` (missing / corrupt media, ...) becomes a skip
    marker that the batching stage counts; any other exception propagates.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        config: ModelConfig,
        *,
        mode: str = "sft",
        options: VisionOptions = DEFAULT_VISION,
        system_prompt: str | None = None,
        on_error: str = "raise",
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.tokenizer, self.config, self.mode = tokenizer, config, mode
        self.options, self.system_prompt, self.on_error = options, system_prompt, on_error

    def __call__(self, record) -> dict[str, Any] | _Skipped:
        try:
            return build_sample(
                record,
                self.tokenizer,
                self.config,
                mode=self.mode,
                options=self.options,
                system_prompt=self.system_prompt,
            )
        except AnnotationError as e:
            if self.on_error == "raise":
                raise
            return _Skipped(e.source, str(e), e.kind)


def _worker_init(worker_index: int, worker_count: int) -> None:
    del worker_index, worker_count
    # Workers only run host-side JAX (rope_index on CPU); never let them claim an accelerator.
    jax.config.update("jax_platforms", "cpu")


def source_dataset(
    records: Sequence[Any],
    *,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = 1,
    shard_index: int | None = None,
    shard_count: int | None = None,
    drop_remainder: bool = True,
    host_block: int | None = None,
) -> grain.MapDataset:
    """Random access over `records`: this host's shard, shuffled per epoch, repeated.

    Args:
      records: any sequence (`len` + integer indexing), e.g. an `ExampleReader`.
      seed: shuffle seed (each epoch is reshuffled from it; all hosts may use the same seed).
      shuffle: shuffle (False keeps file order).
      num_epochs: passes over the shard; None repeats forever.
      shard_index / shard_count: this host's shard (default `jax.process_index()` /
        `jax.process_count()`); shard i holds records i, i + count, ...
      drop_remainder: give every shard `len // count` records (hosts stay in step); False
        lets the first `len % count` shards hold one more (shards then cover every record).
      host_block: shard after shuffling, in blocks: host i takes records
        `[k * b * count + i * b, k * b * count + (i + 1) * b)` of the shuffled stream for every
        k, so the global stream is the same for any host count (RL prompt batches of b rows
        per host). Only whole global blocks are kept.
    """
    index = jax.process_index() if shard_index is None else shard_index
    count = jax.process_count() if shard_count is None else shard_count
    if not 0 <= index < count:
        raise ValueError(f"shard_index={index} must be in [0, shard_count={count})")
    n = len(records)
    if host_block is not None:
        ds = grain.MapDataset.source(records)
        ds = ds.shuffle(seed) if shuffle else ds
        ds = ds.repeat(num_epochs) if num_epochs != 1 else ds
        return _HostBlocks(ds, index, count, host_block)
    stop = n // count * count if drop_remainder else n
    ds = grain.MapDataset.source(records)[index:stop:count]
    if not len(ds):
        raise ValueError(
            f"source_dataset: shard {index} of {count} is empty ({n} records, "
            f"drop_remainder={drop_remainder})"
        )
    if shuffle:
        ds = ds.shuffle(seed)
    if num_epochs != 1:
        ds = ds.repeat(num_epochs)
    return ds


class _HostBlocks(grain.MapDataset):
    """Host `index`'s blocks of `size` elements out of every `count * size` of the parent."""

    def __init__(self, parent: grain.MapDataset, index: int, count: int, size: int):
        super().__init__(parent)
        if size < 1:
            raise ValueError(f"host_block must be >= 1, got {size}")
        self._index, self._count, self._size = index, count, size
        if not len(self):
            raise ValueError(
                f"source_dataset: {len(parent)} records hold no whole global block of "
                f"{count} hosts x {size}"
            )

    def __len__(self) -> int:
        return len(self._parent) // (self._count * self._size) * self._size

    def __getitem__(self, j):
        if isinstance(j, slice):
            return self.slice(j)
        block, k = divmod(j, self._size)
        return self._parent[(block * self._count + self._index) * self._size + k]

    def __str__(self) -> str:
        return f"HostBlocks(index={self._index}, count={self._count}, size={self._size})"


def _stats_state(stats: ReadStats) -> dict[str, Any]:
    return {
        "total": stats.total,
        "kept": stats.kept,
        "skipped": [list(s) for s in stats.skipped],
        "by_kind": dict(stats.by_kind),
    }


def _stats_from(state: dict[str, Any], path: str, fmt: str) -> ReadStats:
    stats = ReadStats(path=path, format=fmt, total=state["total"], kept=state["kept"])
    stats.skipped = [tuple(s) for s in state["skipped"]]
    stats.by_kind.update(state["by_kind"])
    return stats


class _BatchIterator(grain.DatasetIterator):
    """Assembles rows from the samples of its parent; see `BatchDataset`."""

    def __init__(self, parent: grain.DatasetIterator, ds: BatchDataset):
        super().__init__(parent)
        self._ds = ds
        self._read_stats = ReadStats(path=ds.name, format=ds.mode)
        self._pending: dict[str, Any] | None = None  # fetched, not yet placed in a batch
        self._mark: dict[str, Any] | None = None  # the state before `_pending` was fetched

    @property
    def stats(self) -> ReadStats:
        """Examples read and skipped so far (restored with the state)."""
        return self._read_stats

    def _snapshot(self) -> dict[str, Any]:
        return {"parent": self._parent.get_state(), "stats": _stats_state(self._read_stats)}

    def get_state(self) -> dict[str, Any]:
        return self._mark if self._pending is not None else self._snapshot()

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._read_stats = _stats_from(state["stats"], self._ds.name, self._ds.mode)
        self._pending = self._mark = None

    def _skip(self, error: AnnotationError) -> None:
        ds = self._ds
        if ds.on_error == "raise":
            raise error
        self._read_stats.add_skip(error)
        if ds.max_skip_fraction == 0 or self._read_stats.total >= ds.skip_check_after:
            self._read_stats.check(ds.max_skip_fraction)

    def _peek(self) -> dict[str, Any]:
        """The next usable sample (skips counted); StopIteration at the end of the data."""
        if self._pending is not None:
            return self._pending
        mark = self._snapshot()
        opts = self._ds.options
        while True:
            try:
                elem = next(self._parent)
            except StopIteration:
                self._read_stats.check(self._ds.max_skip_fraction)
                raise
            self._read_stats.total += 1
            if isinstance(elem, _Skipped):
                self._skip(AnnotationError(elem.source, elem.message, kind=elem.kind))
                continue
            where = elem.get("source") or elem.get("id")
            if elem["num_tokens"] > opts.max_length:
                self._skip(
                    AnnotationError(
                        where,
                        f"sample of {elem['num_tokens']} tokens is longer than "
                        f"max_length={opts.max_length} (fewer frames or pixels, or a larger "
                        "max_length)",
                        kind="too_long",
                    )
                )
                continue
            if opts.max_patches is not None and elem["num_patches"] > opts.max_patches:
                self._skip(
                    AnnotationError(
                        where,
                        f"sample of {elem['num_patches']} visual patches is above "
                        f"max_patches={opts.max_patches}",
                        kind="too_long",
                    )
                )
                continue
            self._read_stats.kept += 1
            self._pending, self._mark = elem, mark
            return elem

    def __next__(self) -> dict[str, Any]:
        ds, opts = self._ds, self._ds.options
        rows: list[list[dict[str, Any]]] = [[] for _ in range(opts.batch_size)]
        used = [0] * opts.batch_size
        patches = [0] * opts.batch_size
        r = 0
        while True:
            try:
                s = self._peek()
            except StopIteration:
                if not any(rows):
                    raise
                break
            n, p = int(s["num_tokens"]), int(s["num_patches"])
            too_many = opts.max_patches is not None and patches[r] + p > opts.max_patches
            if rows[r] and (not ds.pack or used[r] + n > opts.max_length or too_many):
                r += 1
                if r == opts.batch_size:
                    break
            rows[r].append(s)
            used[r] += n
            patches[r] += p
            self._pending = self._mark = None
        if ds.pack:
            length = opts.max_length
        else:
            longest = max(used)
            length = min(
                round_up(longest, opts.length_multiple, opts.length_buckets), opts.max_length
            )
        return collate_rows(
            rows,
            ds.config,
            length=length,
            pad_id=ds.pad_id,
            left_pad=ds.mode == "rl",
            visual_layout=opts.visual_layout,
            patch_multiple=opts.patch_multiple,
            patch_buckets=opts.patch_buckets,
        )


class BatchDataset(grain.IterDataset):
    """Batches of samples: packed or padded SFT rows, or left-padded RL prompts.

    Rows are filled in order (next fit): a sample goes into the current row if its tokens
    (and patches, under `max_patches`) fit, else into the next row; when no row is left the
    batch is done and that sample opens the next batch. The last batch may have empty
    (all-padding) rows.
    """

    def __init__(
        self,
        parent: grain.IterDataset,
        config: ModelConfig,
        options: BatchOptions,
        *,
        pad_id: int,
        mode: str = "sft",
        on_error: str = "raise",
        max_skip_fraction: float = 0.01,
        skip_check_after: int = 100,
        name: str = "pipeline",
    ):
        super().__init__(parent)
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.config, self.options, self.pad_id, self.mode = config, options, pad_id, mode
        self.pack = options.packing and mode == "sft"
        self.on_error, self.max_skip_fraction = on_error, max_skip_fraction
        self.skip_check_after, self.name = skip_check_after, name

    def __iter__(self) -> _BatchIterator:
        return _BatchIterator(self._parent.__iter__(), self)

    def __str__(self) -> str:
        return f"BatchDataset(mode={self.mode}, pack={self.pack}, options={self.options})"


def make_pipeline(
    records: Sequence[Any],
    tokenizer: Tokenizer,
    config: ModelConfig,
    batch: BatchOptions,
    *,
    mode: str = "sft",
    vision: VisionOptions = DEFAULT_VISION,
    sample_fn: Callable[[Any], dict[str, Any]] | None = None,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = 1,
    shard_index: int | None = None,
    shard_count: int | None = None,
    drop_remainder: bool = True,
    host_block: int | None = None,
    worker_count: int = 0,
    worker_buffer_size: int = 4,
    read_threads: int = 1,
    on_error: str = "raise",
    max_skip_fraction: float = 0.01,
    skip_check_after: int = 100,
    system_prompt: str | None = None,
    name: str = "pipeline",
) -> BatchDataset:
    """The full input pipeline; `iter(...)` yields batch dicts (see `packing.collate_rows`).

    Args:
      records: `Example`s (an `ExampleReader`, a list, ...), or any records `sample_fn` reads.
      tokenizer, config: ids must agree (`config.replace(**tokenizer.model_token_ids())`).
      batch: batch shape and bucketing.
      mode: "sft" (targets, loss mask; packed unless `batch.packing` is False) or "rl"
        (left-padded prompts ending with the generation prompt).
      vision: frame sampling and pixel budgets.
      sample_fn: record -> sample dict (default `SampleBuilder`); must be picklable when
        `worker_count > 0`.
      seed, shuffle, num_epochs, shard_index, shard_count, drop_remainder, host_block:
        `source_dataset`.
      worker_count: decoding processes (grain `mp_prefetch`); 0 decodes in this process with
        `read_threads` threads.
      worker_buffer_size: decoded samples buffered per worker.
      on_error: "raise" (a bad example stops the run, naming its file) or "skip" (counted).
      max_skip_fraction: with "skip", fail once skipped / read passes this (checked from
        `skip_check_after` examples on, and at the end).
      system_prompt: the system turn (None: the template's default).
      name: names the pipeline in skip reports.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    ds = source_dataset(
        records,
        seed=seed,
        shuffle=shuffle,
        num_epochs=num_epochs,
        shard_index=shard_index,
        shard_count=shard_count,
        drop_remainder=drop_remainder,
        host_block=host_block,
    )
    if sample_fn is None:
        sample_fn = SampleBuilder(
            tokenizer,
            config,
            mode=mode,
            options=vision,
            system_prompt=system_prompt,
            on_error=on_error,
        )
    ds = ds.map(sample_fn)
    if worker_count > 0:
        if not flags.FLAGS.is_parsed():  # grain reads absl flags; a plain script never parses
            flags.FLAGS.mark_as_parsed()
        # Workers decode; threads inside them would only contend for the same cores.
        it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1))
        it_ds = it_ds.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=worker_count, per_worker_buffer_size=worker_buffer_size
            ),
            worker_init_fn=_worker_init,
        )
    else:
        threads = max(read_threads, 1)
        it_ds = ds.to_iter_dataset(
            grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)
        )
    return BatchDataset(
        it_ds,
        config,
        batch,
        pad_id=tokenizer.pad_id,
        mode=mode,
        on_error=on_error,
        max_skip_fraction=max_skip_fraction,
        skip_check_after=skip_check_after,
        name=name,
    )


def batch_arrays(batch: dict[str, Any]) -> dict[str, Any]:
    """The fixed-shape array entries of a batch (what a jit-ed step takes)."""
    return {k: batch[k] for k in FIXED_SHAPE_KEYS if k in batch and not isinstance(batch[k], list)}


__all__ = [
    "BatchDataset",
    "BatchOptions",
    "SampleBuilder",
    "batch_arrays",
    "make_pipeline",
    "source_dataset",
]
