"""The model with `attention_implementation="pallas"` (interpret mode on CPU) matches "xla"."""

import jax
import jax.numpy as jnp
import numpy as np

from tests.models.conftest import Prompt, batch_inputs
from vlmm_jax.models import Qwen2_5_VL, init_cache, init_params, vision_layout
from vlmm_jax.models.config import tiny


def test_pallas_logits_match_xla():
    config = tiny()
    params = init_params(Qwen2_5_VL(config), jax.random.key(0))
    inputs = batch_inputs(
        [
            Prompt(0).text(3).video(2, 4, 6, seconds_per_grid=0.5).text(2),
            Prompt(1).text(1).video(2, 4, 4).text(4),
        ]
    )
    layout = vision_layout(inputs["video_grid_thw"], config.vision)
    args = dict(
        input_ids=jnp.asarray(inputs["input_ids"]),
        attention_mask=jnp.asarray(inputs["attention_mask"]),
        pixel_values_videos=jnp.asarray(inputs["pixel_values_videos"]),
        video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs["second_per_grid_ts"],
        vision_layout=layout,
    )
    b, t = inputs["input_ids"].shape
    out = {}
    for impl in ("xla", "pallas"):
        model = Qwen2_5_VL(config.replace(attention_implementation=impl))
        prefill = model.apply({"params": params}, **args, cache=init_cache(config, b, t + 1))
        token = jnp.argmax(prefill.logits[:, -1], -1)[:, None]
        step = model.apply(
            {"params": params}, token, cache=prefill.cache, rope_deltas=prefill.rope_deltas
        )
        out[impl] = (prefill.logits, step.logits)
    mask = inputs["attention_mask"].astype(bool)
    np.testing.assert_allclose(
        np.asarray(out["pallas"][0])[mask], np.asarray(out["xla"][0])[mask], atol=2e-5
    )
    np.testing.assert_allclose(out["pallas"][1], out["xla"][1], atol=2e-5)


_MESH_SCRIPT = """
import json
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_default_matmul_precision", "highest")
from tests.rows import rows_from_flat
from tests.inference.conftest import random_params, tiny_config, video_prompts
from vlmm_jax.mesh import DEFAULT_RULES, logical_shardings, make_mesh
from vlmm_jax.models import Qwen2_5_VL, abstract_params
from vlmm_jax.policy import Policy

config = tiny_config()
mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 1})  # 4 prompts: one per device
params = jax.device_put(random_params(config),
                        logical_shardings(abstract_params(config), mesh, DEFAULT_RULES))
specs = [(3 + i, (2, 4, 4), 2, 1.0) for i in range(2)] * 2
rows = jax.tree.map(jnp.asarray, rows_from_flat(video_prompts(config, specs), config))
completions = jnp.asarray(np.random.default_rng(0).integers(1, 50, (8, 5)), jnp.int32)
out = {}
for impl in ("xla", "pallas"):
    model = Qwen2_5_VL(config.replace(attention_implementation=impl))
    policy = Policy(model=model, params=params, mesh=mesh, rules=DEFAULT_RULES)
    fn = policy.jit(lambda p, r, c: p.completion_stats(r, c, group=2)["logp"])
    out[impl] = fn(policy, rows, completions)
print("RESULT " + json.dumps({"max_diff": float(jnp.max(jnp.abs(out["pallas"] - out["xla"])))}))
"""


def test_pallas_under_a_mesh_matches_xla():
    """On 4 fake devices (data 2 x fsdp 2) the kernels run inside `shard_map` (Mosaic kernels
    cannot be partitioned automatically), in interpret mode because the mesh is a CPU one; the
    shared-prefix log-probs (vision tower, prompt prefill, cached completions) equal the XLA
    path's. (The kernels' gradients are checked on one device in tests/kernels; compiling the
    backward under `shard_map` for a TPU mesh is checked by tests/test_aot.py.)"""
    import json
    import os
    import subprocess
    import sys

    from tests.fake_devices import cpu_devices_env

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(
        [sys.executable, "-c", _MESH_SCRIPT],
        cwd=repo,
        env={**cpu_devices_env(4), "PYTHONPATH": repo},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[7:])
    assert got["max_diff"] < 2e-5, got
