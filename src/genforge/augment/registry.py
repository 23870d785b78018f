"""The registered augmentation ops: classical ones by `AugmentConfig` field, DiffAugment by policy name
(audio's by `AudioAugmentConfig` field and `AudioDiffAugmentConfig` policy name), and per modality
the `augment:` config and builders the trainer and the GAN families use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from genforge.core.modality import modality_registry
from genforge.core.registry import Registry


@dataclass(frozen=True)
class GeometricOp:
    """Draws per-sample 3x3 affine matrices in normalised coordinates (output -> input);
    identity for samples it skips. All geometric ops of a batch share one `grid_sample`."""

    matrices: Callable[[Any, int, tuple[int, int], torch.Generator | None], torch.Tensor]


@dataclass(frozen=True)
class PixelOp:
    """Transforms a float (B,C,H,W) batch directly: (batch, op config, generator) -> batch."""

    apply: Callable[[torch.Tensor, Any, torch.Generator | None], torch.Tensor]


def _validate_classical(name: str, op: Any) -> None:
    if not isinstance(op, GeometricOp | PixelOp):
        raise TypeError(f"augmentation op {name!r} must be a GeometricOp or PixelOp")


def _validate_diff(name: str, op: Any) -> None:
    if not callable(op):
        raise TypeError(f"DiffAugment op {name!r} must be callable (batch, p, config, generator) -> batch")


def _validate_wave(name: str, op: Any) -> None:
    if not callable(op):
        raise TypeError(f"audio augmentation op {name!r} must be callable (waves, config, generator, rate)")


CLASSICAL_OPS: Registry[GeometricOp | PixelOp] = Registry("augmentation op", _validate_classical)
# (batch, p, DiffAugmentConfig, generator) -> batch, differentiable w.r.t. the batch
DIFF_OPS: Registry[Callable[..., torch.Tensor]] = Registry("DiffAugment policy", _validate_diff)
# (waves (B,T), op config, generator, sample rate) -> waves, in registration order
WAVE_OPS: Registry[Callable[..., torch.Tensor]] = Registry("audio augmentation op", _validate_wave)
# (waves (B,T), p, AudioDiffAugmentConfig, generator) -> waves, differentiable w.r.t. the waves
AUDIO_DIFF_OPS: Registry[Callable[..., torch.Tensor]] = Registry("audio DiffAugment policy", _validate_diff)


@dataclass(frozen=True)
class ModalityAugment:
    """One modality's augmentation: the `augment:` section's dataclass and its builder
    `(config, dataset) -> augment(batch, generator) -> batch` (the dataset gives what the config
    does not, e.g. the sample rate), and the DiffAugment config the modality's GANs carry with
    its builder `(config) -> augment(batch, generator=None) -> batch`."""

    config: type
    build: Callable[[Any, Any], Callable[..., torch.Tensor]]
    diff_config: type
    build_diff: Callable[[Any], Any]


AUGMENTATIONS: Registry[ModalityAugment] = modality_registry("augmentation")
