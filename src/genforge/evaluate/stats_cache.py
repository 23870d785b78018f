"""Reference features and Gaussian statistics, cached per (dataset fingerprint, split, extractor
id + hash, preprocessing) as one npz written atomically, and reused by every later evaluation."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.atomic import atomic_path
from genforge.core.errors import GenforgeError
from genforge.core.hashing import hash_json
from genforge.evaluate.cache import cache_dir
from genforge.evaluate.extractors.base import FeatureExtractor
from genforge.evaluate.metrics.base import FeatureSet


def stats_key(fingerprint: str, split: str, extractor: FeatureExtractor) -> str:
    return hash_json([fingerprint, split, extractor.id, extractor.hash, extractor.preprocess.describe()])[:16]


def stats_path(dataset: Any, split: str, extractor: FeatureExtractor) -> Path:
    key = stats_key(dataset.fingerprint, split, extractor)
    return cache_dir("stats") / f"{dataset.fingerprint}-{split}-{extractor.id}-{key}.npz"


def _load(path: Path) -> FeatureSet:
    try:
        with np.load(path, allow_pickle=False) as z:
            probs = z["probs"] if "probs" in z.files else None
            return FeatureSet(z["features"], probs, z["labels"], mu=z["mu"], sigma=z["sigma"])
    except (OSError, ValueError, KeyError) as exc:
        raise GenforgeError(
            f"{path}: unreadable reference statistics ({exc}); delete the file to recompute"
        ) from None


def reference_features(
    dataset: Any, split: str, extractor: FeatureExtractor, batch_size: int = 500
) -> tuple[FeatureSet, dict[str, Any]]:
    """Features + float64 mean/covariance of `split` of `dataset`, from the cache when present."""
    path = stats_path(dataset, split, extractor)
    info = {
        "split": split,
        "fingerprint": dataset.fingerprint,
        "path": str(path),
        "count": len(dataset.split(split)),
    }
    if path.is_file():
        return _load(path), {**info, "cached": True}
    start = time.perf_counter()
    data = dataset.split(split)
    feats = extractor.extract(data.images, batch_size)
    fs = FeatureSet(feats.features, feats.probs, np.asarray(data.labels))
    arrays = {"features": fs.features, "labels": fs.labels, "mu": fs.mu, "sigma": fs.sigma}
    if fs.probs is not None:
        arrays["probs"] = fs.probs
    meta = {**info, "extractor": extractor.describe()}
    with atomic_path(path) as tmp:
        np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
    return fs, {**info, "cached": False, "seconds": round(time.perf_counter() - start, 3)}
