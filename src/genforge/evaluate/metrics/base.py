"""What a metric is: a function of feature sets, the names of the numbers it returns, which
direction is better for each, and what each means (the report prints these lines)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np

from genforge.core.registry import Registry

Better = Literal["lower", "higher"]
NEEDS = {"probs": "an extractor with a classifier head", "labels": "sample labels", "train": "train-split features",
         "reference_labels": "a labelled reference split",
         "classes": "sample labels or an extractor with a classifier head"}  # fmt: skip


class FeatureSet:
    """Features of one image set, with optional class probabilities and labels; float64 Gaussian stats."""

    def __init__(
        self,
        features: np.ndarray,
        probs: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        mu: np.ndarray | None = None,
        sigma: np.ndarray | None = None,
    ):
        self.features = np.asarray(features, np.float32)
        self.probs, self.labels = probs, labels
        if mu is not None and sigma is not None:
            self.__dict__["mu"], self.__dict__["sigma"] = mu, sigma

    def __len__(self) -> int:
        return len(self.features)

    @cached_property
    def mu(self) -> np.ndarray:
        return self.features.astype(np.float64).mean(0)

    @cached_property
    def sigma(self) -> np.ndarray:
        return np.cov(self.features.astype(np.float64), rowvar=False).reshape(self.features.shape[1], -1)

    def select(self, mask: np.ndarray) -> FeatureSet:
        return FeatureSet(
            self.features[mask],
            None if self.probs is None else self.probs[mask],
            None if self.labels is None else self.labels[mask],
        )


@dataclass
class EvalInputs:
    samples: FeatureSet  # generated images; `labels` are the requested classes when conditional
    reference: FeatureSet  # held-out real images (val, else test)
    train: FeatureSet | None = None  # the train split, for the generalisation gap
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # e.g. kid_subsets, prdc_k, is_splits

    def has(self, need: str) -> bool:
        checks = {
            "probs": self.samples.probs is not None,
            "labels": self.samples.labels is not None,
            "train": self.train is not None,
            "classes": self.samples.labels is not None or self.samples.probs is not None,
            "reference_labels": self.reference.labels is not None
            and bool((self.reference.labels >= 0).all()),
        }
        return checks[need]


@dataclass
class MetricValues:
    values: dict[str, float]  # output name -> number
    details: dict[str, Any] = field(default_factory=dict)  # e.g. per-class values, subset std
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Output:
    better: Better
    meaning: str  # one line: what the number means, its ideal value
    # the output that scores real held-out data the same way (TSTR: TRTR), so a gate on this one
    # can say what real data reaches; a metric that computes it itself puts it in its details
    # as `reference_value` instead
    real: str = ""


@dataclass(frozen=True)
class Metric:
    compute: Callable[[EvalInputs], MetricValues]
    outputs: dict[str, Output]
    needs: tuple[str, ...] = ()  # keys of NEEDS
    cheap: bool = False  # computed during training by the callback

    def missing(self, inputs: EvalInputs) -> list[str]:
        return [NEEDS[n] for n in self.needs if not inputs.has(n)]


def _validate(name: str, metric: Any) -> None:
    if not isinstance(metric, Metric) or not callable(metric.compute):
        raise TypeError(f"metric {name!r} must be a Metric with a callable compute")
    if not metric.outputs:
        raise TypeError(f"metric {name!r} declares no outputs")
    for out, info in metric.outputs.items():
        if info.better not in ("lower", "higher") or not info.meaning:
            raise TypeError(f"metric {name!r} output {out!r}: better must be lower/higher, with a meaning")
    unknown = set(metric.needs) - set(NEEDS)
    if unknown:
        raise TypeError(f"metric {name!r} needs unknown input(s) {sorted(unknown)}; known: {sorted(NEEDS)}")


METRICS: Registry[Metric] = Registry("metric", _validate)


def metric_record(value: float, metric: str, info: Output, details: dict[str, Any], warnings: list[str],
                  seconds: float, context: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """One entry of metrics.json's `metrics`: the value, what produced it and what it means, and the
    comparability fields of `context` (n_samples, reference split and fingerprint, step, ...)."""
    real = {"real": info.real} if info.real else {}
    return {"value": value, "metric": metric, "better": info.better, "meaning": info.meaning, **real,
            "details": details, "warnings": warnings, "seconds": seconds, **context}  # fmt: skip


def real_value(metrics: dict[str, Any], name: str) -> float | None:
    """What real held-out data scores on output `name` of a metrics.json (`metrics`), where the
    evaluation measured it: the record's `details.reference_value`, else its `real` output's value."""
    records = metrics.get("metrics", {})
    record = records.get(name)
    if not isinstance(record, dict):
        return None
    value = (record.get("details") or {}).get("reference_value")
    if value is None and record.get("real") in records:
        value = records[record["real"]].get("value")
    return float(value) if isinstance(value, int | float) else None


def output_info(name: str) -> Output | None:
    """The Output declaration of a metric output name, whichever metric produces it."""
    for metric_name in METRICS.names():
        info = METRICS.get(metric_name).outputs.get(name)
        if info is not None:
            return info
    return None
