"""The `genforge` command: a thin layer that parses arguments and calls the stages.

Each stage's commands live in a module of this package (`data`, `train`, `evaluate`,
`deploy`, `scenarios`) with a `register(app)` function. Heavy imports (torch) happen inside
the commands, so `genforge --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import typer

from genforge import __version__

STAGE_MODULES = ("data", "train", "evaluate", "deploy", "scenarios")

app = typer.Typer(
    name="genforge",
    help=(
        "From raw data to an evaluated, deployed generative model.\n\n"
        "Stages: collect/process (data ingest, data report) -> augment (configured per run) -> "
        "train (train, sample, restore) -> evaluate (evaluator, eval, report) -> "
        "deploy (export, serve); `run` chains them on a named scenario."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"genforge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    pass


for _name in STAGE_MODULES:
    importlib.import_module(f"genforge.cli.{_name}").register(app)


def _fail(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(2)


def main() -> None:
    from genforge.core.atomic import is_disk_full
    from genforge.core.errors import GenforgeError
    from genforge.core.host_memory import retain_freed_memory
    from genforge.core.threads import set_wait_policy

    # every command that computes (train, sample, eval, serve) frees and reallocates the same
    # large tensors in a loop; the process keeps freed pages instead of faulting them in again
    retain_freed_memory()
    # before torch loads OpenMP: idle threads give their cores up soon to another process
    # (core/threads.py); compute commands also choose their thread count with --threads
    set_wait_policy()
    try:
        app()  # standalone mode: click reports usage errors and exits by itself
    except GenforgeError as exc:
        _fail(str(exc))
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        # a write outside the atomic helpers (a log line, a PNG): still no traceback
        what = getattr(exc, "filename", None)
        where = f"{what}: " if isinstance(what, str) else ""
        _fail(f"{where}no space left on device ({exc}); free some space and run again")
