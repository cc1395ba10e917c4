"""Leaf layers shared by the vision tower and the decoder, with logical axis names on every param.

Logical axis names (mapped to mesh axes by the training rules): `embed` (model width), `mlp`,
`heads`, `kv_heads`, `head_dim`, `qkv` (the fused q/k/v index of the vision tower), `vocab`,
`patch` (flattened pixel patch), `layers` (the scanned layer axis).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Axes = tuple[str | None, ...]

_kernel_init = nn.initializers.normal(stddev=0.02)


def param(module: nn.Module, name: str, shape: Sequence[int], axes: Axes, init=_kernel_init):
    """A parameter of `shape` stored in `module.param_dtype`, annotated with logical `axes`."""
    return module.param(
        name, nn.with_logical_partitioning(init, axes), tuple(shape), module.param_dtype
    )


def constrain(x: jax.Array, axes: Axes) -> jax.Array:
    """Logical sharding constraint on an activation (a no-op outside a mesh with rules)."""
    return nn.with_logical_constraint(x, axes)


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in fp32 and scaled in the input dtype (as Qwen2)."""

    eps: float = 1e-6
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    axes: Axes = ("embed",)  # of the scale (("head_dim",) for Qwen3's per-head q/k norms)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = param(self, "scale", (x.shape[-1],), self.axes, nn.initializers.ones)
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return scale.astype(self.dtype) * x32.astype(self.dtype)


class LayerNorm(nn.Module):
    """Mean-and-variance norm with scale and bias, computed in fp32 (torch's `nn.LayerNorm`)."""

    eps: float = 1e-6
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        scale = param(self, "scale", (d,), ("embed",), nn.initializers.ones)
        bias = param(self, "bias", (d,), ("embed",), nn.initializers.zeros)
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)


class GatedMLP(nn.Module):
    """`down(silu(gate(x)) * up(x))`, optionally with biases (the vision tower has them)."""

    hidden: int
    use_bias: bool = False
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # x [..., D]
        d = x.shape[-1]
        gate = param(self, "gate", (d, self.hidden), ("embed", "mlp"))
        up = param(self, "up", (d, self.hidden), ("embed", "mlp"))
        down = param(self, "down", (self.hidden, d), ("mlp", "embed"))
        g = jnp.einsum("...D,DF->...F", x, gate.astype(self.dtype))
        u = jnp.einsum("...D,DF->...F", x, up.astype(self.dtype))
        if self.use_bias:
            zeros = nn.initializers.zeros
            g += param(self, "gate_bias", (self.hidden,), ("mlp",), zeros).astype(self.dtype)
            u += param(self, "up_bias", (self.hidden,), ("mlp",), zeros).astype(self.dtype)
        h = nn.silu(g) * u
        out = jnp.einsum("...F,FD->...D", h, down.astype(self.dtype))
        if self.use_bias:
            out += param(self, "down_bias", (d,), ("embed",), nn.initializers.zeros).astype(
                self.dtype
            )
        return out


class MLP(nn.Module):
    """`fc2(act(fc1(x)))` with biases (Qwen3-VL's vision blocks); `act` a `jax.nn` name or
    "gelu_pytorch_tanh"."""

    hidden: int
    activation: str = "gelu_pytorch_tanh"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # x [..., D]
        d, zeros = x.shape[-1], nn.initializers.zeros
        w1 = param(self, "fc1", (d, self.hidden), ("embed", "mlp"))
        b1 = param(self, "fc1_bias", (self.hidden,), ("mlp",), zeros)
        w2 = param(self, "fc2", (self.hidden, d), ("mlp", "embed"))
        b2 = param(self, "fc2_bias", (d,), ("embed",), zeros)
        h = jnp.einsum("...D,DF->...F", x, w1.astype(self.dtype)) + b1.astype(self.dtype)
        h = activation(self.activation)(h)
        return jnp.einsum("...F,FD->...D", h, w2.astype(self.dtype)) + b2.astype(self.dtype)


def activation(name: str):
    """The activation of a Hugging Face `hidden_act` name."""
    table = {
        "silu": nn.silu,
        "gelu": lambda x: nn.gelu(x, approximate=False),
        "gelu_pytorch_tanh": lambda x: nn.gelu(x, approximate=True),
    }
    if name not in table:
        raise ValueError(f"unknown hidden_act {name!r}; choose one of {sorted(table)}")
    return table[name]


def rotate_half(x: jax.Array) -> jax.Array:
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates `x [B, T, N, H]` by angles given as `cos`/`sin` `[B, T, H]` (fp32)."""
    x32 = x.astype(jnp.float32)
    out = x32 * cos[:, :, None] + rotate_half(x32) * sin[:, :, None]
    return out.astype(x.dtype)


def remat_policy(name: str):
    """The `jax.checkpoint` policy named by a config string (`None` for no remat)."""
    policies = {
        "none": None,
        "full": jax.checkpoint_policies.nothing_saveable,
        "dots": jax.checkpoint_policies.checkpoint_dots,
        "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    }
    if name not in policies:
        raise ValueError(f"unknown remat_policy {name!r}; choose one of {sorted(policies)}")
    return policies[name]


def stack_layers(layer_cls: type[nn.Module], *, num: int, scan: bool, remat: str, in_axes):
    """Wraps a layer class for `num` repeats: `nn.scan` (params stacked on a `layers` axis) or not.

    The layer's `__call__(carry, *args)` must return `(carry, per_layer_output)`; `in_axes` marks
    each of `args` as scanned (0) or broadcast (`nn.broadcast`).
    """
    policy = remat_policy(remat)
    if remat != "none":
        layer_cls = nn.remat(layer_cls, policy=policy, prevent_cse=not scan)
    if scan:
        return nn.scan(
            layer_cls,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=in_axes,
            length=num,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )
    return layer_cls
