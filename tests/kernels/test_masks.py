"""Mask helpers and block tables against dense masks, HF's window index, and hand examples."""

import jax.numpy as jnp
import numpy as np
import pytest

from vlmm_jax.kernels import masks
from vlmm_jax.kernels.reference import attention_mask


def dense_block_mask(mask, block_q, block_kv):
    """Exact `[B, nq, nk]` non-empty table by reducing the dense `[B, T, S]` mask."""
    b, t, s = mask.shape
    nq, nk = -(-t // block_q), -(-s // block_kv)
    padded = np.zeros((b, nq * block_q, nk * block_kv), bool)
    padded[:, :t, :s] = mask
    return padded.reshape(b, nq, block_q, nk, block_kv).any(axis=(2, 4))


def test_temporal_and_frame_causal_hand_example():
    np.testing.assert_array_equal(
        masks.temporal_segment_ids([(2, 2, 2), (1, 2, 4)]), [0] * 4 + [1] * 4 + [2] * 8
    )
    seg, pos = masks.frame_causal_ids([(2, 2, 2), (1, 2, 2)])
    np.testing.assert_array_equal(seg, [0] * 8 + [1] * 4)
    np.testing.assert_array_equal(pos, [0] * 4 + [1] * 4 + [2] * 4)
    mask = attention_mask(
        12, 12, segment_ids=seg[None], causal=True, q_positions=pos[None], kv_positions=pos[None]
    )[0]
    assert mask[0, :4].all() and not mask[0, 4:].any()  # frame 0 sees frame 0 only
    assert mask[4, :8].all() and not mask[4, 8:].any()  # frame 1 sees frames 0, 1
    assert mask[8, 8:].all() and not mask[8, :8].any()  # second video: itself only


def test_packed_segment_ids():
    np.testing.assert_array_equal(masks.packed_segment_ids([2, 3], 7), [0, 0, 1, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="total_length"):
        masks.packed_segment_ids([4, 4], 7)


@pytest.mark.parametrize("grid_thw", [[(2, 16, 16)], [(2, 12, 20), (1, 8, 6)], [(1, 28, 36)]])
def test_window_ids_match_transformers(grid_thw):
    torch = pytest.importorskip("torch")
    vision_utils = pytest.importorskip("transformers.vision_utils")
    index, cu = vision_utils.get_vision_window_index(
        torch.tensor(grid_thw), spatial_merge_size=2, window_size=112, patch_size=14
    )
    seg, window_index = masks.window_segment_ids(grid_thw)
    np.testing.assert_array_equal(window_index, index.numpy())
    # Same partition into windows: boundaries where the id changes == HF's (non-empty) cu_seqlens.
    cu = np.unique(cu.numpy())
    boundaries = np.concatenate([[0], np.nonzero(np.diff(seg))[0] + 1, [seg.size]])
    np.testing.assert_array_equal(boundaries, cu)


def _cases():
    rng = np.random.RandomState(0)
    grid = [(2, 12, 20), (1, 8, 8)]
    win = masks.window_segment_ids(grid)[0]
    frame = masks.temporal_segment_ids(grid)
    fc_seg, fc_pos = masks.frame_causal_ids(grid)
    packed = masks.packed_segment_ids([50, 200, 7, 100], 400)
    rand = np.sort(rng.randint(0, 9, 300))
    return {
        "window": dict(segment_ids=win[None]),
        "frame": dict(segment_ids=frame[None]),
        "frame_causal": dict(
            segment_ids=fc_seg[None],
            causal=True,
            q_positions=fc_pos[None],
            kv_positions=fc_pos[None],
        ),
        "packed_causal": dict(segment_ids=packed[None], causal=True),
        "random_sorted": dict(segment_ids=rand[None]),
        "causal_only": dict(causal=True, _len=333),
    }


@pytest.mark.parametrize("name", list(_cases()))
@pytest.mark.parametrize("blocks", [(128, 128), (64, 256)])
def test_block_tables_exact_for_sorted_layouts(name, blocks):
    kw = dict(_cases()[name])
    t = kw.pop("_len", None) or kw["segment_ids"].shape[1]
    kw = {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    tables = masks.block_tables(t, t, block_q=blocks[0], block_kv=blocks[1], **kw)
    dense = np.asarray(attention_mask(t, t, **kw))
    np.testing.assert_array_equal(np.asarray(tables.mask), dense_block_mask(dense, *blocks))


def test_block_tables_superset_for_unsorted_ids():
    rng = np.random.RandomState(1)
    seg = jnp.asarray(rng.randint(0, 5, (2, 300)))
    kv = jnp.asarray(rng.randint(0, 5, (2, 200)))
    tables = masks.block_tables(
        300, 200, block_q=64, block_kv=64, segment_ids=seg, kv_segment_ids=kv, causal=True
    )
    exact = dense_block_mask(
        np.asarray(attention_mask(300, 200, segment_ids=seg, kv_segment_ids=kv, causal=True)),
        64,
        64,
    )
    assert np.all(np.asarray(tables.mask) >= exact)


def test_compacted_lists_and_revisit_tail():
    seg = jnp.asarray(masks.window_segment_ids([(2, 12, 20)])[0])[None]
    t = seg.shape[1]
    tables = masks.block_tables(t, t, block_q=64, block_kv=64, segment_ids=seg, causal=True)
    mask, lists, counts = map(np.asarray, (tables.mask, tables.q_lists, tables.q_counts))
    for i in range(mask.shape[1]):
        want = np.nonzero(mask[0, i])[0]
        assert counts[0, i] == want.size
        np.testing.assert_array_equal(lists[0, i, : want.size], want)
        # The tail repeats the last valid block, so the index_map issues no new DMA.
        assert np.all(lists[0, i, want.size :] == (want[-1] if want.size else 0))
    np.testing.assert_array_equal(np.asarray(tables.kv_counts), mask.sum(1))


def test_block_density_video_windows():
    seg = jnp.asarray(masks.window_segment_ids([(8, 32, 32)])[0])[None]
    t = seg.shape[1]
    assert t == 8192
    # 64-token windows, 128-token blocks: only the diagonal blocks are non-empty.
    dens = masks.block_density(masks.block_tables(t, t, block_q=128, block_kv=128, segment_ids=seg))
    assert dens == pytest.approx(1 / 64)


def test_block_tables_exact_random_sorted_layouts():
    """Random packed layouts (sorted ids, increasing positions with ties), causal or not."""
    rng = np.random.RandomState(2)
    t, s = 333, 333
    for trial in range(6):
        seg = np.sort(rng.randint(0, rng.randint(1, 12), (2, t)), axis=1)
        pos = np.sort(rng.randint(0, 40, (2, t)), axis=1)  # ties: frame-like positions
        causal = bool(trial % 2)
        kw = dict(segment_ids=jnp.asarray(seg), causal=causal)
        if trial % 3 == 2:
            kw.update(q_positions=jnp.asarray(pos), kv_positions=jnp.asarray(pos))
        tables = masks.block_tables(t, s, block_q=64, block_kv=128, **kw)
        dense = np.asarray(attention_mask(t, s, **kw))
        np.testing.assert_array_equal(np.asarray(tables.mask), dense_block_mask(dense, 64, 128))
