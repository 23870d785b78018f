"""fp32 against bf16 autocast at an equal number of steps: speed and quality, per family.

    .venv/bin/python bench/precision_quality.py --work /tmp/gq

The trainer's `precision: auto` picks what this shows faster at equal quality. Each family trains
the same number of steps from the same seed on the MNIST test split (ingested 50/50 as in
quality_budget.py, whose work dir it reuses) once in fp32 and once in bf16, then `genforge eval`
scores --n samples of each against val. The two runs of a family follow each other, so they see
the same machine. Writes the `precision` section of bench/results/quality.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality_budget as qb  # noqa: E402  (the same ingest/train/score helpers)

# family -> (steps, batch size, extra `genforge train` arguments)
PLAN = {
    "dcgan": (400, 128, []),
    "cvae": (1500, 128, ["--conditional"]),
    "ddpm": (200, 64, ["--conditional"]),
}
COLUMNS = [("FID", "fid", ".2f"), ("KID", "kid", ".3g"), ("confidence", "confidence", ".3f"),
           ("precision", "precision", ".3f"), ("coverage", "coverage", ".3f")]  # fmt: skip


def train(
    model: str, precision: str, data: Path, args: argparse.Namespace, env: dict[str, str]
) -> dict[str, Any]:
    steps, batch, extra = PLAN[model]
    run = args.work / "runs" / f"precision-{model}-{precision}"
    log = args.work / "logs" / f"precision-{model}-{precision}.log"
    if run.exists():
        shutil.rmtree(run)
    cmd = ["train", "--model", model, "--data", str(data), "--out", str(run), "--steps", str(steps),
           "--batch-size", str(batch), "--seed", str(args.seed), "--precision", precision,
           "--set", "train.progress=lines", *extra]  # fmt: skip
    qb.genforge(cmd, log, env)
    rec = qb.train_stats(run)
    images, labels, _ = qb.generate(run, args.n, args.seed)
    rec.update(
        qb.score(images, labels, f"precision-{model}-{precision}", data, args, env, memorisation=False)
    )
    return rec


def section(res: dict[str, Any], header: str, n: int) -> str:
    rows = []
    for model, by_precision in res.items():
        fp32 = by_precision.get("fp32", {})
        for precision, rec in by_precision.items():
            if "error" in rec:
                rows.append([model, precision, f"failed: {rec['error']}"] + [""] * (len(COLUMNS) + 2))
                continue
            speed = (
                rec["train_images_per_s"] / fp32["train_images_per_s"]
                if "train_images_per_s" in fp32
                else None
            )
            rows.append([model, precision, qb.fmt(rec["steps"], ","), qb.fmt(rec["train_images_per_s"], ".1f"),
                         qb.fmt(speed, ".2f") + "x"] + [qb.fmt(rec.get(k), f) for _, k, f in COLUMNS])  # fmt: skip
    return "\n".join([
        "## fp32 against bf16 autocast at equal steps", "", header,
        f"- Each family: the same steps and seed in fp32 and in bf16; {n:,} samples scored against val by the "
        "MNIST evaluator (FID is biased upwards at this n; compare within a family).", "",
        qb.table(["model", "precision", "steps", "train images/s", "speed vs fp32"] + [c[0] for c in COLUMNS], rows),
        "",
    ])  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--models", default=",".join(PLAN))
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=qb.DEFAULT_OUT)
    args = p.parse_args()
    args.command = ".venv/bin/python bench/precision_quality.py " + shlex.join(sys.argv[1:])
    env = os.environ.copy()
    started, t0 = dt.datetime.now(dt.UTC), time.perf_counter()
    data = qb.ingest(qb.mnist_source(args.work), args.work / "mnist",
                     ["--val-fraction", "0.5", "--seed", "0", "--near-dup-distance", "0"],
                     args.work / "logs" / "ingest-mnist.log", env)  # fmt: skip
    res: dict[str, Any] = {}
    for model in args.models.split(","):
        res[model] = {}
        for precision in ("fp32", "bf16"):
            print(f"[precision] {model} {precision}: {PLAN[model][0]} steps")
            res[model][precision] = qb.attempt(
                lambda m=model, pr=precision: train(m, pr, data, args, env), model
            )
    qb.write_section(
        args, "precision", section(res, qb.header(args, started, time.perf_counter() - t0), args.n)
    )
    qb.write_json(args, "precision", res)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
