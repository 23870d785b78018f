"""Memorisation and privacy audit: how close is each sample to its nearest training image?

Distances mean little on their own, so the threshold is calibrated on real held-out data: the
`percentile`-th percentile (default 1st) of held-out -> train nearest-neighbour distances. A
sample closer to a training image than 99% of real held-out images are is flagged as a likely
copy; a model that generalises flags about `percentile`% of its samples, a memorising one more.
The audit runs in feature space (near-duplicates up to small changes) and in pixel space
(literal copies), and keeps the closest pairs for the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.atomic import atomic_path
from genforge.evaluate.neighbours import nearest


@dataclass
class AuditConfig:
    percentile: float = 1.0
    pairs: int = 12  # closest pairs kept per space

    def __post_init__(self) -> None:
        if not 0 < self.percentile < 100:
            raise ValueError("percentile must be in (0, 100)")


def pixels(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, np.float32).reshape(len(images), -1) / 255.0


@dataclass
class SpaceAudit:
    space: str
    nn_index: np.ndarray  # nearest train index per sample
    nn_distance: np.ndarray
    threshold: float
    flagged: np.ndarray  # bool per sample
    summary: dict[str, Any]


def audit_space(
    space: str, samples: np.ndarray, train: np.ndarray, heldout: np.ndarray, cfg: AuditConfig
) -> SpaceAudit:
    idx, dist = nearest(samples, train)
    _, held_dist = nearest(heldout, train)
    threshold = float(np.percentile(held_dist, cfg.percentile))
    flagged = dist < threshold
    summary = {
        "copy_rate": float(flagged.mean()),
        "flagged": int(flagged.sum()),
        "threshold": threshold,
        "calibration": f"percentile {cfg.percentile:g} of held-out->train NN distances (n={len(held_dist)})",
        "expected_rate_if_generalising": cfg.percentile / 100.0,
        "sample_nn_distance_median": float(np.median(dist)),
        "heldout_nn_distance_median": float(np.median(held_dist)),
        "exact_copies": int((dist == 0).sum()),
    }
    return SpaceAudit(space, idx, dist, threshold, flagged, summary)


def audit(
    sample_images: np.ndarray,
    sample_features: np.ndarray,
    train_images: np.ndarray,
    train_features: np.ndarray,
    heldout_images: np.ndarray,
    heldout_features: np.ndarray,
    cfg: AuditConfig | None = None,
) -> dict[str, SpaceAudit]:
    cfg = cfg or AuditConfig()
    return {
        "features": audit_space("features", sample_features, train_features, heldout_features, cfg),
        "pixels": audit_space(
            "pixels", pixels(sample_images), pixels(train_images), pixels(heldout_images), cfg
        ),
    }


def save_pairs(path: str | Path, result: dict[str, SpaceAudit], sample_images: np.ndarray, train_images: np.ndarray,
               count: int) -> None:  # fmt: skip
    """The `count` closest (sample, nearest train image) pairs of each space, as one npz."""
    arrays: dict[str, np.ndarray] = {}
    for space, a in result.items():
        order = np.argsort(a.nn_distance, kind="stable")[:count]
        arrays[f"{space}_sample_index"] = order
        arrays[f"{space}_train_index"] = a.nn_index[order]
        arrays[f"{space}_distance"] = a.nn_distance[order]
        arrays[f"{space}_flagged"] = a.flagged[order]
        arrays[f"{space}_sample_images"] = np.asarray(sample_images[order])
        arrays[f"{space}_train_images"] = np.asarray(train_images[a.nn_index[order]])
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)
