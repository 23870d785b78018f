"""bench/common.py, the helpers the benchmark scripts share: markdown tables, the thread-clean
environment of the genforge processes they start, running one into a log, the CPU model; and that
no script keeps its own copy of them."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load():
    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "common.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = _load()


def test_markdown_table_lines_and_bad_shapes():
    lines = common.markdown_table(["policy", "slowdown"], [["old", "2.40x"], ["new", 1.5]], align="lr")
    assert lines == ["| policy | slowdown |", "| --- | ---: |", "| old | 2.40x |", "| new | 1.5 |"]
    assert common.markdown_table(["a"], [])[1] == "| --- |"
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        common.markdown_table(["a", "b", "c"], [[1, 2, 3], [1, 2]])
    with pytest.raises(ValueError, match="align: one of l/r per column"):
        common.markdown_table(["a", "b"], [], align="lc")


def test_thread_environment_drops_the_shell_thread_settings(monkeypatch):
    for name, value in {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "1",
                        "KMP_AFFINITY": "x", "MKL_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2",
                        "GENFORGE_THREAD_POLICY": "off", "KEEP_ME": "1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    env = common.thread_environment()
    assert env["KEEP_ME"] == "1" and env["PATH"] == os.environ["PATH"]
    assert not [k for k in env if k.startswith(common.THREAD_VARIABLES)]
    assert common.thread_environment(OMP_NUM_THREADS="1", COLUMNS="160") == {**env, "OMP_NUM_THREADS": "1",
                                                                             "COLUMNS": "160"}  # fmt: skip
    assert os.environ["OMP_NUM_THREADS"] == "3"  # this process's own environment is left alone


def test_run_logged_writes_the_command_then_the_output(tmp_path):
    code = "import sys; print('out', flush=True); print('err', file=sys.stderr, flush=True); sys.exit(3)"
    log = tmp_path / "logs" / "child.log"
    rc, wall = common.run_logged([sys.executable, "-c", code], log, cwd=tmp_path)
    assert rc == 3 and 0 < wall < 60
    lines = log.read_text().splitlines()
    assert lines[0].startswith("$ ") and lines[0].endswith("sys.exit(3)'") and lines[1:] == ["out", "err"]
    assert common.log_tail(log, 2) == ["out", "err"]
    assert common.log_tail(tmp_path / "absent.log", 3) == []
    assert common.genforge_command("run", "--seed", 0) == [
        sys.executable,
        "-m",
        "genforge",
        "run",
        "--seed",
        "0",
    ]


def test_cpu_model(monkeypatch):
    name = common.cpu_model()
    lscpu = shutil.which("lscpu")
    if lscpu:
        out = subprocess.run([lscpu], capture_output=True, text=True).stdout
        found = re.search(r"^\s*model name:\s*(.+)$", out, re.I | re.M)
        assert name == (found.group(1).strip() if found else name)
    assert name
    monkeypatch.setenv("PATH", "")  # no lscpu: the platform's name, or a plain "unknown CPU"
    assert common.cpu_model() == (common.platform.processor() or "unknown CPU")


def test_no_bench_script_keeps_its_own_copy():
    copies = [p.name for p in BENCH.glob("*.py") if p.name != "common.py" and '["lscpu"]' in p.read_text()]
    assert copies == []
