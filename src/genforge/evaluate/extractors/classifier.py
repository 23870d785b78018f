"""`classifier`: a small CNN trained on the labelled train split of the reference dataset.

Its penultimate features feed the distribution metrics (FID, KID, PRDC), its softmax the
classifier score and conditional accuracy. Training is deterministic (fixed seed, fixed data
order, deterministic kernels) and cached under the dataset fingerprint plus the config hash, so
the same dataset gives the same weights hash and therefore the same metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

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


@dataclass
class ClassifierConfig:
    epochs: int = 4
    batch_size: int = 128
    lr: float = 3e-3  # peak of the one-cycle schedule
    width: int = 32
    feature_dim: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "width", "feature_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


class ClassifierNet(nn.Module):
    def __init__(self, channels: int, num_classes: int, width: int, feature_dim: int):
        super().__init__()
        w = width

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(
            *block(channels, w), nn.MaxPool2d(2),
            *block(w, 2 * w), nn.MaxPool2d(2),
            *block(2 * w, 2 * w), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(2 * w * 16, feature_dim), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(x)
        return f, self.head(f)


class ClassifierExtractor(FeatureExtractor):
    id = "classifier"

    def __init__(self, net: nn.Module, preprocess: Preprocess, info: dict[str, Any]):
        self.net = frozen(net)
        self.preprocess = preprocess
        self.info = info
        self.dim = int(info["config"]["feature_dim"])
        self.num_classes = int(info["num_classes"])
        self.weights_hash = info["weights_hash"]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.net(x)


def _preprocess(image_shape: tuple[int, ...]) -> Preprocess:
    h, w, c = image_shape
    return Preprocess(size=(h, w), resize_filter="bilinear", value_range=(-1.0, 1.0), channels=c)


def fit_classifier(images: np.ndarray, labels: np.ndarray, num_classes: int, config: ClassifierConfig) -> ClassifierNet:
    """A ClassifierNet trained on uint8 (N,H,W,C) images and their labels with the fixed recipe
    `config` (Adam, one-cycle schedule, seeded init and data order, deterministic kernels): the
    evaluator's training, and TSTR's (evaluate/privacy/utility.py) on synthetic images."""
    labels_t = torch.from_numpy(np.asarray(labels, np.int64))
    pre = _preprocess(images.shape[1:])
    with deterministic(config.seed) as gen:
        net = ClassifierNet(images.shape[3], num_classes, config.width, config.feature_dim)
        opt = torch.optim.Adam(net.parameters(), lr=config.lr)
        per_epoch = -(-len(images) // config.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.epochs * per_epoch)
        net.train()
        for _ in range(config.epochs):
            order = torch.randperm(len(images), generator=gen).numpy()
            for i in range(0, len(images), config.batch_size):
                idx = np.sort(
                    order[i : i + config.batch_size]
                )  # sorted: contiguous reads from the memory map
                _, logits = net(pre.apply(images[idx]))
                loss = nn.functional.cross_entropy(logits, labels_t[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return net


def predict_classes(net: nn.Module, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """The classifier's argmax class of each uint8 (N,H,W,C) image, in eval mode."""
    pre = _preprocess(images.shape[1:])
    net.eval()
    with torch.no_grad():
        return np.concatenate([net(pre.apply(images[i : i + batch_size]))[1].argmax(1).numpy()
                               for i in range(0, len(images), batch_size)])  # fmt: skip


def heldout_accuracy(net: nn.Module, dataset: Any, batch_size: int = 500) -> tuple[str | None, float | None]:
    """Accuracy on the first labelled held-out split (val, else test)."""
    for name in ("val", "test"):
        if name in dataset.split_names and dataset.split(name).has_labels:
            split = dataset.split(name)
            return name, float((predict_classes(net, split.images, batch_size) == split.labels).mean())
    return None, None


def train_classifier(dataset: Any, config: ClassifierConfig) -> tuple[ClassifierNet, dict[str, Any]]:
    split = dataset.train_split
    if dataset.num_classes < 2 or not split.has_labels:
        raise DataError(
            f"{dataset.path}: the classifier evaluator needs a labelled train split with >= 2 classes; "
            "use --features contrastive (self-supervised) or random for unlabelled data"
        )
    images = split.images
    start = time.perf_counter()
    net = fit_classifier(images, split.labels, dataset.num_classes, config)
    seconds = time.perf_counter() - start
    held_split, held_acc = heldout_accuracy(net, dataset)
    info = {
        "extractor": "classifier",
        "config": to_dict(config),
        "num_classes": dataset.num_classes,
        "class_names": dataset.class_names,
        "image_shape": list(dataset.image_shape),
        "dataset_fingerprint": dataset.fingerprint,
        "train_count": len(images),
        "train_seconds": round(seconds, 3),
        "heldout_split": held_split,
        "heldout_accuracy": held_acc,
    }
    return net, info


def classifier_extractor(
    dataset: Any, config: ClassifierConfig | None = None, retrain: bool = False
) -> ClassifierExtractor:
    """The cached classifier for `dataset`, trained (and cached, with its held-out accuracy) if absent."""
    config = config or ClassifierConfig()
    path = evaluator_path("classifier", dataset.fingerprint, config)

    def build(info: dict[str, Any]) -> nn.Module:
        cfg = from_dict(ClassifierConfig, info["config"])
        return ClassifierNet(dataset.image_shape[2], int(info["num_classes"]), cfg.width, cfg.feature_dim)

    net, info = load_or_train(path, build, lambda: train_classifier(dataset, config), retrain)
    return ClassifierExtractor(net, _preprocess(dataset.image_shape), {**info, "cache": str(path)})


register_trained(
    "classifier",
    classifier_extractor,
    ClassifierConfig,
    "small CNN trained on the dataset's labelled train split (default for labelled data)",
)
