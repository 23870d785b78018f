"""Denoising autoencoder (`dae`): a small U-Net trained to undo a configurable corruption.

A DAE restores, it does not generate: its `task` is "restore" and `restore(images)` maps corrupted
images to clean ones (deploy and `genforge restore` call that). `sample` is only the trainer's
progress view: while training, the model keeps its latest batch (not saved), and `sample(n)`
returns pairs (corrupted, restored) of those images, corrupted with the given generator, so the
trainer's sample grids show restoration quality. A loaded model has no such batch, and `sample`
raises a GenforgeError that says to use `restore` instead: a pipeline or service asking a DAE for
new images fails clearly rather than returning restorations of noise that look like samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from genforge.core.errors import ConfigError, GenforgeError
from genforge.models.base import Batch, GenerativeModel, ModelOutput, OptimizerSpec, Phase
from genforge.models.corruption import CorruptionConfig, corrupt
from genforge.models.nets.conv import UNet, stage_widths
from genforge.models.registry import MODELS

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
class DAE(GenerativeModel):
    family = "dae"
    config_class = DAEConfig
    ema_modules = ("net",)
    task = "restore"

    def __init__(self, config: DAEConfig):
        super().__init__(config)
        self.net = UNet(config.channels, config.image_size, config.widths)
        self._preview: torch.Tensor | None = None  # the latest training images, for `sample`

    @classmethod
    def default_config(cls, image_size: int, channels: int, num_classes: int = 0, **overrides: Any) -> Any:
        widths = stage_widths(image_size, 32, 128, extra=1)[:4]  # at most 3 halvings
        return super().default_config(image_size, channels, num_classes, **{"widths": widths, **overrides})

    def phases(self) -> list[Phase]:
        return [Phase("main", ["net"], OptimizerSpec("adam", self.config.lr, self.config.betas))]

    def training_step(self, phase: str, batch: Batch, step: int) -> ModelOutput:
        clean = batch.images
        self._preview = clean[:32].detach()
        noisy = corrupt(clean, self.config.corruption)  # global RNG: saved by the trainer for resume
        loss = _LOSSES[self.config.loss](self.net(noisy), clean)
        return ModelOutput(loss, {self.config.loss: loss.detach()})

    @torch.no_grad()
    def restore(self, images: torch.Tensor) -> torch.Tensor:
        """Corrupted float (N, C, H, W) in [-1, 1] -> restored, same shape and range."""
        c = self.config
        if images.dim() != 4 or tuple(images.shape[1:]) != (c.channels, c.image_size, c.image_size):
            raise GenforgeError(
                f"dae restores images of shape (N, {c.channels}, {c.image_size}, {c.image_size}), got {tuple(images.shape)}"
            )
        device = next(self.parameters()).device
        return self.net(images.to(device)).clamp(-1.0, 1.0)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """Training progress view: n images alternating corrupted / restored (see the module doc)."""
        if self._preview is None:
            raise GenforgeError(
                "dae is a restoration model: it does not generate new images; "
                "use `genforge restore RUN_DIR INPUT --out OUTPUT` (or model.restore(images))"
            )
        pairs = (n + 1) // 2
        clean = self._preview[torch.arange(pairs) % len(self._preview)]
        noisy = corrupt(clean, self.config.corruption, generator)
        return torch.stack([noisy, self.restore(noisy)], 1).flatten(0, 1)[:n]
