"""A training step of genforge's gpt against nanoGPT's, side by side in one process, in CPU time.

    .venv/bin/python bench/text_train_speed.py [--threads 1 2] [--steps 150] [--repeats 3]
                                               [--precision auto fp32] [--batch 12 64] [--profile]
                                               [--compile]

Both at nanoGPT's CPU recipe size (4 layers, 4 heads, 128 wide, context 64, char vocabulary of
tiny Shakespeare, batch 12, its recipe's; `--batch` adds larger ones, the same for both). nanoGPT's step is its `train.py` loop body on CPU (`model.py` from
`../shared/anchors/nanogpt`, imported from a temporary copy): a random batch from the token array,
forward in fp32 (its CPU context is a null context), backward, gradient clipping at 1, AdamW
(foreach: it fuses only on CUDA), zero_grad, the lr set per step and `loss.item()` for its
per-iteration log. genforge's step is its real training loop (`Trainer.fit` through
`build_trainer`, as `genforge train` runs it, EMA off as the shakespeare recipe): one iteration is
the time between two budget checks at the loop's top, so it counts the feed, autocast, the
optimiser, clipping, the divergence guard and the logging the loop does.

The machine is shared, so each iteration is timed in CPU time: `thread_time` (the main thread:
the Python and dispatch overhead, and with one thread all of the work) and `process_time` (every
thread of the process, OpenMP's workers included). The two run alternately, `--repeats` times
each, and the table gives the median per-iteration time over all repeats (the first 20
iterations of each run left out) and genforge's tokens/s relative to nanoGPT's.

`--compile` also runs genforge with `train.compile=true` (train/compile.py: its whole forward
compiled by inductor) beside the eager runs, rows "<precision>+compile", and prints each compiled run's first
iteration in wall-clock seconds: the compile, cold when TORCHINDUCTOR_CACHE_DIR is empty, warm when
an earlier process filled it (the repeats after the first are warm).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
NANOGPT = SHARED / "anchors" / "nanogpt"
INPUT = SHARED / "data" / "tinyshakespeare" / "input.txt"
SIZE = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64}
BATCH, WARMUP = 12, 20
CLOCKS = {"thread": time.thread_time, "process": time.process_time}


def nanogpt_module(work: Path):
    shutil.copy(NANOGPT / "model.py", work / "nanogpt_model.py")
    spec = importlib.util.spec_from_file_location("nanogpt_model", work / "nanogpt_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nanogpt_run(nano, data: np.ndarray, vocab: int, steps: int, batch: int = BATCH) -> dict[str, list[float]]:
    """nanoGPT's train.py loop body (CPU, no compile, gradient accumulation 1), per-iteration times."""
    torch.manual_seed(1337)
    model = nano.GPT(nano.GPTConfig(**SIZE, vocab_size=vocab, dropout=0.0, bias=False))
    model.train()
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")
    block, times = SIZE["block_size"], {k: [] for k in CLOCKS}

    def get_batch():
        ix = torch.randint(len(data) - block, (batch,))
        x = torch.stack([torch.from_numpy(data[i : i + block].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + block].astype(np.int64)) for i in ix])
        return x, y

    x, y = get_batch()
    for it in range(steps + 1):
        stamps = {k: c() for k, c in CLOCKS.items()}
        lr = 1e-3 * min(1.0, (it + 1) / 100)  # its get_lr: warmup then cosine, a few floats
        for group in opt.param_groups:
            group["lr"] = lr
        _, loss = model(x, y)
        x, y = get_batch()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # its per-iteration log line
        if it:
            for k, c in CLOCKS.items():
                times[k].append(c() - stamps[k])
    return times


def genforge_dataset(work: Path, text: str) -> tuple[Path, int]:
    from genforge.data.text import CharTokenizer, TextDoc, write_text_dataset

    cut = int(len(text) * 0.9)
    tok = CharTokenizer.train([text[:cut]])
    splits = {"train": [TextDoc("input.txt", text[:cut])], "val": [TextDoc("input.txt", text[cut:])]}
    directory = work / "ds"
    write_text_dataset(directory, splits, tok, {"source": {"kind": "bench"}})
    return directory, tok.vocab_size


