"""Token choice: greedy, temperature, top-k, top-p and min-p as small frozen dataclasses.

Each method maps next-token logits `[B, V]` (fp32) and one PRNG key per row `[B]` to tokens
`[B]`. They are hashable, so a sampler can close over one as a static `jit` argument.

Every method reports two log-probabilities of the token it chose (see `log_probs`):
  * `logp`: under `softmax(logits / temperature)`, *before* any truncation (top-k/p, min-p). This
    is the policy RL importance ratios are taken against when the trainer re-scores completions
    with the same temperature (verl, TRL and OpenRLHF divide the logits by the rollout
    temperature and do not truncate when they recompute log-probs).
  * `raw_logp`: under `softmax(logits)`, the model's own distribution (temperature 1).
For `Greedy` both are the raw log-probability. The truncated distribution actually sampled from
is not reported: it is 0 outside the kept set, which makes ratios against it ill-defined.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

_NEG_INF = -jnp.inf


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (use Greedy() for argmax), got {temperature}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RandomSampling:
    """Sample from `softmax(logits / temperature)` over the whole vocabulary."""

    temperature: float = 1.0

    def __post_init__(self):
        _check_temperature(self.temperature)

    def filter(self, logits: jax.Array) -> jax.Array:
        """Scaled logits `[B, V]` with the tokens this method never picks set to -inf."""
        return logits / self.temperature

    def __call__(self, logits: jax.Array, keys: jax.Array) -> jax.Array:
        """Tokens `[B]` int32 for logits `[B, V]` and per-row keys `[B]`."""
        filtered = self.filter(logits.astype(jnp.float32))
        tokens = jax.vmap(jax.random.categorical)(keys, filtered)
        return tokens.astype(jnp.int32)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Greedy(RandomSampling):
    """Argmax (ties go to the lowest token id); keys are ignored."""

    temperature: float = 1.0

    def __call__(self, logits: jax.Array, keys: jax.Array) -> jax.Array:
        del keys
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TopK(RandomSampling):
    """Keep the `k` largest logits (ties with the k-th are kept too), then sample."""

    k: int = 50

    def __post_init__(self):
        super().__post_init__()
        if self.k < 1:
            raise ValueError(f"TopK.k must be >= 1, got {self.k}")

    def filter(self, logits):
        logits = logits / self.temperature
        k = min(self.k, logits.shape[-1])
        kth = jax.lax.top_k(logits, k)[0][..., -1:]  # [B, 1]
        return jnp.where(logits >= kth, logits, _NEG_INF)


def _order_keys(x: jax.Array) -> jax.Array:
    """int32 keys ordered as the float32 values `x` are (negative floats' bits flipped; -0.0
    first made +0.0, which it equals)."""
    x = jnp.where(x == 0, 0.0, x.astype(jnp.float32))
    bits = jax.lax.bitcast_convert_type(x, jnp.int32)
    return jnp.where(bits >= 0, bits, bits ^ jnp.int32(0x7FFFFFFF))


@dataclasses.dataclass(frozen=True, kw_only=True)
class TopP(RandomSampling):
    """Nucleus sampling: the smallest set of most likely tokens whose mass reaches `p`.

    Computed on the temperature-scaled distribution (as transformers' `TopPLogitsWarper` after
    its `TemperatureLogitsWarper`); the most likely token is always kept. A token is kept when
    the mass of the tokens strictly more likely than it is below `p`, so tokens tied with the
    last one kept are kept too.

    No sort of the vocabulary: the kept set is every logit at or above a threshold, found by
    bisection over the logits' 32-bit order keys (32 masked sums over `[B, V]`; exact, since
    the mass above a threshold only falls as it rises), where a sort of every row dominated a
    CPU decode step.
    """

    p: float = 0.9

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.p <= 1:
            raise ValueError(f"TopP.p must be in (0, 1], got {self.p}")

    def filter(self, logits):
        logits = logits / self.temperature
        if self.p >= 1.0:  # keeps every token
            return logits
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        keys = _order_keys(logits)  # [B, V]

        def halve(_, bounds):  # the smallest key k whose mass strictly above is < p: [lo, hi]
            lo, hi = bounds
            mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)  # floor((lo + hi) / 2), no overflow
            below_p = jnp.where(keys > mid[:, None], probs, 0.0).sum(axis=-1) < self.p
            return jnp.where(below_p, lo, mid + 1), jnp.where(below_p, mid, hi)

        # The top key has no mass above it: the answer lies in [min, max] from the start.
        _, threshold = jax.lax.fori_loop(0, 32, halve, (keys.min(-1), keys.max(-1)))
        return jnp.where(keys >= threshold[:, None], logits, _NEG_INF)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MinP(RandomSampling):
    """Keep tokens whose probability is at least `p` times the top token's (Nguyen et al. 2024),
    on the temperature-scaled distribution."""

    p: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.p <= 1:
            raise ValueError(f"MinP.p must be in [0, 1], got {self.p}")

    def filter(self, logits):
        logits = logits / self.temperature
        # p_i >= p * p_max  <=>  logit_i >= logit_max + log(p)
        top = jnp.max(logits, axis=-1, keepdims=True)
        return jnp.where(logits >= top + jnp.log(self.p), logits, _NEG_INF)


SamplingMethod = RandomSampling  # the base type of every method above

METHODS = {
    "greedy": Greedy,
    "random": RandomSampling,
    "top_k": TopK,
    "top_p": TopP,
    "min_p": MinP,
}


def log_probs(
    logits: jax.Array, tokens: jax.Array, temperature: float = 1.0
) -> tuple[jax.Array, jax.Array]:
    """`(logp, raw_logp)` `[B]` of `tokens [B]` under `softmax(logits / temperature)` and under
    `softmax(logits)`; logits `[B, V]`."""
    logits = logits.astype(jnp.float32)
    raw = jax.nn.log_softmax(logits, axis=-1)
    raw_logp = jnp.take_along_axis(raw, tokens[:, None], axis=-1)[:, 0]
    if temperature == 1.0:
        return raw_logp, raw_logp
    scaled = jax.nn.log_softmax(logits / temperature, axis=-1)
    return jnp.take_along_axis(scaled, tokens[:, None], axis=-1)[:, 0], raw_logp
