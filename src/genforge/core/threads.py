"""CPU threads of a compute command: how many, and how idle OpenMP threads wait.

PyTorch (and MKL) run each operation on an OpenMP team of one thread per physical core, and
libgomp's idle threads spin for about 3 ms (GOMP_SPINCOUNT 300,000) before they sleep. Alone,
that is fastest. Two such processes on one machine (training and evaluation, two users) put 4
threads on 2 cores: each operation waits for a team member the scheduler has descheduled while
the other members spin on the cores it needs, a slowdown far beyond 2x (bench/two_processes.py,
BENCHMARKS.md). `configure`, called by every compute command before torch starts, therefore:

- takes the thread count from `--threads N`, else from `OMP_NUM_THREADS`, else from the cores
  left free: the usable cores (CPU affinity and cgroup CPU quota, at most one thread per
  physical core) less those other processes kept busy during a 0.1 s look at /proc/stat, at
  least 1;
- bounds how long idle OpenMP threads spin (GOMP_SPINCOUNT, unless OMP_WAIT_POLICY or
  GOMP_SPINCOUNT is set): a thread still catches the next operation of a step, but gives its core
  up quickly to another process that needs it;
- bounds how long numpy's OpenBLAS threads spin after a call (OPENBLAS_THREAD_TIMEOUT, unless
  set): about 0.1 s by default, during which torch's threads in the same process compete with
  them for the cores. Scoring speech enhancement (pystoi's matrix products between the model's
  calls) measured the model at 26-28x real time that way instead of 79-107x
  (BENCHMARKS.md, "Speech enhancement").

`GENFORGE_THREAD_POLICY=off` leaves all of this to torch, OpenMP and OpenBLAS (the behaviour before); an explicit
`--threads` still applies. In a process that imported torch before (a notebook, the tests), only
an explicit `--threads` changes anything: the host program owns its threads.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from genforge.core.errors import ConfigError

POLICY_ENV = "GENFORGE_THREAD_POLICY"  # "off": torch's and OpenMP's own defaults
# libgomp spins this many times (a pause instruction each: roughly 0.03-0.5 ms, by CPU) before a
# waiting thread sleeps; its default is 300,000 and OMP_WAIT_POLICY=passive means 0
SPINCOUNT = 10000
# OpenBLAS's idle threads spin for 2**n CPU cycles before they sleep (its default n = 28: about
# 0.1 s); 2**20 is about 0.4 ms at 2.5 GHz, the same order as SPINCOUNT
BLAS_TIMEOUT = 20
SAMPLE_S = 0.1  # how long to watch /proc/stat for other processes' load
THREADS_HELP = (
    "CPU threads (default: $OMP_NUM_THREADS, else the cores not busy with other processes at start)."
)


@dataclass
class ThreadPlan:
    threads: int | None  # None: left to torch (policy off, or a host program's torch)
    source: str  # --threads | OMP_NUM_THREADS | free cores | torch
    cores: int = 0  # usable cores
    busy: float | None = None  # cores busy with other processes at start (free-cores only)
    env: dict[str, str] = field(default_factory=dict)  # variables this call set

    def describe(self) -> str:
        if self.threads is None:
            return f"threads: torch's default ({self.source})"
        busy = f", {self.busy:.1f} busy" if self.busy is not None else ""
        return f"threads: {self.threads} ({self.source}; {self.cores} usable cores{busy})"


_PLAN: ThreadPlan | None = None


def _affinity() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _quota_cores() -> float | None:
    """CPU quota of this process's cgroup in cores (v2 cpu.max, v1 cfs quota), None if unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def physical_cores(cpus: list[int]) -> int:
    """Distinct physical cores among `cpus` (hyperthread siblings counted once)."""
    seen = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            seen.add((topo / "physical_package_id").read_text().strip() + ":" + (topo / "core_id").read_text().strip())
        except OSError:
            return len(cpus)
    return len(seen) or len(cpus)


def usable_cores() -> int:
    cpus = _affinity()
    quota = _quota_cores()
    return max(1, min(len(cpus), math.ceil(quota)) if quota else len(cpus))


