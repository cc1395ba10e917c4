"""Kill -9 at any moment (a save included), restart, and the run continues exactly; a checkpoint
restores onto a different mesh."""

import glob
import json
import os
import signal
import time

import numpy as np

from tests.training.test_distributed import run_worker

STEPS = 8


def step_losses(workdir):
    """The last logged loss of every step (steps re-run after a resume appear twice)."""
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if rec["split"] == "train":
                out[rec["step"]] = rec["loss"]
    return out


def logged_steps(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line)["step"] for line in f if line.strip()]


def finish(proc):
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]


def kill_when(proc, condition, timeout=600):
    start = time.time()
    while not condition():
        assert proc.poll() is None, "worker finished before it could be killed"
        assert time.time() - start < timeout
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_and_resume(tmp_path):
    args = ["--mesh", "1,-1,1", "--steps", str(STEPS), "--ckpt-every", "2"]
    ref_dir, dir_ = str(tmp_path / "ref"), str(tmp_path / "killed")
    ref = run_worker(*args, "--workdir", ref_dir, devices=1)
    ckpts = os.path.join(dir_, "checkpoints", "sft")
    # 1) killed while a checkpoint is being written (its temporary directory exists)
    proc = run_worker(*args, "--workdir", dir_, devices=1)
    kill_when(proc, lambda: glob.glob(os.path.join(ckpts, "*tmp*")))
    # 2) killed between saves, after step 5 was logged
    proc = run_worker(*args, "--workdir", dir_, devices=1)
    kill_when(proc, lambda: 5 in logged_steps(dir_))
    finish(run_worker(*args, "--workdir", dir_, devices=1))
    finish(ref)
    steps = logged_steps(dir_)
    assert len(steps) > len(set(steps)), "the killed run never re-ran a step"
    killed, expected = step_losses(dir_), step_losses(ref_dir)
    assert sorted(killed) == list(range(1, STEPS + 1))
    np.testing.assert_allclose(
        [killed[s] for s in sorted(killed)], [expected[s] for s in sorted(expected)], rtol=1e-5
    )
    results = json.loads(open(os.path.join(dir_, "results.json")).read())
    assert results["stages"]["sft"]["steps"] == STEPS
    # 3) a finished stage is not run again
    before = len(logged_steps(dir_))
    finish(run_worker(*args, "--workdir", dir_, devices=1))
    assert len(logged_steps(dir_)) == before


def test_restore_onto_another_mesh(tmp_path):
    common = ["--ckpt-every", "2", "--schedule-steps", str(STEPS)]
    ref = run_worker(
        "--mesh",
        "1,1,1",
        "--steps",
        str(STEPS),
        *common,
        "--workdir",
        str(tmp_path / "ref"),
        devices=1,
    )
    dir_ = str(tmp_path / "moved")
    finish(run_worker("--mesh", "2,2,2", "--steps", "4", *common, "--workdir", dir_))
    finish(run_worker("--mesh", "1,8,1", "--steps", str(STEPS), *common, "--workdir", dir_))
    finish(ref)
    moved, expected = step_losses(dir_), step_losses(str(tmp_path / "ref"))
    np.testing.assert_allclose(
        [moved[s] for s in range(1, STEPS + 1)],
        [expected[s] for s in range(1, STEPS + 1)],
        rtol=1e-5,
    )
