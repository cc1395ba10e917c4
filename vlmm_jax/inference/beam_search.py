"""Jitted beam search with a shared prompt prefix, a length penalty and finished-beam bookkeeping.

Letters: B prompts, W beams, N max new tokens, V vocab, E EOS ids.

Each prompt is prefilled once (vision tower included) and its cache fanned out to W rows. Every
step, from the W alive beams (sums of log-probs `s`, temperature 1):
  * each beam's EOS expansions `s + log p(eos)` become *finished* candidates, scored
    `(s + log p(eos)) / lp(length)` (length counts the EOS); the best W finished so far are kept
    and are never extended again;
  * the best W non-EOS expansions (by raw sum) become the next alive beams; the cache rows are
    gathered to follow their parents.
At step 0 only beam 0 is alive, so the first W beams are distinct. After N steps the alive beams
join the finished candidates with `s / lp(N)`. The result is the best W by normalised score.

Length penalty `lp(len)`:
  * `"simple"`: `len ** alpha` (alpha 0: raw sums, which favour short answers; 1: mean log-prob);
  * `"gnmt"`: `((5 + len) / 6) ** alpha` (Wu et al. 2016, GNMT; alpha 0.6-1.0 is common).

Early stopping (`early_stopping=True`) is exact, not a heuristic: with alpha >= 0, lp grows with
length and sums only fall, so no alive beam can end above `max_alive_sum / lp(N)`. Once, for every
prompt, the W-th finished score is at least that bound, the remaining steps cannot change the
result and the loop ends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp

from vlmm_jax.inference.sampler import Sampler, _eos_tuple
from vlmm_jax.models import Qwen2_5_VL

LengthPenalty = Literal["simple", "gnmt"]


def length_penalty(length, alpha: float, kind: LengthPenalty = "simple"):
    """`lp(length)` (array or scalar): `length**alpha` or GNMT's `((5 + length) / 6)**alpha`."""
    length = jnp.asarray(length, jnp.float32)
    if kind == "simple":
        return length**alpha
    if kind == "gnmt":
        return ((5.0 + length) / 6.0) ** alpha
    raise ValueError(f"length penalty kind must be 'simple' or 'gnmt', got {kind!r}")


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class BeamOutput:
    """Beams best first. tokens `[B, W, N]` int32 (`pad_id` after the end); scores `[B, W]`
    length-normalised (-inf for an empty slot); logprobs `[B, W]` summed raw log-probs; lengths
    `[B, W]` (EOS included); done `[B, W]` True where the beam ended with EOS; steps: the decode
    steps run (< N after an early stop)."""

    tokens: jax.Array
    scores: jax.Array
    logprobs: jax.Array
    lengths: jax.Array
    done: jax.Array
    steps: jax.Array


