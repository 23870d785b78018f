"""Classifier score (Inception Score when the classifier is Inception): exp E_x[KL(p(y|x) || p(y))],
computed per split of the samples (mean and std over splits, Salimans et al. 2016). High when
each sample is classified confidently and the classes are used evenly; it ignores the reference
set entirely, so it cannot see mode collapse within a class or a mismatch to the real data."""

from __future__ import annotations

import numpy as np

from genforge.evaluate.metrics.base import METRICS, EvalInputs, Metric, MetricValues, Output

SPLITS = 10
EPS = 1e-12


def classifier_score(probs: np.ndarray, splits: int = SPLITS) -> tuple[float, float]:
    probs = np.asarray(probs, np.float64)
    splits = max(1, min(splits, len(probs)))
    scores = []
    for part in np.array_split(probs, splits):
        py = part.mean(0, keepdims=True)
        kl = (part * (np.log(part + EPS) - np.log(py + EPS))).sum(1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def _is(inputs: EvalInputs) -> MetricValues:
    splits = int(inputs.options.get("is_splits", SPLITS))
    assert inputs.samples.probs is not None
    mean, std = classifier_score(inputs.samples.probs, splits)
    ref_mean, _ = (
        classifier_score(inputs.reference.probs, splits) if inputs.reference.probs is not None else (None, 0)
    )
    return MetricValues(
        {"classifier_score": mean}, details={"std": std, "splits": splits, "reference_value": ref_mean}
    )


METRICS.register(
    "classifier_score",
    Metric(
        _is,
        {
            "classifier_score": Output(
                "higher",
                "exp E[KL(p(y|x) || p(y))]: confident and class-diverse samples; 1..num_classes, compare to the "
                "reference set's own value",
            )
        },
        needs=("probs",),
    ),
)
