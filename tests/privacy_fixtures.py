"""Helpers of the privacy-evaluation tests (TSTR, membership inference): a "generator" that replays
its training images, saved as a run directory like any trained model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from genforge.data.canonical import open_dataset
from genforge.models.base import GenerativeModel
from genforge.models.pipeline import from_uint8, save_model
from genforge.models.registry import MODELS


@dataclass
class ReplayConfig:
    image_size: int = 16
    channels: int = 1
    num_classes: int = 0
    bank_size: int = 1


class Replay(GenerativeModel):
    """The perfect memoriser: the k-th image asked for class c is the (k mod n_c)-th training image
    of class c (the k-th of the bank when unconditional), so n >= the train split returns all of it."""

    family: ClassVar[str] = "replay"
    config_class: ClassVar[type] = ReplayConfig

    def __init__(self, config: ReplayConfig):
        super().__init__(config)
        c = config
        self.conditional = c.num_classes > 0
        self.register_buffer("bank", torch.zeros(c.bank_size, c.channels, c.image_size, c.image_size))
        self.register_buffer("bank_labels", torch.zeros(c.bank_size, dtype=torch.long))

    @torch.no_grad()
    def sample(self, n, *, generator=None, labels=None, **options):
        if labels is None:
            return self.bank[torch.arange(n) % len(self.bank)]
        idx = torch.empty(n, dtype=torch.long)
        for c in labels.unique():
            rows = (labels == c).nonzero().squeeze(1)
            pool = (self.bank_labels == c).nonzero().squeeze(1)
            idx[rows] = pool[torch.arange(len(rows)) % len(pool)]
        return self.bank[idx]


if "privacy_replay" not in MODELS:
    MODELS.register("privacy_replay", Replay)


def replay_run(run_dir: Path, dataset_dir: Path, conditional: bool = True) -> Path:
    """A run of `Replay` holding the train split of `dataset_dir`."""
    ds = open_dataset(dataset_dir)
    train = ds.train_split
    h, w, c = ds.image_shape
    model = Replay(ReplayConfig(h, c, ds.num_classes if conditional else 0, len(train)))
    model.bank.copy_(from_uint8(np.asarray(train.images)))
    model.bank_labels.copy_(torch.from_numpy(np.asarray(train.labels, np.int64)))
    save_model(model, "privacy_replay", run_dir, {"dataset": ds.describe(), "step": 1, "ema": False})
    return run_dir
