"""Augment stage: classical batch augmentation, DiffAugment, and the ADA probability controller.

augment = build_augment(config)            # config: AugmentConfig
images = augment(images, generator)        # float (B,C,H,W) in [-1, 1], any device
diffaug = build_diffaugment(config.diffaugment)
"""

from __future__ import annotations

from genforge.augment.ada import AdaController
from genforge.augment.classical import ClassicalAugment
from genforge.augment.config import AugmentConfig, DiffAugmentConfig
from genforge.augment.diffaugment import DiffAugment

__all__ = [
    "AdaController",
    "AugmentConfig",
    "ClassicalAugment",
    "DiffAugment",
    "DiffAugmentConfig",
    "build_ada",
    "build_augment",
    "build_diffaugment",
]


def build_augment(config: AugmentConfig) -> ClassicalAugment:
    """The classical augmentation of `config`: `(batch, generator) -> batch`; identity when all p are 0."""
    return ClassicalAugment(config)


def build_diffaugment(config: DiffAugmentConfig) -> DiffAugment:
    """DiffAugment for `config.policy` (unknown names raise ConfigError); identity for an empty policy."""
    return DiffAugment(config)


def build_ada(config: DiffAugmentConfig, **kwargs) -> AdaController | None:
    """The ADA controller when `config.ada` is set, else None."""
    return AdaController.from_config(config, **kwargs) if config.ada else None
