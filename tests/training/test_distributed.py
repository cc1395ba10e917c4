"""The same SFT run on different meshes and process counts gives the same losses."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

from tests.fake_devices import cpu_devices_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_worker(*args, devices=8, timeout=900):
    env = cpu_devices_env(devices)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.training.sft_worker", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def losses_of(proc, timeout=900):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    line = next(x for x in out.splitlines() if x.startswith("LOSSES "))
    return json.loads(line[len("LOSSES ") :])["losses"]


def test_mesh_equivalence():
    """First 5 losses within 1e-5 relative for data=8, fsdp=8, 2x2x2 and a single device."""
    runs = {
        "single": run_worker("--mesh", "1,1,1", devices=1),
        "data8": run_worker("--mesh", "8,1,1"),
    }
    results = {k: losses_of(p) for k, p in runs.items()}
    runs = {"fsdp8": run_worker("--mesh", "1,8,1"), "2x2x2": run_worker("--mesh", "2,2,2")}
    results.update({k: losses_of(p) for k, p in runs.items()})
    ref = np.array(results["single"])
    assert len(ref) == 5 and np.all(np.isfinite(ref))
    for name, losses in results.items():
        np.testing.assert_allclose(losses, ref, rtol=1e-5, err_msg=name)


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_agree_with_one():
    """Two jax.distributed processes on localhost (1 CPU device each, fsdp=2) train like one
    process with 2 devices."""
    port = str(free_port())
    procs = [
        run_worker(
            "--mesh",
            "1,2,1",
            "--steps",
            "3",
            "--num-processes",
            "2",
            "--process-id",
            str(i),
            "--port",
            port,
            devices=1,
        )
        for i in range(2)
    ]
    single = run_worker("--mesh", "1,2,1", "--steps", "3", devices=2)
    two = losses_of(procs[0])
    procs[1].communicate(timeout=900)
    assert procs[1].returncode == 0
    np.testing.assert_allclose(two, losses_of(single), rtol=1e-5)
