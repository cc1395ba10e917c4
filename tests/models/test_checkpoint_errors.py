"""Loading a broken checkpoint names the tensor (and both shapes), or the missing file."""

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from vlmm_jax.models import from_pretrained


def _copy(src, dst):
    shutil.copytree(src, dst)
    return os.path.join(dst, "model.safetensors")


def test_missing_tensor(hf_dir, tmp_path):
    path = _copy(hf_dir, tmp_path / "ckpt")
    tensors = load_file(path)
    del tensors["model.layers.1.self_attn.k_proj.weight"]
    save_file(tensors, path)
    with pytest.raises(
        ValueError, match=r"missing tensor model\.layers\.1\.self_attn\.k_proj\.weight"
    ):
        from_pretrained(str(tmp_path / "ckpt"))


def test_wrong_shape(hf_dir, tmp_path):
    path = _copy(hf_dir, tmp_path / "ckpt")
    tensors = load_file(path)
    tensors["visual.blocks.0.attn.qkv.weight"] = np.zeros((90, 32), np.float32)
    save_file(tensors, path)
    with pytest.raises(ValueError) as err:
        from_pretrained(str(tmp_path / "ckpt"))
    msg = str(err.value)
    assert "visual.blocks.0.attn.qkv.weight" in msg and "(96, 32)" in msg and "(90, 32)" in msg


def test_unexpected_tensor_and_all_errors_reported_together(hf_dir, tmp_path):
    path = _copy(hf_dir, tmp_path / "ckpt")
    tensors = load_file(path)
    del tensors["model.norm.weight"]
    tensors["model.layers.7.mlp.up_proj.weight"] = np.zeros((2, 2), np.float32)
    save_file(tensors, path)
    with pytest.raises(ValueError) as err:
        from_pretrained(str(tmp_path / "ckpt"))
    assert "missing tensor model.norm.weight" in str(err.value)
    assert "unexpected tensor model.layers.7.mlp.up_proj.weight" in str(err.value)


def test_no_config(hf_dir, tmp_path):
    _copy(hf_dir, tmp_path / "ckpt")
    os.remove(tmp_path / "ckpt" / "config.json")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        from_pretrained(str(tmp_path / "ckpt"))


def test_bad_config_field(hf_dir, tmp_path):
    _copy(hf_dir, tmp_path / "ckpt")
    cfg_path = tmp_path / "ckpt" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["vision_config"]["depth"]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config.json: missing field vision_config\.'depth'"):
        from_pretrained(str(tmp_path / "ckpt"))


def test_no_weights_and_never_pickle(hf_dir, tmp_path):
    _copy(hf_dir, tmp_path / "ckpt")
    os.remove(tmp_path / "ckpt" / "model.safetensors")
    (tmp_path / "ckpt" / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(FileNotFoundError, match="only safetensors are read"):
        from_pretrained(str(tmp_path / "ckpt"))
