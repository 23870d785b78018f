"""A training process killed with SIGKILL and resumed ends with the same weights, bit for bit."""

from __future__ import annotations

import signal
import subprocess
import time

import numpy as np
from safetensors.numpy import load_file

from test_train_models import PYTHON, cli_env, make_dataset, write_launcher

STEPS = 40


def _command(launcher, dataset, out, *extra):
    return [
        PYTHON, str(launcher), "train", "--model", "test-ae", "--data", str(dataset), "--out", str(out),
        "--steps", str(STEPS), "--batch-size", "8", "--seed", "5",
        "--set", "train.checkpoint_every=5", "--set", "train.log_every=5", "--set", "train.sample_every=10",
        "--set", "train.tensorboard=false", "--set", "model.step_sleep=0.05", *extra,
    ]  # fmt: skip


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    dataset = make_dataset(tmp_path / "ds")
    launcher = write_launcher(tmp_path)
    env = cli_env()

    killed_run = tmp_path / "killed"
    proc = subprocess.Popen(
        _command(launcher, dataset, killed_run), env=env, stderr=subprocess.PIPE, text=True
    )
    first = killed_run / "checkpoints" / "step-0000005" / "state.json"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {err}"
    assert first.exists() and not (killed_run / "model.safetensors").exists()

    full = subprocess.run(
        _command(launcher, dataset, tmp_path / "full"), env=env, capture_output=True, text=True
    )
    assert full.returncode == 0, full.stderr
    resumed = subprocess.run(
        _command(launcher, dataset, killed_run, "--resume"), env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr

    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(killed_run / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), f"{key} differs after resume"
    # the last checkpoints (model, EMA, optimiser state) agree too
    ca = load_file(str(tmp_path / "full" / "checkpoints" / f"step-{STEPS:07d}" / "state.safetensors"))
    cb = load_file(str(killed_run / "checkpoints" / f"step-{STEPS:07d}" / "state.safetensors"))
    assert all(np.array_equal(ca[k], cb[k]) for k in ca)
