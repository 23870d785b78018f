"""`genforge run`: collect -> process -> augment -> train -> evaluate -> export on one scenario.

Every stage writes into one run directory, so a finished run holds its dataset (with the data
quality report), the model, its metrics, the report page and the exported model:

    RUN_DIR/scenario.yaml     the effective scenario (after command-line overrides)
    RUN_DIR/dataset/          the canonical dataset + report.json/report.html
    RUN_DIR/model.json ...    the trained model (see docs/architecture.md)
    RUN_DIR/metrics.json      evaluation against the held-out split
    RUN_DIR/report.html       the run report
    RUN_DIR/export/           exported model(s)
    RUN_DIR/summary.json      gates and where everything is

A scenario with an `adapt:` section (voice cloning) trains twice: a base run on every speaker
but the target (RUN_DIR/base/, unless `adapt.base` names a finished one), then the run at
RUN_DIR, a fine-tune of it on the target speaker's clips; the datasets they read are cut from
RUN_DIR/dataset/ (scenarios/voice_clone.py), which the evaluation keeps (its evaluator knows
every speaker) and scores the samples the run makes for the target speaker.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from genforge.core.atomic import write_json, write_text
from genforge.core.config import to_dict
from genforge.scenarios.schema import Scenario, load_scenario

EXPORT_SUFFIX = {"onnx": "onnx", "torchscript": "pt"}


@dataclass
class GateResult:
    metric: str
    value: float | None
    bound: str
    passed: bool
    why: str = ""
    real: float | None = None  # what real held-out data scores on the metric, where measured


@dataclass
class RunResult:
    run_dir: Path
    gates: list[GateResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


def metric_value(metrics: dict[str, Any], key: str) -> float | None:
    """Look up `key` in metrics.json's flat `values`, or a dotted path into the whole file."""
    values = metrics.get("values", {})
    if key in values:
        return _number(values[key])
    node: Any = metrics
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return _number(node)


def _number(value: Any) -> float | None:
    if isinstance(value, dict) and "value" in value:
        value = value["value"]
    return float(value) if isinstance(value, int | float) else None


def apply_overrides(sc: Scenario, data: str | None, max_time: str | None, steps: int | None,
                    seed: int | None) -> Scenario:  # fmt: skip
    train = _budget(sc.train, max_time, steps)
    if seed is not None:
        train = replace(train, seed=seed)
    public = None if sc.public is None else _budget(sc.public, max_time, steps)  # a public base: the same budget
    return replace(sc, data=replace(sc.data, source=data) if data else sc.data, train=train, public=public)


def _budget(section: Any, max_time: str | None, steps: int | None) -> Any:
    """A section with `max_time` and `steps` (train:, public:) under the command line's budget: a
    given --steps replaces the section's time budget too (by --max-time, or none), and is trained
    as given whatever the data's class count (no `steps_classes` sizing)."""
    if steps is not None:
        fixed = {"steps_classes": None} if hasattr(section, "steps_classes") else {}
        return replace(section, steps=steps, max_time=max_time, **fixed)
    return section if max_time is None else replace(section, max_time=max_time)


def _ingest(sc: Scenario, out: Path, console: Console) -> Path:
    from genforge.data.ingesters import get as get_ingester
    from genforge.data.ingesters import ingest

    d = sc.data
    if d.source is None:
        from genforge.core.errors import ConfigError

        raise ConfigError(f"scenario {sc.name!r} has no data source of its own: pass --data PATH")
    fields = {"size": d.size, "channels": d.channels, "val_fraction": d.val_fraction, "limit": d.limit, "seed": sc.train.seed}
    options = {**{k: v for k, v in fields.items() if v is not None}, **d.options}
    modality, result = ingest(d.source, out, options, modality=d.modality)
    for line in get_ingester(modality).summary(result):  # what `genforge data ingest` prints
        console.print(f"  {line}")
    return out


def apply_adapt_overrides(sc: Scenario, speaker: str | None, base: str | None) -> Scenario:
    """`genforge run --speaker NAME --base RUN`: the adapt section's target and base run."""
    if speaker is None and base is None:
        return sc
    if sc.adapt is None:
        from genforge.core.errors import ConfigError

        raise ConfigError(f"--speaker and --base adapt a model to a new voice; scenario {sc.name!r} has no adapt: section")
    adapt = replace(sc.adapt, speaker=speaker or sc.adapt.speaker, base=str(base) if base else sc.adapt.base)
    return replace(sc, adapt=adapt)