def genforge_run(
    data: Path,
    run_dir: Path,
    steps: int,
    precision: str,
    sets: list[str],
    on_iteration=None,
    batch: int = BATCH,
) -> dict[str, list[float]]:
    """`genforge train`'s loop for `steps` steps; one iteration = between two budget checks."""
    from genforge.train.launch import build_trainer

    model_sets = [f"model.{k}={v}" for k, v in SIZE.items()]
    trainer = build_trainer(
        run_dir, model_name="gpt", data=data,
        flags={"steps": steps, "batch_size": batch, "precision": precision, "ema": False},
        sets=[*model_sets, "train.progress=none", "train.tensorboard=false", "train.sample_every=0", *sets],
    )  # fmt: skip
    clocks = {**CLOCKS, "wall": time.perf_counter}  # wall: the compile's first iteration (--compile)
    times: dict[str, list[float]] = {k: [] for k in clocks}
    last: dict[str, float] = {}
    check = trainer.budget.exhausted

    def timed(*args, **kwargs):
        now = {k: c() for k, c in clocks.items()}
        if last:
            for k in clocks:
                times[k].append(now[k] - last[k])
        last.update(now)
        if on_iteration is not None:
            on_iteration(len(times["thread"]))
        return check(*args, **kwargs)

    trainer.budget.exhausted = timed  # the loop's top: once per iteration
    trainer.fit()
    return {k: v[:steps] for k, v in times.items()}


def profile(data: Path, run_dir: Path, precision: str, sets: list[str]) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    prof = torch_profile(activities=[ProfilerActivity.CPU])

    def window(i: int) -> None:  # 40 steady steps: not the warmup, not the final samples
        if i == WARMUP:
            prof.start()
        elif i == WARMUP + 40:
            prof.stop()

    genforge_run(data, run_dir, WARMUP + 50, precision, sets, window)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=60))


def median_ms(runs: list[dict[str, list[float]]], clock: str) -> float:
    return 1000 * statistics.median(t for r in runs for t in r[clock][WARMUP:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precision", nargs="+", default=["auto", "fp32"])
    ap.add_argument("--batch", type=int, nargs="+", default=[BATCH], help="batch sizes (both tools)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra genforge --set KEY=VALUE")
    ap.add_argument(
        "--profile", action="store_true", help="print torch's profile of 40 steady genforge steps"
    )
    ap.add_argument("--compile", action="store_true", help="also genforge with train.compile=true")
    args = ap.parse_args()
    if not INPUT.is_file() or not NANOGPT.is_dir():
        sys.exit(f"needs {INPUT} and {NANOGPT}")
    text = INPUT.read_text()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        nano = nanogpt_module(work)
        ds, vocab = genforge_dataset(work, text)
        chars = sorted(set(text))
        ids = np.searchsorted(np.array(chars), np.array(list(text))).astype(np.uint16)
        train = ids[: int(len(ids) * 0.9)]
        if args.profile:
            torch.set_num_threads(args.threads[0])
            profile(ds, work / "profile", args.precision[0], args.sets)
            return
        print(
            f"torch {torch.__version__}; per-iteration CPU time, median of {args.repeats} x {args.steps} steps"
        )
        print(
            "| threads | batch | genforge precision | clock | nanoGPT ms/step | genforge ms/step "
            "| genforge/nanoGPT tokens/s |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        n = 0
        variants = [*args.precision, *(f"{p}+compile" for p in args.precision if args.compile)]
        for threads in args.threads:
            torch.set_num_threads(threads)
            for batch in args.batch:
                nano_runs, ours = [], {p: [] for p in variants}
                for _ in range(args.repeats):
                    nano_runs.append(nanogpt_run(nano, train, len(chars), args.steps, batch))
                    for p in variants:
                        n += 1
                        precision, compiled = p.removesuffix("+compile"), p.endswith("+compile")
                        extra = [*args.sets, *(["train.compile=true"] if compiled else [])]
                        t0 = time.perf_counter()
                        ours[p].append(genforge_run(ds, work / f"run{n}", args.steps, precision, extra, batch=batch))
                        if compiled:
                            print(f"({p}, {threads} threads: the run's first iteration took "
                                  f"{ours[p][-1]['wall'][0]:.1f} s wall, the run {time.perf_counter() - t0:.1f} s)")
                for p in variants:
                    for clock in CLOCKS:
                        a, b = median_ms(nano_runs, clock), median_ms(ours[p], clock)
                        print(
                            f"| {threads} | {batch} | {p} | {clock} | {a:.2f} | {b:.2f} | {a / b:.2f}x |",
                            flush=True,
                        )
        print(
            f"({SIZE['block_size']} tokens per sequence; nanoGPT's vocabulary {len(chars)}, genforge's {vocab})"
        )


if __name__ == "__main__":
    main()
