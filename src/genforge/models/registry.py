"""Registry of model families: name -> GenerativeModel subclass with a dataclass config."""

from __future__ import annotations

import dataclasses
from typing import Any

from genforge.core.config import from_dict
from genforge.core.modality import check_name
from genforge.core.registry import Registry
from genforge.models.base import GenerativeModel


def _validate(name: str, cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, GenerativeModel)):
        raise TypeError(f"model {name!r} must be a GenerativeModel subclass")
    if not dataclasses.is_dataclass(cls.config_class):
        raise TypeError(f"model {name!r}: config_class must be a dataclass")
    check_name(cls.modality)


MODELS: Registry[type[GenerativeModel]] = Registry("model", _validate)


def build_model(name: str, config: dict[str, Any] | None = None) -> GenerativeModel:
    """Build model `name` from a plain config dict (as saved beside its weights)."""
    if name not in MODELS:
        import genforge.models.zoo  # noqa: F401  (registers the built-in families)
    cls = MODELS.get(name)
    return cls(from_dict(cls.config_class, config or {}, where=f"model {name}"))
