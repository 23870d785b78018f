"""What a data source yields, and the registry of sources.

A source only *collects*: it yields raw items (encoded file bytes or already-decoded arrays)
with their origin, split and label. Decoding, validation, resizing and deduplication belong
to the process stage, so every source gets the same checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from genforge.core.registry import Registry


@dataclass
class RawItem:
    origin: str  # file path, "archive.tar.gz::member", "digits[12]", ...
    split: str | None = None  # "train" / "val" / "test" when the source says so
    label: str | None = None  # class name when the source says so
    data: bytes | None = None  # encoded image file bytes (to decode in process)
    array: np.ndarray | None = None  # decoded HxW or HxWxC array (uint8 or float)
    error: str | None = None  # the source could not read this item: why


class Source(Protocol):
    name: str

    def __iter__(self) -> Iterator[RawItem]: ...

    def describe(self) -> dict[str, Any]:
        """JSON-able description recorded in the dataset manifest."""
        ...


class SourceFactory(Protocol):
    def matches(self, spec: str) -> bool:
        """True if this source handles `spec` (a path or a name such as 'digits')."""
        ...

    def open(self, spec: str, **options: Any) -> Source: ...


def _validate(name: str, factory: Any) -> None:
    for attr in ("matches", "open"):
        if not callable(getattr(factory, attr, None)):
            raise TypeError(f"data source {name!r} must define {attr}()")


SOURCES: Registry[SourceFactory] = Registry("data source", _validate)


def resolve_source(spec: str, **options: Any) -> Source:
    """Open the first registered source that handles `spec` (a name like 'digits' or a path)."""
    import genforge.data.sources.builtin  # noqa: F401  (registers the built-in sources)

    for name in SOURCES.names_in_order():
        factory = SOURCES.get(name)
        if factory.matches(spec):
            return factory.open(spec, **options)
    from genforge.core.errors import DataError

    raise DataError(
        f"{spec!r} is not a known data source: expected a name ({', '.join(SOURCES.names())}) "
        "or a path to an image folder, IDX file, .npz/.npy file or tar archive"
    )
