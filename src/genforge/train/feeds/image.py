"""The image feed: uint8 shards -> float (B,C,H,W) in [-1, 1], augmented, on the device."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge.core.errors import ConfigError
from genforge.data.loader import BatchLoader, to_float
from genforge.models.base import Batch
from genforge.models.pipeline import to_uint8
from genforge.train.feeds import FEEDS, Feed
from genforge.train.samples import make_grid, write_grid


@FEEDS.register("image")
class ImageFeed(Feed):
    def __init__(self, trainer: Any):
        cfg = trainer.config
        self.dataset, self.split_name, self.device = trainer.dataset, cfg.split, trainer.device
        self.channels_last = cfg.channels_last
        self.augment, self.generator = trainer.augment, trainer.augment_generator
        privacy = getattr(trainer, "privacy", None)
        self.loader = BatchLoader.from_split(
            self.dataset.split(cfg.split),
            batch_size=cfg.batch_size // trainer.ctx.world_size,
            seed=cfg.seed,
            rank=trainer.ctx.rank,
            world_size=trainer.ctx.world_size,
            # differentially private runs sample as their accountant assumes (train/privacy.py)
            poisson=bool(privacy is not None and privacy.poisson),
        )
        self.labelled = self.dataset.split(cfg.split).has_labels

    def check_fits(self, model: Any) -> None:
        h, w, c = self.dataset.image_shape
        cfg = model.config
        for field, value in {"image_size": h, "channels": c}.items():
            if hasattr(cfg, field) and getattr(cfg, field) != value:
                raise ConfigError(
                    f"model.{field} is {getattr(cfg, field)} but the dataset {self.dataset.path} has {field} {value}"
                )
        if h != w and hasattr(cfg, "image_size"):
            raise ConfigError(f"dataset {self.dataset.path}: images are {h}x{w}; the models need square images")

    def next_batch(self) -> Batch:
        raw = next(self.loader)
        images = to_float(raw.images, self.device)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.augment is not None and len(images):  # a Poisson batch may be empty
            images = self.augment(images, self.generator)
        labels = raw.labels.to(self.device, non_blocking=True) if self.labelled else None
        return Batch(images, labels)

    def examples(self, batch_size: int = 500) -> Iterator[Batch]:
        """Every example of the training split once, in order, unaugmented (a statistics pass)."""
        split = self.dataset.split(self.split_name)
        labels = np.asarray(split.labels) if self.labelled else None
        for i in range(0, len(split), batch_size):
            raw = torch.from_numpy(np.array(split.images[i : i + batch_size])).permute(0, 3, 1, 2)  # a writable copy
            y = torch.from_numpy(labels[i : i + batch_size]).long().to(self.device) if labels is not None else None
            yield Batch(to_float(raw, self.device), y)

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)

    def write_samples(self, model: Any, path_stem: Path, log: Any, step: int, *, n: int, seed: int,
                      labels: torch.Tensor | None) -> Path | None:
        """A grid of n samples from fixed noise into PATH_STEM.png (and TensorBoard)."""
        gen = torch.Generator().manual_seed(seed)  # as Pipeline.generate draws
        images = to_uint8(model.sample(n, generator=gen, labels=labels))
        path = path_stem.with_suffix(".png")
        write_grid(path, images)
        if log is not None:
            log.add_image("samples", make_grid(images), step)
        return path
