"""Training-batch loading and batch augmentation throughput.

    .venv/bin/python bench/data_loader.py [--seconds 1.5] [--rounds 3] [--out bench/results/loader.md]

Loader: images/s at batch 256 over the MNIST test split (10,000 x 28x28x1) written as a canonical
dataset, for genforge's BatchLoader (RAM copy and memory-map modes, with and without the
conversion to float), a bare memory-map gather `arr[idx]`, and torch's DataLoader over a
TensorDataset (what a user would write by default). Each is timed for --seconds, the rounds
interleaved, and the median round reported. Augmentation: milliseconds per batch of 256 for the
classical ops and DiffAugment at 28x28x1 and 32x32x3 (random pixels: the cost does not depend on them).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from common import cpu_model
from genforge.augment import AugmentConfig, DiffAugmentConfig, build_augment, build_diffaugment
from genforge.core.config import from_dict
from genforge.data.canonical import SplitData, open_dataset, write_dataset
from genforge.data.loader import BatchLoader, to_float
from genforge.data.sources.idx import read_idx

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist-test"
BATCH = 256

# every classical op but vflip (digits and most photos have no vertical symmetry), default parameters
CLASSICAL = {name: {"p": 0.5} for name in ("hflip", "crop", "rotate", "translate", "color", "cutout")}
CLASSICAL["color"]["hue"] = 0.05


def images_per_second(next_batch: Callable[[], object], seconds: float) -> float:
    for _ in range(20):  # warm-up
        next_batch()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(50):
            next_batch()
        n += 50
    return n * BATCH / elapsed


def bare_gather(images: np.ndarray) -> Callable[[], np.ndarray]:
    rng = np.random.default_rng(0)
    state = {"order": rng.permutation(len(images)), "pos": 0}

    def step() -> np.ndarray:
        if state["pos"] + BATCH > len(images):
            state["order"], state["pos"] = rng.permutation(len(images)), 0
        idx = state["order"][state["pos"] : state["pos"] + BATCH]
        state["pos"] += BATCH
        return images[idx]

    return step


def torch_dataloader(images: np.ndarray, labels: np.ndarray) -> Callable[[], object]:
    ds = torch.utils.data.TensorDataset(torch.from_numpy(np.array(images)), torch.from_numpy(labels))
    dl = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, drop_last=True)
    state = {"it": iter(dl)}

    def step():
        try:
            return next(state["it"])
        except StopIteration:
            state["it"] = iter(dl)
            return next(state["it"])

    return step


def loader_rates(dataset_dir: Path, seconds: float, rounds: int) -> dict[str, float]:
    split = open_dataset(dataset_dir).split("train")
    ram = BatchLoader.from_split(split, batch_size=BATCH, seed=0, in_memory=True)
    mapped = BatchLoader.from_split(split, batch_size=BATCH, seed=0, in_memory=False)
    ram_float = BatchLoader.from_split(split, batch_size=BATCH, seed=0, in_memory=True)
    candidates = {
        "genforge BatchLoader (RAM copy, uint8 NCHW)": lambda: next(ram),
        "genforge BatchLoader (memory map, uint8 NCHW view)": lambda: next(mapped),
        "genforge BatchLoader (RAM) + to_float": lambda: to_float(next(ram_float).images),
        "bare memory-map gather arr[idx] (uint8 NHWC)": bare_gather(split.images),
        "torch DataLoader(TensorDataset, shuffle=True)": torch_dataloader(split.images, split.labels),
    }
    runs: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, step in candidates.items():
            runs[name].append(images_per_second(step, seconds))
    return {name: statistics.median(r) for name, r in runs.items()}


def ms_per_batch(
    fn: Callable[[torch.Tensor, torch.Generator], torch.Tensor], x: torch.Tensor, rounds: int
) -> float:
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        fn(x, g)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(10):
            fn(x, g)
        times.append((time.perf_counter() - start) / 10 * 1000)
    return statistics.median(times)


def augment_costs(rounds: int) -> list[tuple[str, float, float]]:
    shapes = [(BATCH, 1, 28, 28), (BATCH, 3, 32, 32)]
    data = [torch.rand(s, generator=torch.Generator().manual_seed(0)) * 2 - 1 for s in shapes]
    paper = from_dict(DiffAugmentConfig, {"policy": ["color", "translation", "cutout"]})
    cases: dict[str, Callable] = {
        "classical, all ops p=0.5 (" + ", ".join(CLASSICAL) + ")": build_augment(
            from_dict(AugmentConfig, CLASSICAL)
        ),
        "classical, all ops p=1": build_augment(
            from_dict(AugmentConfig, {k: {**v, "p": 1.0} for k, v in CLASSICAL.items()})
        ),
    }
    for name in CLASSICAL:
        cases[f"classical {name} only, p=1"] = build_augment(
            from_dict(AugmentConfig, {name: {**CLASSICAL[name], "p": 1.0}})
        )
    cases["DiffAugment color,translation,cutout p=1"] = build_diffaugment(paper)
    for name in paper.policy:
        cases[f"DiffAugment {name} only, p=1"] = build_diffaugment(
            from_dict(DiffAugmentConfig, {"policy": [name]})
        )

    def with_backward(fn):
        def step(x, g):
            x = x.detach().requires_grad_(True)
            fn(x, g).sum().backward()

        return step

    cases["DiffAugment color,translation,cutout p=1, forward+backward"] = with_backward(
        build_diffaugment(paper)
    )
    return [(name, *(ms_per_batch(fn, x, rounds) for x in data)) for name, fn in cases.items()]


def machine() -> str:
    return f"nproc {os.cpu_count()}, CPU {cpu_model()}, torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.5, help="timing window per loader per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1: steadiest on a shared machine)"
    )
    ap.add_argument("--out", type=Path, help="also write the Markdown report here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not (MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        sys.exit(f"MNIST test split not found in {MNIST} (see shared/data/README.md)")
    images = read_idx(MNIST / "t10k-images-idx3-ubyte.gz")[..., None]
    labels = read_idx(MNIST / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(
            tmp, {"train": SplitData(images, labels)}, class_names=[str(i) for i in range(10)], meta={}
        )
        rates = loader_rates(Path(tmp), args.seconds, args.rounds)
    costs = augment_costs(args.rounds)

    command = "`.venv/bin/python bench/data_loader.py " + " ".join(sys.argv[1:]) + "`"
    lines = [
        "# Training-batch loader and batch augmentation",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='minutes')}",
        f"- machine: {machine()}",
        f"- command: {command}",
        f"- loader: MNIST test split (10,000 x 28x28x1) as a canonical dataset, batch {BATCH}, shuffled; "
        f"median of {args.rounds} interleaved rounds of {args.seconds} s each",
        "",
        "| loader | images/s | vs torch DataLoader | vs bare gather |",
        "| --- | ---: | ---: | ---: |",
    ]
    base = rates["torch DataLoader(TensorDataset, shuffle=True)"]
    bare = rates["bare memory-map gather arr[idx] (uint8 NHWC)"]
    for name, rate in rates.items():
        lines.append(f"| {name} | {rate:,.0f} | {rate / base:.1f}x | {rate / bare:.2f}x |")
    lines += [
        "",
        f"Augmentation cost per batch of {BATCH} (float NCHW in [-1, 1], CPU), median of {args.rounds} x 10 calls:",
        "",
        "| augmentation | ms/batch 28x28x1 | ms/batch 32x32x3 |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {name} | {a:.2f} | {b:.2f} |" for name, a, b in costs]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        from genforge.core.atomic import write_text

        write_text(args.out, report)


if __name__ == "__main__":
    main()
