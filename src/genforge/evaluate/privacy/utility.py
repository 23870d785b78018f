"""Utility of synthetic data: train on synthetic, test on real (TSTR), beside train on real, test
on real (TRTR).

A fixed classifier (architecture and training recipe fixed per modality, `UTILITY_CLASSIFIERS`)
is trained from scratch on N generated labelled samples and tested on the real held-out split;
the same recipe trained on the real train split and tested on the same split gives TRTR, the
ceiling the synthetic data is measured against (`tstr_ratio` = TSTR / TRTR). This is the number
the differential-privacy literature reports for synthetic MNIST (GS-WGAN, DP-Sinkhorn, DPDM).

TRTR depends only on the dataset, the test split and the recipe (seed included), so it is cached
per (dataset fingerprint, split, recipe hash) in `$GENFORGE_CACHE/utility/`, like the evaluators.
Both fits are deterministic (seeded init and data order, deterministic kernels), so a seed gives
the same numbers on every call.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from genforge.core.atomic import write_json
from genforge.core.config import from_dict, to_dict
from genforge.core.errors import DataError
from genforge.core.hashing import hash_json
from genforge.core.modality import lookup, modality_registry
from genforge.evaluate.cache import cache_dir
from genforge.evaluate.extractors.classifier import ClassifierConfig, fit_classifier, predict_classes
from genforge.evaluate.metrics.base import Output
from genforge.evaluate.privacy.config import UtilityConfig

OUTPUTS = {
    "tstr_accuracy": Output("higher", "accuracy on the real held-out split of a fixed classifier trained on "
                                      "generated labelled samples (train on synthetic, test on real)",
                            real="trtr_accuracy"),
    "trtr_accuracy": Output("higher", "the same classifier and recipe trained on the real train split: "
                                      "the ceiling for tstr_accuracy"),
    "tstr_ratio": Output("higher", "tstr_accuracy / trtr_accuracy: 1 = the synthetic data teaches the "
                                   "classifier as much as the real data does"),
}  # fmt: skip


@dataclass
class UtilityRecipe(ClassifierConfig):
    """Images: the evaluator's CNN (3 conv blocks) at half width, trained from scratch for 5
    epochs; on 5,000 MNIST digits it fits in a few seconds on 2 CPU cores and reaches ~97%
    held-out accuracy (docs/metrics.md has the measurement)."""

    epochs: int = 5
    width: int = 16
    feature_dim: int = 64


@dataclass(frozen=True)
class UtilityClassifier:
    """A modality's fixed TSTR classifier: its recipe (a dataclass config), how to train it on
    (data, labels, num_classes, recipe), how it predicts classes, and a split's data."""

    recipe_class: type
    fit: Callable[[Any, np.ndarray, int, Any], Any]
    predict: Callable[[Any, Any], np.ndarray]
    split_data: Callable[[Any], Any]
    summary: str


# modality -> its UtilityClassifier; audio and text add theirs beside the image one
UTILITY_CLASSIFIERS = modality_registry("utility classifier")
UTILITY_CLASSIFIERS.register("image", UtilityClassifier(
    UtilityRecipe, fit_classifier, predict_classes, lambda split: split.images,
    "the evaluator's CNN at width 16, 5 epochs of Adam with a one-cycle schedule, from scratch",
))  # fmt: skip


@dataclass
class UtilityResult:
    values: dict[str, float]
    details: dict[str, Any]
    seconds: float


def classifier_for(modality: str) -> UtilityClassifier:
    return lookup(UTILITY_CLASSIFIERS, modality, "genforge.evaluate.privacy.utility")


def make_recipe(entry: UtilityClassifier, config: UtilityConfig, seed: int) -> Any:
    return from_dict(entry.recipe_class, {**config.recipe, "seed": seed}, where="utility.recipe")


