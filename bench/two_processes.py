"""Two genforge processes on one machine: each alone, then both at once, under each thread policy.

    .venv/bin/python bench/two_processes.py [--steps 300] [--model dcgan] [--model-b MODEL]
        [--policies old,new,passive,1thread] [--repeat 1] [--out FILE.md]

The workload is `genforge train` (a fresh process per run, as a user starts it) of a small model
for a fixed number of steps on a synthetic 28x28 grey dataset; process B is the same command with
another seed (or `--model-b`). "Together": A starts, and B starts `--delay` seconds after A began
training (a training run, then an evaluation or a second user's run beside it). The times are
training times (the last `time` of each run's metrics.jsonl: no start-up, no final save); the
slowdown is together / alone, so 2.0 is what two processes sharing the cores fairly would give and
anything far above it is contention. Policies (the environment of both processes):

    old      GENFORGE_THREAD_POLICY=off: torch's threads (one per physical core) and libgomp's
             default spin (~3 ms) of idle threads, i.e. the behaviour before issue 14
    new      genforge's defaults (src/genforge/core/threads.py): threads from the cores free at
             start, GOMP_SPINCOUNT bounded
    passive  new with OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads sleep at once)
    1thread  OMP_NUM_THREADS=1 for both processes

Every OMP_*/GOMP_*/KMP_*/MKL_NUM_THREADS/OPENBLAS_NUM_THREADS variable of the calling shell is
removed first. The report is a markdown table, with `lscpu`'s model name, the core count and the
command line; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import REPO, cpu_model, genforge_command, markdown_table, thread_environment

POLICIES = {
    "old": {"GENFORGE_THREAD_POLICY": "off"},
    "new": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "1thread": {"OMP_NUM_THREADS": "1"},
}


def make_dataset(path: Path, n: int, size: int) -> Path:
    """n grey size x size images of a bright square on noise, 4 classes (its quadrant)."""
    sys.path.insert(0, str(REPO / "src"))
    from genforge.data.canonical import SplitData, write_dataset

    rng = np.random.default_rng(0)
    labels = np.arange(n) % 4
    images = rng.normal(40, 20, (n, size, size, 1))
    half, side = size // 2, max(2, size // 5)
    for i, c in enumerate(labels):
        y, x = divmod(int(c), 2)
        oy, ox = rng.integers(0, half - side + 1, 2)
        images[i, y * half + oy : y * half + oy + side, x * half + ox : x * half + ox + side] += 180
    images = np.clip(images, 0, 255).astype(np.uint8)
    cut = n - n // 8
    splits = {"train": SplitData(images[:cut], labels[:cut]), "val": SplitData(images[cut:], labels[cut:])}
    path.mkdir(parents=True, exist_ok=True)
    write_dataset(path, splits, class_names=["q0", "q1", "q2", "q3"], meta={"source": "bench-two-processes"})
    return path


def command(args, dataset: Path, out: Path, model: str, seed: int) -> list[str]:
    return genforge_command(
        "train", "--model", model, "--data", dataset, "--out", out,
        "--steps", args.steps, "--batch-size", args.batch_size, "--seed", seed,
        "--set", "train.progress=none", "--set", "train.tensorboard=false", "--set", "train.sample_every=0",
        "--set", "train.checkpoint_every=0", "--set", f"train.log_every={max(1, args.steps // 10)}",
    )  # fmt: skip


def result(out: Path, wall: float) -> dict[str, float]:
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    run = json.loads((out / "run.json").read_text())
    return {"train_s": float(records[-1]["time"]), "wall_s": wall, "threads": run.get("torch_threads", 0)}


LIVE: list[subprocess.Popen] = []  # killed if the bench itself is interrupted


def start(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, float]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    LIVE.append(proc)
    return proc, time.monotonic()


def finish(proc: subprocess.Popen, t0: float, what: str) -> float:
    _, err = proc.communicate()
    LIVE.remove(proc)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}):\n{err[-3000:]}")
    return time.monotonic() - t0


def alone(args, work: Path, dataset: Path, policy: str, which: str, model: str, seed: int) -> dict[str, float]:
    out = work / f"{policy}-{which}-alone-{time.monotonic_ns()}"
    proc, t0 = start(command(args, dataset, out, model, seed), thread_environment(**POLICIES[policy]))
    return result(out, finish(proc, t0, f"{policy} {which} alone"))


def together(args, work: Path, dataset: Path, policy: str) -> tuple[dict[str, float], dict[str, float]]:
    tag = time.monotonic_ns()
    out_a, out_b = work / f"{policy}-A-together-{tag}", work / f"{policy}-B-together-{tag}"
    env = thread_environment(**POLICIES[policy])
    proc_a, t_a = start(command(args, dataset, out_a, args.model, 1), env)
    deadline = time.monotonic() + 300
    while not (out_a / "run.json").exists():  # written when A begins training
        if proc_a.poll() is not None or time.monotonic() > deadline:
            finish(proc_a, t_a, f"{policy} A together")
            raise SystemExit(f"{policy}: process A ended before training")
        time.sleep(0.05)
    time.sleep(args.delay)
    proc_b, t_b = start(command(args, dataset, out_b, args.model_b or args.model, 2), env)
    wall_b = finish(proc_b, t_b, f"{policy} B together")
    wall_a = finish(proc_a, t_a, f"{policy} A together")
    return result(out_a, wall_a), result(out_b, wall_b)


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def measure(args, policies: list[str]) -> list[tuple]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="genforge-two-") as tmp:
        work = Path(tmp)
        dataset = make_dataset(work / "data", args.images, args.size)
        for policy in policies:
            runs: dict[str, list[dict[str, float]]] = {"A alone": [], "B alone": [], "A together": [], "B together": []}
            for _ in range(args.repeat):
                runs["A alone"].append(alone(args, work, dataset, policy, "A", args.model, 1))
                runs["B alone"].append(alone(args, work, dataset, policy, "B", args.model_b or args.model, 2))
                a, b = together(args, work, dataset, policy)
                runs["A together"].append(a)
                runs["B together"].append(b)
            for proc in ("A", "B"):
                solo, both = runs[f"{proc} alone"], runs[f"{proc} together"]
                rows.append(
                    (policy, proc, f"{median(solo, 'threads'):g} / {median(both, 'threads'):g}",
                     median(solo, "train_s"), median(both, "train_s"), median(both, "train_s") / median(solo, "train_s"),
                     median(solo, "wall_s"), median(both, "wall_s"))
                )  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300, help="training steps of each process")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--model", default="dcgan", help="model of process A (and B unless --model-b)")
    ap.add_argument("--model-b", default=None)
    ap.add_argument("--size", type=int, default=28, help="image size of the synthetic dataset")
    ap.add_argument("--images", type=int, default=2048, help="images in the synthetic dataset")
    ap.add_argument("--policies", default="old,new,passive,1thread")
    ap.add_argument("--delay", type=float, default=1.0, help="seconds after A starts training that B starts")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each measurement (the median is shown)")
    ap.add_argument("--out", type=Path, default=None, help="also write the report to this file")
    args = ap.parse_args()
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown:
        ap.error(f"unknown policies {unknown}; known: {', '.join(POLICIES)}")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (below) on `timeout`/kill too
    t_start = time.monotonic()
    try:
        rows = measure(args, policies)
    finally:
        for proc in LIVE:
            proc.kill()
            proc.wait()

    import torch

    lines = [
        f"Machine: {cpu_model()} (lscpu), `nproc` {os.cpu_count()}, torch {torch.__version__}; "
        f"{args.model}{' / ' + args.model_b if args.model_b else ''}, {args.steps} steps of batch {args.batch_size}, "
        f"{args.size}x{args.size} grey, B started {args.delay:g} s after A began training, median of {args.repeat}.",
        f"Command: `{' '.join(['.venv/bin/python', 'bench/two_processes.py', *sys.argv[1:]])}` "
        f"({time.monotonic() - t_start:.0f} s)",
        "",
        *markdown_table(
            ["policy", "process", "threads alone / together", "train s alone", "train s together", "slowdown",
             "wall s alone", "wall s together"],
            [[policy, proc, thr, f"{solo:.1f}", f"{both:.1f}", f"{ratio:.2f}x", f"{wall_solo:.1f}", f"{wall_both:.1f}"]
             for policy, proc, thr, solo, both, ratio, wall_solo, wall_both in rows],
            align="lllrrrrr",
        ),
    ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
