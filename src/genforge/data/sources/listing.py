"""What the modalities' own source registries (text, audio) share: a factory made of a spec test
and a maker, and the first file names of a folder or tar archive, which `--modality auto`
peeks at to tell what a source holds without reading it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from genforge.core.errors import DataError
from genforge.data.sources.tar import entries

PEEK = 200  # files or archive members looked at


@dataclass(frozen=True)
class SpecFactory:
    """A source kind of a modality: `test(spec)` says whether it reads `spec`, `make(spec, cfg)`
    opens it with the modality's ingest config."""

    test: Callable[[str], Any]
    make: Callable[[str, Any], Any]

    def matches(self, spec: str) -> bool:
        return bool(self.test(spec))

    def open(self, spec: str, cfg: Any) -> Any:
        return self.make(spec, cfg)


def open_spec(factories: Any, spec: str, cfg: Any, expected: str) -> Any:
    """`spec` opened by the first of a modality's registered SpecFactories (in registration order)
    that reads it; else a DataError saying what the modality expects."""
    for name in factories.names_in_order():
        factory = factories.get(name)
        if factory.matches(spec):
            return factory.open(spec, cfg)
    raise DataError(f"{spec!r} is not {expected}")


def folder_names(root: str) -> list[str]:
    """The first `PEEK` file names under `root`, walked in sorted order, hidden ones left out."""
    names: list[str] = []
    for _dir, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        names.extend(f for f in sorted(files) if not f.startswith("."))
        if len(names) >= PEEK:
            break
    return names[:PEEK]


def tar_names(archive: str) -> list[str]:
    """The file names (without folders) of the first `PEEK` members of a tar archive."""
    names: list[str] = []
    try:
        for name, *_ in entries(archive, lambda member: True):
            names.append(name[name.rfind("/") + 1 :])
            if len(names) >= PEEK:
                break
    except Exception:  # a corrupt archive: whatever was read decides; the ingest reports the rest
        pass
    return names
