"""Helpers shared by the evaluate-stage tests (no tests here): tiny synthetic labelled datasets,
MNIST as a canonical dataset, and a tiny registered generative model for run directories."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from genforge.core.atomic import atomic_dir
from genforge.data.canonical import SplitData, open_dataset, write_dataset
from genforge.models.base import GenerativeModel
from genforge.models.pipeline import save_model
from genforge.models.registry import MODELS

SIDE = 16
CLASSES = 4


def squares(n: int, seed: int, side: int = SIDE, classes: int = CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images whose class is the quadrant holding a bright square (uint8 N,side,side,1)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    images = rng.normal(40, 20, (n, side, side, 1))
    half = side // 2
    for i, c in enumerate(labels):
        y, x = divmod(int(c), 2)
        oy, ox = rng.integers(1, half - 5, 2)
        images[i, y * half + oy : y * half + oy + 5, x * half + ox : x * half + ox + 5] += 180
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def squares_dataset(path: Path, n_train: int = 400, n_val: int = 200, n_test: int = 200) -> Path:
    splits = {}
    for seed, (name, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        images, labels = squares(n, seed)
        splits[name] = SplitData(images, labels)
    with atomic_dir(path) as tmp:
        write_dataset(tmp, splits, class_names=[f"q{i}" for i in range(CLASSES)], meta={"source": "squares"})
    return path


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.open(path).read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def mnist_dataset(mnist_dir: Path, path: Path) -> Path:
    """MNIST test split as a canonical dataset: 8,000 train / 1,000 val / 1,000 test."""
    x = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")[..., None]
    y = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    parts = {"train": slice(0, 8000), "val": slice(8000, 9000), "test": slice(9000, 10000)}
    with atomic_dir(path) as tmp:
        write_dataset(tmp, {k: SplitData(x[s], y[s]) for k, s in parts.items()},
                      class_names=[str(i) for i in range(10)], meta={"source": "mnist-test"})  # fmt: skip
    return open_dataset(path).path


@dataclass
class TinyConfig:
    image_size: int = SIDE
    channels: int = 1
    num_classes: int = 0


class TinyGenerator(GenerativeModel):
    """Draws `squares`-like images from its seed: enough to exercise run directories."""

    family: ClassVar[str] = "test"
    config_class: ClassVar[type] = TinyConfig

    def __init__(self, config: TinyConfig):
        super().__init__(config)
        self.brightness = torch.nn.Parameter(torch.tensor(180.0))
        self.conditional = config.num_classes > 0

    @torch.no_grad()
    def sample(self, n, *, generator=None, labels=None, **options):
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        images, _ = squares(n, seed, self.config.image_size)
        return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


if "eval_tiny" not in MODELS:
    MODELS.register("eval_tiny", TinyGenerator)


def tiny_run(run_dir: Path, dataset_dir: Path, num_classes: int = 0, step: int = 100) -> Path:
    model = TinyGenerator(TinyConfig(num_classes=num_classes))
    run_dir.mkdir(parents=True, exist_ok=True)
    save_model(
        model,
        "eval_tiny",
        run_dir,
        {"dataset": open_dataset(dataset_dir).describe(), "step": step, "ema": True},
    )
    return run_dir
