"""Faults: a full disk while ingesting, checkpointing, exporting or evaluating; damaged checkpoints
on --resume; two processes writing one run or dataset; thread settings of the compute commands."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from cli_runner import run_cli
from genforge.core import threads
from genforge.core.errors import ConfigError, DiskFullError, GenforgeError, LockedError
from genforge.core.lock import DirLock, ensure_free, lock_path
from genforge.data.canonical import open_dataset
from genforge.data.process import IngestConfig, ingest
from genforge.train import checkpoint as ckpt
from genforge.train.launch import build_trainer
from test_ingest import distinct_images, labelled_items, write_folder
from test_train_models import make_dataset

QUIET = ["train.progress=none", "train.tensorboard=false", "train.log_every=2"]


# --- helpers ---------------------------------------------------------------------------------------


def _enospc(path: object = None) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), None if path is None else str(path))


def fail_fsync(monkeypatch, only: str | None = None) -> None:
    """fsync reports a full disk (for files whose name contains `only`, if given), as a
    delayed-allocation file system does when it cannot place written data: the atomic writers fail
    after their temporary file is written."""
    real = os.fsync

    def fsync(fd):
        if only is None or only in os.readlink(f"/proc/self/fd/{fd}"):
            raise _enospc()
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` (relative path -> bytes)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def leftovers(directory: Path) -> list[str]:
    """Temporary names (files or directories) and lock files anywhere under `directory`."""
    return [str(p) for p in directory.rglob("*") if p.name.startswith(".tmp-") or p.name.endswith(".lock")]


def train(out, dataset, steps, sets=(), resume=False):
    trainer = build_trainer(
        out,
        model_name="test-ae",
        data=dataset,
        flags={"steps": steps, "batch_size": 8, "seed": 3},
        sets=[*QUIET, "train.checkpoint_every=4", "train.keep_last=5", *sets],
        resume=resume,
    )
    return trainer, trainer.fit(resume=resume)


def cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    """Run the genforge command line in this process; (exit status, stderr)."""
    code, _out, err = run_cli(monkeypatch, capsys, *args)
    return code, err


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "ds")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, dataset):
    """16 uninterrupted steps: what every resumed run must end with, bit for bit."""
    out = tmp_path_factory.mktemp("full") / "run"
    train(out, dataset, 16)
    return out


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


# --- a full disk -----------------------------------------------------------------------------------


def test_ingest_on_a_full_disk_keeps_the_previous_dataset(tmp_path, monkeypatch, capsys):
    items = labelled_items(distinct_images(12, size=16), "train")
    out = tmp_path / "ds"
    ingest(items, out, IngestConfig(workers=0))
    before, fingerprint = snapshot(out), open_dataset(out).fingerprint

    # the images (np.save) and the manifest (an atomic JSON write) each run out of space
    real_save = np.save

    def save(file, *args, **kwargs):
        with open(file, "wb") as fh:
            fh.write(b"\x93NUMPY half")
        raise _enospc(file)

    monkeypatch.setattr(np, "save", save)
    with pytest.raises(DiskFullError, match=f"{out}: No space left on device.*intact"):
        ingest(labelled_items(distinct_images(12, size=16, seed=5), "train"), out, IngestConfig(workers=0),
               overwrite=True)  # fmt: skip
    monkeypatch.setattr(np, "save", real_save)
    fail_fsync(monkeypatch)
    with pytest.raises(DiskFullError, match=str(out)):
        ingest(labelled_items(distinct_images(12, size=16, seed=5), "train"), out, IngestConfig(workers=0),
               overwrite=True)  # fmt: skip
    assert snapshot(out) == before and open_dataset(out).fingerprint == fingerprint
    assert leftovers(tmp_path) == []

    # the command line: a message and exit status 2, no traceback
    folder = tmp_path / "folder"
    write_folder(folder, 4, size=12)
    code, err = cli(monkeypatch, capsys, "data", "ingest", folder, "--out", tmp_path / "ds2", "--workers", "0")
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    assert not (tmp_path / "ds2").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("error", ["oserror", "safetensors"])
def test_checkpoint_on_a_full_disk_stops_cleanly_and_resume_continues(tmp_path, dataset, full_run, monkeypatch,
                                                                      error):  # fmt: skip
    run = tmp_path / "run"
    train(run, dataset, 8)  # checkpoints 4 and 8, final weights at 8
    before = snapshot(run / "checkpoints")
    weights = (run / "model.safetensors").read_bytes()

    def save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a checkpoint")
        if error == "oserror":
            raise _enospc(filename)
        # what the safetensors Rust writer raises: its own error, the OS error in the message
        from safetensors import SafetensorError

        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')  # fmt: skip

    monkeypatch.setattr(ckpt, "save_file", save_file)
    with pytest.raises(DiskFullError, match=r"step-0000012.*stopped at step 12.*step-0000008"):
        train(run, dataset, 16, resume=True)
    assert snapshot(run / "checkpoints") == before
    assert (run / "model.safetensors").read_bytes() == weights
    assert leftovers(run.parent) == []

    monkeypatch.undo()
    _, summary = train(run, dataset, 16, resume=True)
    assert summary["step"] == 16 and same_weights(run, full_run)


def test_final_weights_on_a_full_disk_keep_the_previous_model(tmp_path, dataset, monkeypatch):
    run = tmp_path / "run"
    train(run, dataset, 8, sets=["train.checkpoint_every=0"])
    before = {name: (run / name).read_bytes() for name in ("model.json", "model.safetensors")}
    fail_fsync(monkeypatch, only="model.json")  # written after the new weights file
    with pytest.raises(DiskFullError, match=str(run / "model.safetensors")):
        train(run, dataset, 12, sets=["train.checkpoint_every=0"], resume=True)
    assert ckpt.list_steps(run / "checkpoints") == [8, 12]  # it got as far as the final weights
    assert {name: (run / name).read_bytes() for name in before} == before
    assert leftovers(run.parent) == []


@pytest.mark.parametrize("where", ["network", "description"])
def test_export_on_a_full_disk_keeps_the_previous_export(tmp_path, monkeypatch, where):
    from genforge.deploy.export import export_run, sidecar_path
    from test_serve_models import make_run

    run = make_run(tmp_path / "run")
    out = tmp_path / "export" / "model.onnx"
    export_run(run, "onnx", out)
    before = snapshot(out.parent)
    assert set(before) == {"model.onnx", "model.onnx.json"}
    make_run(run, seed=1)  # other weights: a new export would differ from the previous one
    if where == "network":
        def onnx_export(module, args, f, **kwargs):
            Path(f).write_bytes(b"half a network")
            raise _enospc(f)

        monkeypatch.setattr(torch.onnx, "export", onnx_export)
    else:
        fail_fsync(monkeypatch)  # OUT.json, after OUT is written
    with pytest.raises(DiskFullError, match=str(out)):
        export_run(run, "onnx", out)
    assert snapshot(out.parent) == before and leftovers(tmp_path) == []
    assert json.loads(sidecar_path(out).read_text())["file"] == "model.onnx"


def test_eval_on_a_full_disk_keeps_the_previous_metrics(tmp_path, monkeypatch, capsys):
    from genforge.evaluate.evaluate import EvalConfig, evaluate
    from test_eval_fixtures import squares_dataset, tiny_run

    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    ds = squares_dataset(tmp_path / "ds", n_train=60, n_val=60, n_test=20)
    run = tiny_run(tmp_path / "run", ds)
    cfg = dict(n=40, features="random", kid_subsets=3, kid_subset_size=20)
    evaluate(run, ds, EvalConfig(**cfg))
    before = snapshot(run)
    fail_fsync(monkeypatch)
    with pytest.raises(DiskFullError, match="metrics"):
        evaluate(run, ds, EvalConfig(seed=1, **cfg))
    assert snapshot(run) == before and leftovers(tmp_path) == []
    code, err = cli(monkeypatch, capsys, "eval", run, "--ref", ds, "--features", "random", "-n", "40",
                    "--seed", "2", "--no-memorisation")  # fmt: skip
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    assert snapshot(run) == before


# --- damaged checkpoints -----------------------------------------------------------------------------


def _truncate(step_dir: Path) -> None:
    path = step_dir / ckpt.STATE_TENSORS
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _break_json(step_dir: Path) -> None:
    path = step_dir / ckpt.STATE_JSON
    path.write_text(path.read_text()[:100])


def _remove_tensors(step_dir: Path) -> None:
    (step_dir / ckpt.STATE_TENSORS).unlink()


@pytest.mark.parametrize("damage", [_truncate, _break_json, _remove_tensors], ids=["truncated", "json", "missing"])
def test_resume_falls_back_past_a_damaged_latest_checkpoint(tmp_path, dataset, full_run, capsys, damage):
    run = tmp_path / "run"
    train(run, dataset, 12)  # checkpoints 4, 8, 12
    damage(run / "checkpoints" / "step-0000012")
    capsys.readouterr()
    trainer, summary = train(run, dataset, 16, resume=True)
    err = capsys.readouterr().err
    assert "warning:" in err and "step-0000012" in err and "resuming from step-0000008" in err
    assert "Traceback" not in err
    # it continued from step 8, so it ends exactly where the uninterrupted run does
    assert summary["step"] == 16 and same_weights(run, full_run)
    names = sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir())
    assert "step-0000012.corrupt" in names and "step-0000012" in names and "step-0000016" in names
    assert ckpt.list_steps(run / "checkpoints")[-1] == 16


def test_resume_with_no_readable_checkpoint_is_a_clear_error(tmp_path, dataset, monkeypatch, capsys):
    run = tmp_path / "run"
    train(run, dataset, 8)
    _truncate(run / "checkpoints" / "step-0000004")
    _break_json(run / "checkpoints" / "step-0000008")
    with pytest.raises(GenforgeError, match="no checkpoint of the run can be read.*step-0000008.*step-0000004"):
        train(run, dataset, 12, resume=True)
    # nothing is set aside when there is nothing to fall back to
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir()) == ["step-0000004", "step-0000008"]
    code, err = cli(monkeypatch, capsys, "train", "--out", run, "--resume", "--steps", "12")
    assert code == 2 and "no checkpoint of the run can be read" in err and "Traceback" not in err


# --- one writer per directory ------------------------------------------------------------------------

HOLDER = """import sys, time
from genforge.core.lock import DirLock
lock = DirLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def _hold(target: Path) -> subprocess.Popen:
    """A real second process holding the lock of `target` (until killed)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_and_a_dead_holders_lock_taken_over(tmp_path, dataset, monkeypatch, capsys):
    run = tmp_path / "run"
    train(run, dataset, 4)
    out = tmp_path / "ds"
    proc = _hold(run)
    proc_ds = _hold(out)
    try:
        with pytest.raises(LockedError, match=rf"{run} is being written by another process \(PID {proc.pid}"):
            train(run, dataset, 8, resume=True)
        with pytest.raises(LockedError, match=f"PID {proc.pid}"):
            ensure_free(run)
        code, err = cli(monkeypatch, capsys, "train", "--out", run, "--resume", "--steps", "8")
        assert code == 2 and f"PID {proc.pid}" in err and "Traceback" not in err
        with pytest.raises(LockedError, match=f"PID {proc_ds.pid}"):
            ingest(labelled_items(distinct_images(6, size=16), "train"), out, IngestConfig(workers=0))
        assert not out.exists()
    finally:
        for p in (proc, proc_ds):
            p.kill()
            p.wait()
    # killed: its lock file is left with a dead PID; the next writer takes it over
    assert json.loads(lock_path(run).read_text())["pid"] == proc.pid
    trainer, summary = train(run, dataset, 8, resume=True)
    assert summary["step"] == 8 and not lock_path(run).exists()
    with DirLock(out) as lock:
        assert lock.previous["pid"] == proc_ds.pid
        assert json.loads(lock_path(out).read_text())["pid"] == os.getpid()
    assert not lock_path(out).exists()


def test_a_stale_lock_file_of_a_dead_pid_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "ds"
    lock_path(out).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "command": "old"}))
    ensure_free(out)
    result = ingest(labelled_items(distinct_images(6, size=16), "train"), out, IngestConfig(workers=0))
    assert result.path == out and open_dataset(out).split("train").images.shape[0] == 6
    assert not lock_path(out).exists()


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    target = tmp_path / "run"
    with DirLock(target), DirLock(tmp_path / "." / "run"):  # one lock, however the path is spelled
        ensure_free(target)
    assert not lock_path(target).exists()
    with DirLock(target):
        pass


# --- threads -----------------------------------------------------------------------------------------


@pytest.fixture()
def torch_threads():
    saved = torch.get_num_threads()
    yield saved
    torch.set_num_threads(saved)
    threads._PLAN = None


def test_thread_count_from_option_environment_or_free_cores(monkeypatch, torch_threads):
    monkeypatch.delitem(sys.modules, "torch")  # as in a fresh `genforge` process, before torch loads
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(threads, "physical_cores", lambda cpus: 4)
    monkeypatch.setattr(threads, "busy_cores", lambda interval=0.1: 1.7)  # another process at work
    env: dict[str, str] = {}
    plan = threads.configure(None, env)
    assert plan.threads == 2 and plan.source == "free cores"
    assert env == {"OMP_NUM_THREADS": "2", "GOMP_SPINCOUNT": str(threads.SPINCOUNT)}
    env = {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "active"}  # the user's choices stand
    assert threads.configure(None, env).threads == 3 and env == {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "active"}
    env = {"OMP_NUM_THREADS": "3"}
    assert threads.configure(1, env).threads == 1 and env["OMP_NUM_THREADS"] == "1"
    env = {threads.POLICY_ENV: "off"}
    assert threads.configure(None, env).threads is None and env == {threads.POLICY_ENV: "off"}
    monkeypatch.setattr(threads, "busy_cores", lambda interval=0.1: 3.9)
    assert threads.configure(None, {}).threads == 1  # never below one
    monkeypatch.setattr(threads, "busy_cores", lambda interval=0.1: 0.0)
    monkeypatch.setattr(threads, "physical_cores", lambda cpus: 2)  # 4 hyperthreads on 2 cores
    assert threads.configure(None, {}).threads == 2
    with pytest.raises(ConfigError, match="--threads"):
        threads.configure(-1, {})


def test_a_fresh_process_starts_torch_with_the_chosen_threads(tmp_path):
    code = ("import os; from genforge.core import threads; plan = threads.configure({n}); import torch; "
            "print(plan.threads, torch.get_num_threads(), os.environ.get('GOMP_SPINCOUNT'), "
            "os.environ.get('OPENBLAS_THREAD_TIMEOUT'))")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "OPENBLAS_", "GENFORGE_THREAD"))}
    out = subprocess.run([sys.executable, "-c", code.format(n=1)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1", str(threads.SPINCOUNT), str(threads.BLAS_TIMEOUT)]
    out = subprocess.run([sys.executable, "-c", code.format(n=None)], env={**env, threads.POLICY_ENV: "off"},
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "None" and out.stdout.split()[2:] == ["None", "None"]
    out = subprocess.run([sys.executable, "-c", code.format(n=1)], env={**env, "OPENBLAS_THREAD_TIMEOUT": "28"},
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[2:] == [str(threads.SPINCOUNT), "28"]  # the user's setting stands


def test_wait_policy_leaves_loaded_runtimes_alone(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch")
    assert threads.set_wait_policy(env := {}) == env == {"GOMP_SPINCOUNT": str(threads.SPINCOUNT)}  # numpy loaded
    monkeypatch.delitem(sys.modules, "numpy")
    assert threads.set_wait_policy(env := {"OMP_WAIT_POLICY": "passive"}) == {
        "OPENBLAS_THREAD_TIMEOUT": str(threads.BLAS_TIMEOUT)
    }


COMPUTE_COMMANDS = [["train"], ["sample"], ["restore"], ["eval"], ["evaluator", "train"], ["report"],
                    ["data", "ingest"], ["export"], ["run"]]  # fmt: skip


@pytest.mark.parametrize("command", COMPUTE_COMMANDS, ids=" ".join)
def test_every_compute_command_has_a_threads_option(command):
    from typer.testing import CliRunner

    from genforge.cli import app

    res = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "--threads" in res.output


def test_threads_option_applies_to_train_sample_eval_ingest(tmp_path, dataset, monkeypatch, capsys, torch_threads):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    other = 1 if torch_threads > 1 else 2
    run = tmp_path / "run"
    commands = [
        ["train", "--model", "test-ae", "--data", dataset, "--out", run, "--steps", "2", "-b", "8",
         "--set", "train.progress=none", "--set", "train.tensorboard=false"],
        ["sample", run, "-n", "4", "--out", tmp_path / "s.npz"],
        ["eval", run, "--ref", dataset, "-n", "16", "--features", "random", "--metric", "fid", "--no-memorisation"],
        ["data", "ingest", tmp_path / "folder", "--out", tmp_path / "ds2", "--workers", "0"],
    ]  # fmt: skip
    write_folder(tmp_path / "folder", 4, size=12)
    for args in commands:
        torch.set_num_threads(torch_threads)
        code, err = cli(monkeypatch, capsys, *args, "--threads", other)
        assert code == 0, (args[0], err)
        assert torch.get_num_threads() == other, args[0]
    assert (run / "metrics.json").is_file() and (tmp_path / "ds2" / "manifest.json").is_file()
    assert json.loads((run / "run.json").read_text())["torch_threads"] == other
