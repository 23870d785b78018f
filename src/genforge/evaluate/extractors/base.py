"""What a feature extractor is: preprocessing + a network, identified by id and content hash.

Every number computed on features records the extractor's id, hash and preprocessing, so two
numbers are comparable exactly when those three agree (see docs/metrics.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from genforge.core.errors import ConfigError, DataError
from genforge.core.hashing import hash_json
from genforge.core.registry import Registry

ResizeFilter = Literal["bilinear", "bicubic", "nearest"]


@dataclass(frozen=True)
class Preprocess:
    """uint8 (N,H,W,C) -> float (N,C,H,W): channel conversion, resize, value range."""

    size: tuple[int, int] | None = None  # (H, W) to resize to; None keeps the input size
    resize_filter: ResizeFilter = "bilinear"
    value_range: tuple[float, float] = (-1.0, 1.0)
    channels: int | None = None  # 1 or 3 to convert to; None keeps the input channels

    def describe(self) -> dict[str, Any]:
        return {
            "size": list(self.size) if self.size else None,
            "resize_filter": self.resize_filter,
            "value_range": list(self.value_range),
            "channels": self.channels,
        }

    def apply(self, images: np.ndarray) -> torch.Tensor:
        if images.dtype != np.uint8 or images.ndim != 4:
            raise DataError(f"images must be uint8 (N,H,W,C), got {images.dtype} {images.shape}")
        x = torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2).float() / 255.0
        c = x.shape[1]
        if self.channels is not None and self.channels != c:
            if self.channels == 3 and c == 1:
                x = x.expand(-1, 3, -1, -1)
            elif self.channels == 1 and c == 3:
                # ITU-R BT.601 luma, the same weights PIL's convert("L") uses
                x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            else:
                raise DataError(f"cannot convert {c}-channel images to {self.channels} channels")
        if self.size is not None and tuple(x.shape[2:]) != tuple(self.size):
            aa = self.resize_filter != "nearest"
            kwargs = {"align_corners": False} if aa else {}
            x = F.interpolate(x, size=tuple(self.size), mode=self.resize_filter, antialias=aa, **kwargs)
            x = x.clamp(0, 1)  # bicubic overshoots
        lo, hi = self.value_range
        return x * (hi - lo) + lo


@dataclass
class Features:
    features: np.ndarray  # float32 (N, D)
    probs: np.ndarray | None = None  # float64 (N, K) class probabilities, classifier extractors only


class FeatureExtractor:
    """Subclasses set `id`, `preprocess`, `dim`, `weights_hash` and implement `forward`."""

    id: str
    preprocess: Preprocess
    dim: int
    weights_hash: str
    num_classes: int = 0  # > 0 when `forward` also returns logits

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(features (B, D), logits (B, K) or None) for a preprocessed batch."""
        raise NotImplementedError

    @property
    def hash(self) -> str:
        return hash_json([self.id, self.weights_hash, self.preprocess.describe()])[:16]

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "hash": self.hash,
            "weights_hash": self.weights_hash,
            "preprocessing": self.preprocess.describe(),
            "feature_dim": self.dim,
            "has_classifier": self.num_classes > 0,
        }

    @torch.no_grad()
    def extract(self, images: np.ndarray, batch_size: int = 500) -> Features:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        feats, probs = [], []
        for start in range(0, len(images), batch_size):
            f, logits = self.forward(self.preprocess.apply(images[start : start + batch_size]))
            feats.append(f.float().reshape(len(f), -1).numpy())
            if logits is not None:
                probs.append(torch.softmax(logits.double(), dim=1).numpy())
        feats_arr = np.concatenate(feats) if feats else np.zeros((0, self.dim), np.float32)
        return Features(feats_arr, np.concatenate(probs) if probs else None)


@dataclass(frozen=True)
class ExtractorSpec:
    """A registered extractor: `build(arg, dataset, options)` returns a ready FeatureExtractor."""

    build: Callable[..., FeatureExtractor]
    summary: str
    takes_argument: bool = False  # `torchscript:PATH`
    needs_dataset: bool = False  # trained on the reference dataset (classifier, contrastive)
    options: tuple[str, ...] = ()  # option names `build` accepts


def _validate(name: str, spec: Any) -> None:
    if not isinstance(spec, ExtractorSpec):
        raise TypeError(f"feature extractor {name!r} must be registered as an ExtractorSpec")
    if not callable(spec.build) or not spec.summary:
        raise TypeError(f"feature extractor {name!r} needs a callable build and a summary")


EXTRACTORS: Registry[ExtractorSpec] = Registry("feature extractor", _validate)


def build_extractor(spec: str, dataset: Any = None, **options: Any) -> FeatureExtractor:
    """`spec` is a registered name, or `name:ARG` for extractors that take one (torchscript:PATH)."""
    import genforge.evaluate.extractors  # noqa: F401  (registers the built-in extractors)

    name, sep, arg = spec.partition(":")
    entry = EXTRACTORS.get(name)
    if entry.takes_argument and not arg:
        raise ConfigError(f"feature extractor {name!r} needs an argument: {name}:VALUE ({entry.summary})")
    if not entry.takes_argument and sep:
        raise ConfigError(f"feature extractor {name!r} takes no argument; use --features {name}")
    if entry.needs_dataset and dataset is None:
        raise ConfigError(f"feature extractor {name!r} is trained on a dataset; pass the reference dataset")
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        raise ConfigError(
            f"feature extractor {name!r} does not take option(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(entry.options) or 'none'}"
        )
    return entry.build(arg or None, dataset, **options)


def default_extractor(dataset: Any) -> str:
    """`classifier` when the dataset's train split is labelled, else the self-supervised one."""
    import genforge.evaluate.extractors  # noqa: F401

    if dataset is not None and dataset.num_classes > 0 and dataset.train_split.has_labels:
        return "classifier"
    return "contrastive" if "contrastive" in EXTRACTORS else "random"


def replace_preprocess(pre: Preprocess, **changes: Any) -> Preprocess:
    return dataclasses.replace(pre, **{k: v for k, v in changes.items() if v is not None})
