"""The families that do not generate, at the same budgets as `quality_budget.py`: `dae` (restoration)
and `simclr` (self-supervised encoder), on the MNIST test split and on CIFAR-10.

    .venv/bin/python bench/quality_other.py --work /tmp/gq          # reuses quality_budget's datasets

The distribution metrics do not apply to them, so each is scored by what it is for:
- dae: `genforge eval RUN --ref DATA` (restoration metrics: PSNR of the restored held-out images
  against the clean ones, beside the PSNR of the corrupted input), its grid shows corrupted /
  restored pairs;
- simclr: k-nearest-neighbour (k = 10, cosine) classification of held-out images by their
  embedding against the train split's, beside the same classifier on raw pixels: an encoder worth
  having beats the pixels.

Writes the `other-mnist` / `other-cifar` sections of bench/results/quality.md (other sections stay)
and its grids beside quality_budget's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality_budget as qb  # noqa: E402  (the same ingest/train/report helpers)

qb.RECIPES.setdefault("dae", qb.Recipe(128))
qb.RECIPES.setdefault("simclr", qb.Recipe(128))
FAMILIES = ("dae", "simclr")
K = 10
KNN_TRAIN, KNN_HELD_OUT = 5000, 1000


def knn_accuracy(
    train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray
) -> float:
    """Majority vote of the K most cosine-similar train vectors, per test vector."""
    a = train / np.linalg.norm(train, axis=1, keepdims=True).clip(1e-12)
    b = test / np.linalg.norm(test, axis=1, keepdims=True).clip(1e-12)
    nearest = np.argsort(-(b @ a.T), axis=1)[:, :K]
    votes = train_labels[nearest]
    pred = np.array([np.bincount(v, minlength=int(train_labels.max()) + 1).argmax() for v in votes])
    return float((pred == test_labels).mean())


def simclr_scores(run: Path, data: Path, held_out: str) -> dict[str, Any]:
    import torch

    from genforge.data.canonical import open_dataset
    from genforge.data.loader import to_float
    from genforge.models.pipeline import load_pipeline

    ds = open_dataset(data)
    rng = np.random.default_rng(0)
    xs, ys = [], []
    # seeded random subsets: archive order can be sorted by class (CIFAR-10's tar lists class folders)
    for split, n in ((ds.split("train"), KNN_TRAIN), (ds.split(held_out), KNN_HELD_OUT)):
        idx = np.sort(rng.choice(len(split.images), size=min(n, len(split.images)), replace=False))
        xs.append(np.asarray(split.images[idx]))
        ys.append(np.asarray(split.labels[idx]))
    model = load_pipeline(run).model

    def embed(images: np.ndarray) -> np.ndarray:
        x = to_float(torch.from_numpy(images).permute(0, 3, 1, 2))
        return model.encode(x).numpy()

    t0 = time.perf_counter()
    emb = [embed(x) for x in xs]
    seconds = time.perf_counter() - t0
    pixels = [x.reshape(len(x), -1).astype(np.float32) - 127.5 for x in xs]
    return {
        "knn_embedding": knn_accuracy(emb[0], ys[0], emb[1], ys[1]),
        "knn_pixels": knn_accuracy(pixels[0], ys[0], pixels[1], ys[1]),
        "embedding_dim": int(emb[0].shape[1]),
        "encode_images_per_s": (len(xs[0]) + len(xs[1])) / seconds,
        "held_out": held_out,
    }


def first_last_loss(run: Path) -> tuple[float | None, float | None]:
    losses = [rec["main/loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if "main/loss" in (rec := json.loads(line))]  # fmt: skip
    return (losses[0], losses[-1]) if losses else (None, None)


def family(model: str, tag: str, data: Path, budget: str, held_out: str, args: argparse.Namespace,
           env: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    run = args.work / "runs" / f"{model}-{tag}"
    logs = args.work / "logs"
    print(f"[{tag}] {model}: training for {budget}")
    wall = qb.train(model, data, run, budget, args, logs / f"train-{model}-{tag}.log", env)
    rec: dict[str, Any] = {"train_wall_s": wall, **qb.train_stats(run)}
    rec["first_loss"], rec["last_loss"] = first_last_loss(run)
    if model == "dae":
        rec["grid"] = qb.copy_grid(run, args.grids / f"{model}-{tag}.png")
        out = args.work / "samples" / f"{model}-{tag}.metrics.json"
        qb.genforge(["eval", str(run), "--ref", str(data), "--n", "1000", "--seed", str(args.seed),
                     "--split", held_out, "--out", str(out)], logs / f"eval-{model}-{tag}.log", env)  # fmt: skip
        metrics = json.loads(out.read_text())
        rec.update(metrics["values"])
        rec["corruption"] = metrics["config"]["corruption"]
    else:
        rec.update(simclr_scores(run, data, held_out))
    return rec


def section(tag: str, title: str, res: dict[str, Any], header: str) -> str:
    dae, enc = res.get("dae", {}), res.get("simclr", {})
    lines = [f"## {title}: the restoration and encoder families", "", header,
             f"- Data: as in the section above; budget `--max-time {res['budget']}` per family, batch 128, "
             "`genforge train` defaults otherwise (precision `auto`: bf16 on this CPU).", ""]  # fmt: skip
    if "error" in dae:
        lines += [f"**dae** failed: {dae['error']}", ""]
    elif dae:
        lines += [
            f"**dae** (default corruption: {' + '.join(dae['corruption'])}): {dae['steps']:,} steps, "
            f"{dae['train_images_per_s']:.0f} train images/s; loss {dae['first_loss']:.4f} -> {dae['last_loss']:.4f}. "
            f"On 1,000 held-out {res['held_out']} images: PSNR restored {dae['psnr_restored']:.2f} dB vs corrupted "
            f"{dae['psnr_corrupted']:.2f} dB (gain {dae['psnr_gain']:.2f} dB), L1 {dae['l1_restored']:.4f}.", "",
            f"![dae on {title}]({res['grids']}/{dae['grid']})", "",
        ]  # fmt: skip
    if "error" in enc:
        lines += [f"**simclr** failed: {enc['error']}", ""]
    elif enc:
        lines += [
            f"**simclr**: {enc['steps']:,} steps, {enc['train_images_per_s']:.0f} train images/s; NT-Xent loss "
            f"{enc['first_loss']:.3f} -> {enc['last_loss']:.3f}. {K}-NN classification of {KNN_HELD_OUT:,} "
            f"{enc['held_out']} images against {KNN_TRAIN:,} train images (seeded random subsets): embedding ({enc['embedding_dim']}-d) "
            f"**{enc['knn_embedding']:.3f}** vs raw pixels {enc['knn_pixels']:.3f}; encoding "
            f"{enc['encode_images_per_s']:.0f} images/s. (An encoder has no samples to show.)", "",
        ]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="quality_budget.py's work dir (datasets reused)")
    p.add_argument("--budget", default="5m")
    p.add_argument("--cifar-budget", default="60s")
    p.add_argument("--cifar-limit", type=int)
    p.add_argument("--skip-mnist", action="store_true")
    p.add_argument("--skip-cifar", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision")
    p.add_argument("--reuse", action="store_true")
    p.add_argument("--out", type=Path, default=qb.DEFAULT_OUT)
    args = p.parse_args()
    args.command = ".venv/bin/python bench/quality_other.py " + shlex.join(sys.argv[1:])
    args.grids = args.out.parent / args.out.stem
    env = os.environ.copy()
    started, t0 = dt.datetime.now(dt.UTC), time.perf_counter()
    jobs = []
    if not args.skip_mnist:
        data = qb.ingest(qb.mnist_source(args.work), args.work / "mnist",
                         ["--val-fraction", "0.5", "--seed", "0", "--near-dup-distance", "0"],
                         args.work / "logs" / "ingest-mnist.log", env)  # fmt: skip
        jobs.append(("mnist", "MNIST", data, args.budget, "val"))
    if not args.skip_cifar:
        extra = ["--val-fraction", "0"] + (["--limit", str(args.cifar_limit)] if args.cifar_limit else [])
        data = qb.ingest(qb.CIFAR, args.work / f"cifar-{args.cifar_limit or 'all'}", extra,
                         args.work / "logs" / "ingest-cifar.log", env)  # fmt: skip
        jobs.append(("cifar", "CIFAR-10", data, args.cifar_budget, "test"))
    for tag, title, data, budget, held_out in jobs:
        res: dict[str, Any] = {"budget": budget, "held_out": held_out,
                               "grids": args.grids.relative_to(args.out.parent).as_posix()}  # fmt: skip
        for model in FAMILIES:
            job = functools.partial(family, model, tag, data, budget, held_out, args, env)
            res[model] = qb.attempt(job, model)
        hdr = qb.header(args, started, time.perf_counter() - t0)
        qb.write_section(args, f"other-{tag}", section(tag, title, res, hdr))
        qb.write_json(args, f"other-{tag}", res)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