def _train(sc: Scenario, dataset: Path, run_dir: Path, console: Console, init_from: Path | None = None,
           freeze_trunk: bool = False, reference: Path | None = None, freeze_d: int = 0) -> dict[str, Any]:  # fmt: skip
    """Train `sc`'s model on `dataset` into `run_dir`, its gates measured during training against
    `reference` (the dataset the final evaluation scores against; default `dataset`)."""
    from genforge.data.canonical import open_dataset
    from genforge.scenarios.early_stop import early_stop_for
    from genforge.scenarios.sizing import DataFacts, size_recipe, size_steps
    from genforge.train.config import TrainConfig
    from genforge.train.launch import build_trainer

    layers = {"model": sc.model.config, "train": sc.train.config, "augment": sc.augment, "privacy": sc.privacy}
    # the settings that depend on the data's size follow the data given (scenarios/sizing.py)
    facts = DataFacts.of(open_dataset(dataset), sc.train.config.get("split", "train"))
    layers, sizing = size_recipe(facts, sc.model.name, layers, TrainConfig.batch_size)
    steps, notes = size_steps(facts, sc.train.steps, sc.train.steps_classes, sc.model.conditional)
    sizing += notes
    for note in sizing:
        console.print(f"  sized: {note}")
    cfg_file = run_dir / "train-config.yaml"
    write_text(cfg_file, yaml.safe_dump(layers, sort_keys=False))
    flags = {"max_time": sc.train.max_time, "steps": steps, "seed": sc.train.seed}
    early_stop = early_stop_for(sc, reference)  # measures the gates during training (scenarios/early_stop.py)
    trainer = build_trainer(run_dir, model_name=sc.model.name, data=dataset, config_file=cfg_file, flags=flags,
                            conditional=sc.model.conditional, callbacks=[early_stop], init_from=init_from,
                            freeze_trunk=freeze_trunk, freeze_d=freeze_d)
    summary = trainer.fit()
    console.print(f"  trained {summary['step']} steps, {summary['images']} images in {summary['elapsed']:.0f}s "
                  f"({summary['stop_reason']})")  # fmt: skip
    summary["early_stop"], summary["sizing"] = early_stop.report(), sizing
    if "check_share" in summary["early_stop"]:
        es = summary["early_stop"]
        console.print(f"  gate checks: {len(es['checks'])} ({es['check_seconds']:.1f}s, {es['check_share']:.1%} of "
                      f"training; evaluator ready in {es['setup_seconds_before_clock']:.1f}s before the clock)")  # fmt: skip
    return summary


def _adapt(sc: Scenario, dataset: Path, run_dir: Path, console: Console, stage: Any) -> tuple[Scenario, dict[str, Any]]:
    """The base training (unless given) and the fine-tune to the target voice (module docstring);
    the scenario with its target filled in, and the fine-tune's training summary."""
    import numpy as np

    from genforge.data.canonical import open_dataset
    from genforge.scenarios.voice_clone import adaptation_datasets, check_base_run, pick_target
    from genforge.train.launch import merge

    a = sc.adapt
    assert a is not None
    full = open_dataset(dataset)
    target = pick_target(full.speaker_names, a.speaker, dataset)
    others = [s for s in full.speaker_names if s != target]
    base_data, target_data = stage("split voices", adaptation_datasets, full, run_dir, target, others, a.max_clips,
                                   sc.train.seed, a.rehearsal)  # fmt: skip
    adapt_data = open_dataset(target_data)
    per = np.bincount(np.asarray(adapt_data.train_split.speakers), minlength=len(adapt_data.speaker_names))
    clips = int(per[adapt_data.speaker_names.index(target)])
    rehearsed = int(per.sum()) - clips
    console.print(f"  new voice {target!r}: {clips} of its clips to adapt on"
                  f"{f' (and {rehearsed} of the base voices)' if rehearsed else ''}; base voices: {', '.join(others)}")  # fmt: skip
    base_summary = None
    if a.base is None:
        base_run = run_dir / "base"
        base_sc = replace(sc, evaluate=replace(sc.evaluate, gates=[]))  # the gates are the fine-tune's
        base_summary = stage("train base", _train, base_sc, base_data, base_run, console)
    else:
        base_run = check_base_run(Path(a.base), target)
    options = {**sc.evaluate.options, "target_speaker": target}
    tuned = replace(sc, model=replace(sc.model, config=merge(sc.model.config, a.model)),
                    train=replace(sc.train, max_time=a.max_time, steps=a.steps, config=merge(sc.train.config, a.config)),
                    evaluate=replace(sc.evaluate, options=options))  # fmt: skip
    # the gates are measured as the final evaluation measures them: against every voice's clips
    trained = stage("adapt", _train, tuned, target_data, run_dir, console, base_run, a.freeze_trunk, dataset,
                    a.freeze_d)
    trained["adapt"] = {"speaker": target, "base_speakers": others, "clips": clips, "rehearsal_clips": rehearsed,
                        "base_run": str(base_run),
                        "base_data": str(base_data), "target_data": str(target_data), "freeze_trunk": a.freeze_trunk,
                        "freeze_d": a.freeze_d,
                        "base_train": None if base_summary is None else
                        {k: base_summary[k] for k in ("step", "images", "elapsed", "stop_reason")}}  # fmt: skip
    return replace(sc, adapt=replace(a, speaker=target), evaluate=replace(sc.evaluate, options=options)), trained


