"""KID: the unbiased MMD^2 estimator against a direct O(n^2) loop, ~0 for one distribution."""

from __future__ import annotations

import numpy as np
import pytest

from genforge.evaluate.metrics.kid import kid, mmd2_unbiased


def direct_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (float(a @ b) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd2_matches_direct_loop() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 5)), rng.normal(0.5, 1.2, size=(25, 5))
    assert mmd2_unbiased(x, y) == pytest.approx(direct_mmd2(x, y), rel=1e-10)
    # one subset: KID is the estimator on that subset; the subsets are drawn from the seeded generator
    mean, std = kid(x, y, subsets=1, subset_size=25, seed=3)
    rng = np.random.default_rng(3)
    xi, yi = rng.choice(30, 25, replace=False), rng.choice(25, 25, replace=False)
    assert std == 0.0
    assert mean == pytest.approx(direct_mmd2(x[xi], y[yi]), rel=1e-10)


def test_same_distribution_is_near_zero_and_shift_is_not() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2000, 32)), rng.normal(size=(2000, 32))
    same, same_std = kid(a, b, subsets=50, subset_size=500, seed=0)
    shifted, _ = kid(a, b + 0.5, subsets=50, subset_size=500, seed=0)
    assert abs(same) < 3 * same_std + 1e-3
    assert shifted > 20 * max(abs(same), same_std)


def test_kid_is_deterministic_under_a_seed() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    assert kid(a, b, 10, 100, seed=5) == kid(a, b, 10, 100, seed=5)
    assert kid(a, b, 10, 100, seed=5) != kid(a, b, 10, 100, seed=6)
