"""Decode attention (split-K over the cache) against the dense reference, both backends."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlmm_jax.kernels import decode_attention, reference_attention, reference_decode_attention


def _inputs(b, nq, n, kh, s, h, dtype=jnp.float32, seed=0):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(kq, (b, nq, n, h), jnp.float32).astype(dtype)
    k = jax.random.normal(kk, (b, s, kh, h), jnp.float32).astype(dtype)
    v = jax.random.normal(kv, (b, s, kh, h), jnp.float32).astype(dtype)
    return q, k, v


def test_reference_decode_matches_full_causal_attention():
    """Cached decode == the last rows of full causal attention over the valid prefix."""
    q, k, v = _inputs(1, 3, 4, 2, 20, 16)
    out = reference_decode_attention(q, k, v, jnp.array([20]))
    qs = jnp.concatenate([jnp.zeros((1, 17, 4, 16)), q], axis=1)
    full = reference_attention(qs, k, v, causal=True)
    np.testing.assert_allclose(out, full[:, 17:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["tpu", "gpu"])
@pytest.mark.parametrize(
    "nq,n,kh,h,causal,splits,dtype",
    [
        (1, 8, 2, 128, True, 3, jnp.float32),  # GQA 4, lane-blocked cache view, uneven splits
        (3, 4, 4, 80, True, 2, jnp.float32),  # a few queries, head dim 80
        (2, 4, 1, 64, False, 1, jnp.bfloat16),  # MQA, one split, bf16
    ],
)
def test_decode_matches_reference(backend, nq, n, kh, h, causal, splits, dtype):
    b, s = 3, 700
    q, k, v = _inputs(b, nq, n, kh, s, h, dtype)
    lengths = jnp.array([700, 133, 0], jnp.int32)  # full, partial block, empty
    block = 128 if backend == "tpu" else 64
    out = jax.jit(
        lambda q, k, v, ln: decode_attention(
            q,
            k,
            v,
            ln,
            causal=causal,
            num_splits=splits,
            block_kv=block,
            backend=backend,
            interpret=True,
        )
    )(q, k, v, lengths)
    want = reference_decode_attention(q, k, v, lengths, causal=causal)
    assert out.shape == q.shape and out.dtype == q.dtype
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    out, want = np.asarray(out, np.float32), np.asarray(want, np.float32)
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol)
    assert np.all(out[2] == 0.0)  # length 0: zeros, no NaN


@pytest.mark.parametrize("h", [128, 80])
def test_decode_lowering(h):
    """Lowers to Mosaic (TPU) and to Triton IR (GPU) on CPU, both cache layouts on TPU."""
    q = jax.ShapeDtypeStruct((8, 1, 16, h), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((8, 4096, 2, h), jnp.bfloat16)
    ln = jax.ShapeDtypeStruct((8,), jnp.int32)
    for backend, platform, target in [
        ("tpu", "tpu", "tpu_custom_call"),
        ("gpu", "cuda", "xla.gpu.triton"),
    ]:
        f = jax.jit(lambda q, k, v, ln, b=backend: decode_attention(q, k, v, ln, backend=b))
        checks = [jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]
        exported = jax.export.export(f, platforms=[platform], disabled_checks=checks)
        assert target in exported(q, kv, kv, ln).mlir_module()
