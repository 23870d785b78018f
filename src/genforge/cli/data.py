"""`genforge` commands of the data stage."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
