"""`genforge` commands of the evaluate stage."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
