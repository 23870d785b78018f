"""Options every source takes, parsed into typed dataclasses so a misspelt option is an error."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from genforge.core.config import from_dict

OptionsT = TypeVar("OptionsT", bound="SourceOptions")


@dataclass
class SourceOptions:
    limit: int | None = None  # stop after this many items (errors included)

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must be >= 0, got {self.limit}")


def parse_options(cls: type[OptionsT], options: dict[str, Any], source: str) -> OptionsT:
    """`cls` built from keyword options, naming the source in any error."""
    return from_dict(cls, options, where=f"{source} source options")


def limited(items: Iterable[Any], limit: int | None) -> Iterator[Any]:
    return iter(items) if limit is None else itertools.islice(items, limit)
