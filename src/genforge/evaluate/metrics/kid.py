"""Kernel Inception Distance: unbiased MMD^2 with the cubic polynomial kernel k(x,y) = (x.y/d + 1)^3,
averaged over random subsets (Bińkowski et al. 2018). Unbiased, so two samples of one
distribution give ~0 (and can give small negative values) at any sample count."""

from __future__ import annotations

import numpy as np

from genforge.evaluate.metrics.base import METRICS, EvalInputs, Metric, MetricValues, Output

SUBSETS = 100
SUBSET_SIZE = 1000


def _kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    m, n = len(x), len(y)
    kxx, kyy, kxy = _kernel(x, x), _kernel(y, y), _kernel(x, y)
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * kxy.mean())


def kid(
    x: np.ndarray, y: np.ndarray, subsets: int = SUBSETS, subset_size: int = SUBSET_SIZE, seed: int = 0
) -> tuple[float, float]:
    """(mean, std) of MMD^2 over `subsets` random subsets of min(subset_size, len) points of each set."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError(f"KID needs at least 2 points per set, got {len(x)} and {len(y)}")
    rng = np.random.default_rng(seed)
    values = [
        mmd2_unbiased(x[rng.choice(len(x), m, replace=False)], y[rng.choice(len(y), m, replace=False)])
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


def _kid(inputs: EvalInputs) -> MetricValues:
    subsets = int(inputs.options.get("kid_subsets", SUBSETS))
    size = int(inputs.options.get("kid_subset_size", SUBSET_SIZE))
    mean, std = kid(inputs.samples.features, inputs.reference.features, subsets, size, inputs.seed)
    m = min(size, len(inputs.samples), len(inputs.reference))
    return MetricValues({"kid": mean}, details={"kid_std": std, "subsets": subsets, "subset_size": m})


METRICS.register(
    "kid",
    Metric(
        _kid,
        {
            "kid": Output(
                "lower",
                "unbiased squared MMD (cubic polynomial kernel) to the reference; ~0 = same distribution",
            )
        },
        cheap=True,
    ),
)
