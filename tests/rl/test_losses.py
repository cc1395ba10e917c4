"""`vlmm_jax.rl.grpo_loss` against NumPy transcriptions of the published objectives."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlmm_jax.rl import LOSS_TYPES, finalize_metrics, grpo_loss, kl_penalty

# ---------------------------------------------------------------------------------------------
# NumPy reference, written from the papers, one sequence at a time, in float64.
#   PPO / GRPO (Shao et al. 2024):  J_it = min(r_it A_i, clip(r_it, 1 - e_lo, 1 + e_hi) A_i)
#   dual clip (Ye et al. 2020):     J_it = max(J_it, c A_i)                         for A_i < 0
#   GSPO (Zheng et al. 2025):       r_it = s_i = (pi(y_i) / pi_old(y_i)) ** (1 / |y_i|)
#   KL (Schulman 2020), rho = pi_ref / pi:
#                                   k1 = -log rho, k2 = (log rho)^2 / 2, k3 = rho - 1 - log rho
#   loss_it = -J_it + beta * k_it, aggregated per loss_type.
# ---------------------------------------------------------------------------------------------


def np_kl(logp, ref, estimator, clamp=None):
    rho = np.exp(ref - logp)
    k = {"k1": -np.log(rho), "k2": 0.5 * np.log(rho) ** 2, "k3": rho - 1.0 - np.log(rho)}[estimator]
    return k if clamp is None else np.clip(k, -clamp, clamp)


def np_loss(
    logp,
    old,
    ref,
    adv,
    mask,
    *,
    loss_type="grpo",
    eps_low=0.2,
    eps_high=0.2,
    dual_clip=None,
    beta=0.0,
    kl_estimator="k3",
    kl_clamp=None,
    importance_level="token",
    max_completion_length=None,
    num_global_tokens=None,
    num_global_sequences=None,
):
    B, T = logp.shape
    total, seq_means, n_tokens = 0.0, [], 0
    for i in range(B):
        idx = mask[i] > 0
        n = int(idx.sum())
        lp, lo = logp[i, idx], old[i, idx]
        if importance_level == "token":
            r = np.exp(lp - lo)
        else:  # GSPO: the geometric mean of the token ratios, one per sequence
            r = np.full(n, np.exp(np.sum(lp - lo) / n) if n else 1.0)
        a = adv[i]
        J = np.minimum(r * a, np.clip(r, 1 - eps_low, 1 + eps_high) * a)
        if dual_clip is not None and a < 0:
            J = np.maximum(J, dual_clip * a)
        loss_t = -J
        if beta:
            loss_t = loss_t + beta * np_kl(lp, ref[i, idx], kl_estimator, kl_clamp)
        total += loss_t.sum()
        n_tokens += n
        seq_means.append(loss_t.sum() / max(n, 1))
    n_seq = B if num_global_sequences is None else num_global_sequences
    if loss_type == "grpo":
        return sum(seq_means) / n_seq
    if loss_type == "bnpo":
        return total / max(n_tokens, 1)
    if loss_type == "dr_grpo":
        return total / (n_seq * (T if max_completion_length is None else max_completion_length))
    if loss_type == "dapo":
        return total / (n_tokens if num_global_tokens is None else num_global_tokens)
    raise ValueError(loss_type)


def make_batch(seed=0, B=4, T=7, spread=0.4):
    """Random log-probs, ratios spread around 1, ragged mask with one empty row."""
    rng = np.random.default_rng(seed)
    logp = np.log(rng.uniform(0.05, 0.95, (B, T)))
    old = logp + rng.normal(0.0, spread, (B, T))
    ref = logp + rng.normal(0.0, spread, (B, T))
    adv = rng.normal(0.0, 1.0, B)
    lengths = rng.integers(1, T + 1, B)
    lengths[-1] = 0
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.float64)
    return logp, old, ref, adv, mask


def jx(*arrays):
    return [jnp.asarray(a, jnp.float32) for a in arrays]


CONFIGS = [
    dict(loss_type=lt, importance_level=lvl)
    for lt, lvl in itertools.product(LOSS_TYPES, ("token", "sequence"))
] + [
    dict(loss_type="grpo", eps_low=0.2, eps_high=0.28),
    dict(loss_type="dapo", eps_low=0.2, eps_high=0.28, dual_clip=3.0, num_global_tokens=40.0),
    dict(loss_type="bnpo", dual_clip=1.5),
    dict(loss_type="dr_grpo", max_completion_length=16, beta=0.04),
    dict(loss_type="grpo", beta=0.1, kl_estimator="k1"),
    dict(loss_type="grpo", beta=0.1, kl_estimator="k2"),
    dict(loss_type="bnpo", beta=0.1, kl_estimator="k3", kl_clamp=0.05),
    dict(loss_type="grpo", importance_level="sequence", eps_low=3e-3, eps_high=4e-3, beta=0.02),
    dict(loss_type="grpo", num_global_sequences=10.0),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_matches_numpy_reference(cfg):
    logp, old, ref, adv, mask = make_batch()
    want = np_loss(logp, old, ref, adv, mask, **cfg)
    got, _ = grpo_loss(*jx(logp, old, ref, adv, mask), **cfg)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _fd_grad(f, x, mask, h=1e-6):
    g = np.zeros_like(x)
    for idx in zip(*np.nonzero(mask), strict=True):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_gradient_matches_finite_differences(cfg):
    logp, old, ref, adv, mask = make_batch(seed=1)
    want = _fd_grad(lambda x: np_loss(x, old, ref, adv, mask, **cfg), logp, mask)
    lp, o, r, a, m = jx(logp, old, ref, adv, mask)
    got = jax.grad(lambda x: grpo_loss(x, o, r, a, m, **cfg)[0])(lp)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)
    assert np.all(np.asarray(got)[mask == 0] == 0)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_gspo_token_equals_gspo_when_advantages_are_per_sequence(loss_type):
    # GSPO paper: with A_it = A_i, GSPO-token has GSPO's value and gradient.
    logp, old, ref, adv, mask = make_batch(seed=2, spread=0.1)
    args = jx(logp, old, ref, adv, mask)
    kw = dict(loss_type=loss_type, eps_low=0.05, eps_high=0.05, beta=0.04, dual_clip=2.0)

    def f(level):
        return jax.value_and_grad(
            lambda x: grpo_loss(x, *args[1:], importance_level=level, **kw)[0]
        )(args[0])

    (v_seq, g_seq), (v_tok, g_tok) = f("sequence"), f("sequence_token")
    np.testing.assert_allclose(v_tok, v_seq, rtol=1e-6)
    np.testing.assert_allclose(g_tok, g_seq, rtol=1e-5, atol=1e-7)


def test_on_policy_gradient_is_policy_gradient():
    # At ratio 1 the clipped objective's gradient is REINFORCE's: -A_i grad log pi / (|y_i| B).
    logp, _, _, adv, mask = make_batch(seed=3)
    lp, a, m = jx(logp, adv, mask)
    loss, grad = jax.value_and_grad(lambda x: grpo_loss(x, None, None, a, m)[0])(lp)
    lengths = np.maximum(mask.sum(1, keepdims=True), 1)
    B = mask.shape[0]
    nonempty = mask.sum(1) > 0
    np.testing.assert_allclose(loss, -np.sum(adv[nonempty]) / B, rtol=1e-5)
    np.testing.assert_allclose(grad, -adv[:, None] * mask / lengths / B, rtol=1e-5, atol=1e-7)
    # old_logp=None has the value of old_logp=logp; stop_gradient keeps the gradient above.
    same, _ = grpo_loss(lp, lp, None, a, m)
    np.testing.assert_allclose(same, loss, rtol=1e-6)


def test_clipped_tokens_have_zero_gradient_and_are_counted():
    # Per row: (A, ratio of each of the 4 tokens).
    adv = np.array([1.0, -1.0, -1.0])
    ratio = np.array(
        [
            [1.5, 1.1, 0.5, 1.3],  # A > 0: clipped above 1 + eps_high = 1.28
            [0.5, 0.9, 1.5, 1.0],  # A < 0: clipped below 1 - eps_low = 0.8; 1.5 is not clipped
            [4.0, 2.0, 3.5, 0.7],  # A < 0, dual clip 3: 4.0 and 3.5 capped; 0.7 clipped low
        ]
    )
    zero = np.array(
        [[1, 0, 0, 1], [1, 0, 0, 0], [1, 0, 1, 1]],
        dtype=bool,
    )
    old = np.full_like(ratio, -1.0)
    logp = old + np.log(ratio)
    mask = np.ones_like(ratio)
    lp, o, a, m = jx(logp, old, adv, mask)
    loss = jax.jit(
        functools.partial(grpo_loss, loss_type="bnpo", eps_low=0.2, eps_high=0.28, dual_clip=3.0)
    )
    grad = np.asarray(jax.jit(jax.grad(lambda x: loss(x, o, None, a, m)[0]))(lp))
    assert np.all(grad[zero] == 0)
    assert np.all(grad[~zero] != 0)
    _, metrics = loss(lp, o, None, a, m)
    assert float(metrics["clip_high_sum"]) == 2
    assert float(metrics["clip_low_sum"]) == 2
    assert float(metrics["dual_clip_sum"]) == 2
    np.testing.assert_allclose(metrics["ratio_sum"], ratio.sum(), rtol=1e-5)
    means = finalize_metrics(metrics)
    np.testing.assert_allclose(means["clip_high"], 2 / 12, rtol=1e-6)
    assert means["num_tokens"] == 12


def test_metrics_match_numpy():
    logp, old, ref, adv, mask = make_batch(seed=4, spread=0.5)
    _, metrics = grpo_loss(*jx(logp, old, ref, adv, mask), eps_low=0.2, eps_high=0.28)
    r = np.exp(logp - old)
    a = adv[:, None]
    np.testing.assert_allclose(metrics["num_tokens"], mask.sum())
    np.testing.assert_allclose(metrics["ratio_sum"], (r * mask).sum(), rtol=1e-5)
    np.testing.assert_allclose(metrics["kl_sum"], (np_kl(logp, ref, "k3") * mask).sum(), rtol=1e-4)
    np.testing.assert_allclose(metrics["clip_low_sum"], (((r < 0.8) & (a < 0)) * mask).sum())
    np.testing.assert_allclose(metrics["clip_high_sum"], (((r > 1.28) & (a > 0)) * mask).sum())
    pg = -np.minimum(r * a, np.clip(r, 0.8, 1.28) * a)
    np.testing.assert_allclose(metrics["pg_loss_sum"], (pg * mask).sum(), rtol=1e-5)


@pytest.mark.parametrize(
    "loss_type,kw",
    [
        ("dapo", "num_global_tokens"),
        ("grpo", "num_global_sequences"),
        ("dr_grpo", "num_global_sequences"),
    ],
)
def test_micro_batches_sum_to_the_full_batch(loss_type, kw):
    # Two micro-batches of 4 with the global normaliser add up to the loss of the batch of 8.
    batches = [make_batch(seed=s) for s in (5, 6)]
    full = [np.concatenate(xs) for xs in zip(*batches, strict=True)]
    total = {"num_global_tokens": full[4].sum(), "num_global_sequences": 8.0}[kw]
    parts = [grpo_loss(*jx(*b), loss_type=loss_type, beta=0.04, **{kw: total})[0] for b in batches]
    want = np_loss(*full, loss_type=loss_type, beta=0.04)
    np.testing.assert_allclose(sum(parts), want, rtol=1e-5)


def test_bnpo_averages_the_token_means_of_the_pieces():
    """An update in two pieces with bnpo: each piece's loss is its own token mean / 2, so the
    summed losses are the mean of the two pieces' token means (TRL: the local-batch mean,
    averaged over accumulation steps), whatever their token counts."""
    pieces = [make_batch(seed=s) for s in (5, 6)]
    assert pieces[0][4].sum() != pieces[1][4].sum()  # unequal token counts
    means = [np_loss(*p, loss_type="bnpo", beta=0.04) for p in pieces]
    parts = [grpo_loss(*jx(*p), loss_type="bnpo", beta=0.04, num_chunks=2)[0] for p in pieces]
    np.testing.assert_allclose(sum(parts), np.mean(means), rtol=1e-5)


def test_dapo_without_global_count_is_the_local_token_mean():
    args = jx(*make_batch(seed=6))
    np.testing.assert_allclose(
        grpo_loss(*args, loss_type="dapo")[0], grpo_loss(*args, loss_type="bnpo")[0], rtol=1e-6
    )


def test_jit_matches_eager():
    args = jx(*make_batch(seed=7))
    kw = dict(loss_type="dapo", eps_high=0.28, dual_clip=3.0, beta=0.04, kl_estimator="k3")
    fn = jax.jit(functools.partial(grpo_loss, **kw))
    (l_jit, m_jit), (l_eager, m_eager) = (
        fn(*args, num_global_tokens=30.0),
        grpo_loss(*args, num_global_tokens=30.0, **kw),
    )
    np.testing.assert_allclose(l_jit, l_eager, rtol=1e-6)
    for k in m_eager:
        np.testing.assert_allclose(m_jit[k], m_eager[k], rtol=1e-6)
    grad = jax.jit(jax.grad(lambda x: fn(x, *args[1:])[0]))(args[0])
    assert np.all(np.isfinite(grad))


def test_padding_garbage_does_not_leak():
    logp, old, ref, adv, mask = make_batch(seed=8)
    args = jx(logp, old, ref, adv, mask)
    pad = mask == 0
    dirty = jx(np.where(pad, np.inf, logp), np.where(pad, -np.inf, old), np.where(pad, np.nan, ref))
    dirty += [args[3], args[4]]
    for level in ("token", "sequence"):

        def f(x, rest, level=level):
            return grpo_loss(x, *rest, beta=0.04, importance_level=level)[0]

        want, g_want = jax.value_and_grad(f)(args[0], args[1:])
        got, g_got = jax.value_and_grad(f)(dirty[0], dirty[1:])
        np.testing.assert_allclose(got, want, rtol=1e-6)
        np.testing.assert_allclose(g_got, g_want, rtol=1e-6)


def test_bfloat16_inputs_compute_in_float32():
    logp, old, ref, adv, mask = make_batch(seed=9)
    lp, o, r = (jnp.asarray(x, jnp.bfloat16) for x in (logp, old, ref))
    loss_fn = jax.jit(functools.partial(grpo_loss, beta=0.04))
    loss, _ = loss_fn(lp, o, r, jnp.asarray(adv, jnp.float32), jnp.asarray(mask, bool))
    assert loss.dtype == jnp.float32
    want = np_loss(*(np.asarray(x, np.float64) for x in (lp, o, r)), adv, mask, beta=0.04)
    np.testing.assert_allclose(loss, want, rtol=1e-2)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_estimators(estimator):
    logp, _, ref, _, _ = make_batch(seed=10, spread=1.0)
    got = kl_penalty(*jx(logp, ref), estimator=estimator)
    np.testing.assert_allclose(got, np_kl(logp, ref, estimator), rtol=1e-4, atol=1e-6)
    clamped = kl_penalty(*jx(logp, ref), estimator=estimator, clamp=0.1)
    np.testing.assert_allclose(clamped, np_kl(logp, ref, estimator, 0.1), rtol=1e-4, atol=1e-6)
    if estimator != "k1":
        assert np.all(np.asarray(got) >= 0)


def test_kl_is_reported_without_entering_the_loss_when_beta_is_zero():
    args = jx(*make_batch(seed=11))
    with_ref, metrics = grpo_loss(*args)
    without_ref, metrics_none = grpo_loss(args[0], args[1], None, *args[3:])
    np.testing.assert_allclose(with_ref, without_ref)
    assert "kl_sum" in metrics and "kl_sum" not in metrics_none


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(loss_type="ppo"), "loss_type"),
        (dict(importance_level="seq"), "importance_level"),
        (dict(dual_clip=0.9), "dual_clip"),
        (dict(beta=0.1, ref_logp=None), "ref_logp"),
        (dict(kl_estimator="k4", beta=0.1), "kl_estimator"),
    ],
)
def test_bad_arguments_raise(kw, match):
    logp, old, ref, adv, mask = jx(*make_batch())
    ref = kw.pop("ref_logp", ref)
    with pytest.raises(ValueError, match=match):
        grpo_loss(logp, old, ref, adv, mask, **kw)


def test_shape_mismatch_raises():
    logp, old, ref, adv, mask = jx(*make_batch())
    with pytest.raises(ValueError, match=r"advantages \[B\]"):
        grpo_loss(logp, old, ref, adv[:2], mask)
