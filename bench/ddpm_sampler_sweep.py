"""Sampler settings on one trained ddpm run, scored the way the quality bench scores a family.

    .venv/bin/python bench/ddpm_sampler_sweep.py RUN_DIR DATASET_DIR [-n 1000] SETTING [SETTING ...]

Each SETTING is a JSON object of `model.sample` options, e.g. '{}' (the run's defaults),
'{"guidance": 3.0}', '{"steps": 100}', '{"sampler": "ddpm"}'. Per setting: n images with labels
in the training data's class mix (chunks of 100, seed + chunk index, as in bench/quality_budget.py),
scored by `genforge eval` against DATASET_DIR's val split without the memorisation audit. Prints
one JSON line per setting. Samples and logs go to --work (default: a new temp dir).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import quality_budget as qb
from genforge.core.host_memory import retain_freed_memory


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("settings", nargs="+", type=json.loads)
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path)
    args = p.parse_args()
    args.work = args.work or Path(tempfile.mkdtemp(prefix="genforge-sweep-"))
    for sub in ("samples", "logs"):
        (args.work / sub).mkdir(parents=True, exist_ok=True)
    retain_freed_memory()  # as the genforge command does
    for options in args.settings:
        images, labels, seconds = qb.generate(args.run, args.n, args.seed, **options)
        name = "-".join([args.run.name, *(f"{k}{v}" for k, v in options.items())])
        rec = qb.score(images, labels, name, args.data, args, dict(os.environ), memorisation=False)
        keys = ("fid", "kid", "precision", "recall", "density", "coverage", "confidence", "conditional_accuracy")
        print(json.dumps({**options, "n": args.n, "s_per_image": round(seconds / args.n, 4),
                          **{k: rec[k] for k in keys if rec.get(k) is not None}}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
