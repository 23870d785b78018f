"""Choose a scenario's recipe settings on the development sets: variants side by side (issue 14, section 1)

    .venv/bin/python bench/recipe_sweep.py --scenario mnist --variants bench/variants/mnist_d.yaml
        [--sets dev-lower10,dev-lower28] [--parallel 1] [--threads N] [--steps N]
        [--work runs/recipe_sweep] [--out runs/recipe_sweep/mnist.md]

Runs `genforge run --scenario VARIANT --data SET` for the scenario as shipped (`base`) and for
each variant of a YAML file that maps a variant's name to dotted overrides of the scenario file,

    dwide: {model.config.d_widths: [64, 128, 256]}
    steps4800: {train.steps: 4800}

on each development set of bench/foreign_sets.py, and writes a table of the gates' values per
variant and set (markdown, and JSON beside it). Only `dev-` sets are accepted: the measured
foreign sets are never used to choose a setting (bench/scenario_generalisation.py measures them
afterwards). Step budgets do not depend on the machine, so a sweep can run on a GPU or on many
cores (`--parallel` runs at a time, `--threads` each), and its ranking carries over to the
2-core CPU the goal is measured on; time budgets do not carry over (the variants are run with
the scenario's time cap, which a fast machine does not reach). `--steps` replaces every
variant's step budget: a quick check that the script works, not a result.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

import foreign_sets
from common import REPO, cpu_model, markdown_table
from genforge.core.atomic import write_json, write_text
from genforge.scenarios.schema import PRESETS, load_scenario, preset_names
from scenario_generalisation import gates_cell, run_one

BASE = "base"


def scenario_dict(scenario: str) -> dict[str, Any]:
    """The scenario file's contents (a shipped name or a YAML path), as a plain mapping."""
    if scenario in preset_names():
        text = resources.files("genforge.scenarios").joinpath(PRESETS, f"{scenario}.yaml").read_text()
    else:
        text = Path(scenario).read_text()
    return yaml.safe_load(text)


def apply(scenario: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`scenario` with each dotted key (`model.config.d_lr`) set to its value."""
    out = copy.deepcopy(scenario)
    for key, value in overrides.items():
        *path, last = key.split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"variant key {key!r}: {part!r} is not a section of the scenario")
        node[last] = value
    return out


def load_variants(path: Path | None) -> dict[str, dict[str, Any]]:
    variants: dict[str, dict[str, Any]] = {BASE: {}}
    if path is None:
        return variants
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: expected a mapping of variant names to mappings of dotted keys to values")
    if BASE in data:
        raise ValueError(f"{path}: {BASE!r} is the scenario as shipped; give the variant another name")
    variants.update(data)
    return variants


def write_variant(name: str, scenario: dict[str, Any], overrides: dict[str, Any], steps: int | None,
                  work: Path) -> Path:  # fmt: skip
    sc = apply(scenario, overrides)
    sc.pop("export", None)  # a sweep compares gates; exporting each run only costs time
    if steps:
        sc.setdefault("train", {})["steps"] = steps
    path = work / "variants" / f"{name}.yaml"
    write_text(path, yaml.safe_dump(sc, sort_keys=False))
    load_scenario(str(path))  # fail here, before any run, on a key the scenario does not have
    return path


def _cell(r: dict[str, Any]) -> str:
    if r["status"] == "ERROR":
        return gates_cell(r)
    values = " / ".join("-" if g["value"] is None else f"{g['value']:.3f}" for g in r["gates"])
    return f"{r['status']} {values} ({r['steps']} steps)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", required=True, help="a shipped scenario or a scenario .yaml")
    ap.add_argument("--variants", type=Path, help="YAML: variant name -> {dotted.key: value}")
    ap.add_argument("--sets", default="dev-lower10,dev-lower28", help="comma-separated dev- sets")
    ap.add_argument("--parallel", type=int, default=1, help="runs at a time (1 on a 2-core machine)")
    ap.add_argument("--threads", type=int, default=None, help="threads per run (default: genforge's choice)")
    ap.add_argument("--steps", type=int, default=None, help="every variant's step budget (a quick check)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "recipe_sweep")
    ap.add_argument("--out", type=Path, default=None, help="markdown (default: WORK/SCENARIO.md)")
    args = ap.parse_args(argv)
    sets = [s for s in args.sets.split(",") if s]
    measured = [s for s in sets if s not in foreign_sets.DEV_BUILDERS]
    if measured:
        ap.error(f"--sets: {', '.join(measured)} not development sets ({', '.join(foreign_sets.DEV_BUILDERS)}); "
                 "the measured sets are never for choosing settings")  # fmt: skip
    variants = load_variants(args.variants)
    scenario = scenario_dict(args.scenario)
    stem = Path(args.scenario).stem
    files = {name: write_variant(f"{stem}-{name}", scenario, over, args.steps, args.work)
             for name, over in variants.items()}  # fmt: skip
    data = {s: foreign_sets.ensure(s, args.work / "sets", args.seed) for s in sets}
    jobs = [(name, s) for s in sets for name in variants]

    def run(job: tuple[str, str]) -> dict[str, Any]:
        name, s = job
        out = args.work / "runs" / f"{stem}-{name}-{s}"
        if (out / "summary.json").exists():
            raise SystemExit(f"{out} holds a run of an earlier sweep: remove it or give another --work")
        r = run_one(str(files[name]), str(data[s]), out, [], args.seed, args.work / "logs" / f"{stem}-{name}-{s}.log",
                    args.threads)  # fmt: skip
        print(f"{name} on {s}: {_cell(r)}", flush=True)
        return {"variant": name, "set": s, **r}

    with ThreadPoolExecutor(max(1, args.parallel)) as pool:
        results = list(pool.map(run, jobs))
    by = {(r["variant"], r["set"]): r for r in results}
    scored = [r for r in results if "gates" in r]
    gates = " / ".join(g["metric"] for g in scored[0]["gates"]) if scored else "gate values"
    rows = [[name, f"`{json.dumps(variants[name])}`" if variants[name] else "as shipped",
             *(_cell(by[(name, s)]) for s in sets)] for name in variants]  # fmt: skip
    out = args.out or args.work / f"{stem}.md"
    lines = [f"Machine: {cpu_model()}. Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`", "",
             f"Each cell: result, {gates}, steps trained.", "",
             *markdown_table(["variant", "overrides", *sets], rows)]  # fmt: skip
    write_text(out, "\n".join(lines) + "\n")
    write_json(out.with_suffix(".json"), results)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
