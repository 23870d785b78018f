"""Modalities: the kinds of data genforge models (image, audio, text).

A modality is a name that datasets (`manifest.json` field `modality`), models
(`GenerativeModel.modality`), runs (`model.json`) and the service carry. Each stage keeps its
per-modality part in a registry keyed by that name (the dataset reader in `data`, the training
feed in `train`, the evaluation in `evaluate`, the routes in `deploy`), so a new modality adds
modules that register themselves, never branches on its name.
"""

from __future__ import annotations

import importlib
from typing import TypeVar

from genforge.core.errors import ConfigError
from genforge.core.registry import Registry

T = TypeVar("T")

KNOWN = ("image", "audio", "text")
DEFAULT = "image"  # datasets and runs written before modalities were recorded are images


def check_name(name: str, _entry: object = None) -> None:
    if name not in KNOWN:
        raise ValueError(f"unknown modality {name!r}; known: {', '.join(KNOWN)}")


def modality_registry(kind: str) -> Registry:
    """A registry whose keys must be known modality names (checked at registration)."""
    return Registry(kind, check_name)


def lookup(registry: Registry[T], modality: str, builtins: str) -> T:
    """`registry[modality]`, importing the module `builtins` (which registers the shipped
    modalities' entries) on a miss; a clear error names the stage when none is registered."""
    if modality not in registry:
        importlib.import_module(builtins)
    if modality not in registry:
        raise ConfigError(
            f"no {registry.kind} for modality {modality!r}; this genforge supports: "
            f"{', '.join(registry.names()) or 'none'}"
        )
    return registry.get(modality)