def _cpu_times(cpus: set[int]) -> dict[int, tuple[int, int]] | None:
    """cpu -> (busy, total) jiffies from /proc/stat, for the cpus in `cpus`."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    out = {}
    for line in lines:
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        cpu = int(name[3:])
        if cpu in cpus and len(values) >= 7:
            # user nice system idle iowait irq softirq (steal: the hypervisor's, not a neighbour's)
            user, nice, system, idle, iowait, irq, softirq = map(int, values[:7])
            out[cpu] = (user + nice + system + irq + softirq, user + nice + system + idle + iowait + irq + softirq)
    return out


def busy_cores(interval: float = SAMPLE_S) -> float | None:
    """Cores of this process's CPU set that other processes kept busy over `interval` seconds."""
    cpus = set(_affinity())
    before = _cpu_times(cpus)
    if not before:
        return None
    time.sleep(interval)  # this process sleeps meanwhile: what is busy is someone else
    after = _cpu_times(cpus) or {}
    busy = 0.0
    for cpu, (b0, t0) in before.items():
        b1, t1 = after.get(cpu, (b0, t0))
        if t1 > t0:
            busy += (b1 - b0) / (t1 - t0)
    return busy


def _env_threads(environ: MutableMapping[str, str]) -> int | None:
    raw = environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else None


def set_wait_policy(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Bound the spinning of idle OpenMP threads and of numpy's OpenBLAS threads, each unless the
    user chose its setting or its runtime is already loaded (torch, numpy: they read it once, at
    load); returns the variables set."""
    environ = os.environ if environ is None else environ
    if environ.get(POLICY_ENV, "").lower() == "off":
        return {}
    env = {}
    if "torch" not in sys.modules and not any(k in environ for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")):
        env["GOMP_SPINCOUNT"] = str(SPINCOUNT)
    if "numpy" not in sys.modules and "OPENBLAS_THREAD_TIMEOUT" not in environ:
        env["OPENBLAS_THREAD_TIMEOUT"] = str(BLAS_TIMEOUT)
    environ.update(env)
    return env


def configure(threads: int | None = None, environ: MutableMapping[str, str] | None = None) -> ThreadPlan:
    """Choose and apply this process's CPU threads (see the module docstring); `threads` is the
    `--threads` option (None or 0: automatic)."""
    global _PLAN
    environ = os.environ if environ is None else environ
    if threads is not None and threads < 0:
        raise ConfigError(f"--threads: expected 1 or more (0 = automatic), got {threads}")
    torch_loaded = "torch" in sys.modules
    cores = usable_cores()
    env = set_wait_policy(environ)
    busy = None
    if threads:
        plan = ThreadPlan(threads, "--threads", cores)
    elif (from_env := _env_threads(environ)) is not None:
        plan = ThreadPlan(from_env, "OMP_NUM_THREADS", cores)
    elif environ.get(POLICY_ENV, "").lower() == "off":
        plan = ThreadPlan(None, f"{POLICY_ENV}=off", cores)
    elif torch_loaded:
        plan = ThreadPlan(None, "torch already loaded", cores)
    else:
        busy = busy_cores()
        limit = min(cores, physical_cores(_affinity()))
        free = cores - (busy or 0.0)
        plan = ThreadPlan(max(1, min(limit, math.floor(free + 0.5))), "free cores", cores, busy)
    if plan.threads is not None:
        if not torch_loaded:
            if environ.get("OMP_NUM_THREADS") != str(plan.threads):
                environ["OMP_NUM_THREADS"] = str(plan.threads)
                env["OMP_NUM_THREADS"] = str(plan.threads)
        elif plan.source == "--threads":
            import torch

            torch.set_num_threads(plan.threads)
    plan.env = env
    _PLAN = plan
    return plan


def budget() -> int:
    """Threads this process may use: the configured count, else the usable cores."""
    if _PLAN is not None and _PLAN.threads is not None:
        return _PLAN.threads
    return usable_cores()
