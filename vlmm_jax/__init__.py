"""vlmm_jax: post-training video large multimodal models in JAX."""

__version__ = "0.1.0"
