"""Do the shipped image scenarios hold on data they were not tuned on? (issue 14, section 1)

    .venv/bin/python bench/scenario_generalisation.py [--scenarios digits,mnist,small-color,few-shot]
        [--sets own,glyphs10,cifar10-gray,mnist-inverted,glyphs3,glyphs40] [--budget-scale 1.0]
        [--work runs/generalisation] [--out bench/results/scenario_generalisation.md] [--seed 0]

Runs `genforge run --scenario S --data SET` (a fresh process each, as a user runs it, without the
calling shell's thread settings: common.thread_environment) for every scenario on its own data
and on each foreign set of bench/foreign_sets.py, at the scenario's own budget (steps and/or time) times
`--budget-scale` (1 = the benchmark; a small scale is a quick check that the script works, not a
result). Records each run's gate values and PASS/FAIL, the steps trained,
how training ended (budget, early stop on passing gates, or a stall and why), the share of
training time the in-training gate checks took, and the settings the recipe derived from the
data, into a markdown table (with `lscpu`'s model name and the command) and a JSON file beside it.

Own data: the scenario's own source (`digits`), or for the scenarios that take `--data`, what
they were tuned on: `mnist` on ../shared/data/mnist-test, `small-color` on CIFAR-10
(../shared/data/cifar10). The foreign sets are never used to choose a recipe's settings: they
measure, after the fact, whether settings chosen elsewhere hold.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import foreign_sets
from common import REPO, cpu_model, genforge_command, log_tail, markdown_table, run_logged, thread_environment
from genforge.core.atomic import write_json, write_text
from genforge.scenarios.schema import load_scenario, preset_names
from genforge.train.budget import parse_duration

SHARED = foreign_sets.SHARED
# what the scenarios without a source of their own (or with one that downloads) were tuned on
OWN_DATA = {"mnist": SHARED / "mnist-test", "small-color": SHARED / "cifar10" / "cifar10-jpg.tar.gz"}
OWN = "own"


def image_scenarios() -> list[str]:
    """The shipped scenarios whose model makes images."""
    import genforge.models.zoo  # noqa: F401  (registers the families)
    from genforge.models.registry import MODELS

    models = {n: load_scenario(n).model.name for n in preset_names()}
    return [n for n, m in models.items() if m in MODELS and MODELS.get(m).modality == "image"]


def own_data(scenario: str) -> str | None:
    """The --data of the scenario's own run (None: its own source), or raise when it is absent."""
    path = OWN_DATA.get(scenario)
    if path is None:
        if load_scenario(scenario).data.source is None:
            raise FileNotFoundError(f"{scenario}: no source of its own and no known data it was tuned on")
        return None
    if not path.exists():
        raise FileNotFoundError(f"{scenario}: its own data {path} is absent")
    return str(path)


def scaled_budget(scenario: str, scale: float) -> list[str]:
    """The scenario's own budget times `scale`: its step budget and its time cap, whichever it has
    (a recipe in steps with a time cap ends at the first; `genforge run --steps` alone would drop
    the cap, so both are passed). At scale 1 nothing is passed: budget flags also budget a
    scenario's public base (scenarios/runner.py apply_overrides), which has a budget of its own."""
    if scale == 1:
        return []
    train = load_scenario(scenario).train
    out = []
    if train.steps:
        out += ["--steps", str(max(1, round(train.steps * scale)))]
    if train.max_time:
        out += ["--max-time", f"{max(1.0, parse_duration(train.max_time) * scale):.0f}s"]
    return out


def run_one(
    scenario: str, data: str | None, out: Path, budget: list[str], seed: int, log: Path, threads: int | None = None
) -> dict[str, Any]:
    cmd = genforge_command("run", "--scenario", scenario, "--out", out, "--seed", seed, *budget,
                           *(["--data", data] if data else []),
                           *(["--threads", threads] if threads else []))  # fmt: skip
    code, wall = run_logged(cmd, log, env=thread_environment(COLUMNS="160"))
    summary_path = out / "summary.json"
    if not summary_path.is_file():
        return {
            "status": "ERROR",
            "exit": code,
            "wall_s": round(wall, 1),
            "error": " | ".join(log_tail(log, 3)),
        }
    s = json.loads(summary_path.read_text())
    es = s.get("early_stop") or {}
    return {
        "status": "PASS" if s["passed"] else "FAIL",
        "exit": code,
        "wall_s": round(wall, 1),
        "gates": s["gates"],
        "steps": s.get("train", {}).get("step"),
        "train_s": s.get("train", {}).get("elapsed"),
        "stop_reason": s.get("train", {}).get("stop_reason"),
        "early_stop": es.get("outcome"),
        "check_share": es.get("check_share"),
        "evaluator_s_before_clock": es.get("setup_seconds_before_clock"),
        "sizing": s.get("sizing", []),
    }


def gates_cell(r: dict[str, Any]) -> str:
    if r["status"] == "ERROR":
        return f"error: {r['error'][:160]}"
    def fail(g: dict[str, Any]) -> str:
        real = g.get("real_value")  # what real held-out data scores on the gate's metric
        return "" if g["passed"] else f" (FAIL {g['bound']}{'' if real is None else f'; real data {real:.3g}'})"

    return ", ".join(
        f"{g['metric']} {'missing' if g['value'] is None else format(g['value'], '.3g')}{fail(g)}" for g in r["gates"]
    )


