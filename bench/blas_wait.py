"""A denoiser's real-time factor inside the speech-enhancement metric loop, where pystoi's numpy
matrix products run between the model's calls, with numpy's OpenBLAS idle threads spinning 2^28
CPU cycles after each call (OpenBLAS's default, about 0.1 s) against 2^20 (the wait policy of
`genforge.core.threads.set_wait_policy`, which every `genforge` command applies).

    .venv/bin/python bench/blas_wait.py --run RUN --data DATASET [--rounds 4] [--strings 12]

OpenBLAS reads OPENBLAS_THREAD_TIMEOUT once, when numpy loads it, so every measurement is a fresh
process; the settings alternate within each round (which goes first alternates too), and the
table gives each setting's median with the per-round ratios, plus the CPU time the hypervisor
stole from this machine during each measurement (/proc/stat), which moves these numbers more than
anything else on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import cpu_model, markdown_table, thread_environment

SETTINGS = {"OpenBLAS default (2^28 cycles)": "28", "wait policy (2^20 cycles)": "20"}


def steal_jiffies() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs so far."""
    values = list(map(int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]))
    return values[7], sum(values[:8])


def child(run: Path, data: Path, strings: int, threads: int) -> None:
    from genforge.core.threads import set_wait_policy

    set_wait_policy()  # keeps the OPENBLAS_THREAD_TIMEOUT the parent chose
    import torch

    torch.set_num_threads(threads)
    from genforge.data.canonical import open_dataset
    from genforge.evaluate.audio.enhancement import EnhanceEvalConfig, enhancement_metrics, held_out_clips
    from genforge.models.pipeline import load_pipeline

    pipe = load_pipeline(run)
    dataset = open_dataset(data)
    cfg = EnhanceEvalConfig(strings=strings, kinds=["white", "pink"], snr_db=[5.0], seed=0)
    clips, speakers = held_out_clips(dataset.reference_split, cfg.trim_db, dataset.sample_rate)
    values, _ = enhancement_metrics(pipe.restore, clips, pipe.sample_rate, cfg, speakers)
    print(json.dumps({"rtf": values["rtf"], "noisereduce_rtf": values["noisereduce_rtf"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a trained denoiser run")
    ap.add_argument("--data", type=Path, required=True, help="its audio dataset (the held-out split is scored)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--strings", type=int, default=12, help="digit strings per noise type (white, pink at 5 dB)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.child:
        child(args.run, args.data, args.strings, args.threads)
        return
    results: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for r in range(args.rounds):
        order = list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
        for name in order:
            cmd = [sys.executable, __file__, "--child", "--run", str(args.run), "--data", str(args.data),
                   "--strings", str(args.strings), "--threads", str(args.threads)]  # fmt: skip
            s0, t0 = steal_jiffies()
            out = subprocess.run(
                cmd, env=thread_environment(OPENBLAS_THREAD_TIMEOUT=SETTINGS[name]), capture_output=True, text=True
            )
            s1, t1 = steal_jiffies()
            if out.returncode:
                sys.exit(out.stderr)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["steal"] = (s1 - s0) / max(t1 - t0, 1)
            results[name].append(row)
            print(f"round {r + 1} {name}: model {row['rtf']:.0f}, noisereduce {row['noisereduce_rtf']:.0f}, "
                  f"steal {row['steal']:.0%}", flush=True)  # fmt: skip
    base, new = (results[name] for name in SETTINGS)
    ratios = [n["rtf"] / b["rtf"] for b, n in zip(base, new, strict=True)]
    rows = [
        [
            name,
            f"{statistics.median(x['rtf'] for x in rs):.0f}",
            ", ".join(f"{x['rtf']:.0f}" for x in rs),
            f"{statistics.median(x['noisereduce_rtf'] for x in rs):.0f}",
            ", ".join(f"{x['steal']:.0%}" for x in rs),
        ]
        for name, rs in results.items()
    ]
    lines = [
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, {args.threads} threads; run {args.run}; "
        f"{args.rounds} rounds, {args.strings} digit strings each of white and pink noise at 5 dB per measurement.",
        "",
        *markdown_table(
            ["OpenBLAS idle threads spin", "model real-time factor (median)", "per round",
             "noisereduce's (median)", "CPU stolen per round"],  # fmt: skip
            rows,
            align="lrrrr",
        ),
        "",
        f"Per-round ratio, wait policy / default: {', '.join(f'{x:.2f}x' for x in ratios)} "
        f"(median {statistics.median(ratios):.2f}x).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
