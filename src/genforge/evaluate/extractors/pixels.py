"""Sanity baselines that need no training: raw pixels and a fixed random projection of them."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from genforge.core.hashing import hash_array
from genforge.evaluate.extractors.base import EXTRACTORS, ExtractorSpec, FeatureExtractor, Preprocess

RANDOM_DIM = 256
RANDOM_SEED = 0


def _image_shape(dataset: Any, size: int | None) -> tuple[tuple[int, int] | None, int | None]:
    if size is not None:
        return (size, size), None
    if dataset is not None:
        h, w, c = dataset.image_shape
        return (h, w), c
    return None, None


class PixelExtractor(FeatureExtractor):
    id = "pixels"
    weights_hash = "none"

    def __init__(self, preprocess: Preprocess, dim: int):
        self.preprocess, self.dim = preprocess, dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return x.flatten(1), None


class RandomProjectionExtractor(FeatureExtractor):
    """Pixels times a fixed Gaussian matrix (seed 0, scaled by 1/sqrt(D)): a 256-d random embedding."""

    id = "random"

    def __init__(self, preprocess: Preprocess, in_dim: int):
        self.preprocess, self.dim = preprocess, RANDOM_DIM
        gen = np.random.default_rng(RANDOM_SEED)
        proj = (gen.standard_normal((in_dim, RANDOM_DIM)) / np.sqrt(in_dim)).astype(np.float32)
        self.weights_hash = hash_array(proj)[:16]
        self.proj = torch.from_numpy(proj)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return x.flatten(1) @ self.proj, None


def _pixel_setup(dataset: Any, size: int | None) -> tuple[Preprocess, int]:
    shape, channels = _image_shape(dataset, size)
    if shape is None:
        from genforge.core.errors import ConfigError

        raise ConfigError("pixel features need the image size: pass the reference dataset or a size option")
    pre = Preprocess(size=shape, resize_filter="bilinear", value_range=(0.0, 1.0), channels=channels or 3)
    return pre, shape[0] * shape[1] * (channels or 3)


def _build_pixels(arg: str | None, dataset: Any, size: int | None = None) -> FeatureExtractor:
    return PixelExtractor(*_pixel_setup(dataset, size))


def _build_random(arg: str | None, dataset: Any, size: int | None = None) -> FeatureExtractor:
    return RandomProjectionExtractor(*_pixel_setup(dataset, size))


EXTRACTORS.register(
    "pixels",
    ExtractorSpec(
        build=_build_pixels, summary="raw pixels in [0,1], flattened (sanity baseline)", options=("size",)
    ),
)
EXTRACTORS.register(
    "random",
    ExtractorSpec(
        build=_build_random,
        summary=f"fixed seeded Gaussian projection of pixels to {RANDOM_DIM}-d (sanity baseline)",
        options=("size",),
    ),
)
