"""GRPO across restarts and hosts (fp32, small, subprocesses on fake CPU devices):

* a run killed with SIGKILL mid-run and restarted logs the same figures and ends with the same
  parameters as an uninterrupted run, its KL measured against the initial policy throughout;
* two `jax.distributed` processes (one device each) train exactly like one process with two
  devices, and each process decodes only its own prompts.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.fake_devices import cpu_devices_env
from tests.training.grpo_worker import prepare
from tests.training.test_distributed import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 3
KEYS = ("reward", "accuracy", "loss", "kl", "grad_norm", "entropy", "shuffled_accuracy")


def worker(data, workdir, *extra, devices=2):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.training.grpo_worker",
            "--data",
            data,
            "--workdir",
            workdir,
            "--steps",
            str(STEPS),
            "--mesh",
            "1,2,1",
            *extra,
        ],
        cwd=ROOT,
        env=cpu_devices_env(devices),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc, timeout=900):
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]


def train_rows(workdir):
    """The last logged train figures of every step (a step re-run after a resume logs twice)."""
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if row["split"] == "train":
                out[row["step"]] = row
    return out


def assert_same_run(workdir, ref_dir):
    got, want = train_rows(workdir), train_rows(ref_dir)
    assert sorted(got) == sorted(want) == list(range(1, STEPS + 1))
    for step in want:
        for k in KEYS:
            np.testing.assert_allclose(got[step][k], want[step][k], rtol=1e-5, atol=1e-7, err_msg=k)
    a, b = (load_file(os.path.join(d, "export", "model.safetensors")) for d in (workdir, ref_dir))
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("grpo_data"))
    prepare(path)
    return path


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The uninterrupted run: one process, two devices."""
    workdir = str(tmp_path_factory.mktemp("grpo_ref"))
    finish(worker(data, workdir))
    rows = train_rows(workdir)
    assert rows[1]["kl"] == 0.0 and rows[STEPS]["kl"] > 1e-6  # the policy moved from its start
    return workdir


def test_kill_and_resume(data, reference, tmp_path):
    workdir = str(tmp_path / "killed")
    proc = worker(data, workdir)
    start = time.time()
    while 2 not in (train_rows(workdir) if os.path.exists(workdir + "/metrics.jsonl") else {}):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() - start < 600
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finish(worker(data, workdir))
    lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    steps = [r["step"] for r in lines if r["split"] == "train"]
    assert steps[: steps.index(2) + 1] == [1, 2] and len(steps) > STEPS, steps  # resumed
    assert_same_run(workdir, reference)  # KL after the restart: against the initial policy


def test_two_processes_train_like_one(data, reference, tmp_path):
    workdir, port = str(tmp_path / "two"), str(free_port())
    procs = [
        worker(
            data, workdir, "--num-processes", "2", "--process-id", str(i), "--port", port, devices=1
        )
        for i in range(2)
    ]
    for proc in procs:
        finish(proc)
    assert_same_run(workdir, reference)
    decoded = [open(os.path.join(workdir, f"decoded_{i}.txt")).read().split() for i in range(2)]
    assert not set(decoded[0]) & set(decoded[1])  # no host decodes another's prompt
    ref = open(os.path.join(reference, "decoded_0.txt")).read().split()
    # One prompt per host per step: the one-process stream interleaves the two hosts' blocks.
    assert decoded[0][:STEPS] == ref[0 : 2 * STEPS : 2]
    assert decoded[1][:STEPS] == ref[1 : 2 * STEPS : 2]
