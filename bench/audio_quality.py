"""Spoken-digit quality per audio family at one training budget (issue 10: "record every route and
family at that budget"), side by side in one sequence.

    .venv/bin/python bench/audio_quality.py                                  # 10 minutes each, every family
    .venv/bin/python bench/audio_quality.py --families mel-vae,wavegan --budget 20s --n 100   # a quick check

Each family runs the `spoken-digits` scenario as a user would (`genforge run --scenario FILE --data
FSDD`: ingest, train, evaluate against the held-out clips, export, report), in a child process,
with only the model's name and the training budget (and `--batch-size`, when given) changed in a
copy of the preset. The same dataset fingerprint means every run scores against the same cached
evaluator. Recorded per family:
the steps trained, the evaluator's conditional and speaker accuracy, precision, coverage, FAD and
its ratio to the memoriser floor (training clips redrawn), the copy rate, the wall time, and the
spectrogram sheet of the run's final samples (`<out stem>/<family>.png`). The goal (10 minutes of
2-core training): conditional accuracy >= 0.90, coverage >= 0.70, FAD within 5x the memoriser.

`--seed S` trains with seed S (the preset's is 0). `--steps N` trains N steps instead of a time
budget (for a loaded machine: steps do not depend on what else runs). A row whose run failed to
train says why (its log's last lines).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
from pathlib import Path

from common import REPO, cpu_model, genforge_command, log_tail, markdown_table, run_logged, thread_environment

FSDD = REPO.parent / "shared" / "data" / "fsdd" / "recordings"
FAMILIES = ("mel-vae", "mel-sngan", "mel-ddpm", "wavegan", "diffwave")
GOALS = {"conditional_accuracy": (">=", 0.90), "coverage": (">=", 0.70), "fad_memoriser_ratio": ("<=", 5.0)}
METRICS = ("conditional_accuracy", "speaker_accuracy", "precision", "coverage", "fad", "fad_memoriser",
           "fad_memoriser_ratio", "copy_rate")  # fmt: skip


def scenario_copy(work: Path, family: str, budget: str | None, steps: int | None, n: int,
                  batch_size: int | None = None, model_set: list[str] | None = None) -> Path:
    """The spoken-digits preset with `family` as its model and this budget (gates unchanged);
    `batch_size` over the preset's, when given; `model_set` items "a.b=YAML" set model settings
    (e.g. "inner_config.g_noise=0")."""
    import yaml

    from genforge.core.config import to_dict
    from genforge.scenarios.schema import load_scenario
    from genforge.train.launch import parse_sets

    sc = to_dict(load_scenario("spoken-digits"))
    sc["model"] = {"name": family, "conditional": True}  # each family's own defaults
    if model_set:
        sc["model"]["config"] = parse_sets([f"model.{item}" for item in model_set])["model"]
    sc["train"]["max_time"], sc["train"]["steps"] = budget, steps
    # the goal is measured after the whole budget: no stopping early once the scenario's gates pass
    sc["train"]["early_stop"]["enabled"] = False
    sc["evaluate"]["n"] = n
    if batch_size:
        sc["train"]["config"]["batch_size"] = batch_size
    path = work / f"{family}.yaml"
    path.write_text(yaml.safe_dump(sc, sort_keys=False))
    return path


def run_family(work: Path, family: str, args: argparse.Namespace) -> dict:
    run = work / family
    shutil.rmtree(run, ignore_errors=True)
    scenario = scenario_copy(work, family, None if args.steps else args.budget, args.steps, args.n,
                             args.batch_size, args.model_set)
    log = work / f"{family}.log"
    env = thread_environment(OMP_NUM_THREADS=str(args.threads))
    code, wall = run_logged(
        genforge_command("run", "--scenario", scenario, "--data", args.data, "--out", run,
                         "--threads", args.threads, "--seed", args.seed), log, env=env)  # fmt: skip
    row: dict = {"family": family, "exit": code, "wall_s": wall}
    if not (run / "metrics.json").is_file():
        row["error"] = " / ".join(log_tail(log, 3))
        return row
    summary = json.loads((run / "summary.json").read_text())
    values = json.loads((run / "metrics.json").read_text())["values"]
    row |= {k: values.get(k) for k in METRICS}
    row |= {"steps": summary["train"]["step"], "train_s": summary["train"]["elapsed"],
            "stop": summary["train"]["stop_reason"]}  # fmt: skip
    sheets = sorted((run / "samples").glob("step-*.png"))
    if sheets:
        row["sheet"] = sheets[-1]
    return row


def _cell(key: str, value: object) -> str:
    if value is None:
        return "-"
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    if key in GOALS:
        op, bound = GOALS[key]
        ok = value >= bound if op == ">=" else value <= bound  # type: ignore[operator]
        text = text if ok else f"**{text}**"
    return text


def write_report(rows: list[dict], args: argparse.Namespace, out: Path) -> None:
    images = out.with_suffix("")
    images.mkdir(parents=True, exist_ok=True)
    header = ["family", "steps", "train s", *METRICS, "wall s"]
    table, notes = [], []
    for r in rows:
        if "error" in r:
            notes.append(f"- {r['family']}: no evaluation (exit {r['exit']}): {r['error']}")
            table.append([r["family"], *["-"] * (len(header) - 1)])
            continue
        table.append([r["family"], r["steps"], f"{r['train_s']:.0f}", *(_cell(k, r.get(k)) for k in METRICS),
                      f"{r['wall_s']:.0f}"])  # fmt: skip
        if "sheet" in r:
            shutil.copyfile(r["sheet"], images / f"{r['family']}.png")
    budget = f"{args.steps} steps" if args.steps else f"{args.budget} of training"
    if args.batch_size:
        budget += f"; batch {args.batch_size}"
    if args.model_set:
        budget += f"; {', '.join(args.model_set)}"
    command = " ".join([".venv/bin/python", "bench/audio_quality.py", *sys.argv[1:]])
    lines = [
        "# Audio: spoken-digit quality per family at one budget",
        "",
        f"Machine: {cpu_model()}, {args.threads} threads, {dt.date.today().isoformat()}. Command: `{command}`",
        "",
        f"Each family: the `spoken-digits` scenario with only its model and budget changed ({budget}), "
        f"{args.n} generated clips against the held-out split; bold = the goal (conditional accuracy >= 0.90, "
        "coverage >= 0.70, FAD/memoriser <= 5) not met.",
        "",
        *markdown_table(header, table),
        "",
        *notes,
        "",
        *(f"![{r['family']}]({images.name}/{r['family']}.png)" for r in rows if "sheet" in r),
    ]
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines).rstrip() + "\n")
    tmp.replace(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(FSDD))
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--budget", default="10m", help="training time per family")
    ap.add_argument("--steps", type=int, default=None, help="a step budget instead of --budget")
    ap.add_argument("--n", type=int, default=500, help="generated clips per evaluation")
    ap.add_argument("--batch-size", type=int, default=None, help="training batch (default: the preset's)")
    ap.add_argument("--model-set", action="append", default=[], metavar="KEY=YAML",
                    help="a model setting over the family's defaults, e.g. inner_config.g_noise=0; repeatable")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="the training seed (the preset's: 0)")
    ap.add_argument("--work", default=None, help="where the runs go (default: a temporary directory)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "audio_quality.md"))
    args = ap.parse_args()
    if not Path(args.data).is_dir():
        sys.exit(f"no data at {args.data} (FSDD recordings expected)")
    families = [f for f in args.families.split(",") if f]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        ap.error(f"--families: unknown {unknown}; choose from {', '.join(FAMILIES)}")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="audio-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for family in families:
        print(f"{family} ...", flush=True)
        rows.append(run_family(work, family, args))
        print(f"  {json.dumps({k: v for k, v in rows[-1].items() if k != 'sheet'}, default=str)}", flush=True)
        write_report(rows, args, Path(args.out))  # after each family: a long sequence keeps what it measured
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
