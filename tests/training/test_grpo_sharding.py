"""The GRPO update is data-parallel: on 8 fake devices its log-probs come out batch-sharded, and
the per-device temporary memory XLA plans for the update falls as the devices grow (1, 2, 4, 8).
"""

import json
import os
import subprocess
import sys
import textwrap

from tests.fake_devices import cpu_devices_env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_SCRIPT = textwrap.dedent(
    """
    import json
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from tests.inference.conftest import random_params, tiny_config, video_prompts
    from tests.rows import rows_from_flat
    from vlmm_jax import hosts
    from vlmm_jax.config_dicts import grpo_defaults
    from vlmm_jax.mesh import DEFAULT_RULES, logical_shardings, make_mesh
    from vlmm_jax.models import Qwen2_5_VL, abstract_params
    from vlmm_jax.policy import Policy
    from vlmm_jax.training.grpo import GRPO, split_trainable

    class Tok:
        pad_id = 0
        def generation_kwargs(self):
            return {"eos_ids": (), "pad_id": 0}

    config = tiny_config()
    model = Qwen2_5_VL(config)
    b, g, n = 8, 4, 32
    specs = [(3 + i % 3, (2, 4, 4), 2, 1.0) for i in range(b)]
    prompts = rows_from_flat(video_prompts(config, specs), config)
    rng = np.random.default_rng(0)
    piece = {
        "tokens": rng.integers(1, 50, (b * g, n)).astype(np.int32),
        "mask": np.ones((b * g, n), np.float32),
        "advantages": rng.normal(size=b * g).astype(np.float32),
    }
    cfg = grpo_defaults().grpo
    cfg.group_size, cfg.max_new_tokens, cfg.beta = g, n, 0.04
    out = {}
    for k in (1, 2, 4, 8):
        mesh = make_mesh({"data": 1, "fsdp": k, "tensor": 1}, jax.devices()[:k])
        shardings = logical_shardings(abstract_params(config), mesh, DEFAULT_RULES)
        params = jax.device_put(random_params(config), shardings)
        policy = Policy(model=model, params=params, mesh=mesh, rules=DEFAULT_RULES)
        grpo = GRPO(policy.with_params(None), optax.adam(1e-3), Tok(), cfg)
        d = hosts.global_rows(piece, mesh)
        d["prompts"] = hosts.global_rows(prompts, mesh)
        logp = grpo.logp_fn(policy, d)
        d["ref_logp"] = logp
        norms = {"num_global_tokens": jnp.float32(b * g * n),
                 "num_global_sequences": jnp.float32(b * g), "num_chunks": 1}
        trained, frozen = split_trainable(params, None)
        compiled = grpo.grad_fn.lower(trained, frozen, d, norms).compile()
        out[k] = {
            "logp_spec": str(logp.sharding.spec),
            "logp_shards": len({str(s.index) for s in logp.addressable_shards}),
            "temp": compiled.memory_analysis().temp_size_in_bytes,
        }
    print("RESULT " + json.dumps(out))
    """
)


def test_update_is_batch_sharded_and_memory_falls_with_devices():
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        cwd=REPO,
        env={**cpu_devices_env(8), "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    got = {int(k): v for k, v in json.loads(line[len("RESULT ") :]).items()}
    # rows split over the batch axes (the size-1 `data` axis drops out of the spec)
    assert got[8]["logp_spec"] == "P('fsdp',)" and got[8]["logp_shards"] == 8, got
    temps = [got[k]["temp"] for k in (1, 2, 4, 8)]
    assert all(a > b for a, b in zip(temps, temps[1:], strict=False)), temps
    assert temps[0] > 4 * temps[3], temps  # close to linear in the devices
