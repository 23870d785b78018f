"""Data quality: per-image statistics, pixel histograms, class balance and outliers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BLANK_STD = 2.0  # pixel std (0..255) under which an image is blank / near-constant
CLIP_LOW, CLIP_HIGH = 2, 253  # values counted as clipped (saturated)
# an image is saturated when over half its values are clipped AND this much more than is
# usual in the dataset: MNIST's black background is normal there, not an outlier
SATURATED_FRACTION, SATURATED_EXCESS = 0.5, 0.25


def channel_moments(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N,H,W,C) -> per-image, per-channel mean and mean square (float32 (N,C))."""
    n, c = len(images), images.shape[-1]
    x = images.reshape(n, -1, c).astype(np.float32)
    pixels = np.float32(max(x.shape[1], 1))
    # a product with a ones vector sums the strided pixel axis much faster than .sum(axis=1)
    return np.ones(x.shape[1], np.float32) @ x / pixels, np.einsum("npc,npc->nc", x, x) / pixels


def clipped_fraction(images: np.ndarray) -> np.ndarray:
    """Per-image fraction of values <= CLIP_LOW or >= CLIP_HIGH."""
    flat = images.reshape(len(images), -1)
    # uint8 wrap-around: v - (LOW+1) lands at the top of the range exactly for the clipped values
    shifted = flat - np.uint8(CLIP_LOW + 1)
    clipped = np.count_nonzero(shifted >= np.uint8(CLIP_HIGH - CLIP_LOW - 1), axis=1)
    return (clipped / max(flat.shape[1], 1)).astype(np.float32)


def channel_histogram(images: np.ndarray) -> np.ndarray:
    """uint8 (N,H,W,C) -> int64 (C,256) value counts per channel."""
    c = images.shape[-1]
    if c == 1:
        return np.bincount(images.ravel(), minlength=256)[None].astype(np.int64)
    codes = images.reshape(-1, c).astype(np.uint16) + (np.arange(c, dtype=np.uint16) << 8)
    return np.bincount(codes.ravel(), minlength=256 * c).reshape(c, 256).astype(np.int64)


def pixel_statistics(channel_mean: np.ndarray, channel_meansq: np.ndarray) -> list[dict[str, float]]:
    """Per-channel mean and std (0..255) over all images (all of one size) from per-image moments."""
    mean = np.asarray(channel_mean, np.float64).mean(axis=0)
    var = np.maximum(np.asarray(channel_meansq, np.float64).mean(axis=0) - mean * mean, 0.0)
    return [
        {"mean": round(float(m), 4), "std": round(float(v) ** 0.5, 4)} for m, v in zip(mean, var, strict=True)
    ]


def class_balance(labels: np.ndarray, class_names: Sequence[str]) -> dict:
    """Counts per class and the imbalance ratio max/min (None when a class is empty)."""
    labels = np.asarray(labels)
    counts = np.bincount(labels[labels >= 0], minlength=len(class_names)) if len(class_names) else np.zeros(0)
    per_class = {name: int(c) for name, c in zip(class_names, counts, strict=True)}
    ratio = None
    if len(counts) and counts.min() > 0:
        ratio = round(float(counts.max() / counts.min()), 4)
    return {
        "per_class": per_class,
        "unlabelled": int((labels < 0).sum()),
        "imbalance_ratio": ratio,
        "empty_classes": [n for n, c in per_class.items() if c == 0],
    }


def blank_images(std: np.ndarray) -> np.ndarray:
    return np.flatnonzero(std < BLANK_STD)


def saturated_images(clip: np.ndarray) -> np.ndarray:
    if not len(clip):
        return np.zeros(0, np.int64)
    usual = float(np.median(clip))
    return np.flatnonzero((clip > SATURATED_FRACTION) & (clip > usual + SATURATED_EXCESS))


def far_from_class(
    features: np.ndarray, labels: np.ndarray, z_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Images whose distance to their class mean (in `features`) has a z-score above the threshold.

    Unlabelled images form one group. Returns (indices, z-scores), most extreme first.
    """
    features = np.asarray(features, np.float32)
    labels = np.asarray(labels)
    idx_out, z_out = [], []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < 3:
            continue
        f = features[members]
        dist = np.linalg.norm(f - f.mean(axis=0), axis=1)
        sd = dist.std()
        if sd <= 0:
            continue
        z = (dist - dist.mean()) / sd
        hit = z > z_threshold
        idx_out.append(members[hit])
        z_out.append(z[hit])
    if not idx_out:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    idx, z = np.concatenate(idx_out), np.concatenate(z_out)
    order = np.argsort(-z, kind="stable")
    return idx[order], z[order]
