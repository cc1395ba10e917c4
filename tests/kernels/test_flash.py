"""Flash attention kernels (TPU Mosaic and GPU Triton, interpret mode) against the reference.

Tolerances: fp32 inputs match to 2e-5 of the tensor's largest magnitude (both sides accumulate in
fp32, only summation order differs); bf16 inputs to 2e-2 (bf16 rounding of p before P @ V and of
the outputs/gradients).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlmm_jax.kernels import (
    BlockSizes,
    block_tables,
    flash_attention,
    flash_tpu,
    frame_causal_ids,
    reference_attention,
    window_segment_ids,
)

BLOCKS = {"tpu": (128, 128), "gpu": (64, 64)}


def _qkv(seed, b, t, s, n, kh, h, dtype):
    kq, kk, kv, kw = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(kq, (b, t, n, h), jnp.float32).astype(dtype)
    k = jax.random.normal(kk, (b, s, kh, h), jnp.float32).astype(dtype)
    v = jax.random.normal(kv, (b, s, kh, h), jnp.float32).astype(dtype)
    w = jax.random.normal(kw, (b, t, n, h), jnp.float32)  # output cotangent
    return q, k, v, w


def _value_and_grads(attn, q, k, v, w):
    def loss(q, k, v):
        o = attn(q, k, v)
        return jnp.sum(o.astype(jnp.float32) * w), o

    (_, o), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    return o, grads


def _assert_close(got, want, tol, what):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert np.all(np.isfinite(got)), f"{what}: non-finite values"
    err = np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-6)
    assert err <= tol, f"{what}: relative error {err:.2e} > {tol:.0e}"


def _check(backend, mask_kw, shapes, dtype=jnp.float32, tol=2e-5, seed=0):
    q, k, v, w = _qkv(seed, *shapes, dtype)
    kernel = lambda q, k, v: flash_attention(  # noqa: E731
        q, k, v, backend=backend, interpret=True, block_sizes=BLOCKS[backend], **mask_kw
    )
    ref = lambda q, k, v: reference_attention(q, k, v, **mask_kw)  # noqa: E731
    o, grads = _value_and_grads(kernel, q, k, v, w)
    o_ref, grads_ref = _value_and_grads(ref, q, k, v, w)
    assert o.dtype == q.dtype and o.shape == q.shape
    _assert_close(o, o_ref, tol, f"{backend} output")
    for name, g, g_ref in zip("qkv", grads, grads_ref, strict=True):
        assert g.dtype == dtype
        _assert_close(g, g_ref, tol, f"{backend} d{name}")
    return o, grads


def _sorted_ids(rng, b, t, num):
    return jnp.asarray(np.sort(rng.randint(0, num, (b, t)), axis=1), jnp.int32)


@pytest.mark.parametrize("backend", ["tpu", "gpu"])
def test_random_segments_causal_gqa(backend):
    """Packed segments of random lengths, causal, GQA 2, T=200 not a multiple of the blocks."""
    seg = _sorted_ids(np.random.RandomState(0), 2, 200, 5)
    _check(backend, dict(segment_ids=seg, causal=True), (2, 200, 200, 4, 2, 64))


@pytest.mark.parametrize("backend", ["tpu", "gpu"])
def test_cross_attention_with_empty_rows(backend):
    """T != S, non-causal, unsorted ids; q segment 7 has no key: its rows are exactly zero."""
    rng = np.random.RandomState(1)
    q_seg = rng.randint(0, 3, (1, 136))
    q_seg[0, 10:30] = 7
    kv_seg = jnp.asarray(rng.randint(0, 3, (1, 300)), jnp.int32)
    kw = dict(segment_ids=jnp.asarray(q_seg, jnp.int32), kv_segment_ids=kv_seg)
    o, (dq, _, _) = _check(backend, kw, (1, 136, 300, 3, 3, 32))
    assert np.all(np.asarray(o)[0, 10:30] == 0.0)
    assert np.all(np.asarray(dq)[0, 10:30] == 0.0)


@pytest.mark.parametrize("backend", ["tpu", "gpu"])
def test_frame_causal_video_head_dim_80(backend):
    """Frame-causal over two videos (causal on slice positions), Qwen vision head dim 80, GQA 2."""
    seg, pos = frame_causal_ids([(2, 8, 8), (3, 4, 4)])
    seg, pos = jnp.asarray(seg)[None], jnp.asarray(pos)[None]
    kw = dict(segment_ids=seg, causal=True, q_positions=pos, kv_positions=pos)
    _check(backend, kw, (1, seg.shape[1], seg.shape[1], 2, 1, 80))


@pytest.mark.parametrize("backend", ["tpu", "gpu"])
def test_bf16_windows(backend):
    """bf16 inputs (fp32 accumulation), Qwen window mask, no GQA."""
    seg = jnp.asarray(window_segment_ids([(2, 8, 16)])[0])[None]
    _check(backend, dict(segment_ids=seg), (1, 256, 256, 2, 2, 128), jnp.bfloat16, tol=2e-2)


def test_tpu_visits_only_nonempty_kv_blocks():
    """The kernel computes exactly the non-empty (q block, kv block) pairs of a window mask, and
    its grid walks the smallest rung holding the longest list, not every kv block."""
    grid = [(2, 12, 20)]  # windows of 64/32/16 tokens that straddle the 128-token blocks
    seg = jnp.asarray(window_segment_ids(grid)[0])[None]
    t = seg.shape[1]
    q, k, v, _ = _qkv(0, 1, t, t, 2, 1, 32, jnp.float32)
    bs = BlockSizes(128, 128)
    visits, walked = flash_tpu.flash_attention_tpu(
        q, k, v, segment_ids=seg, block_sizes=bs, interpret=True, _count_visits=True
    )
    tables = block_tables(t, t, block_q=128, block_kv=128, segment_ids=seg)
    per_block = np.asarray(visits)[:, :, ::128]  # [B, N, nq]
    expected = np.asarray(tables.q_counts)[:, None, :]
    np.testing.assert_array_equal(per_block, np.broadcast_to(expected, per_block.shape))
    nq = -(-t // 128)
    assert expected.sum() < nq * nq  # the mask is sparse: some blocks were skipped
    # Exact count from the dense mask.
    dense = np.asarray(seg[0][:, None] == seg[0][None, :])
    pad = np.zeros((nq * 128, nq * 128), bool)
    pad[:t, :t] = dense
    assert expected.sum() == pad.reshape(nq, 128, nq, 128).any(axis=(1, 3)).sum()
    # The walk: 4 kv blocks, lists of up to 3 -> rung 4 of (1, 2, 4), for every q block.
    assert nq == 4 and expected.max() == 3
    np.testing.assert_array_equal(np.asarray(walked)[:, :, ::128], 4)


def test_grid_rungs():
    assert flash_tpu.grid_rungs(1) == (1,)
    assert flash_tpu.grid_rungs(4) == (1, 2, 4)
    assert flash_tpu.grid_rungs(64) == (8, 16, 32, 64)
    assert flash_tpu.grid_rungs(10) == (2, 3, 5, 10)


@pytest.mark.parametrize("seed", [0, 1])
def test_tpu_short_walk_is_exact_forward_and_backward(seed):
    """Per-frame attention over 8 temporal slices of 8x16 patches (1024 tokens, 8 kv blocks):
    every list holds 1 block, so all three kernels walk 1 (forward, dq) or g * 1 (dk/dv) steps
    of 8; outputs and gradients equal the reference, with GQA 2 on the kv-major walk."""
    seg = jnp.asarray(np.repeat(np.arange(1, 9), 128), jnp.int32)[None]
    if seed:  # slices of 96 tokens: lists of 2 or 3 blocks, walked on rung 4
        seg = jnp.asarray(np.repeat(np.arange(1, 12), 96)[:1024], jnp.int32)[None]
    _check("tpu", dict(segment_ids=seg), (1, 1024, 1024, 4, 2, 32), seed=seed)
    tables = block_tables(1024, 1024, block_q=128, block_kv=128, segment_ids=seg)
    longest, rung = (3, 4) if seed else (1, 1)  # rungs (1, 2, 4, 8)
    assert int(tables.q_counts.max()) == longest and int(tables.kv_counts.max()) == longest
    q, k, v, _ = _qkv(seed, 1, 1024, 1024, 4, 2, 32, jnp.float32)
    visits, walked = flash_tpu.flash_attention_tpu(
        q,
        k,
        v,
        segment_ids=seg,
        block_sizes=BlockSizes(128, 128),
        interpret=True,
        _count_visits=True,
    )
    np.testing.assert_array_equal(np.asarray(walked)[:, :, ::128], rung)
    np.testing.assert_array_equal(
        np.asarray(visits)[0, :, ::128], np.broadcast_to(tables.q_counts, (4, 8))
    )


@pytest.mark.parametrize(
    "shapes,causal", [((2, 1000, 1000, 16, 2, 128), True), ((1, 700, 700, 16, 16, 80), False)]
)
def test_tpu_lowering_default_blocks(shapes, causal):
    """Forward and backward lower to Mosaic for the default block sizes (checked on CPU)."""
    b, t, s, n, kh, h = shapes
    q = jax.ShapeDtypeStruct((b, t, n, h), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((b, s, kh, h), jnp.bfloat16)
    seg = jax.ShapeDtypeStruct((b, t), jnp.int32)

    def fwd(q, k, v, seg):
        return flash_attention(q, k, v, segment_ids=seg, causal=causal, backend="tpu")

    def bwd(q, k, v, seg):
        return jax.grad(lambda *a: jnp.sum(fwd(*a, seg).astype(jnp.float32)), (0, 1, 2))(q, k, v)

    for f in (fwd, bwd):
        exported = jax.export.export(jax.jit(f), platforms=["tpu"])(q, kv, kv, seg)
        assert "tpu_custom_call" in exported.mlir_module()


def test_gpu_lowering_to_triton():
    """Forward and backward lower to Triton IR on CPU (compiling to PTX needs a GPU)."""
    q = jax.ShapeDtypeStruct((2, 1000, 16, 128), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((2, 1000, 2, 128), jnp.bfloat16)
    seg = jax.ShapeDtypeStruct((2, 1000), jnp.int32)

    def fwd(q, k, v, seg):
        return flash_attention(q, k, v, segment_ids=seg, causal=True, backend="gpu")

    def bwd(q, k, v, seg):
        return jax.grad(lambda *a: jnp.sum(fwd(*a, seg).astype(jnp.float32)), (0, 1, 2))(q, k, v)

    # Triton custom calls carry no serialization guarantee; we only want the lowering.
    checks = [jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]
    for f in (fwd, bwd):
        exported = jax.export.export(jax.jit(f), platforms=["cuda"], disabled_checks=checks)
        assert "xla.gpu.triton" in exported(q, kv, kv, seg).mlir_module()


def test_cpu_without_interpret_raises():
    q = jnp.zeros((1, 8, 1, 8))
    with pytest.raises(ValueError, match="interpret=True"):
        flash_attention(q, q, q, backend="cpu")
    with pytest.raises(ValueError, match="multiple of kv heads"):
        kv = jnp.zeros((1, 8, 2, 8))
        flash_attention(jnp.zeros((1, 8, 3, 8)), kv, kv, interpret=True)
