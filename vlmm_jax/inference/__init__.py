"""Inference: a jitted shared-prefix sampler, beam search, and test-time scaling strategies."""

from vlmm_jax.inference.beam_search import BeamOutput, BeamSearch, length_penalty
from vlmm_jax.inference.sampler import (
    Sampler,
    SamplerOutput,
    fan_out,
    prompt_layout,
    repeat_prompts,
)
from vlmm_jax.inference.sampling import (
    METHODS,
    Greedy,
    MinP,
    RandomSampling,
    SamplingMethod,
    TopK,
    TopP,
    log_probs,
)

__all__ = [
    "METHODS",
    "BeamOutput",
    "BeamSearch",
    "Greedy",
    "MinP",
    "RandomSampling",
    "Sampler",
    "SamplerOutput",
    "SamplingMethod",
    "TopK",
    "TopP",
    "fan_out",
    "length_penalty",
    "log_probs",
    "prompt_layout",
    "repeat_prompts",
]
