"""The privacy evaluations of an image evaluation (`evaluate_images` calls `image_privacy`):
TSTR/TRTR on the samples, and the membership-inference audit of the run (or samples file)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge.core.errors import DataError
from genforge.evaluate.memorisation import pixels
from genforge.evaluate.metrics.base import FeatureSet, Output, metric_record
from genforge.evaluate.privacy import membership as mia
from genforge.evaluate.privacy import utility as tstr
from genforge.evaluate.privacy.config import MembershipConfig, UtilityConfig


@dataclass
class PrivacyOutcome:
    records: dict[str, Any] = field(default_factory=dict)  # metrics.json `metrics` entries
    skipped: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def add(self, outputs: dict[str, Output], group: str, values: dict[str, float], details: dict[str, Any],
            warnings: list[str], seconds: float, context: dict[str, Any]) -> None:  # fmt: skip
        for name, value in values.items():
            self.records[name] = metric_record(value, group, outputs[name], details, warnings, seconds, context)
        self.warnings += warnings


def load_model(target: str | Path) -> Any:
    """The generative model of a run directory, or None for samples files and folders."""
    path = Path(target)
    if not (path / "model.json").is_file():
        return None
    from genforge.models.pipeline import load_pipeline

    return load_pipeline(path).model


def synthetic_set(images: np.ndarray, labels: np.ndarray | None, n: int,
                  more: Callable[[int], tuple[np.ndarray, np.ndarray | None]] | None) -> tuple[np.ndarray, np.ndarray | None, list[str]]:  # fmt: skip
    """n labelled samples for TSTR: the evaluation's own when it has enough, else `more(n)` (a run
    generates them, a file gives what it holds), with a warning when fewer than n remain."""
    if len(images) < n and more is not None:
        images, labels = more(n)
    warnings = [] if len(images) >= n else [f"TSTR: the samples hold {len(images)} images, fewer than the {n} asked for; used them all"]
    return images[:n], None if labels is None else labels[:n], warnings


def image_privacy(target: str | Path, images: np.ndarray, labels: np.ndarray | None, sample_features: np.ndarray | None,
                  dataset: Any, split: str, train: FeatureSet | None, reference: FeatureSet | None,
                  utility: UtilityConfig, membership: MembershipConfig, seed: int, context: dict[str, Any],
                  more: Callable[[int], tuple[np.ndarray, np.ndarray | None]] | None = None) -> PrivacyOutcome:  # fmt: skip
    """TSTR (`utility`) and the membership audit (`membership`) of the samples `images`/`labels` (and
    of the run's model when `target` is a run directory) against `split` of `dataset`. `train` and
    `reference`: the evaluator's features of the train and reference splits, when computed."""
    out = PrivacyOutcome()
    is_run = (Path(target) / "model.json").is_file()
    if utility.enabled is False:
        out.skipped["utility"] = "turned off (--no-tstr)"
    elif utility.enabled is None and not is_run:
        # a samples file is most often real data or another tool's output: TSTR when asked for
        out.skipped["utility"] = "on by default for runs only; pass --tstr (utility.enabled: true) for a samples file"
    elif labels is None or not dataset.split(split).has_labels or dataset.num_classes < 2:
        reason = ("needs labelled samples (a class-conditional run, or labels in the samples file)" if labels is None
                  else f"needs a labelled {split!r} split with >= 2 classes")  # fmt: skip
        if utility.enabled:
            raise DataError(f"{target}: TSTR was asked for but {reason}")
        out.skipped["utility"] = reason
    elif tuple(images.shape[1:]) != tuple(dataset.image_shape):
        out.skipped["utility"] = f"samples are {tuple(images.shape[1:])}, the dataset's images {tuple(dataset.image_shape)}"
    else:
        syn, syn_labels, warnings = synthetic_set(images, labels, utility.n or len(dataset.train_split), more)
        res = tstr.utility(syn, syn_labels, dataset, split, utility, seed, where=str(target))
        out.add(tstr.OUTPUTS, "utility", res.values, res.details, warnings, res.seconds,
                {**context, "n_samples": len(syn)})  # fmt: skip
    if not membership.enabled:
        out.skipped["membership"] = "turned off (--no-mia)"
    elif "train" not in dataset.split_names or split == "train":
        out.skipped["membership"] = f"needs a train split beside the reference split {split!r}"
    else:
        res = image_membership(target, images, labels, sample_features, dataset, split, train, reference, membership, seed)
        out.add(mia.OUTPUTS, "membership", res.values, res.details, res.warnings, res.seconds, context)
    return out


def image_membership(target: str | Path, images: np.ndarray, labels: np.ndarray | None, sample_features: np.ndarray | None,
                     dataset: Any, split: str, train: FeatureSet | None, reference: FeatureSet | None,
                     config: MembershipConfig, seed: int) -> mia.MembershipResult:  # fmt: skip
    t0 = time.perf_counter()
    members, heldout = dataset.split("train"), dataset.split(split)
    mi, ni = mia.draw_pairs(len(members), len(heldout), config.n, seed)
    record_images = np.concatenate([members.images[mi], heldout.images[ni]])
    record_labels = None
    if members.has_labels and heldout.has_labels:
        record_labels = torch.from_numpy(np.concatenate([members.labels[mi], heldout.labels[ni]]).astype(np.int64))
    member = np.r_[np.ones(len(mi), bool), np.zeros(len(ni), bool)]
    spaces = {"pixels": (pixels(images), pixels(record_images))}
    if sample_features is not None and train is not None and reference is not None:
        # the evaluator trained on the members: measured on MNIST (5,000 train digits), real held-out
        # digits standing in for samples score AUC 0.51 here as in pixels, so the bias is small
        spaces["features"] = (sample_features, np.concatenate([train.features[mi], reference.features[ni]]))
    model = load_model(target)
    data = None
    if model is not None:
        from genforge.models.pipeline import from_uint8

        device = next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device
        data = from_uint8(record_images).to(device)
    records = mia.Records(data, record_labels, member)
    result = mia.audit(records, config, seed, spaces=spaces, model=model,
                       sample_labels=None if labels is None else np.asarray(labels))  # fmt: skip
    result.details.update({"member_split": "train", "nonmember_split": split,
                           "family": getattr(model, "family", None)})  # fmt: skip
    result.seconds = round(time.perf_counter() - t0, 3)
    return result
