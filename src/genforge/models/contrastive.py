"""SimCLR (Chen et al. 2020): a self-supervised image encoder trained with the NT-Xent loss on
two augmented views of each image. Not a generator: it gives embeddings for evaluation
(feature-space metrics on unlabelled data) and near-duplicate detection through `encode`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from genforge.augment import AugmentConfig, build_augment
from genforge.augment.config import ColorConfig, CropConfig, FlipConfig, TranslateConfig
from genforge.core.errors import ConfigError, GenforgeError
from genforge.models.base import Batch, GenerativeModel, ModelOutput, OptimizerSpec, Phase
from genforge.models.nets.encoder import PooledConvEncoder
from genforge.models.registry import MODELS


def simclr_views() -> AugmentConfig:
    """SimCLR's view distribution scaled to small images: crops keep at least 40% of the area."""
    return AugmentConfig(
        crop=CropConfig(p=1.0, scale=(0.4, 1.0)),
        hflip=FlipConfig(p=0.5),
        translate=TranslateConfig(p=0.5, fraction=0.1),
        color=ColorConfig(p=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
    )


@dataclass
class SimCLRConfig:
    image_size: int = 32
    channels: int = 3
    num_classes: int = 0  # labels are ignored: the training is self-supervised
    base_channels: int = 32
    max_channels: int = 128
    projection_dim: int = 64
    temperature: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    augment: AugmentConfig = field(default_factory=simclr_views)

    def __post_init__(self) -> None:
        checks = [
            (self.image_size >= 8, "image_size must be >= 8"),
            (self.channels >= 1, "channels must be >= 1"),
            (self.base_channels >= 8, "base_channels must be >= 8"),
            (self.max_channels >= self.base_channels, "max_channels must be >= base_channels"),
            (self.projection_dim >= 2, "projection_dim must be >= 2"),
            (self.temperature > 0, "temperature must be > 0"),
            (self.lr > 0, "lr must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"simclr config: {message}")


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised-temperature cross entropy: each of the 2N views must pick its partner among the
    other 2N - 1 by cosine similarity / temperature (Chen et al. 2020, eq. 1), averaged over all."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, partner)


@MODELS.register("simclr")
class SimCLR(GenerativeModel):
    family: ClassVar[str] = "contrastive"
    task: ClassVar[str] = "encode"
    config_class: ClassVar[type] = SimCLRConfig
    ema_modules: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: SimCLRConfig):
        super().__init__(config)
        self.encoder = PooledConvEncoder(
            config.channels, config.image_size, config.base_channels, config.max_channels
        )
        d = self.encoder.out_dim
        self.projector = nn.Sequential(
            nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, config.projection_dim)
        )
        self.augment = build_augment(config.augment)

    @property
    def embedding_dim(self) -> int:
        return self.encoder.out_dim

    def phases(self) -> list[Phase]:
        cfg = self.config
        opt = OptimizerSpec(name="adamw", lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
        return [Phase(name="main", modules=["encoder", "projector"], optimizer=opt)]

    def views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent augmentations of each image."""
        # seeded from the global torch RNG, whose state the trainer saves, so resumes are exact
        seed = int(torch.randint(0, 2**62, (1,)).item())
        gen = torch.Generator().manual_seed(seed)
        return self.augment(images, gen), self.augment(images, gen)

    def training_step(self, phase: str, batch: Batch, step: int) -> ModelOutput:
        if batch.images.shape[0] < 2:
            raise GenforgeError(
                "simclr needs batches of at least 2 images (the other images are the negatives)"
            )
        v1, v2 = self.views(batch.images)
        z1, z2 = self.projector(self.encoder(v1)), self.projector(self.encoder(v2))
        loss = nt_xent(z1, z2, self.config.temperature)
        with torch.no_grad():
            pos = F.cosine_similarity(z1, z2).mean()
        return ModelOutput(loss=loss, terms={"nt_xent": loss.detach(), "positive_cosine": pos})

    @torch.no_grad()
    def encode(self, images: torch.Tensor, normalize: bool = True, batch_size: int = 256) -> torch.Tensor:
        """Backbone features (n, embedding_dim) of float images (n, C, H, W) in [-1, 1]; with
        `normalize`, unit length so that dot products are cosine similarities."""
        cfg = self.config
        expected = (cfg.channels, cfg.image_size, cfg.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise GenforgeError(
                f"simclr encode: expected images (n, {', '.join(map(str, expected))}), "
                f"got {tuple(images.shape)}"
            )
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        parts = [self.encoder(chunk.to(device, torch.float32)) for chunk in images.split(batch_size)]
        self.train(was_training)
        feats = torch.cat(parts) if parts else torch.zeros(0, self.embedding_dim, device=device)
        return F.normalize(feats, dim=1) if normalize else feats

    def sample(self, n: int, *, generator: torch.Generator | None = None, labels: Any = None, **options: Any):
        raise GenforgeError("simclr is a self-supervised encoder, not a generator: use encode(images)")
