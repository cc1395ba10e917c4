"""Beam search against a brute-force NumPy beam search over full forwards (no cache)."""

import jax
import numpy as np
import pytest

from vlmm_jax.inference import BeamSearch, length_penalty, repeat_prompts
from vlmm_jax.models import vision_layout

WIDTH, NEW = 3, 6


def test_length_penalty_by_hand():
    assert float(length_penalty(4, 0.5, "simple")) == pytest.approx(2.0)
    assert float(length_penalty(7, 1.0, "gnmt")) == pytest.approx(2.0)  # (5 + 7) / 6
    assert float(length_penalty(9, 0.0, "gnmt")) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="alpha"):
        BeamSearch(None, width=2, max_new_tokens=2, alpha=-1.0)


def _full_logits_fn(model, params, prompts):
    """`fn(generated [B*W, N] (-1 = none), step) -> logits [B*W, V]` at the next position, from
    a full forward of prompt + generated tokens, right-padded to N (causal: padding is unseen)."""
    rep = repeat_prompts(prompts, WIDTH, model.config)
    layout = vision_layout(rep["video_grid_thw"], model.config.vision)

    @jax.jit
    def forward(ids, mask):
        return model.apply(
            {"params": params},
            ids,
            mask,
            pixel_values_videos=rep["pixel_values_videos"],
            video_grid_thw=rep["video_grid_thw"],
            second_per_grid_ts=rep["second_per_grid_ts"],
            vision_layout=layout,
        ).logits

    t = rep["input_ids"].shape[1]

    def fn(generated, step):
        ids = np.concatenate([rep["input_ids"], np.maximum(generated, 0)], 1)
        mask = np.concatenate([rep["attention_mask"], generated >= 0], 1).astype(np.int32)
        return np.asarray(forward(ids, mask))[:, t - 1 + step].astype(np.float64)

    return fn


def _log_softmax(x):
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def brute_force_beam_search(logits_fn, batch, eos, alpha, kind, suppress=()):
    """Plain-Python beam search: every alive beam's EOS expansions join the finished list,
    the best W other expansions stay alive; after N steps alive beams finish too. Suppressed
    ids get -inf logits."""
    lp = lambda n: float(length_penalty(n, alpha, kind))  # noqa: E731
    alive = [[((), 0.0)] for _ in range(batch)]
    finished = [[] for _ in range(batch)]
    for step in range(NEW):
        generated = np.full((batch * WIDTH, NEW), -1)
        for b in range(batch):
            for j, (seq, _) in enumerate(alive[b]):
                generated[b * WIDTH + j, : len(seq)] = seq
        logits = logits_fn(generated, step)
        for b in range(batch):
            candidates = []
            for j, (seq, total) in enumerate(alive[b]):
                row = logits[b * WIDTH + j].copy()
                row[list(suppress)] = -np.inf
                logp = _log_softmax(row)
                for v, lv in enumerate(logp):
                    if v in eos:
                        finished[b].append(((total + lv) / lp(step + 1), seq + (v,), True))
                    else:
                        candidates.append((total + lv, seq + (v,)))
            candidates.sort(key=lambda c: -c[0])
            alive[b] = [(seq, total) for total, seq in candidates[:WIDTH]]
    out = []
    for b in range(batch):
        pool = finished[b] + [(total / lp(NEW), seq, False) for seq, total in alive[b]]
        out.append(sorted(pool, key=lambda c: -c[0])[:WIDTH])
    return out


@pytest.fixture(scope="module")
def logits_fn(tiny_model, prompts):
    return _full_logits_fn(*tiny_model, prompts)


# The first two cases share one compiled search: EOS ids and the length penalty are traced.
@pytest.mark.parametrize(
    "kind, alpha, eos_rank, suppress_ranks",
    [("simple", 1.0, 0, ()), ("gnmt", 0.6, 1, ()), ("simple", 1.0, 2, (0, 1))],
)
def test_beam_search_equals_brute_force(
    tiny_model, prompts, logits_fn, kind, alpha, eos_rank, suppress_ranks
):
    model, params = tiny_model
    # EOS = prompt 0's rank-th most likely first token, so that beams do finish early; the
    # suppressed ids are its most likely first tokens (never generated: the beams change).
    ranked = np.argsort(-logits_fn(np.full((2 * WIDTH, NEW), -1), 0)[0])
    eos = (int(ranked[eos_rank]),)
    suppress = tuple(int(ranked[r]) for r in suppress_ranks)
    search = BeamSearch(
        model,
        width=WIDTH,
        max_new_tokens=NEW,
        alpha=alpha,
        penalty=kind,
        eos_ids=eos,
        suppress_ids=suppress,
    )
    got = search(params, prompts)
    assert not np.isin(np.asarray(got.tokens), suppress).any()
    want = brute_force_beam_search(logits_fn, 2, eos, alpha, kind, suppress)
    pad = search.sampler.pad_id
    for b in range(2):
        for j, (score, seq, done) in enumerate(want[b]):
            row = np.asarray(got.tokens[b, j])
            assert tuple(row[: len(seq)]) == seq, (b, j)
            assert np.all(row[len(seq) :] == pad)
            assert int(got.lengths[b, j]) == len(seq)
            assert bool(got.done[b, j]) == done
            assert float(got.scores[b, j]) == pytest.approx(score, abs=1e-4)
            assert float(got.logprobs[b, j]) == pytest.approx(
                score * float(length_penalty(len(seq), alpha, kind)), abs=1e-4
            )
    assert np.any(np.asarray(got.done)) and np.all(np.diff(np.asarray(got.scores), axis=1) <= 0)
