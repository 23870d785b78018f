"""Voice cloning against issue 11's goal: the `voice-clone` scenario end to end on FSDD, and its
target-speaker numbers.

    .venv/bin/python bench/voice_clone.py [--speaker theo] [--base RUN] [--threads 2] [--keep DIR]
    .venv/bin/python bench/voice_clone.py --base-time 3m --adapt-time 90s --n 200   # a short probe

It runs what `genforge run --scenario voice-clone --data ../shared/data/fsdd/recordings` runs
(ingest every speaker; a base model on the four voices that are not the target; its fine-tune on
at most 250 of the target's clips; the evaluation against the dataset of every voice) and prints
the target speaker's scores beside the evaluator's own accuracy on the target's real held-out
takes, the training each stage got and the wall time of the whole run. `--base-time`,
`--adapt-time` and `--n` shrink the scenario for a probe: the table then says "probe", and its
numbers are not the goal's.

Goal (issue 11), within the scenario's budget (at most 15 minutes on 2 cores, base training
included, or 5 minutes when a base run is given): speaker accuracy >= 0.85 and conditional
digit accuracy >= 0.85 on the project's evaluator, memorised clips <= 1%.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FSDD = REPO.parent / "shared" / "data" / "fsdd" / "recordings"
GOALS = {"target_speaker_accuracy": (">=", 0.85), "target_digit_accuracy": (">=", 0.85),
         "target_memorised_share": ("<=", 0.01)}  # fmt: skip
BUDGET_S, BUDGET_WITH_BASE_S = 15 * 60, 5 * 60


def scenario_file(
    work: Path, base_time: str | None, adapt_time: str | None, n: int | None
) -> tuple[str, bool]:
    """The preset, or a copy of it with a shorter budget (a probe); (name or path, is_probe)."""
    if base_time is None and adapt_time is None and n is None:
        return "voice-clone", False
    import yaml

    from genforge.core.config import to_dict
    from genforge.scenarios.schema import load_scenario

    sc = to_dict(load_scenario("voice-clone"))
    sc["train"]["max_time"] = base_time or sc["train"]["max_time"]
    sc["adapt"]["max_time"] = adapt_time or sc["adapt"]["max_time"]
    sc["evaluate"]["n"] = n or sc["evaluate"]["n"]
    path = work / "voice-clone-probe.yaml"
    path.write_text(yaml.safe_dump(sc, sort_keys=False))
    return str(path), True


def verdict(key: str, value: float | None) -> str:
    if key not in GOALS or value is None:
        return ""
    op, bound = GOALS[key]
    ok = value >= bound if op == ">=" else value <= bound
    return f"{op} {bound:g}: {'met' if ok else '**not met**'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(FSDD))
    ap.add_argument("--speaker", default=None)
    ap.add_argument("--base", default=None, help="a finished base run (skips the base training)")
    ap.add_argument(
        "--base-time", default=None, help="probe: the base training's budget instead of the preset's"
    )
    ap.add_argument(
        "--adapt-time", default=None, help="probe: the fine-tune's budget instead of the preset's"
    )
    ap.add_argument(
        "--n", type=int, default=None, help="probe: clips per evaluation row instead of the preset's"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", default=None, help="run directory to keep (default: a temporary one)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "voice_clone.md"))
    args = ap.parse_args()
    if not Path(args.data).is_dir():
        sys.exit(f"no data at {args.data} (FSDD recordings expected)")
    import torch

    from genforge.scenarios.runner import run_scenario

    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="voice-clone-"))
    work.mkdir(parents=True, exist_ok=True)
    scenario, probe = scenario_file(work, args.base_time, args.adapt_time, args.n)
    run = work / "run"
    t0 = time.perf_counter()
    result = run_scenario(scenario, data=args.data, out=run, speaker=args.speaker, base=args.base)
    wall = time.perf_counter() - t0
    metrics = json.loads((run / "metrics.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    values, adapt = metrics["values"], summary["adapt"]
    budget = BUDGET_WITH_BASE_S if args.base else BUDGET_S
    kind = "probe (shortened budget: not the goal's numbers)" if probe else "the scenario's own budget"
    lines = [
        f"# Voice cloning ({datetime.date.today().isoformat()}, {kind})",
        "",
        f"`{' '.join(['.venv/bin/python', 'bench/voice_clone.py', *sys.argv[1:]])}`; "
        f"{platform.processor() or 'CPU'}, {os.cpu_count()} cores, {args.threads} threads, load average {load:.1f} "
        "at the start.",
        "",
        f"Target voice {adapt['speaker']!r} from {adapt['clips']} clips; base voices {', '.join(adapt['base_speakers'])}"
        + (f" (given base run {args.base})" if args.base else "")
        + f"; model {json.loads((run / 'model.json').read_text())['model']}"
        + (", trunk frozen" if adapt["freeze_trunk"] else "")
        + ".",
        "",
        "| metric | value | goal |",
        "| --- | --- | --- |",
    ]
    for key in ("target_speaker_accuracy", "target_digit_accuracy", "target_memorised_share", "target_fad",
                "target_fad_control", "target_real_speaker_accuracy", "target_real_digit_accuracy",
                "speaker_accuracy", "conditional_accuracy"):  # fmt: skip
        value = values.get(key)
        lines.append(f"| {key} | {'missing' if value is None else f'{value:.4f}'} | {verdict(key, value)} |")
    base_train = adapt.get("base_train") or {}
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in summary["timings_s"].items())
    lines += [
        "",
        f"Training: base {base_train.get('step', 'given')} steps ({base_train.get('stop_reason', '-')}); fine-tune "
        f"{summary['train']['step']} steps ({summary['train']['stop_reason']}).",
        f"Wall time of the whole run {wall:.0f} s (budget {budget // 60} min: "
        f"{'met' if wall <= budget else '**not met**'}); stages: {timings}. Gates "
        f"{'passed' if result.passed else 'FAILED'}: "
        + "; ".join(
            f"{g['metric']} {g['value'] if g['value'] is None else round(g['value'], 4)} {g['bound']}"
            for g in summary["gates"]
        )
        + ".",  # fmt: skip
        "",
    ]
    text = "\n".join(lines)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