def _pretrain(sc: Scenario, dataset: Path, run_dir: Path, console: Console) -> tuple[Path | None, dict[str, Any]]:
    """The `public:` base (schema.PublicSection): its data ingested into RUN_DIR/public/dataset as
    the private data was (at its size and channels), trained without DP and without gates into
    RUN_DIR/public/base; the base run (None: skipped) and what summary.json records."""
    from genforge.core.errors import ConfigError
    from genforge.data.canonical import open_dataset
    from genforge.train.launch import merge

    p = sc.public
    assert p is not None
    private = open_dataset(dataset)
    # the private data's shape, so the base's weights fit the model trained on it
    size, channels = (None, None) if "image_shape" not in private.manifest else (
        private.manifest["image_shape"][:2], private.manifest["image_shape"][2])  # fmt: skip
    data = replace(sc.data, source=p.source, limit=p.limit, val_fraction=p.val_fraction,
                   size=size or sc.data.size, channels=channels or sc.data.channels)  # fmt: skip
    public_data = _ingest(replace(sc, data=data), run_dir / "public" / "dataset", console)
    public = open_dataset(public_data)
    names = public.class_names
    differ = sc.model.conditional and names != private.class_names
    if differ:
        why = (f"public.source {p.source!r}: its classes {names} must be the private data's {private.class_names}, "
               "in that order (a conditional model keeps its label table)")  # fmt: skip
        if p.if_classes_differ == "error":
            raise ConfigError(why)
        if p.if_classes_differ == "skip":
            console.print(f"  [yellow]no public pretraining[/]: {why}")
            return None, {"source": p.source, "skipped": why}
        # transfer: the base trains on its own classes; the run takes what its family carries
        # across a class change (models/base.py adapt_base_state: mmd's feature net)
        console.print(f"  public classes {names} are not the data's: the run starts from what of the base "
                      "does not depend on the classes")  # fmt: skip
    base_sc = replace(sc, privacy={}, public=None, evaluate=replace(sc.evaluate, gates=[]),
                      model=replace(sc.model, config=merge(sc.model.config, p.model)),
                      train=replace(sc.train, max_time=p.max_time, steps=p.steps, config=merge(sc.train.config, p.config)))  # fmt: skip
    base_run = run_dir / "public" / "base"
    base = _train(base_sc, public_data, base_run, console)
    record = {"source": p.source, "dataset": str(public_data), "fingerprint": public.fingerprint,
              "base_run": str(base_run), "epsilon_spent": 0.0,
              "why": "the base saw only the public data, never a private example: it costs no epsilon",
              "train": {k: base[k] for k in ("step", "images", "elapsed", "stop_reason")},
              **({"classes_differ": {"public": list(names), "carried": "what does not depend on the classes"}}
                 if differ else {})}  # fmt: skip
    return base_run, record


def _evaluate(sc: Scenario, dataset: Path, run_dir: Path) -> dict[str, Any]:
    from genforge.evaluate.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(n=sc.evaluate.n, features=sc.evaluate.features, seed=sc.train.seed,
                     options=dict(sc.evaluate.options), utility=sc.evaluate.utility,
                     membership=sc.evaluate.membership)  # fmt: skip
    return evaluate(run_dir, dataset, cfg, out=run_dir / "metrics.json")


def _export(sc: Scenario, run_dir: Path) -> list[Path]:
    from genforge.deploy.export import export_run

    paths = []
    for fmt in sc.export.formats:
        path = run_dir / "export" / f"model.{EXPORT_SUFFIX.get(fmt, fmt)}"
        export_run(run_dir, fmt, path)
        paths.append(path)
    return paths


def check_gates(sc: Scenario, metrics: dict[str, Any]) -> list[GateResult]:
    from genforge.evaluate.metrics.base import real_value

    out = []
    for gate in sc.evaluate.gates:
        value = metric_value(metrics, gate.metric)
        out.append(GateResult(gate.metric, value, gate.describe(), gate.check(value), gate.why,
                              real_value(metrics, gate.metric)))  # fmt: skip
    return out


