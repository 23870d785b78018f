"""`contrastive`: the self-supervised evaluator for unlabelled data.

Trains the `simclr` model family (genforge.models.contrastive) on the reference dataset's train
split with a short, fixed budget, deterministically, and caches it like the classifier (dataset
fingerprint + config hash). Its unit-length backbone embedding (`encode`) serves the
distribution metrics; it has no class head, so the classifier score and per-class metrics are
skipped with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

import genforge.models.contrastive  # noqa: F401  (registers the simclr family)
from genforge.core.config import from_dict, to_dict
from genforge.core.errors import DataError
from genforge.evaluate.extractors.base import FeatureExtractor, Preprocess
from genforge.evaluate.extractors.training import (
    deterministic,
    evaluator_path,
    frozen,
    load_or_train,
    register_trained,
)
from genforge.models.base import Batch
from genforge.models.registry import MODELS

MODEL = "simclr"


@dataclass
class ContrastiveConfig:
    steps: int = 300
    batch_size: int = 128
    base_channels: int = 32
    max_channels: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "base_channels", "max_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (the other images of a batch are the negatives)")


class ContrastiveExtractor(FeatureExtractor):
    id = "contrastive"

    def __init__(self, model: nn.Module, preprocess: Preprocess, info: dict[str, Any]):
        self.model = frozen(model)
        self.preprocess, self.info = preprocess, info
        self.dim = int(model.embedding_dim)
        self.weights_hash = info["weights_hash"]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.model.encode(x, normalize=True), None


def _preprocess(image_shape: tuple[int, ...]) -> Preprocess:
    h, _, c = image_shape
    # simclr's encoder takes square images
    return Preprocess(size=(h, h), resize_filter="bilinear", value_range=(-1.0, 1.0), channels=c)


def _model_config(dataset: Any, config: ContrastiveConfig) -> Any:
    h, _, c = dataset.image_shape
    cls = MODELS.get(MODEL)
    return cls.default_config(h, c, base_channels=config.base_channels, max_channels=config.max_channels)


def train_contrastive(dataset: Any, config: ContrastiveConfig) -> tuple[nn.Module, dict[str, Any]]:
    images = dataset.train_split.images
    if len(images) < 2:
        raise DataError(f"{dataset.path}: the contrastive evaluator needs at least 2 training images")
    pre = _preprocess(dataset.image_shape)
    cls = MODELS.get(MODEL)
    start = time.perf_counter()
    with deterministic(config.seed) as gen:
        model = cls(_model_config(dataset, config))
        (phase,) = model.phases()
        spec = phase.optimizer
        params = [p for name in phase.modules for p in getattr(model, name).parameters()]
        opt = torch.optim.AdamW(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
        model.train()
        batch = min(config.batch_size, len(images))
        for step in range(config.steps):
            idx = np.sort(torch.randperm(len(images), generator=gen)[:batch].numpy())
            out = model.training_step(phase.name, Batch(pre.apply(images[idx])), step)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
    info = {
        "extractor": "contrastive",
        "model": MODEL,
        "model_config": to_dict(model.config),
        "config": to_dict(config),
        "image_shape": list(dataset.image_shape),
        "dataset_fingerprint": dataset.fingerprint,
        "train_count": len(images),
        "train_seconds": round(time.perf_counter() - start, 3),
        "final_loss": float(out.loss.detach()),
    }
    return model, info


def contrastive_extractor(
    dataset: Any, config: ContrastiveConfig | None = None, retrain: bool = False
) -> ContrastiveExtractor:
    config = config or ContrastiveConfig()
    path = evaluator_path("contrastive", dataset.fingerprint, config)

    def build(info: dict[str, Any]) -> nn.Module:
        cls = MODELS.get(MODEL)
        return cls(from_dict(cls.config_class, info["model_config"]))

    model, info = load_or_train(path, build, lambda: train_contrastive(dataset, config), retrain)
    return ContrastiveExtractor(model, _preprocess(dataset.image_shape), {**info, "cache": str(path)})


register_trained(
    "contrastive",
    contrastive_extractor,
    ContrastiveConfig,
    "SimCLR encoder trained briefly on the dataset's train split (default for unlabelled data)",
)
