"""The sampler: shared prefix == naive path, greedy == teacher-forced argmax, stop criteria,
token-choice methods by hand, and sharded parameters on a fake 8-device mesh."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fake_devices import cpu_devices_env
from tests.inference.conftest import (
    NO_TOKEN,
    PROMPT_SPECS,
    SINGLE_SPEC,
    TTS_NEW_TOKENS,
    TTS_SAMPLES,
    VOCAB,
    tiny_config,
    video_prompts,
)
from vlmm_jax.inference import Greedy, MinP, RandomSampling, Sampler, TopK, TopP, log_probs
from vlmm_jax.inference.tts.generator import DEFAULT_METHOD, collate
from vlmm_jax.models import vision_layout

NEW = TTS_NEW_TOKENS
N_SAMPLES = TTS_SAMPLES
NEVER = {"eos_ids": (NO_TOKEN,), "stop_sequences": [(NO_TOKEN,) * 2]}  # shapes of the stop test
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def sampler(tiny_model):
    return Sampler(tiny_model[0], max_new_tokens=NEW)


@pytest.fixture(scope="module")
def greedy(sampler, tiny_model, prompts):
    return sampler(tiny_model[1], prompts, method=Greedy(), **NEVER)


def test_shared_prefix_equals_naive_path(sampler, tiny_model):
    params = tiny_model[1]
    prompt = video_prompts(tiny_config(), SINGLE_SPEC, seed=5)
    rng = jax.random.key(7)
    shared = sampler(params, prompt, rng=rng, method=DEFAULT_METHOD, num_samples=N_SAMPLES)
    naive = sampler(
        params,
        prompt,
        rng=rng,
        method=DEFAULT_METHOD,
        num_samples=N_SAMPLES,
        shared_prefix=False,
    )
    # Same row ids, different batch composition (1 prompt fanned out vs 4 prompt copies).
    np.testing.assert_array_equal(np.asarray(shared.tokens), np.asarray(naive.tokens))
    np.testing.assert_allclose(shared.logprobs, naive.logprobs, atol=1e-4)
    np.testing.assert_allclose(shared.raw_logprobs, naive.raw_logprobs, atol=1e-4)
    np.testing.assert_array_equal(shared.lengths, naive.lengths)
    np.testing.assert_array_equal(shared.done, naive.done)
    assert shared.tokens.shape == (N_SAMPLES, NEW)
    # Samples differ (per-row keys), and temperature changes the reported logp.
    assert len({tuple(r) for r in np.asarray(shared.tokens)}) > 1
    assert not np.allclose(shared.logprobs, shared.raw_logprobs)


def test_one_key_per_prompt_draws_what_each_prompt_alone_draws(sampler, tiny_model):
    """Batched test-time scaling's contract: with keys `[B]`, prompt b's rows in a left-padded
    batch are the rows that prompt alone gives with key b (its own length, no padding)."""
    params, config = tiny_model[1], tiny_config()
    singles = [video_prompts(config, [spec], seed=i) for i, spec in enumerate(PROMPT_SPECS)]
    keys = jax.random.split(jax.random.key(11), len(singles))
    batch = collate(singles, multiple=1)  # lengths 15 and 16: the first is left-padded
    kw = dict(method=DEFAULT_METHOD, num_samples=N_SAMPLES, **NEVER)
    both = sampler(params, batch, rng=keys, **kw)
    for i, single in enumerate(singles):
        alone = sampler(params, single, rng=keys[i], **kw)
        rows = slice(i * N_SAMPLES, (i + 1) * N_SAMPLES)
        np.testing.assert_array_equal(np.asarray(both.tokens)[rows], alone.tokens)
        np.testing.assert_allclose(np.asarray(both.logprobs)[rows], alone.logprobs, atol=1e-4)
    assert not np.array_equal(both.tokens[:N_SAMPLES], both.tokens[N_SAMPLES:])
    with pytest.raises(ValueError, match="one per prompt"):
        sampler(params, batch, rng=keys[:1], **kw)


def test_greedy_equals_teacher_forced_argmax(greedy, tiny_model, prompts):
    model, params = tiny_model
    tokens = np.asarray(greedy.tokens)
    seq = np.concatenate([prompts["input_ids"], tokens], 1)
    mask = np.concatenate([prompts["attention_mask"], np.ones_like(tokens)], 1)
    layout = vision_layout(prompts["video_grid_thw"], model.config.vision)
    logits = jax.jit(
        lambda p, ids, m, pix, spg: (
            model.apply(
                {"params": p},
                ids,
                m,
                pixel_values_videos=pix,
                video_grid_thw=prompts["video_grid_thw"],
                second_per_grid_ts=spg,
                vision_layout=layout,
            ).logits
        )
    )(params, seq, mask, prompts["pixel_values_videos"], prompts["second_per_grid_ts"])
    t = prompts["input_ids"].shape[1]
    step_logits = logits[:, t - 1 : -1]
    np.testing.assert_array_equal(tokens, np.asarray(jnp.argmax(step_logits, -1)))
    expected = jnp.take_along_axis(jax.nn.log_softmax(step_logits, -1), tokens[..., None], -1)
    np.testing.assert_allclose(greedy.logprobs, expected[..., 0], atol=1e-4)
    np.testing.assert_allclose(greedy.raw_logprobs, greedy.logprobs)


def test_stop_criteria(sampler, greedy, tiny_model, prompts):
    full = np.asarray(greedy.tokens)
    eos = int(full[0, 3])  # row 0 stops at the first occurrence of this token
    seq = (int(full[1, 4]), int(full[1, 5]))  # row 1 at the first end of this pair
    out = sampler(tiny_model[1], prompts, method=Greedy(), eos_ids=(eos,), stop_sequences=[seq])

    def expected_length(row):  # the first EOS or end of the pair, whichever comes first
        ends = [i + 1 for i in range(NEW) if row[i] == eos]
        ends += [i + 2 for i in range(NEW - 1) if tuple(row[i : i + 2]) == seq]
        return min(ends)

    lengths = [expected_length(full[0]), expected_length(full[1])]
    np.testing.assert_array_equal(out.lengths, lengths)
    np.testing.assert_array_equal(out.done, [True, True])
    for row, n in enumerate(lengths):
        np.testing.assert_array_equal(out.tokens[row, :n], full[row, :n])
        assert np.all(np.asarray(out.tokens[row, n:]) == sampler.pad_id)
        assert np.all(np.asarray(out.logprobs[row, n:]) == 0)
        np.testing.assert_allclose(out.logprobs[row, :n], greedy.logprobs[row, :n], atol=1e-5)
    np.testing.assert_array_equal(out.mask, np.arange(NEW)[None] < np.asarray(out.lengths)[:, None])


def test_suppressed_ids_are_never_sampled(greedy, tiny_model, prompts):
    """Suppressing greedy's own choices changes the tokens, and no suppressed id ever appears;
    the reported log-probs are those of the suppressed distribution."""
    banned = sorted({int(t) for t in np.asarray(greedy.tokens)[:, :2].ravel()})
    sampler = Sampler(tiny_model[0], max_new_tokens=NEW, suppress_ids=banned)
    out = sampler(tiny_model[1], prompts, method=Greedy(), **NEVER)
    tokens = np.asarray(out.tokens)
    assert not np.isin(tokens, banned).any()
    assert (tokens != np.asarray(greedy.tokens)).any()
    sampled = sampler(
        tiny_model[1],
        prompts,
        rng=jax.random.key(3),
        method=RandomSampling(),
        num_samples=4,
        **NEVER,
    )
    assert not np.isin(np.asarray(sampled.tokens), banned).any()
    assert np.all(np.asarray(out.logprobs) <= 0)
    with pytest.raises(ValueError, match="suppress_ids"):
        Sampler(tiny_model[0], max_new_tokens=NEW, suppress_ids=[VOCAB])


def test_right_padding_is_rejected(sampler, tiny_model, prompts):
    bad = dict(prompts, attention_mask=prompts["attention_mask"][:, ::-1])
    with pytest.raises(ValueError, match="left-padded"):
        sampler(tiny_model[1], bad)


# ----------------------------------------------------------------------------- token choice
PROBS = np.array([0.5, 0.3, 0.15, 0.05])
LOGITS = jnp.log(jnp.asarray(PROBS, jnp.float32))[None]


@pytest.mark.parametrize(
    "method, kept",
    [
        (RandomSampling(), [0, 1, 2, 3]),
        (TopK(k=2), [0, 1]),
        (TopP(p=0.7), [0, 1]),  # mass before each token: 0, .5, .8, .95 -> keep while < .7
        (TopP(p=0.85), [0, 1, 2]),
        (TopP(p=0.01), [0]),  # the top token is always kept
        (MinP(p=0.5), [0, 1]),  # p >= 0.5 * 0.5
        (MinP(p=0.2), [0, 1, 2]),  # p >= 0.1
    ],
)
def test_filters_by_hand(method, kept):
    filtered = np.asarray(method.filter(LOGITS))[0]
    np.testing.assert_array_equal(np.flatnonzero(np.isfinite(filtered)), kept)


def test_top_p_one_is_plain_sampling_and_no_top_p_sorts():
    """p = 1 keeps every token: the filter is the scaled logits. No nucleus sorts the vocabulary
    at each decode step."""
    method = TopP(p=1.0, temperature=0.5)
    np.testing.assert_array_equal(method.filter(LOGITS), LOGITS / 0.5)
    for p in (1.0, 0.9):
        assert "sort" not in str(jax.make_jaxpr(TopP(p=p).filter)(LOGITS))


def _nucleus_by_sorting(logits: np.ndarray, p: float) -> np.ndarray:
    """The textbook nucleus (NumPy, float64): sort descending, keep while the mass before a
    token is below p; tokens tied with the last kept one are kept too."""
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    keep = np.zeros(logits.shape, bool)
    for r, (row, pr) in enumerate(zip(logits, probs, strict=True)):
        order = np.argsort(-row, kind="stable")
        before = np.cumsum(pr[order]) - pr[order]
        last = row[order][before < p].min()
        keep[r] = row >= last
    return keep


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.floats(0.05, 0.99),
    st.floats(0.2, 3.0),
    st.booleans(),
)
def test_top_p_equals_the_sorted_nucleus(seed, p, temperature, ties):
    """The bisection keeps what sorting keeps, on random logits (suppressed -inf ids and, when
    `ties`, logits rounded so that many are equal), up to float32 mass at the boundary."""
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(6, 97)) * rng.uniform(0.5, 6)).astype(np.float32)
    if ties:
        logits = np.round(logits * 2) / 2
    logits[:, :3] = -np.inf  # e.g. Sampler.suppress_ids
    got = np.isfinite(np.asarray(TopP(p=p, temperature=temperature).filter(jnp.asarray(logits))))
    want = _nucleus_by_sorting(logits.astype(np.float64) / temperature, p)
    for r in np.flatnonzero((got != want).any(-1)):  # only a float32 boundary may differ
        pr = np.exp(logits[r] / temperature - (logits[r] / temperature).max())
        pr /= pr.sum()
        mass_above = np.array([pr[logits[r] > x].sum() for x in logits[r]])
        assert np.all(np.abs(mass_above[got[r] != want[r]] - p) < 1e-5), (r, p)
    assert got[:, :3].sum() == 0 and got.any(-1).all()


def test_sampling_frequencies_and_logprobs():
    keys = jax.random.split(jax.random.key(0), 4000)
    logits = jnp.broadcast_to(LOGITS, (4000, 4))
    tokens = np.asarray(jax.jit(TopP(p=0.7).__call__)(logits, keys))
    freq = np.bincount(tokens, minlength=4) / len(tokens)
    np.testing.assert_allclose(freq, [0.5 / 0.8, 0.3 / 0.8, 0, 0], atol=0.03)
    assert np.asarray(Greedy()(logits[:2], keys[:2])).tolist() == [0, 0]
    # Temperature 2: softmax(log p / 2) = sqrt(p) / sum(sqrt(p)); the raw logp is log p.
    logp, raw = log_probs(LOGITS, jnp.asarray([1]), temperature=2.0)
    np.testing.assert_allclose(logp, np.log(np.sqrt(0.3) / np.sqrt(PROBS).sum()), rtol=1e-5)
    np.testing.assert_allclose(raw, np.log(0.3), rtol=1e-5)


def test_bad_methods_raise():
    with pytest.raises(ValueError, match="temperature"):
        TopK(k=2, temperature=0.0)
    with pytest.raises(ValueError, match="TopP.p"):
        TopP(p=1.5)


# ----------------------------------------------------------------------------- sharding
_SHARDED = textwrap.dedent(
    """
    import json
    import flax.linen as nn
    import jax
    import numpy as np
    from jax.sharding import Mesh
    jax.config.update("jax_default_matmul_precision", "highest")
    from tests.inference.conftest import PROMPT_SPECS, random_params, tiny_config, video_prompts
    from tests.inference.test_sampler import NEVER, NEW
    from vlmm_jax.inference import Greedy, Sampler
    from vlmm_jax.models import Qwen2_5_VL, abstract_params
    from vlmm_jax.policy import Policy

    assert jax.device_count() == 8, jax.devices()
    config = tiny_config()
    mesh = Mesh(np.array(jax.devices()).reshape(2, 2, 2), ("data", "fsdp", "tensor"))
    rules = [("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"), ("kv_heads", None),
             ("vocab", "tensor"), ("batch", ("data", "fsdp"))]
    specs = nn.get_partition_spec(abstract_params(config))
    shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
    params = jax.device_put(random_params(config), shardings)
    model = Qwen2_5_VL(config)
    policy = Policy(model=model, params=params, mesh=mesh, rules=tuple(rules))
    out = Sampler(model, max_new_tokens=NEW)(
        policy, video_prompts(config, PROMPT_SPECS), method=Greedy(), **NEVER
    )
    print(json.dumps({
        "tokens": np.asarray(out.tokens).tolist(),
        "sharded_params": sum(not s.is_fully_replicated for s in jax.tree.leaves(shardings)),
        "embed_spec": str(params["embed_tokens"].sharding.spec),
        "params_still_sharded": not params["embed_tokens"].sharding.is_fully_replicated,
    }))
    """
)


def test_sharded_params_give_the_same_tokens(greedy):
    env = {**cpu_devices_env(8), "PYTHONPATH": REPO}
    proc = subprocess.run(
        [sys.executable, "-c", _SHARDED],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["sharded_params"] > 10 and "tensor" in got["embed_spec"]
    assert got["params_still_sharded"]
    np.testing.assert_array_equal(np.asarray(got["tokens"]), np.asarray(greedy.tokens))
