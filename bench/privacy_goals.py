"""Privacy goals (issue 13): differentially private and non-private runs of each family on the
5,000-image train split of ../shared/data/mnist-test, scored by TSTR beside TRTR and by the
membership-inference audit; prints a markdown table.

    .venv/bin/python bench/privacy_goals.py                                  # cvae, dcgan, ddpm; 20 min each
    .venv/bin/python bench/privacy_goals.py --families cvae --budget 5m --epsilons 10

Per family, all in this process on `--threads` threads (the Python API, as `genforge train` and
`genforge eval` call it):
1. a probe: DP-SGD with a fixed noise multiplier for `--probe-time`, timing the family's DP step
   rate on this machine (per-sample gradients make a DP step slower than a plain one);
2. per epsilon of `--epsilons`: a DP run (delta `--delta`) whose noise Opacus calibrates for the
   steps the rate says fit in `--budget` (x `--plan-fraction`, so the run ends by spending its
   budget rather than by the clock); it stops at whichever comes first, and the epsilon it
   actually spent is what the table shows;
3. the same family and recipe without DP, for `--budget` of wall time: where a model leaks;
4. `genforge eval` of each run against the 5,000-image val split: TSTR (the fixed CNN trained on
   `--tstr-n` generated digits in a uniform class mix) beside TRTR (trained on the real train
   split), the membership-inference audit (`--mia-n` members and non-members), FID.

The dataset is ingested once into `--out`/dataset (val_fraction 0.5: 5,000 train, 5,000 val).
Everything lands in `--out` (default /tmp/genforge-privacy-goals): one run directory per row,
results.json and table.md. Needs the machine to itself: each row is a wall-time budget. Time: per
family the probe, 3 x `--budget` of training and 3 evaluations (cvae and dcgan: ~1-2 minutes each;
ddpm: sampling 5,000 digits with 50 DDIM steps dominates, tens of minutes on 2 cores). Give
`--threads 1` when anything else runs on the machine: two threads beside a busy core made the
small convolutions 10-40x slower here.
The goals: TSTR >= 0.90 at epsilon <= 10 (and the number at epsilon 1), the DP run's MIA AUC
<= 0.55 while the non-private run of the same family shows its leak.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from common import cpu_model, markdown_table

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist-test"

# family -> (model name, batch size, model config overrides, privacy overrides). Large batches
# serve DP-SGD (the noise is divided by the batch); the families' own DP defaults apply on top
# (GANs: fresh fakes per generator step). ddpm averages 4 noise levels per example (DPDM).
FAMILIES: dict[str, tuple[str, int, dict[str, Any], dict[str, Any]]] = {
    "cvae": ("cvae", 256, {}, {}),
    "dcgan": ("dcgan", 256, {}, {}),
    "ddpm": ("ddpm", 256, {}, {"noise_multiplicity": 4}),
}


def seconds(text: str) -> float:
    from genforge.train.budget import parse_duration

    return float(parse_duration(text))


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} CPUs"


def dataset(out: Path) -> Path:
    from genforge.data.ingesters import ingest

    path = out / "dataset"
    if not (path / "manifest.json").is_file():
        ingest(str(MNIST), path, {"val_fraction": 0.5, "seed": 0})
    return path


def train(run: Path, data: Path, family: str, flags: dict[str, Any], privacy: dict[str, Any] | None) -> dict[str, Any]:
    from genforge.train.launch import build_trainer

    model, batch, model_cfg, dp_extra = FAMILIES[family]
    layers: dict[str, Any] = {"model": model_cfg, "train": {"batch_size": batch}}
    if privacy is not None:
        layers["privacy"] = {**dp_extra, **privacy}
    run.mkdir(parents=True, exist_ok=True)
    (run.parent / f"{run.name}.yaml").write_text(yaml.safe_dump(layers, sort_keys=False))
    trainer = build_trainer(run, model_name=model, data=data, config_file=run.parent / f"{run.name}.yaml",
                            flags=flags, conditional=True)  # fmt: skip
    return trainer.fit()


def evaluate(run: Path, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    from genforge.evaluate.evaluate import EvalConfig
    from genforge.evaluate.evaluate import evaluate as run_eval
    from genforge.evaluate.privacy.config import MembershipConfig, UtilityConfig

    cfg = EvalConfig(n=args.eval_n, seed=0, utility=UtilityConfig(enabled=True, n=args.tstr_n),
                     membership=MembershipConfig(n=args.mia_n))  # fmt: skip
    return run_eval(run, data, cfg, out=run / "metrics.json")


def row(family: str, kind: str, target: float | None, summary: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    v, recs = metrics["values"], metrics["metrics"]
    return {"family": family, "run": kind, "target_epsilon": target, "epsilon": v.get("dp_epsilon"),
            "delta": v.get("dp_delta"), "noise_multiplier": v.get("dp_noise_multiplier"), "steps": summary["step"],
            "train_s": round(summary["elapsed"], 1), "stop": summary["stop_reason"], "tstr": v.get("tstr_accuracy"),
            "trtr": v.get("trtr_accuracy"), "tstr_ratio": v.get("tstr_ratio"), "mia_auc": v.get("mia_auc"),
            "best_attack": recs.get("mia_auc", {}).get("details", {}).get("best_attack"),
            "mia_tpr_at_1fpr": v.get("mia_tpr_at_1fpr"), "fid": v.get("fid"),
            "eval_s": metrics["timing"]["total_s"], "privacy_eval_s": metrics["timing"].get("privacy_s")}  # fmt: skip


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(rows: list[dict[str, Any]]) -> str:
    head = ["family", "run", "epsilon (target)", "delta", "sigma", "steps", "train s", "stopped by", "TSTR", "TRTR",
            "TSTR/TRTR", "MIA AUC", "best attack", "TPR @ 1% FPR", "FID"]  # fmt: skip
    body = []
    for r in rows:
        eps = "-" if r["epsilon"] is None else f"{r['epsilon']:.2f} ({fmt(r['target_epsilon'], 0)})"
        cells = [r["family"], r["run"], eps, fmt(r["delta"], 6) if r["delta"] else "-", fmt(r["noise_multiplier"]),
                 str(r["steps"]), fmt(r["train_s"], 0), r["stop"], fmt(r["tstr"]), fmt(r["trtr"]), fmt(r["tstr_ratio"]),
                 fmt(r["mia_auc"]), r["best_attack"] or "-", fmt(r["mia_tpr_at_1fpr"]), fmt(r["fid"], 2)]  # fmt: skip
        body.append(cells)
    return "\n".join(markdown_table(head, body))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated, of {', '.join(FAMILIES)}")
    ap.add_argument("--budget", default="20m", help="wall-time training budget of every run")
    ap.add_argument("--epsilons", default="10,1", help="DP targets, comma-separated")
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--no-baseline", action="store_true", help="skip the non-private run of each family")
    ap.add_argument("--probe-time", default="60s", help="DP training timed to plan each DP run's steps")
    ap.add_argument("--plan-fraction", type=float, default=0.9, help="share of the budget the planned steps take")
    ap.add_argument("--eval-n", type=int, default=5000, help="samples of each evaluation (FID, distance attack)")
    ap.add_argument("--tstr-n", type=int, default=5000, help="generated training digits of TSTR (from the eval's)")
    ap.add_argument("--mia-n", type=int, default=1000, help="members and non-members of the audit (each)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/genforge-privacy-goals"))
    args = ap.parse_args()
    if not (MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        sys.exit(f"{MNIST} is absent: the goals are defined on ../shared/data/mnist-test")
    import torch

    torch.set_num_threads(args.threads)
    budget = seconds(args.budget)
    families = [f for f in args.families.split(",") if f]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        sys.exit(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out
    data = dataset(out)
    rows: list[dict[str, Any]] = []
    for family in families:
        base = {"seed": 0}
        probe = train(out / f"{family}-probe-{stamp}", data, family, {**base, "max_time": args.probe_time},
                      {"noise_multiplier": 1.0, "delta": args.delta})  # fmt: skip
        rate = probe["step"] / max(probe["elapsed"], 1e-9)
        planned = max(1, int(rate * budget * args.plan_fraction))
        print(f"{family}: DP probe {probe['step']} steps in {probe['elapsed']:.1f} s -> plan {planned} steps", flush=True)
        runs: list[tuple[str, float | None, dict[str, Any] | None]] = [
            (f"dp-eps{e:g}", e, {"epsilon": e, "delta": args.delta, "steps": planned})
            for e in (float(x) for x in args.epsilons.split(",") if x)
        ]
        if not args.no_baseline:
            runs.append(("non-private", None, None))
        for kind, target, privacy in runs:
            run = out / f"{family}-{kind}-{stamp}"
            t0 = time.perf_counter()
            summary = train(run, data, family, {**base, "max_time": args.budget}, privacy)
            metrics = evaluate(run, data, args)
            rows.append(row(family, kind, target, summary, metrics))
            print(f"{family} {kind}: {time.perf_counter() - t0:.0f} s", json.dumps(rows[-1]), flush=True)
    text = "\n".join([
        f"Privacy goals, {dt.date.today()}: `{shlex.join(['python', *sys.argv])}`",
        f"Machine: {machine()}; torch {torch.__version__}, {args.threads} threads; budget {args.budget} per run.",
        f"Data: {MNIST} (5,000 train / 5,000 val); TSTR on {args.tstr_n} generated digits, MIA on "
        f"{args.mia_n} + {args.mia_n} records, eval n {args.eval_n}.", "", table(rows),
    ])  # fmt: skip
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
