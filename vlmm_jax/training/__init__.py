"""vlmm_jax.training."""
