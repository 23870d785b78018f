"""`genforge scenarios list|show` and `genforge run`: the whole chain on a named scenario."""

from __future__ import annotations

from pathlib import Path

import typer

from genforge.core.threads import THREADS_HELP
from genforge.core.threads import configure as configure_threads

scenarios_app = typer.Typer(help="Shipped and user scenarios (recipes for one use case).", no_args_is_help=True)


@scenarios_app.command("list")
def list_scenarios() -> None:
    """List the shipped scenarios with a line each."""
    from rich.console import Console
    from rich.table import Table

    from genforge.scenarios.schema import load_scenario, preset_names

    table = Table("scenario", "model", "data", "budget", "description")
    for name in preset_names():
        sc = load_scenario(name)
        budget = sc.train.max_time or f"{sc.train.steps} steps"
        table.add_row(name, sc.model.name, sc.data.source or "--data", budget, sc.description.split(":")[0])
    Console().print(table)


@scenarios_app.command("show")
def show_scenario(name: str = typer.Argument(..., help="A shipped scenario name or a scenario .yaml path.")) -> None:
    """Print a scenario as YAML (copy it to start your own)."""
    import yaml

    from genforge.core.config import to_dict
    from genforge.scenarios.schema import load_scenario

    typer.echo(yaml.safe_dump(to_dict(load_scenario(name)), sort_keys=False))


def run(
    scenario: str = typer.Option("digits", "--scenario", "-s", help="Scenario name or .yaml path."),
    data: str | None = typer.Option(None, "--data", help="Data source overriding the scenario's (path or name)."),
    out: Path | None = typer.Option(None, "--out", help="Run directory (default runs/<scenario>-<time>)."),
    max_time: str | None = typer.Option(None, "--max-time", help="Training time budget, e.g. 90s, 5m."),
    steps: int | None = typer.Option(None, "--steps", help="Training step budget (overrides the scenario)."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (overrides the scenario)."),
    speaker: str | None = typer.Option(
        None, "--speaker", help="Scenarios with adapt: (voice-clone): the new voice, a speaker name of the data."
    ),
    base: Path | None = typer.Option(
        None, "--base", help="Scenarios with adapt: a finished base run to adapt (skips the base training)."
    ),
    threads: int = typer.Option(0, "--threads", help=THREADS_HELP),
) -> None:
    """Run collect -> process -> augment -> train -> evaluate -> export on a scenario; exit 1 when a gate fails."""
    configure_threads(threads)
    from genforge.scenarios.runner import run_scenario

    result = run_scenario(scenario, data=data, out=out, max_time=max_time, steps=steps, seed=seed,
                          speaker=speaker, base=base)  # fmt: skip
    raise typer.Exit(0 if result.passed else 1)


def register(app: typer.Typer) -> None:
    app.add_typer(scenarios_app, name="scenarios")
    app.command("run")(run)