def _accuracy(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> tuple[float, dict[str, float]]:
    per_class = {str(c): float((pred[truth == c] == c).mean()) for c in range(num_classes) if (truth == c).any()}
    return float((pred == truth).mean()), per_class


def check_labels(labels: np.ndarray | None, n: int, num_classes: int, where: str) -> np.ndarray:
    if labels is None:
        raise DataError(f"{where}: TSTR needs labelled samples (a class-conditional run, or 'labels' in the samples file)")
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: sample labels must be {n} integers, got {labels.dtype} {labels.shape}")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{where}: sample labels must lie in 0..{num_classes - 1} (the dataset's classes), "
                        f"got {int(labels.min())}..{int(labels.max())}")  # fmt: skip
    return labels.astype(np.int64)


def trtr(dataset: Any, test_split: str, entry: UtilityClassifier, recipe: Any) -> dict[str, Any]:
    """The recipe trained on the real train split, tested on `test_split`: cached per dataset
    fingerprint, split and recipe hash (the numbers only; no weights are needed again)."""
    key = hash_json([dataset.modality, to_dict(recipe)])[:12]
    path = cache_dir("utility") / f"trtr-{dataset.fingerprint}-{test_split}-{key}.json"
    if path.is_file():
        try:
            cached = json.loads(path.read_text())
            if cached.get("recipe") == to_dict(recipe):
                return {**cached, "cached": True}
        except (OSError, json.JSONDecodeError):
            pass  # a damaged cache entry is recomputed and replaced
    train, test = dataset.train_split, dataset.split(test_split)
    start = time.perf_counter()
    model = entry.fit(entry.split_data(train), np.asarray(train.labels), dataset.num_classes, recipe)
    acc, per_class = _accuracy(entry.predict(model, entry.split_data(test)), np.asarray(test.labels), dataset.num_classes)
    result = {"accuracy": acc, "per_class": per_class, "train_count": len(train), "test_count": len(test),
              "seconds": round(time.perf_counter() - start, 3), "recipe": to_dict(recipe)}  # fmt: skip
    write_json(path, result)
    return {**result, "cached": False, "cache": str(path)}


def utility(synthetic: Any, labels: np.ndarray | None, dataset: Any, test_split: str, config: UtilityConfig,
            seed: int, where: str = "samples") -> UtilityResult:  # fmt: skip
    """TSTR on (`synthetic`, `labels`) and TRTR, both tested on `test_split` of `dataset`."""
    start = time.perf_counter()
    entry = classifier_for(dataset.modality)
    test = dataset.split(test_split)
    if not (dataset.num_classes >= 2 and dataset.train_split.has_labels and test.has_labels):
        raise DataError(f"{dataset.path}: TSTR needs labelled train and {test_split!r} splits with >= 2 classes")
    labels = check_labels(labels, len(synthetic), dataset.num_classes, where)
    recipe = make_recipe(entry, config, seed)
    real = trtr(dataset, test_split, entry, recipe)
    t0 = time.perf_counter()
    model = entry.fit(synthetic, labels, dataset.num_classes, recipe)
    acc, per_class = _accuracy(entry.predict(model, entry.split_data(test)), np.asarray(test.labels), dataset.num_classes)
    fit_s = time.perf_counter() - t0
    values = {"tstr_accuracy": acc, "trtr_accuracy": real["accuracy"],
              "tstr_ratio": acc / real["accuracy"] if real["accuracy"] > 0 else 0.0}  # fmt: skip
    details = {
        "synthetic_count": len(synthetic), "synthetic_class_counts": np.bincount(labels, minlength=dataset.num_classes).tolist(),
        "real_train_count": real["train_count"], "test_split": test_split, "test_count": len(test),
        "classifier": entry.summary, "recipe": to_dict(recipe), "tstr_per_class": per_class,
        "trtr_per_class": real["per_class"], "trtr_cached": real["cached"], "tstr_fit_seconds": round(fit_s, 3),
        "trtr_fit_seconds": real["seconds"],
    }  # fmt: skip
    return UtilityResult(values, details, round(time.perf_counter() - start, 3))
