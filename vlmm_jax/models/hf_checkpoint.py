"""Hugging Face Qwen2.5-VL / Qwen3-VL checkpoints: `config.json` + safetensors, read lazily,
written sharded.

The mapping is a table of (our parameter path, HF tensor name, layout) rows; every tensor is read
on its own (`safe_open`), converted, checked and, given a mesh, placed straight onto its sharding,
so a 7B checkpoint never sits in host memory twice. All mismatches (missing tensors, wrong shapes,
unexpected tensors) are collected and reported together. Only safetensors are read: never pickle.

HF names are accepted in both the Qwen2.5-VL published layout (`model.layers.*`, `visual.*`) and
the layout Qwen3-VL ships and transformers 5 writes (`model.language_model.*`, `model.visual.*`);
the tables below use the first, and a checkpoint is written in its family's published layout.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from safetensors import safe_open
from safetensors.numpy import save_file

from vlmm_jax.models.config import ModelConfig, load_hf_config, to_hf_dict
from vlmm_jax.models.qwen2_5_vl import Qwen2_5_VL, abstract_params

# Layouts: how an HF weight (torch Linear: [out, in]) becomes our kernel of `shape`.
#   "copy": same layout; "bias": a flat [out] bias split into our head dims;
#   "linear": [out, in] -> [in, out...] (transpose, then split the out dim);
#   "linear_in": [out, in...] with the *input* split into our leading dims (o_proj, attn.proj);
#   "conv": Conv3d [D, C, T, P, P] -> [C*T*P*P, D].
_TEXT = [
    ("input_norm/scale", "input_layernorm.weight", "copy"),
    ("post_attention_norm/scale", "post_attention_layernorm.weight", "copy"),
    ("q", "self_attn.q_proj.weight", "linear"),
    ("k", "self_attn.k_proj.weight", "linear"),
    ("v", "self_attn.v_proj.weight", "linear"),
    ("q_bias", "self_attn.q_proj.bias", "bias"),
    ("k_bias", "self_attn.k_proj.bias", "bias"),
    ("v_bias", "self_attn.v_proj.bias", "bias"),
    ("o", "self_attn.o_proj.weight", "linear_in"),
    ("mlp/gate", "mlp.gate_proj.weight", "linear"),
    ("mlp/up", "mlp.up_proj.weight", "linear"),
    ("mlp/down", "mlp.down_proj.weight", "linear"),
]
_VISION = [
    ("norm1/scale", "norm1.weight", "copy"),
    ("norm2/scale", "norm2.weight", "copy"),
    ("qkv", "attn.qkv.weight", "linear"),
    ("qkv_bias", "attn.qkv.bias", "bias"),
    ("proj", "attn.proj.weight", "linear_in"),
    ("proj_bias", "attn.proj.bias", "copy"),
    ("mlp/gate", "mlp.gate_proj.weight", "linear"),
    ("mlp/up", "mlp.up_proj.weight", "linear"),
    ("mlp/down", "mlp.down_proj.weight", "linear"),
    ("mlp/gate_bias", "mlp.gate_proj.bias", "copy"),
    ("mlp/up_bias", "mlp.up_proj.bias", "copy"),
    ("mlp/down_bias", "mlp.down_proj.bias", "copy"),
]
_QWEN3_TEXT = [
    row
    for row in _TEXT
    if not row[0].endswith("_bias")  # Qwen3: no q/k/v biases
] + [
    ("q_norm/scale", "self_attn.q_norm.weight", "copy"),
    ("k_norm/scale", "self_attn.k_norm.weight", "copy"),
]
_QWEN3_VISION = [
    ("norm1/scale", "norm1.weight", "copy"),
    ("norm1/bias", "norm1.bias", "copy"),
    ("norm2/scale", "norm2.weight", "copy"),
    ("norm2/bias", "norm2.bias", "copy"),
    ("qkv", "attn.qkv.weight", "linear"),
    ("qkv_bias", "attn.qkv.bias", "bias"),
    ("proj", "attn.proj.weight", "linear_in"),
    ("proj_bias", "attn.proj.bias", "copy"),
    ("mlp/fc1", "mlp.linear_fc1.weight", "linear"),
    ("mlp/fc1_bias", "mlp.linear_fc1.bias", "copy"),
    ("mlp/fc2", "mlp.linear_fc2.weight", "linear"),
    ("mlp/fc2_bias", "mlp.linear_fc2.bias", "copy"),
]
_QWEN3_MERGER = [  # under visual/merger (visual.merger) or visual/deepstack_merger_k
    ("norm/scale", "norm.weight", "copy"),
    ("norm/bias", "norm.bias", "copy"),
    ("fc1", "linear_fc1.weight", "linear"),
    ("fc1_bias", "linear_fc1.bias", "copy"),
    ("fc2", "linear_fc2.weight", "linear"),
    ("fc2_bias", "linear_fc2.bias", "copy"),
]
_GLOBAL = [
    ("embed_tokens", "model.embed_tokens.weight", "copy"),
    ("lm_head", "lm_head.weight", "linear"),
    ("decoder/norm/scale", "model.norm.weight", "copy"),
    ("visual/patch_embed", "visual.patch_embed.proj.weight", "conv"),
    ("visual/merger/ln_q/scale", "visual.merger.ln_q.weight", "copy"),
    ("visual/merger/fc1", "visual.merger.mlp.0.weight", "linear"),
    ("visual/merger/fc1_bias", "visual.merger.mlp.0.bias", "copy"),
    ("visual/merger/fc2", "visual.merger.mlp.2.weight", "linear"),
    ("visual/merger/fc2_bias", "visual.merger.mlp.2.bias", "copy"),
]
_QWEN3_GLOBAL = [row for row in _GLOBAL if "merger" not in row[0]] + [
    ("visual/patch_embed_bias", "visual.patch_embed.proj.bias", "copy"),
    ("visual/pos_embed", "visual.pos_embed.weight", "copy"),
]
_IGNORED = re.compile(r".*rotary_emb\.inv_freq$")


def canonical_name(name: str) -> str:
    """Maps transformers-5 in-memory names to the published checkpoint layout."""
    if name.startswith("model.visual."):
        return name[len("model.") :]
    if name.startswith("model.language_model."):
        return "model." + name[len("model.language_model.") :]
    return name


def published_name(name: str, config: ModelConfig) -> str:
    """The name a tensor of the tables (Qwen2.5-VL's published layout) has in `config`'s
    family's published checkpoints (Qwen3-VL: `model.language_model.*`, `model.visual.*`)."""
    if not config.is_qwen3:
        return name
    if name.startswith("visual."):
        return "model." + name
    if name.startswith("model."):
        return "model.language_model." + name[len("model.") :]
    return name


def _rows(config: ModelConfig) -> Iterator[tuple[str, str, str, int | None]]:
    """(our path, HF name, layout, layer index or None) for every parameter."""
    scan = config.scan_layers
    qwen3 = config.is_qwen3
    for ours, hf, layout in _QWEN3_GLOBAL if qwen3 else _GLOBAL:
        if ours == "lm_head" and config.text.tie_word_embeddings:
            continue
        yield ours, hf, layout, None
    if qwen3:
        mergers = [("merger", "merger")] + [
            (f"deepstack_merger_{k}", f"deepstack_merger_list.{k}")
            for k in range(len(config.vision.deepstack_visual_indexes))
        ]
        for ours_prefix, hf_prefix in mergers:
            for ours, hf, layout in _QWEN3_MERGER:
                yield f"visual/{ours_prefix}/{ours}", f"visual.{hf_prefix}.{hf}", layout, None
    for prefix, hf_prefix, rows, num in (
        ("decoder/layers", "model.layers", _QWEN3_TEXT if qwen3 else _TEXT, config.text.num_layers),
        (
            "visual/blocks",
            "visual.blocks",
            _QWEN3_VISION if qwen3 else _VISION,
            config.vision.depth,
        ),
    ):
        for i in range(num):
            for ours, hf, layout in rows:
                path = f"{prefix}/{ours}" if scan else f"{prefix}_{i}/{ours}"
                yield path, f"{hf_prefix}.{i}.{hf}", layout, i


def _to_ours(x: np.ndarray, layout: str, shape: tuple[int, ...]) -> np.ndarray:
    if layout in ("copy", "bias"):
        return x.reshape(shape)
    if layout == "conv":  # [D, C, T, P, P] -> [C*T*P*P, D]
        return x.reshape(x.shape[0], -1).T.reshape(shape)
    return x.T.reshape(shape)  # linear / linear_in: [out, in] -> ours, in dims before out dims


def _to_hf(x: np.ndarray, layout: str, hf_shape: tuple[int, ...]) -> np.ndarray:
    if layout in ("copy", "bias"):
        return x.reshape(hf_shape)
    if layout == "conv":
        return x.T.reshape(hf_shape)
    return x.reshape(hf_shape[1], hf_shape[0]).T  # ours [in.., out..] -> [out, in]


def _hf_shape(layout: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The HF tensor shape that maps to our (per-layer) `shape`."""
    if layout == "copy":
        return tuple(shape)
    if layout == "bias":
        return (int(np.prod(shape)),)
    if layout == "linear":
        return (int(np.prod(shape[1:])), shape[0])
    if layout == "linear_in":
        return (shape[-1], int(np.prod(shape[:-1])))
    if layout == "conv":
        return (shape[1], shape[0])  # checked on the flattened 2D view
    raise ValueError(layout)


class _SafetensorsDir:
    """Tensor-by-tensor access to the safetensors files of a checkpoint directory."""

    def __init__(self, path: str):
        index = os.path.join(path, "model.safetensors.index.json")
        single = os.path.join(path, "model.safetensors")
        if os.path.exists(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        elif os.path.exists(single):
            with safe_open(single, framework="numpy") as f:
                weight_map = {k: "model.safetensors" for k in f.keys()}
        else:
            files = sorted(n for n in os.listdir(path) if n.endswith(".safetensors"))
            if not files:
                raise FileNotFoundError(
                    f"{path}: no model.safetensors, model.safetensors.index.json or *.safetensors "
                    "(only safetensors are read; convert .bin/.pt checkpoints first)"
                )
            weight_map = {}
            for name in files:
                with safe_open(os.path.join(path, name), framework="numpy") as f:
                    weight_map.update({k: name for k in f.keys()})
        self.path = path
        self.files = {canonical_name(k): v for k, v in weight_map.items()}
        self.raw = {canonical_name(k): k for k in weight_map}
        self._open: dict[str, object] = {}

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handle(name).get_slice(self.raw[name]).get_shape())

    def get(self, name: str) -> np.ndarray:
        return self._handle(name).get_tensor(self.raw[name])

    def _handle(self, name):
        file = self.files[name]
        if file not in self._open:
            self._open[file] = safe_open(os.path.join(self.path, file), framework="numpy")
        return self._open[file]


def _flatten(tree) -> dict[str, object]:
    return {
        "/".join(k.key for k in path): v for path, v in jax.tree_util.tree_leaves_with_path(tree)
    }


def _unflatten(flat: dict[str, object]) -> dict:
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


def load_params(
    path: str,
    config: ModelConfig,
    *,
    dtype=None,
    shardings: dict | None = None,
) -> dict:
    """Reads the parameters of `config` from the checkpoint directory `path`.

    Args:
      dtype: storage dtype of the result (default: `config.param_dtype`).
      shardings: optional pytree (same structure as the params) of `jax.sharding.Sharding`s;
        each tensor is put straight onto its sharding.
    Raises:
      ValueError listing every missing, mis-shaped or unexpected tensor, with both shapes.
    """
    dtype = jnp.dtype(dtype or config.param_dtype)
    files = _SafetensorsDir(path)
    abstract = _flatten(nn.meta.unbox(abstract_params(config)))
    flat_shardings = _flatten(shardings) if shardings is not None else {}
    rows_by_path: dict[str, list] = {}
    for ours, hf, layout, layer in _rows(config):
        rows_by_path.setdefault(ours, []).append((hf, layout, layer))
    errors, used, out = [], set(), {}
    for ours, rows in rows_by_path.items():
        full_shape = tuple(abstract[ours].shape)
        stacked = config.scan_layers and rows[0][2] is not None
        shape = full_shape[1:] if stacked else full_shape
        buf = np.empty(full_shape, dtype) if stacked else None
        for hf, layout, layer in rows:
            used.add(hf)
            if hf not in files.files:
                errors.append(f"missing tensor {hf} (expected shape {_hf_shape(layout, shape)})")
                continue
            want, got = _hf_shape(layout, shape), files.shape(hf)
            if layout == "conv":
                got = (got[0], int(np.prod(got[1:]))) if len(got) > 1 else got
            if tuple(got) != tuple(want):
                errors.append(f"tensor {hf}: expected shape {want}, found {tuple(got)}")
                continue
            if errors:
                continue  # keep checking shapes, stop converting
            x = _to_ours(files.get(hf), layout, shape).astype(dtype)
            if stacked:
                buf[layer] = x
            else:
                out[ours] = _place(x, flat_shardings.get(ours))
        if stacked and not errors:
            out[ours] = _place(buf, flat_shardings.get(ours))
    if config.text.tie_word_embeddings:
        used.add("lm_head.weight")  # some tied checkpoints still store it
    unexpected = sorted(n for n in files.files if n not in used and not _IGNORED.match(n))
    errors += [f"unexpected tensor {n} {files.shape(n)}" for n in unexpected]
    if errors:
        raise ValueError(f"{path}: checkpoint does not match the config:\n  " + "\n  ".join(errors))
    return _unflatten(out)


def _place(x: np.ndarray, sharding):
    return jax.device_put(x, sharding) if sharding is not None else jnp.asarray(x)


def from_pretrained(
    path: str,
    *,
    dtype: str | None = None,
    shardings: dict | Callable | None = None,
    **config_overrides,
) -> tuple[Qwen2_5_VL, dict]:
    """`(model, params)` from a Hugging Face Qwen2.5-VL or Qwen3-VL directory.

    Args:
      path: a directory with `config.json` and safetensors (single file or sharded with index).
      dtype: parameter (and compute) dtype, e.g. "bfloat16"; default float32.
      shardings: a params-shaped pytree of shardings, or a function `config -> pytree`.
      config_overrides: run-time `ModelConfig` fields (`scan_layers`, `remat_policy`, ...).
    """
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: not a directory")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{path}: no config.json (is this a Hugging Face model directory?)")
    config = load_hf_config(cfg_path)
    if dtype is not None:
        config_overrides.setdefault("param_dtype", dtype)
        config_overrides.setdefault("dtype", dtype)
    config = config.replace(**config_overrides)
    if callable(shardings):
        shardings = shardings(config)
    params = load_params(path, config, dtype=config.param_dtype, shardings=shardings)
    return Qwen2_5_VL(config), params


def _host_value(x) -> np.ndarray:
    """The whole value of a (possibly multi-host sharded) array, as NumPy on every process."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def save_pretrained(
    model: Qwen2_5_VL,
    params: dict,
    path: str,
    *,
    dtype: str | None = None,
    max_shard_bytes: int = 5 * 2**30,
) -> None:
    """Writes `params` as a Hugging Face checkpoint transformers loads with `from_pretrained`.

    Tensors are gathered to host one at a time and written in shards of at most
    `max_shard_bytes` (with `model.safetensors.index.json` when there are several), so host
    memory holds one shard at most.
    """
    config = model.config
    os.makedirs(path, exist_ok=True)
    flat = _flatten(nn.meta.unbox(params))
    out_dtype = jnp.dtype(dtype or config.param_dtype)
    v = config.vision
    conv_shape = (v.hidden_size, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)
    plan, shard_of, size = [], [], 0  # shards assigned from shapes before anything is gathered
    for ours, hf, layout, layer in _rows(config):
        if ours not in flat:
            raise ValueError(f"params have no entry {ours!r} (needed for {hf})")
        shape = (
            flat[ours].shape[1:] if config.scan_layers and layer is not None else flat[ours].shape
        )
        nbytes = int(np.prod(shape)) * out_dtype.itemsize
        if size and size + nbytes > max_shard_bytes:
            shard_of.append(len(plan))
            size = 0
        size += nbytes
        plan.append(
            (ours, hf, layout, layer, conv_shape if layout == "conv" else _hf_shape(layout, shape))
        )
    bounds = [0, *shard_of, len(plan)]
    n = len(bounds) - 1
    names = (
        ["model.safetensors"]
        if n == 1
        else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    )
    weight_map, total = {}, 0
    writer = jax.process_index() == 0  # every process gathers (a collective), one writes
    for name, lo, hi in zip(names, bounds[:-1], bounds[1:], strict=True):
        shard = {}
        for ours, hf, layout, layer, hf_shape in plan[lo:hi]:
            x = flat[ours] if layer is None or not config.scan_layers else flat[ours][layer]
            t = _to_hf(_host_value(x), layout, hf_shape)
            name_out = published_name(hf, config)
            shard[name_out] = np.ascontiguousarray(t.astype(out_dtype))
            total += shard[name_out].nbytes
        if writer:
            save_file(shard, os.path.join(path, name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    if not writer:
        return
    if n > 1:
        with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    hf_config = to_hf_dict(config)
    hf_config["dtype"] = out_dtype.name
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump(generation_config(config), f, indent=2)


def generation_config(config: ModelConfig) -> dict:
    """`generation_config.json`: the token ids `generate` needs to stop and pad (every EOS id;
    sampling settings are left to the caller)."""
    eos = config.eos_token_id
    out = {"eos_token_id": list(eos) if isinstance(eos, tuple) else eos}
    if config.bos_token_id is not None:
        out["bos_token_id"] = config.bos_token_id
    if config.pad_token_id is not None:
        out["pad_token_id"] = config.pad_token_id
    return out
