"""`genforge` commands of the deploy stage."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
