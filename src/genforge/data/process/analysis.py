"""Per-image measurements that dedupe, outlier search and the report need, computed per batch.

Ingest computes them in the worker processes right after decoding; `genforge data report`
computes the same from a written dataset, chunk by chunk. Both go through `analyse_images`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from genforge.data.process.duplicates import (
    Duplicates,
    find_duplicates,
    low_frequencies,
    pack_bits,
    phash_bits,
)
from genforge.data.process.quality import BLANK_STD, channel_moments, clipped_fraction
from genforge.data.process.split import in_order

CHUNK = 2048  # images per chunk when analysing a written dataset


@dataclass
class ImageAnalysis:
    """Rows are images; every field is an array indexed by image."""

    phash: np.ndarray  # uint64 (N,)
    features: np.ndarray  # float32 (N,64): low DCT frequencies per pixel, the outlier feature space
    channel_mean: np.ndarray  # float32 (N,C) mean value per channel
    channel_meansq: np.ndarray  # float32 (N,C) mean squared value per channel
    clip: np.ndarray  # float32 (N,) fraction of clipped values

    def __len__(self) -> int:
        return len(self.phash)

    @property
    def mean(self) -> np.ndarray:
        return self.channel_mean.mean(axis=1)

    @property
    def std(self) -> np.ndarray:
        """Per-image std over all values (channels pooled)."""
        mean = self.mean
        return np.sqrt(np.maximum(self.channel_meansq.mean(axis=1) - mean * mean, 0.0))

    def take(self, idx: np.ndarray) -> ImageAnalysis:
        return ImageAnalysis(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @staticmethod
    def concat(parts: list[ImageAnalysis]) -> ImageAnalysis:
        return ImageAnalysis(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(ImageAnalysis)}
        )

    @staticmethod
    def empty(channels: int) -> ImageAnalysis:
        return ImageAnalysis(
            phash=np.zeros(0, np.uint64),
            features=np.zeros((0, 64), np.float32),
            channel_mean=np.zeros((0, channels), np.float32),
            channel_meansq=np.zeros((0, channels), np.float32),
            clip=np.zeros(0, np.float32),
        )


def analyse_images(images: np.ndarray) -> ImageAnalysis:
    """uint8 (N,H,W,C), one shape -> per-image analysis."""
    _, h, w, _ = images.shape
    coeffs = low_frequencies(images)
    mean, meansq = channel_moments(images)
    return ImageAnalysis(
        phash=pack_bits(phash_bits(coeffs)),
        features=(coeffs.reshape(len(images), -1) / np.float32(h * w)).astype(np.float32),
        channel_mean=mean,
        channel_meansq=meansq,
        clip=clipped_fraction(images),
    )


def analyse_array(images: np.ndarray, chunk: int = CHUNK) -> ImageAnalysis:
    """`analyse_images` over a large (possibly memory-mapped) array, `chunk` images at a time."""
    parts = [ImageAnalysis.empty(images.shape[-1])]
    parts += [analyse_images(np.asarray(images[s : s + chunk])) for s in range(0, len(images), chunk)]
    return ImageAnalysis.concat(parts)


@dataclass
class DatasetAnalysis:
    """Everything the report needs about the images of a dataset, in split order."""

    split: list[str]  # per image
    index: np.ndarray  # position of each image within its split
    origin: list[str]
    label: np.ndarray  # int64, -1 unlabelled
    content_hash: list[str]
    images: ImageAnalysis
    duplicates: Duplicates | None = None  # when known already (ingest), in this order


def analyse_dataset(dataset) -> DatasetAnalysis:
    """Analyse a written `CanonicalDataset` split by split."""
    split: list[str] = []
    origin: list[str] = []
    hashes: list[str] = []
    index, label = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    parts = [ImageAnalysis.empty(dataset.image_shape[-1])]
    for name in in_order(dataset.split_names):  # the order ingest lists them in
        s = dataset.split(name)
        if not len(s):
            continue
        parts.append(analyse_array(s.images))
        split += [name] * len(s)
        index.append(np.arange(len(s)))
        origin += list(s.index["origins"])
        hashes += list(s.index["hashes"])
        label.append(np.asarray(s.labels, np.int64))
    return DatasetAnalysis(
        split, np.concatenate(index), origin, np.concatenate(label), hashes, ImageAnalysis.concat(parts)
    )


def duplicates_of(
    hashes: list[str], analysis: ImageAnalysis, max_distance: int, min_similarity: float
) -> Duplicates:
    """Exact and near duplicates among analysed images (blank ones take no part in near search)."""
    searchable = analysis.std >= BLANK_STD
    return find_duplicates(
        hashes, analysis.phash, max_distance, searchable, analysis.features, min_similarity
    )
