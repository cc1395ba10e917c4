"""Mesh sizes from config and the multi-host switch (the collectives run in test_distributed)."""

import jax
import pytest

from vlmm_jax import mesh


def test_mesh_shape_resolves_the_rest_and_rejects_misfits():
    assert mesh.mesh_shape({"data": 2, "fsdp": -1, "tensor": 2}, 8) == {
        "data": 2,
        "fsdp": 2,
        "tensor": 2,
    }
    with pytest.raises(ValueError):
        mesh.mesh_shape({"data": 3, "fsdp": 1, "tensor": 1}, 8)


@pytest.mark.parametrize(
    "env, multihost, expected",
    [
        ({}, None, None),  # nothing asks for it: no initialize
        ({"JAX_COORDINATOR_ADDRESS": "h:1"}, None, {}),  # launcher-detected counts
        (
            {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "2"},
            None,
            {"num_processes": 4, "process_id": 2},
        ),
        ({}, True, {}),
    ],
)
def test_distributed_initialize_from_config_and_environment(monkeypatch, env, multihost, expected):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    mesh.maybe_initialize_distributed(multihost)
    assert calls == ([] if expected is None else [expected])