def _stop_cell(r: dict[str, Any]) -> str:
    if r["status"] == "ERROR":
        return ""
    outcome = r.get("early_stop") or "off"
    share = r.get("check_share")
    return f"{outcome}" + (f", checks {share:.1%}" if share is not None else "")


COLUMNS = ["scenario", "data", "result", "steps", "train s", "stop (early stop, check cost)", "gate values",
           "sized from the data"]  # fmt: skip


def _row(r: dict[str, Any]) -> list[object]:
    train_s = "" if r.get("train_s") is None else f"{r['train_s']:.0f}"
    sizing = "; ".join(n.split(":")[0] for n in r.get("sizing", [])) or "-"
    return [r["scenario"], r["set"], r["status"], r.get("steps") or "", train_s, _stop_cell(r), gates_cell(r), sizing]


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Scenario generalisation: the shipped image scenarios on data they were not tuned on",
        "",
        f"Machine: {meta['cpu']} ({meta['cores']} cores), {meta['date']}. Command: `{meta['command']}`",
        "",
        f"Budget: each scenario's own budget (steps and/or time cap) x {meta['budget_scale']:g}"
        + ("" if meta["budget_scale"] == 1 else " (**a quick pass, not the benchmark**)")
        + ". Foreign sets (bench/foreign_sets.py, 28x28 grey, seed "
        f"{meta['seed']}): {', '.join(meta['foreign'])}; no recipe setting was chosen on them.",
        "",
        *markdown_table(COLUMNS, [_row(r) for r in rows]),
    ]
    lines += ["", "Per scenario (goal: its own data and at least 4 of 5 foreign sets pass):", ""]
    for sc in dict.fromkeys(r["scenario"] for r in rows):
        mine = [r for r in rows if r["scenario"] == sc]
        own = next((r["status"] for r in mine if r["set"] == OWN), "not run")
        foreign = [r for r in mine if r["set"] != OWN]
        passed = sum(r["status"] == "PASS" for r in foreign)
        lines.append(f"- {sc}: own data {own}; foreign sets {passed}/{len(foreign)} pass")
    stalls = [r for r in rows if r.get("early_stop") == "stalled"]
    if stalls:
        lines += ["", "Stalled runs, as their summaries say:", ""]
        lines += [f"- {r['scenario']} on {r['set']}: {r['stop_reason']}" for r in stalls]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--scenarios", default=None, help="comma-separated (default: every shipped image scenario)"
    )
    ap.add_argument(
        "--sets",
        default=",".join([OWN, *foreign_sets.BUILDERS]),
        help=f"comma-separated, of {OWN} (the scenario's own data), {', '.join(foreign_sets.BUILDERS)}",
    )
    ap.add_argument(
        "--budget-scale", type=float, default=1.0, help="times each scenario's budget (1 = benchmark)"
    )
    ap.add_argument(
        "--work",
        type=Path,
        default=REPO / "runs" / "generalisation",
        help="sets, runs and logs (runs/ is git-ignored)",
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scenario_generalisation.md")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="passed to every run (default: genforge's own choice); 1 leaves a core to other work, "
        "a harsher condition than the goal's 2 cores",
    )
    args = ap.parse_args(argv)
    if args.budget_scale <= 0:
        ap.error("--budget-scale must be > 0")
    scenarios = args.scenarios.split(",") if args.scenarios else image_scenarios()
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in sets if s != OWN and s not in foreign_sets.BUILDERS]
    if unknown:
        ap.error(f"unknown set(s) {', '.join(unknown)}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows: list[dict[str, Any]] = []
    for name in [s for s in sets if s != OWN]:
        foreign_sets.ensure(name, args.work / "sets", args.seed)
    for scenario in scenarios:
        budget = scaled_budget(scenario, args.budget_scale)
        for set_name in sets:
            row: dict[str, Any] = {"scenario": scenario, "set": set_name}
            try:
                data = own_data(scenario) if set_name == OWN else str(args.work / "sets" / f"{set_name}.npz")
            except FileNotFoundError as exc:
                rows.append({**row, "status": "ERROR", "error": str(exc)})
                print(f"{scenario} on {set_name}: skipped ({exc})", flush=True)
                continue
            out = args.work / "runs" / stamp / f"{scenario}--{set_name}"
            out.parent.mkdir(parents=True, exist_ok=True)
            print(f"{scenario} on {set_name} ({' '.join(budget)}) ...", flush=True)
            result = run_one(scenario, data, out, budget, args.seed, out.with_suffix(".log"), args.threads)
            rows.append({**row, **result, "run_dir": str(out)})
            print(f"  {result['status']} in {result['wall_s']:.0f}s: {gates_cell(rows[-1])}", flush=True)
    meta = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(
            [".venv/bin/python", "bench/scenario_generalisation.py", *(argv or sys.argv[1:])]
        ),
        "budget_scale": args.budget_scale,
        "seed": args.seed,
        "foreign": [s for s in sets if s != OWN],
    }
    write_text(args.out, markdown(rows, meta))
    write_json(args.out.with_suffix(".json"), {"meta": meta, "runs": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
