"""What the test-time scaling strategies call: a generator of completions, and its bill.

`ModelGenerator` wraps the jitted `Sampler` / `BeamSearch` and a `detokenize(ids) -> str`
callable; the strategies only see the `Generator` protocol, so they are tested on scripted
completions without a model.

Compute is counted per call, as `Spent`:
  samples   completions produced (a beam search of width W counts W),
  tokens    tokens decoded (all rows, stop token included; beam search: W per step run),
  frames    video frames through the vision tower (a shared-prefix call encodes them once),
  prefills  prompt forward passes (generation calls and verifier prompts).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from vlmm_jax import hosts
from vlmm_jax.inference.beam_search import BeamSearch, LengthPenalty
from vlmm_jax.inference.sampler import Sampler
from vlmm_jax.inference.sampling import SamplingMethod, TopP
from vlmm_jax.policy import Policy

Inputs = Mapping[str, Any]
DEFAULT_METHOD = TopP(p=0.95, temperature=0.7)


@dataclasses.dataclass(frozen=True)
class Spent:
    """Compute spent (see the module docstring); `a + b` adds."""

    samples: int = 0
    tokens: int = 0
    frames: int = 0
    prefills: int = 0

    def __add__(self, other: Spent) -> Spent:
        return Spent(*(getattr(self, f.name) + getattr(other, f.name) for f in _FIELDS))

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


_FIELDS = dataclasses.fields(Spent)


@dataclasses.dataclass(frozen=True)
class Completion:
    """One generated continuation: text (EOS dropped), token ids, summed raw log-prob."""

    text: str
    tokens: tuple[int, ...] = ()
    logprob: float = 0.0

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    @property
    def mean_logprob(self) -> float:
        return self.logprob / max(1, len(self.tokens))


class Generator(Protocol):
    """The model interface of the strategies. Each prompt is ONE prompt (`input_ids [1, T]`);
    a call may take several, which a model generator runs as one batch."""

    def sample_many(
        self, prompts: Sequence[Inputs], n: int, rngs: Sequence[jax.Array]
    ) -> list[tuple[list[Completion], Spent]]:
        """n sampled completions of each prompt, prompt i drawn with `rngs[i]`: what prompt i
        alone would get with that key."""
        ...

    def beam_many(
        self, prompts: Sequence[Inputs], width: int, *, alpha: float, penalty: LengthPenalty
    ) -> list[tuple[list[Completion], Spent]]:
        """The beams of each prompt, best first."""
        ...

    def next_token_logprobs(self, prompts: Sequence[Inputs]) -> tuple[np.ndarray, Spent]:
        """`[len(prompts), V]` log-probs of the token after each prompt."""
        ...


def frames_in(inputs: Inputs, temporal_patch_size: int = 2) -> int:
    """Video frames encoded by the vision tower for these inputs (grid t x temporal patch)."""
    grids = inputs.get("video_grid_thw")
    if grids is None or inputs.get("pixel_values_videos") is None:
        return 0
    return int(np.asarray(grids).reshape(-1, 3)[:, 0].sum()) * temporal_patch_size


def collate(prompts: Sequence[Inputs], *, pad_id: int = 0, multiple: int = 32) -> dict:
    """Left-pads single or batched prompts into one batch (pixels, grids concatenated in order).

    The length is rounded up to a multiple of `multiple` so that varying prompt lengths reuse a
    few compiled shapes.
    """
    rows = [np.asarray(p["input_ids"]).reshape(-1, np.shape(p["input_ids"])[-1]) for p in prompts]
    masks = [
        np.asarray(p["attention_mask"]).reshape(r.shape)
        if p.get("attention_mask") is not None
        else np.ones_like(r)
        for p, r in zip(prompts, rows, strict=True)
    ]
    length = max(r.shape[1] for r in rows)
    length = -(-length // multiple) * multiple
    pad = lambda x, v: np.pad(x, ((0, 0), (length - x.shape[1], 0)), constant_values=v)  # noqa: E731
    out = {
        "input_ids": np.concatenate([pad(r, pad_id) for r in rows]),
        "attention_mask": np.concatenate([pad(m, 0) for m in masks]),
    }
    for key in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw"):
        parts = [np.asarray(p[key]) for p in prompts if p.get(key) is not None]
        if parts:
            out[key] = np.concatenate(parts)
    if out.get("pixel_values_videos") is not None:
        spg = [
            np.asarray(p["second_per_grid_ts"], np.float32).reshape(-1)
            if p.get("second_per_grid_ts") is not None
            else np.ones(np.asarray(p["video_grid_thw"]).reshape(-1, 3).shape[0], np.float32)
            for p in prompts
            if p.get("pixel_values_videos") is not None
        ]
        out["second_per_grid_ts"] = np.concatenate(spg)
    return out


class ModelGenerator:
    """A `Generator` over a `Policy` (the model, its parameters, mesh and rules).

    Args:
      policy: what generates (LoRA adapters are folded in once per call).
      detokenize: `ids -> str` (EOS ids are dropped before it is called).
      max_new_tokens: the decode budget of every call.
      method: the sampling method of `sample` (default top-p 0.95 at temperature 0.7).
      eos_ids, stop_sequences: stop criteria (see `Sampler`).
      sampler_kwargs: more `Sampler` arguments (pad_id, suppress_ids, cache_dtype).
    """

    def __init__(
        self,
        policy: Policy,
        detokenize: Callable[[Sequence[int]], str],
        *,
        max_new_tokens: int,
        method: SamplingMethod = DEFAULT_METHOD,
        eos_ids: int | Sequence[int] | None = None,
        stop_sequences: Sequence[Sequence[int]] = (),
        **sampler_kwargs,
    ):
        self.policy, self.detokenize = policy, detokenize
        model = policy.model
        self.method = method
        self.max_new_tokens = max_new_tokens
        self.sampler = Sampler(
            model,
            max_new_tokens=max_new_tokens,
            eos_ids=eos_ids,
            stop_sequences=stop_sequences,
            **sampler_kwargs,
        )
        self._sampler_kwargs = sampler_kwargs
        self._beams: dict[tuple, BeamSearch] = {}
        self._tps = model.config.vision.temporal_patch_size

    def _completion(self, tokens: np.ndarray, length: int, logprob: float) -> Completion:
        ids = [int(t) for t in tokens[:length]]
        text_ids = ids[:-1] if ids and ids[-1] in self.sampler.eos_ids else ids
        return Completion(self.detokenize(text_ids), tuple(ids), float(logprob))

    def _batch(self, prompts: Sequence[Inputs]) -> dict:
        for i, p in enumerate(prompts):
            if np.shape(p["input_ids"])[0] != 1:
                raise ValueError(f"prompt {i}: input_ids {np.shape(p['input_ids'])}, want [1, T]")
        return collate(prompts, pad_id=self.sampler.pad_id)

    def sample_many(
        self, prompts: Sequence[Inputs], n: int, rngs: Sequence[jax.Array]
    ) -> list[tuple[list[Completion], Spent]]:
        """One `Sampler` call for all prompts (left-padded together, each prefilled once, its
        cache fanned out to n rows); prompt i's rows draw with `rngs[i]` (see `Sampler`)."""
        if len(rngs) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(rngs)} keys")
        batch = self._batch(prompts)
        keys = jnp.stack(list(rngs))
        out = self.sampler(self.policy, batch, rng=keys, method=self.method, num_samples=n)
        tokens, lengths = hosts.all_rows(out.tokens), hosts.all_rows(out.lengths)
        logps = hosts.all_rows(out.raw_logprobs).sum(axis=1)
        results = []
        for i, prompt in enumerate(prompts):
            rows = slice(i * n, (i + 1) * n)
            done = [
                self._completion(t, int(k), lp)
                for t, k, lp in zip(tokens[rows], lengths[rows], logps[rows], strict=True)
            ]
            spent = Spent(n, int(lengths[rows].sum()), frames_in(prompt, self._tps), 1)
            results.append((done, spent))
        return results

    def sample(self, inputs: Inputs, n: int, rng: jax.Array) -> tuple[list[Completion], Spent]:
        """n sampled completions of one prompt."""
        return self.sample_many([inputs], n, [rng])[0]

    def beam_many(
        self,
        prompts: Sequence[Inputs],
        width: int,
        *,
        alpha: float = 0.0,
        penalty: LengthPenalty = "simple",
    ) -> list[tuple[list[Completion], Spent]]:
        """One `BeamSearch` call for all prompts; a prompt's token count is the steps the batch
        ran (early stopping waits for every prompt) times `width`."""
        key = (width, alpha, penalty)
        if key not in self._beams:
            self._beams[key] = BeamSearch(
                self.policy.model,
                width=width,
                max_new_tokens=self.max_new_tokens,
                alpha=alpha,
                penalty=penalty,
                eos_ids=self.sampler.eos_ids or None,
                **self._sampler_kwargs,
            )
        out = self._beams[key](self.policy, self._batch(prompts))
        tokens, lengths = hosts.all_rows(out.tokens), hosts.all_rows(out.lengths)
        logps, scores = hosts.all_rows(out.logprobs), hosts.all_rows(out.scores)
        steps = int(hosts.all_rows(out.steps))
        results = []
        for i, prompt in enumerate(prompts):
            beams = [
                self._completion(t, int(k), lp)
                for t, k, lp, s in zip(tokens[i], lengths[i], logps[i], scores[i], strict=True)
                if np.isfinite(s)
            ]
            results.append((beams, Spent(width, steps * width, frames_in(prompt, self._tps), 1)))
        return results

    def next_token_logprobs(self, prompts: Sequence[Inputs]) -> tuple[np.ndarray, Spent]:
        batch = collate(prompts, pad_id=self.sampler.pad_id)
        logp = hosts.all_rows(self.sampler.next_token_logprobs(self.policy, batch))
        frames = sum(frames_in(p, self._tps) for p in prompts)
        return logp, Spent(frames=frames, prefills=len(prompts))


def yes_logprob(logp: np.ndarray, yes_id: int, no_id: int | None = None) -> np.ndarray:
    """log p("Yes") per row of `logp [B, V]`; with `no_id`, renormalised over {Yes, No}."""
    yes = logp[:, yes_id]
    if no_id is None:
        return yes
    return yes - np.logaddexp(yes, logp[:, no_id])


__all__ = [
    "Completion",
    "Generator",
    "ModelGenerator",
    "Spent",
    "collate",
    "frames_in",
    "yes_logprob",
]