def run_scenario(name: str, *, data: str | None = None, out: str | Path | None = None, max_time: str | None = None,
                 steps: int | None = None, seed: int | None = None, console: Console | None = None,
                 speaker: str | None = None, base: str | Path | None = None) -> RunResult:  # fmt: skip
    console = console or Console()
    sc = apply_overrides(load_scenario(name), data, max_time, steps, seed)
    sc = apply_adapt_overrides(sc, speaker, None if base is None else str(base))
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(out) if out else Path("runs") / f"{sc.name}-{stamp}"
    if (run_dir / "run.json").exists():
        from genforge.core.errors import GenforgeError

        raise GenforgeError(f"{run_dir} already holds a run; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "scenario.yaml", yaml.safe_dump(to_dict(sc), sort_keys=False))
    result = RunResult(run_dir)
    console.rule(f"genforge run: scenario [bold]{sc.name}[/] -> {run_dir}")

    def stage(label: str, fn, *args):
        console.print(f"[bold cyan]{label}[/]")
        t0 = time.perf_counter()
        value = fn(*args)
        result.timings[label] = round(time.perf_counter() - t0, 2)
        return value

    dataset = stage("collect + process", _ingest, sc, run_dir / "dataset", console)
    if sc.adapt is None:
        base_run, public = (None, None) if sc.public is None else stage("public pretraining", _pretrain, sc, dataset,
                                                                        run_dir, console)  # fmt: skip
        trained = stage("augment + train", _train, sc, dataset, run_dir, console, base_run)
        trained.update({"public": public} if sc.public is not None else {})
    else:
        sc, trained = _adapt(sc, dataset, run_dir, console, stage)
    metrics = stage("evaluate", _evaluate, sc, dataset, run_dir)
    exports = stage("export", _export, sc, run_dir)
    from genforge.evaluate.report import write_report

    report = stage("report", write_report, run_dir)
    result.gates = check_gates(sc, metrics)
    summary = {
        "scenario": sc.name,
        "passed": result.passed,
        "gates": [to_dict_gate(g) for g in result.gates],
        "timings_s": result.timings,
        "train": {k: trained[k] for k in ("step", "images", "elapsed", "stop_reason")},
        "early_stop": trained["early_stop"],
        "sizing": trained["sizing"],
        **({"adapt": trained["adapt"]} if "adapt" in trained else {}),
        **({"public": trained["public"]} if "public" in trained else {}),
        "dataset": str(dataset),
        "data_report": str(dataset / "report.html"),
        "report": str(report),
        "model": str(run_dir / "model.safetensors"),
        "exports": [str(p) for p in exports],
    }
    write_json(run_dir / "summary.json", summary)
    _print_summary(console, sc, result, summary)
    return result


def to_dict_gate(g: GateResult) -> dict[str, Any]:
    return {"metric": g.metric, "value": g.value, "bound": g.bound, "passed": g.passed, "why": g.why,
            "real_value": g.real}  # fmt: skip


def real_data_note(g: GateResult, gate: Any) -> str:
    """For a failed gate: what real held-out data scores on its metric, and whether the gate lies
    beyond it (then no generator of this data can be expected to pass: the gate, not the model,
    needs a look)."""
    if g.passed or g.real is None:
        return ""
    return (f"{g.metric}: real held-out data scores {g.real:.4g} here"
            + ("" if gate.check(g.real) else f", so the gate ({g.bound}) lies beyond real data"))


def _print_summary(console: Console, sc: Scenario, result: RunResult, summary: dict[str, Any]) -> None:
    table = Table("metric", "value", "gate", "result", "meaning", title=f"scenario {sc.name}: quality gates")
    for g in result.gates:
        value = "missing" if g.value is None else f"{g.value:.4g}"
        verdict = "[green]pass[/]" if g.passed else "[red]FAIL[/]"
        table.add_row(g.metric, value, g.bound, verdict, g.why)
    console.print(table)
    for g, gate in zip(result.gates, sc.evaluate.gates, strict=True):
        if note := real_data_note(g, gate):
            console.print(f"  {note}")
    console.print(f"data report : {summary['data_report']}")
    console.print(f"run report  : {summary['report']}")
    console.print(f"model       : {summary['model']}")
    for p in summary["exports"]:
        console.print(f"exported    : {p}")
    console.print(f"serve it    : genforge serve {result.run_dir}")
    total = sum(result.timings.values())
    console.print(f"[bold]{'PASSED' if result.passed else 'FAILED'}[/] in {total:.0f}s "
                  f"({', '.join(f'{k} {v:.0f}s' for k, v in result.timings.items())})")  # fmt: skip