class BeamSearch:
    """Beam search over a `Qwen2_5_VL`.

    Args:
      model: the Flax module.
      width: W beams per prompt.
      max_new_tokens: N.
      alpha, penalty: the length penalty (see the module docstring); alpha must be >= 0.
      eos_ids: ids that finish a beam (None: `config.eos_token_id`). Must leave at least W
        other tokens in the vocabulary.
      early_stopping: end once no alive beam can enter the top W (exact; see above).
      pad_id, suppress_ids, cache_dtype: as `Sampler`.
    """

    def __init__(
        self,
        model: Qwen2_5_VL,
        *,
        width: int,
        max_new_tokens: int,
        alpha: float = 0.0,
        penalty: LengthPenalty = "simple",
        eos_ids: int | Sequence[int] | None = None,
        early_stopping: bool = True,
        pad_id: int | None = None,
        suppress_ids: Sequence[int] = (),
        cache_dtype: Any = None,
    ):
        if width < 1 or max_new_tokens < 1:
            raise ValueError(
                f"need width >= 1 and max_new_tokens >= 1, got {width}, {max_new_tokens}"
            )
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0 (early stopping relies on it), got {alpha}")
        length_penalty(1, alpha, penalty)  # validates `penalty`
        self.sampler = Sampler(
            model,
            max_new_tokens=max_new_tokens,
            pad_id=pad_id,
            suppress_ids=suppress_ids,
            cache_dtype=cache_dtype,
        )
        self.width = int(width)
        self.max_new_tokens = int(max_new_tokens)
        self.alpha = float(alpha)
        self.penalty = penalty
        self.eos_ids = _eos_tuple(model.config.eos_token_id if eos_ids is None else eos_ids)
        if not self.eos_ids:
            raise ValueError("beam search needs at least one EOS id")
        if model.config.text.vocab_size - len(set(self.eos_ids) | set(suppress_ids)) < width:
            raise ValueError("fewer non-EOS tokens than beams")
        self.early_stopping = bool(early_stopping)

    # EOS ids and the length penalty are traced (`_dynamic`): changing them does not recompile.
    def _key(self):
        return (self.sampler, self.width, self.max_new_tokens, self.early_stopping)

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, BeamSearch) and self._key() == other._key()

    def _dynamic(self) -> dict[str, jax.Array]:
        return {
            "eos": jnp.asarray(self.eos_ids, jnp.int32),
            "alpha": jnp.float32(self.alpha),
            "gnmt": jnp.asarray(self.penalty == "gnmt"),
            "suppress": jnp.asarray(self.sampler.suppress_ids, jnp.int32).reshape(-1),
        }

    @staticmethod
    def _lp(length, dyn):
        length = jnp.asarray(length, jnp.float32)
        gnmt = ((5.0 + length) / 6.0) ** dyn["alpha"]
        return jnp.where(dyn["gnmt"], gnmt, length ** dyn["alpha"])

    def _search(self, policy, inputs, dyn) -> BeamOutput:
        s, w, n = self.sampler, self.width, self.max_new_tokens
        policy = policy.for_inference()
        b, t = inputs["input_ids"].shape
        cache, rope_deltas, logits = s.prefill(policy, inputs, t + n)
        rows = lambda x, axis: jnp.repeat(x, w, axis=axis)  # noqa: E731
        cache = {
            "k": rows(cache["k"], 1),
            "v": rows(cache["v"], 1),
            "segment_ids": rows(cache["segment_ids"], 0),
            "index": cache["index"],
        }
        rope_deltas, logits = rows(rope_deltas, 0), rows(logits, 0)
        eos = dyn["eos"]
        v = logits.shape[-1]
        is_eos = jnp.zeros((v,), bool).at[eos].set(True)
        neg = jnp.float32(-jnp.inf)
        state = dict(
            i=jnp.zeros((), jnp.int32),
            logits=logits,
            cache=cache,
            alive_tokens=jnp.full((b, w, n), s.pad_id, jnp.int32),
            alive_sum=jnp.where(jnp.arange(w) == 0, 0.0, neg)[None].repeat(b, 0),
            fin_tokens=jnp.full((b, w, n), s.pad_id, jnp.int32),
            fin_score=jnp.full((b, w), neg),
            fin_sum=jnp.full((b, w), neg),
            fin_len=jnp.zeros((b, w), jnp.int32),
            fin_done=jnp.zeros((b, w), bool),
        )

        def merge(st, tokens, score, total, length, done):
            """Best W of the finished beams and the candidates given (old ones win ties)."""
            all_score = jnp.concatenate([st["fin_score"], score], 1)
            top, idx = jax.lax.top_k(all_score, w)
            take = lambda old, new: jnp.take_along_axis(  # noqa: E731
                jnp.concatenate([old, new], 1), idx.reshape(idx.shape + (1,) * (old.ndim - 2)), 1
            )
            return dict(
                fin_tokens=take(st["fin_tokens"], tokens),
                fin_score=top,
                fin_sum=take(st["fin_sum"], total),
                fin_len=take(st["fin_len"], length),
                fin_done=take(st["fin_done"], done),
            )

        def cond(st):
            go = st["i"] < n
            if self.early_stopping:
                bound = jnp.max(st["alive_sum"], axis=1) / self._lp(n, dyn)
                go &= ~jnp.all(st["fin_score"][:, -1] >= bound)
            return go

        def body(st):
            i = st["i"]
            logits = st["logits"].astype(jnp.float32).at[:, dyn["suppress"]].set(-jnp.inf)
            logp = jax.nn.log_softmax(logits, -1).reshape(b, w, v)
            cand = st["alive_sum"][..., None] + logp  # [B, W, V]
            # Finished candidates: every alive beam extended by each EOS id.
            eos_sum = cand[..., eos].reshape(b, -1)  # [B, W*E]
            eos_tok = jnp.repeat(st["alive_tokens"], eos.shape[0], axis=1)
            eos_tok = eos_tok.at[:, :, i].set(jnp.tile(eos, w)[None])
            k = eos_sum.shape[1]
            new = merge(
                st,
                eos_tok,
                eos_sum / self._lp(i + 1, dyn),
                eos_sum,
                jnp.full((b, k), i + 1, jnp.int32),
                jnp.ones((b, k), bool),
            )
            # Alive: the best W non-EOS expansions.
            flat = jnp.where(is_eos, neg, cand).reshape(b, w * v)
            alive_sum, idx = jax.lax.top_k(flat, w)
            parent, token = idx // v, (idx % v).astype(jnp.int32)
            alive_tokens = jnp.take_along_axis(st["alive_tokens"], parent[..., None], 1)
            alive_tokens = alive_tokens.at[:, :, i].set(token)
            src = (jnp.arange(b)[:, None] * w + parent).reshape(-1)  # [B*W] parent rows
            c = st["cache"]
            c = {
                "k": c["k"][:, src],
                "v": c["v"][:, src],
                "segment_ids": c["segment_ids"][src],
                "index": c["index"],
            }
            next_logits, c = s.step(policy, token.reshape(-1), c, rope_deltas)
            return dict(
                i=i + 1,
                logits=next_logits,
                cache=c,
                alive_tokens=alive_tokens,
                alive_sum=alive_sum,
                **new,
            )

        st = jax.lax.while_loop(cond, body, state)
        # Alive beams still running join the finished candidates.
        steps = st["i"]
        out = merge(
            st,
            st["alive_tokens"],
            st["alive_sum"] / self._lp(steps, dyn),
            st["alive_sum"],
            jnp.full((b, w), steps, jnp.int32),
            jnp.zeros((b, w), bool),
        )
        return BeamOutput(
            tokens=out["fin_tokens"],
            scores=out["fin_score"],
            logprobs=out["fin_sum"],
            lengths=out["fin_len"],
            done=out["fin_done"],
            steps=steps,
        )

    def __call__(self, policy, inputs: Mapping[str, Any]) -> BeamOutput:
        """Beam search from left-padded prompts (`policy` and inputs as `Sampler.__call__`)."""
        policy, args = self.sampler.prepare(policy, inputs)
        with policy.context():
            return _search(self, policy, args, self._dynamic())


_search = jax.jit(BeamSearch._search, static_argnames=("self",))
