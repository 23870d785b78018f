"""Classifier confidence: the evaluator's mean max-softmax over the samples.

A sample the evaluator classifies with probability 0.99 looks like a clean member of some class;
blobs and hybrids between classes score near 1/num_classes. The reference set's own value is
reported beside it, because a classifier is rarely fully confident even on held-out real data.
Like the classifier score it ignores diversity: one perfect digit repeated scores 1.
"""

from __future__ import annotations

import numpy as np

from genforge.evaluate.metrics.base import METRICS, EvalInputs, Metric, MetricValues, Output


def mean_confidence(probs: np.ndarray) -> float:
    """Mean over samples of the largest class probability."""
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or not len(probs):
        raise ValueError(
            f"class probabilities must be a non-empty (n, classes) array, got shape {probs.shape}"
        )
    return float(probs.max(1).mean())


def _confidence(inputs: EvalInputs) -> MetricValues:
    assert inputs.samples.probs is not None
    ref = inputs.reference.probs
    return MetricValues(
        {"classifier_confidence": mean_confidence(inputs.samples.probs)},
        details={"reference_value": None if ref is None else mean_confidence(ref)},
    )


METRICS.register(
    "classifier_confidence",
    Metric(
        _confidence,
        {
            "classifier_confidence": Output(
                "higher",
                "the evaluator's mean max-softmax: 1 = every sample a confident member of some class, "
                "1/num_classes = blobs; compare to the reference set's own value",
            )
        },
        needs=("probs",),
        cheap=True,
    ),
)
