"""grain pipelines: packing (checked through the model), resume, sharding, workers, bad input."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import numpy as np
import pytest

from tests.data.test_chat import VISION, make_example, tiny_setup, write_video
from vlmm_jax.data.chat import build_sample
from vlmm_jax.data.packing import collate_rows, round_up
from vlmm_jax.data.pipeline import BatchOptions, batch_arrays, make_pipeline, source_dataset
from vlmm_jax.data.records import AnnotationError
from vlmm_jax.models.positions import rope_index
from vlmm_jax.models.qwen2_5_vl import Qwen2_5_VL, abstract_params


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tok, cfg = tiny_setup(tmp_path_factory)
    d = tmp_path_factory.mktemp("videos")
    videos = [
        write_video(d / "a.mp4", n=8, size=(56, 84), seed=1),  # grid (2, 4, 6): 12 tokens
        write_video(d / "b.mp4", n=6, size=(84, 56), seed=2),  # grid (2, 6, 4): 12 tokens
        write_video(d / "c.mp4", n=12, size=(56, 56), seed=3),  # grid (2, 4, 4): 8 tokens
    ]
    examples = [make_example(i, video=videos[i % 3]) for i in range(10)]
    return tok, cfg, examples


def _pipeline(data, batch=None, **kw):
    tok, cfg, examples = data
    batch = batch or BatchOptions(batch_size=2, max_length=320, patch_multiple=64)
    kw.setdefault("vision", VISION)
    return make_pipeline(kw.pop("records", examples), tok, cfg, batch, **kw)


def _same_batch(a, b):
    assert a["ids"] == b["ids"]
    for k in ("input_ids", "segment_ids", "position_ids", "loss_mask", "visual_pixels"):
        np.testing.assert_array_equal(a[k], b[k])


def test_packed_logits_equal_each_sample_alone(data, tmp_path):
    """The real test of packing: a packed row must give each sample the logits it gets alone
    (attention never crosses samples, positions restart, visual features land in order)."""
    from PIL import Image

    tok, cfg, examples = data
    Image.fromarray(np.full((50, 80, 3), 90, np.uint8)).save(tmp_path / "im.png")
    image_ex = make_example(20, image=str(tmp_path / "im.png"))
    opts = VISION.__class__(**{**VISION.__dict__, "image_max_pixels": 56 * 84})
    samples = [build_sample(ex, tok, cfg, options=opts) for ex in examples[:3]]
    samples.append(build_sample(image_ex, tok, cfg, options=opts))
    samples.append(build_sample(make_example(21), tok, cfg))  # text only
    rows = [[samples[0], samples[3], samples[1]], [samples[4], samples[2]]]
    length = round_up(max(sum(s["num_tokens"] for s in r) for r in rows) + 5, 16)
    flat = collate_rows(
        rows, cfg, length=length, pad_id=tok.pad_id, visual_layout="flat", patch_multiple=64
    )
    n_rows = flat["pixel_values"].shape[0] + flat["pixel_values_videos"].shape[0]
    assert n_rows % 64 == 0  # bucketed, with a dummy video item
    assert flat["video_grid_thw"].shape[0] == 4 and flat["image_grid_thw"].shape[0] == 1
    by_row = collate_rows(rows, cfg, length=length, pad_id=tok.pad_id, patch_multiple=64)
    assert by_row["visual_pixels"].shape == (2, 128, 1176)  # rows of 48+24+48 and 48 patches
    for k in ("input_ids", "segment_ids", "position_ids", "loss_mask"):
        np.testing.assert_array_equal(flat[k], by_row[k])

    model = Qwen2_5_VL(cfg)
    params = _random_params(cfg)

    @jax.jit
    def packed(params, b, segment_ids):
        visual = (
            dict(visual_pixels=b["visual_pixels"])
            if "visual_pixels" in b
            else dict(pixel_values=b["pixel_values"], pixel_values_videos=b["pixel_values_videos"])
        )
        return model.apply(
            {"params": params},
            input_ids=b["input_ids"],
            position_ids=b["position_ids"],
            segment_ids=segment_ids,
            vision_layout=b["vision_layout"],
            **visual,
        ).logits

    arrays = batch_arrays(flat)
    logits = np.asarray(packed(params, arrays, arrays["segment_ids"]))
    crossing = np.asarray(packed(params, arrays, arrays["attention_mask"]))
    arrays = batch_arrays(by_row)
    logits_by_row = np.asarray(packed(params, arrays, arrays["segment_ids"]))

    # Reference: the model's own path (transformers-style inputs, rope_index inside), one
    # right-padded row per sample; causal attention keeps real tokens from seeing the padding.
    alone = [s for row in rows for s in row]
    width = max(s["num_tokens"] for s in alone)
    ids = np.full((len(alone), width), tok.pad_id, np.int32)
    mask = np.zeros_like(ids)
    for i, s in enumerate(alone):
        ids[i, : s["num_tokens"]], mask[i, : s["num_tokens"]] = s["input_ids"], 1

    def cat(key, shape):
        parts = [s[key] for s in alone if key in s]
        return np.concatenate(parts) if parts else np.zeros(shape)

    grids = dict(
        image_grid_thw=cat("image_grid_thw", (0, 3)),
        video_grid_thw=cat("video_grid_thw", (0, 3)),
        second_per_grid_ts=cat("second_per_grid_ts", (0,)),
    )
    reference = jax.jit(
        lambda p, ids, mask, pv, pvv: (
            model.apply(
                {"params": p},
                input_ids=ids,
                attention_mask=mask,
                pixel_values=pv,
                pixel_values_videos=pvv,
                **grids,
            ).logits
        )
    )
    ref = np.asarray(
        reference(
            params,
            ids,
            mask,
            cat("pixel_values", (0, 1176)),
            cat("pixel_values_videos", (0, 1176)),
        )
    )
    i = 0
    for r, row in enumerate(rows):
        off = 0
        for k, s in enumerate(row):
            n = s["num_tokens"]
            for got in (logits, logits_by_row):
                np.testing.assert_allclose(got[r, off : off + n], ref[i, :n], atol=2e-4, rtol=1e-4)
            if k:  # one segment for the whole row lets later samples see earlier ones
                assert np.abs(crossing[r, off : off + n] - ref[i, :n]).max() > 1e-3
            off, i = off + n, i + 1


def _random_params(cfg):
    """Random parameters without running init (shapes from eval_shape, values from NumPy)."""
    rng = np.random.default_rng(0)

    def draw(path, x):
        norm = "norm" in jax.tree_util.keystr(path)
        values = (
            1 + 0.1 * rng.standard_normal(x.shape) if norm else 0.05 * rng.standard_normal(x.shape)
        )
        return values.astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, nn.meta.unbox(abstract_params(cfg)))


def test_epoch_covers_every_example_once_and_rows_are_packed(data):
    tok, _, examples = data
    batches = list(_pipeline(data, shuffle=True, seed=3))
    ids = [i for b in batches for i in b["ids"]]
    assert sorted(ids) == sorted(e.id for e in examples)
    assert ids != [e.id for e in examples]  # shuffled
    assert max(b["segment_ids"].max() for b in batches) >= 2  # several samples per row
    for b in batches:
        assert b["input_ids"].shape == (2, 320)
        assert b["visual_pixels"].shape[0] == 2 and b["visual_pixels"].shape[1] % 64 == 0
        seg = b["segment_ids"]
        assert np.all(np.diff(seg, axis=1)[seg[:, 1:] > 0] >= 0)  # segments in order
        target = tok.decode(b["input_ids"][b["loss_mask"]], skip_special_tokens=False)
        assert target.count("<|im_end|>") == b["num_samples"]
        for r in range(2):  # positions restart at 0 with every segment
            starts = np.flatnonzero(np.diff(seg[r], prepend=0) > 0)
            assert np.all(b["position_ids"][:, r, starts] == 0)


def test_resume_continues_with_the_next_unseen_example(data):
    full = list(_pipeline(data, num_epochs=2, seed=1))
    assert len(full) >= 5
    for k in (1, 2, 3):
        it = iter(_pipeline(data, num_epochs=2, seed=1))
        for _ in range(k):
            next(it)
        state = json.loads(json.dumps(it.get_state()))  # goes into a checkpoint as JSON
        resumed = iter(_pipeline(data, num_epochs=2, seed=1))
        resumed.set_state(state)
        rest = list(resumed)
        assert len(rest) == len(full) - k
        for a, b in zip(rest, full[k:], strict=True):
            _same_batch(a, b)


def test_worker_processes_give_the_same_batches_and_resume(data):
    ref = list(_pipeline(data, seed=5))
    it = iter(_pipeline(data, seed=5, worker_count=1))  # decoding in a spawned process
    try:
        got = [next(it), next(it)]
        state = it.get_state()
        got.append(next(it))
        for a, b in zip(got, ref, strict=False):
            _same_batch(a, b)
        it.set_state(state)  # the worker restarts from the restored position
        _same_batch(next(it), ref[2])
    finally:
        it.close()


def test_per_host_shards_are_disjoint_and_cover():
    records = list(range(10))
    shards = [
        list(source_dataset(records, shard_index=i, shard_count=3, drop_remainder=False))
        for i in range(3)
    ]
    assert sorted(x for s in shards for x in s) == records
    even = [list(source_dataset(records, shard_index=i, shard_count=3)) for i in range(3)]
    assert [len(s) for s in even] == [3, 3, 3]
    assert len({x for s in even for x in s}) == 9
    two = list(source_dataset(records, seed=7, num_epochs=2, shard_count=1, shard_index=0))
    assert sorted(two[:10]) == sorted(two[10:]) == records and two[:10] != two[10:]
    assert two == list(source_dataset(records, seed=7, num_epochs=2, shard_count=1))
    with pytest.raises(ValueError, match="shard_index=3"):
        source_dataset(records, shard_index=3, shard_count=3)


def test_padded_rows_and_rl_prompt_batches(data):
    tok, cfg, examples = data
    opts = BatchOptions(batch_size=3, max_length=256, packing=False, length_multiple=32)
    b = next(iter(_pipeline(data, batch=opts, shuffle=False)))
    assert b["segment_ids"].max() == 1 and b["num_samples"] == 3
    assert b["input_ids"].shape[1] % 32 == 0
    rl = next(iter(_pipeline(data, batch=opts, mode="rl", shuffle=False)))
    ids, mask = rl["input_ids"], rl["attention_mask"]
    assert np.all(mask[:, -1] == 1) and mask[:, 0].min() == 0  # left padded
    assert not rl["loss_mask"].any()
    for r in range(3):
        text = tok.decode(ids[r][mask[r] > 0], skip_special_tokens=False)
        assert text.endswith("<|im_start|>assistant\n")
    # Independent check: the model's rope_index on the padded batch gives the same positions
    # and the deltas a decode step continues from.
    want, deltas = jax.jit(rope_index, static_argnums=1)(
        ids,
        cfg,
        attention_mask=mask,
        video_grid_thw=rl["video_grid_thw"],
        second_per_grid_ts=rl["second_per_grid_ts"],
    )
    np.testing.assert_array_equal(rl["position_ids"], want)
    np.testing.assert_array_equal(rl["rope_deltas"], deltas)
    assert [e.id for e in rl["examples"]] == [e.id for e in examples[:3]]


def test_bad_video_raises_naming_file_and_source(data, tmp_path):
    _, _, examples = data
    records = examples[:3] + [make_example(30, video=str(tmp_path / "missing.mp4"))]
    with pytest.raises(AnnotationError, match=r"annotations.json:31: .*missing.mp4"):
        list(_pipeline(data, records=records, shuffle=False))


def test_skip_counts_and_fails_past_the_limit(data, tmp_path):
    _, _, examples = data
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00" * 3000)
    records = examples[:8] + [make_example(40, video=str(bad))]
    it = iter(_pipeline(data, records=records, on_error="skip", max_skip_fraction=0.2))
    ids = [i for b in it for i in b["ids"]]
    assert len(ids) == 8 and "ex40" not in ids
    assert it.stats.num_skipped == 1 and it.stats.by_kind == {"bad_media": 1}
    assert "corrupt.mp4" in it.stats.skipped[0][1]
    many = examples[:4] + [make_example(50 + i, video=str(bad)) for i in range(4)]
    with pytest.raises(AnnotationError, match="skipped 4 of 8") as e:
        list(_pipeline(data, records=many, on_error="skip", max_skip_fraction=0.2))
    assert e.value.kind == "too_many_skipped"
    # A sample longer than a row is an error too (or a counted skip).
    short = BatchOptions(batch_size=2, max_length=80, patch_multiple=64)
    with pytest.raises(AnnotationError, match="longer than max_length=80"):
        next(iter(_pipeline(data, batch=short)))
    it = iter(
        _pipeline(data, batch=short, records=examples[:3], on_error="skip", max_skip_fraction=1)
    )
    assert list(it) == [] and it.stats.by_kind == {"too_long": 3}


def test_video_r1_file_through_the_pipeline(data, tmp_path):
    """An annotation file read by `read_examples` is a random-access source (and pickles for
    worker processes)."""
    import pickle

    from vlmm_jax.data.formats import read_examples

    _, _, examples = data
    rows = [
        {
            "problem_id": i,
            "problem": "Which shape moves?",
            "data_type": "video",
            "problem_type": "multiple choice",
            "options": ["A. circle", "B. square"],
            "process": "<think>The square moves.</think>",
            "solution": "<answer>B</answer>",
            "path": examples[i].video,
            "data_source": "test",
        }
        for i in range(3)
    ]
    path = tmp_path / "Video-R1-COT-165k.json"
    path.write_text(json.dumps(rows))
    reader = read_examples(path)
    assert len(pickle.loads(pickle.dumps(reader))) == 3
    batches = list(_pipeline(data, records=reader, shuffle=False))
    tok = data[0]
    target = tok.decode(batches[0]["input_ids"][batches[0]["loss_mask"]], skip_special_tokens=False)
    assert target.startswith("<think>The square moves.</think><answer>B</answer><|im_end|>")
    assert sum(b["num_samples"] for b in batches) == 3
