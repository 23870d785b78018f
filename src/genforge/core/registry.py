"""Small explicit registries (models, metrics, feature extractors, data sources).

Entries are validated when they are registered, not when they are first used, so a
broken plug-in fails at import time with its name in the message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from genforge.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, validate: Callable[[str, T], None] | None = None):
        self.kind = kind
        self._validate = validate
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None):
        """Register `entry` under `name`; without `entry`, acts as a decorator."""

        def add(obj: T) -> T:
            if not name or not name.replace("-", "_").replace(":", "_").isidentifier():
                raise ValueError(f"{self.kind} name {name!r} must be an identifier (letters, digits, -, _)")
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            if self._validate is not None:
                self._validate(name, obj)
            self._entries[name] = obj
            return obj

        return add if entry is None else add(entry)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def names_in_order(self) -> list[str]:
        """Names in registration order (for registries where the first match wins)."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
