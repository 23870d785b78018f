"""Evaluation during training: a cheap subset of metrics every N steps, logged into metrics.jsonl.

The reference statistics are computed once (and cached on disk) at the start; each evaluation
samples `n` images from the EMA weights with a fixed seed, so the curve shows the model's
change, not sampling noise. Values are logged as `eval/<metric>` through `trainer.log_metrics`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from genforge.evaluate.evaluate import compute_metrics
from genforge.evaluate.extractors.base import FeatureExtractor, build_extractor, default_extractor
from genforge.evaluate.metrics.base import METRICS, EvalInputs, FeatureSet
from genforge.evaluate.stats_cache import reference_features
from genforge.train.callbacks import Callback

PREFIX = "eval/"


def cheap_metrics() -> list[str]:
    import genforge.evaluate.metrics  # noqa: F401

    return [name for name in METRICS.names() if METRICS.get(name).cheap]


class EvalCallback(Callback):
    def __init__(self, every: int, n: int = 1000, features: str | None = None, seed: int = 0,
                 metrics: list[str] | None = None, batch_size: int = 250, kid_subsets: int = 20):  # fmt: skip
        if every < 1 or n < 10:
            raise ValueError("EvalCallback: every must be >= 1 and n >= 10")
        self.every, self.n, self.features, self.seed = every, n, features, seed
        self.metrics, self.batch_size = metrics, batch_size
        self.options = {"kid_subsets": kid_subsets, "kid_subset_size": min(1000, n)}
        self.extractor: FeatureExtractor | None = None
        self.reference: FeatureSet | None = None
        self.split = ""
        self._last = -1

    def on_train_start(self, trainer: Any) -> None:
        ds = trainer.dataset
        self.extractor = build_extractor(self.features or default_extractor(ds), ds)
        self.split = ds.reference_split.name
        self.reference, _ = reference_features(ds, self.split, self.extractor, self.batch_size)

    def on_step_end(self, trainer: Any, step: int) -> None:
        if step % self.every == 0:
            self.evaluate(trainer, step)

    def on_train_end(self, trainer: Any) -> None:
        if self._last != trainer.step:
            self.evaluate(trainer, trainer.step)

    def sample(self, trainer: Any) -> tuple[np.ndarray, np.ndarray | None]:
        from genforge.models.pipeline import to_uint8

        labels = trainer.eval_labels(self.n)
        chunks = []
        with torch.no_grad(), trainer.ema_weights() as model:
            # on the CPU whatever the trainer's device: every family draws its noise there (seed
            # stability across devices), and a CUDA generator made them fail on a GPU
            gen = torch.Generator().manual_seed(self.seed)
            for start in range(0, self.n, self.batch_size):
                part = None if labels is None else labels[start : start + self.batch_size]
                chunks.append(
                    to_uint8(model.sample(min(self.batch_size, self.n - start), generator=gen, labels=part))
                )
        return np.concatenate(chunks), None if labels is None else labels.cpu().numpy()

    def evaluate(self, trainer: Any, step: int) -> dict[str, float]:
        if self.extractor is None:
            self.on_train_start(trainer)
        assert self.extractor is not None and self.reference is not None
        self._last = step
        images, labels = self.sample(trainer)
        feats = self.extractor.extract(images, self.batch_size)
        inputs = EvalInputs(
            FeatureSet(feats.features, feats.probs, labels), self.reference, None, self.seed, self.options
        )
        records, _, _ = compute_metrics(inputs, self.metrics or cheap_metrics(), {})
        values = {PREFIX + name: float(rec["value"]) for name, rec in records.items()}
        trainer.log_metrics(step, values)
        return values
