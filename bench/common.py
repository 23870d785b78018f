"""What the benchmark scripts share: the machine's CPU model, the environment and command of the
genforge processes they start, running one with its output in a log, and markdown tables.

The scripts run as `.venv/bin/python bench/NAME.py`, which puts bench/ first on `sys.path`, so
`import common` finds this module (as `import foreign_sets` finds that one).
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the variables that set a process's threads and how its idle OpenMP threads wait
THREAD_VARIABLES = (
    "OMP_",
    "GOMP_",
    "KMP_",
    "MKL_NUM_THREADS",
    "OPENBLAS_",
    "GENFORGE_THREAD_POLICY",
)


def cpu_model() -> str:
    """lscpu's model name (the platform's processor name where lscpu is absent or says none)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        out = ""
    for line in out.splitlines():
        if line.strip().lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def thread_environment(**settings: str) -> dict[str, str]:
    """This process's environment without the calling shell's thread settings (THREAD_VARIABLES),
    plus `settings`: a child genforge then picks its threads itself (core/threads.py) unless a
    setting says otherwise, whatever the shell that started the benchmark had exported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(THREAD_VARIABLES)}
    return {**env, **settings}


def genforge_command(*args: object) -> list[str]:
    """`genforge ARGS` as a fresh process of this interpreter, as a user starts it."""
    return [sys.executable, "-m", "genforge", *map(str, args)]


def run_logged(
    cmd: Sequence[str], log: Path, *, env: dict[str, str] | None = None, cwd: Path | None = REPO
) -> tuple[int, float]:
    """Run `cmd` with its stdout and stderr into the file `log` (after a first line `$ CMD`);
    (exit code, wall seconds)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        fh.write("$ " + shlex.join(map(str, cmd)) + "\n")
        fh.flush()  # before the child writes to the same file
        code = subprocess.run(list(cmd), stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, env=env).returncode
    return code, time.perf_counter() - t0


def log_tail(log: Path, lines: int) -> list[str]:
    """The last `lines` non-blank lines of a log (what a failure is reported with)."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    return [ln for ln in text.splitlines() if ln.strip()][-lines:]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> list[str]:
    """The lines of a markdown table; `align` has a letter per column, `l` or `r` (default all `l`)."""
    align = align or "l" * len(header)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align: one of l/r per column ({len(header)}), got {align!r}")
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = []
    for row in [header, rule, *rows]:
        if len(row) != len(header):
            raise ValueError(f"markdown table row {list(row)}: {len(row)} cells for {len(header)} columns")
        lines.append("| " + " | ".join(map(str, row)) + " |")
    return lines


def emit(lines: Sequence[str], out: Path | None) -> None:
    """Print a report's lines, and write them to `out` when given (atomically: a rerun that fails
    halfway leaves the previous report whole)."""
    from genforge.core.atomic import write_text

    text = "\n".join(lines) + "\n"
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text(out, text)
