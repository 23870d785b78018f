"""Augment stage: classical batch augmentation, DiffAugment, and the ADA probability controller.

augment = build_augment(config)            # config: AugmentConfig
images = augment(images, generator)        # float (B,C,H,W) in [-1, 1], any device
diffaug = build_diffaugment(config.diffaugment)

Audio (`augment.audio`): `AudioAugmentConfig` ops on float (B, T) waves, `AudioDiffAugmentConfig`
(built by the same `build_diffaugment`), `spec_augment` masks on spectrograms. The trainer builds
a run's augmentation with `augmentation_for(dataset.modality)` (registry `AUGMENTATIONS`).
"""

from __future__ import annotations

from genforge.augment.ada import AdaController
from genforge.augment.audio import AudioAugment, AudioDiffAugment, spec_augment
from genforge.augment.audio_config import AudioAugmentConfig, AudioDiffAugmentConfig, SpecAugmentConfig
from genforge.augment.classical import ClassicalAugment
from genforge.augment.config import AugmentConfig, DiffAugmentConfig
from genforge.augment.diffaugment import DiffAugment
from genforge.augment.registry import AUGMENTATIONS, ModalityAugment
from genforge.core.modality import lookup

__all__ = [
    "AdaController",
    "AudioAugment",
    "AudioAugmentConfig",
    "AudioDiffAugment",
    "AudioDiffAugmentConfig",
    "AugmentConfig",
    "ClassicalAugment",
    "DiffAugment",
    "DiffAugmentConfig",
    "SpecAugmentConfig",
    "augmentation_for",
    "build_ada",
    "build_augment",
    "build_diffaugment",
    "spec_augment",
]


def build_augment(config: AugmentConfig) -> ClassicalAugment:
    """The classical augmentation of `config`: `(batch, generator) -> batch`; identity when all p are 0."""
    return ClassicalAugment(config)


def build_diffaugment(
    config: DiffAugmentConfig | AudioDiffAugmentConfig,
) -> DiffAugment | AudioDiffAugment:
    """DiffAugment for `config.policy` (unknown names raise ConfigError); identity for an empty policy.

    The config's class names its modality (`DiffAugmentConfig`: images, `AudioDiffAugmentConfig`:
    waves), so a GAN family builds the right one from the config it carries."""
    return augmentation_for(config.modality).build_diff(config)


def augmentation_for(modality: str) -> ModalityAugment:
    """The registered augmentation of `modality` (ConfigError naming it when there is none)."""
    return lookup(AUGMENTATIONS, modality, "genforge.augment")


def build_ada(config: DiffAugmentConfig, **kwargs) -> AdaController | None:
    """The ADA controller when `config.ada` is set, else None."""
    return AdaController.from_config(config, **kwargs) if config.ada else None


AUGMENTATIONS.register(
    "image",
    ModalityAugment(
        config=AugmentConfig,
        build=lambda config, dataset: build_augment(config),
        diff_config=DiffAugmentConfig,
        build_diff=DiffAugment,
    ),
)
