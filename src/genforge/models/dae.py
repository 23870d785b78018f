"""Denoising autoencoder (`dae`): a small U-Net trained to undo a configurable corruption.

A DAE restores, it does not generate: `restore(images)` maps corrupted images to clean ones, and
`sample` is only the trainer's progress view of (corrupted, restored) pairs (the restoration
families' shared contract: `models.restoration.RestorationModel`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from genforge.core.errors import ConfigError, GenforgeError
from genforge.models.base import ModelOutput
from genforge.models.corruption import CorruptionConfig, corrupt
from genforge.models.nets.conv import UNet, stage_widths
from genforge.models.registry import MODELS
from genforge.models.restoration import RestorationModel

_LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss}


@dataclass
class DAEConfig:
    image_size: int = 28
    channels: int = 1
    num_classes: int = 0  # ignored: restoration does not use labels
    widths: list[int] = field(default_factory=lambda: [32, 64, 128])  # stem, then one halving each
    loss: Literal["l1", "l2"] = "l1"
    corruption: CorruptionConfig = field(default_factory=CorruptionConfig)
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        if self.num_classes < 0:
            raise ConfigError(f"dae.num_classes: must be >= 0, got {self.num_classes}")


@MODELS.register("dae")
class DAE(RestorationModel):
    family = "dae"
    config_class = DAEConfig

    def __init__(self, config: DAEConfig):
        super().__init__(config)
        self.net = UNet(config.channels, config.image_size, config.widths)

    @classmethod
    def default_config(cls, image_size: int, channels: int, num_classes: int = 0, **overrides: Any) -> Any:
        widths = stage_widths(image_size, 32, 128, extra=1)[:4]  # at most 3 halvings
        return super().default_config(image_size, channels, num_classes, **{"widths": widths, **overrides})

    def corrupt(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return corrupt(clean, self.config.corruption, generator)

    def restoration_loss(self, clean: torch.Tensor, estimate: torch.Tensor) -> ModelOutput:
        loss = _LOSSES[self.config.loss](estimate, clean)
        return ModelOutput(loss, {self.config.loss: loss.detach()})

    def restore_input(self, images: torch.Tensor) -> torch.Tensor:
        """Corrupted float (N, C, H, W) in [-1, 1]: restored to the same shape and range."""
        c = self.config
        if images.dim() != 4 or tuple(images.shape[1:]) != (c.channels, c.image_size, c.image_size):
            raise GenforgeError(
                f"dae restores images of shape (N, {c.channels}, {c.image_size}, {c.image_size}), got {tuple(images.shape)}"
            )
        return images
