"""FID: agreement with a scipy.linalg.sqrtm reference, ~0 on identical sets, batch-size independence."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from genforge.evaluate.evaluate import compute_metrics
from genforge.evaluate.extractors.base import build_extractor
from genforge.evaluate.metrics.base import EvalInputs, FeatureSet
from genforge.evaluate.metrics.fid import fid_between, frechet_distance, trace_sqrt_product


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The usual reference: scipy's Schur-based sqrtm of S1 S2, imaginary parts discarded."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("dim,shift", [(16, 0.0), (64, 0.3), (128, 1.0)])
def test_fid_matches_scipy_sqrtm(dim: int, shift: float) -> None:
    rng = np.random.default_rng(dim)
    mix = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    a = rng.normal(size=(800, dim)) @ mix
    b = (rng.normal(size=(700, dim)) + shift) @ (mix + 0.1 * np.eye(dim))
    ours = fid_between(FeatureSet(a), FeatureSet(b))
    ref = scipy_fid(a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64))
    assert ours == pytest.approx(ref, rel=1e-6)
    assert ours > 0.01


def test_identical_sets_give_zero_and_trace_identity() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 32))
    fs = FeatureSet(a)
    assert abs(fid_between(fs, fs)) < 1e-8
    # tr(sqrt(S S)) = tr(S) for PSD S
    assert trace_sqrt_product(fs.sigma, fs.sigma) == pytest.approx(np.trace(fs.sigma), rel=1e-10)


def test_singular_covariances_stay_real_and_finite() -> None:
    # fewer samples than dimensions: rank-deficient covariances, negative rounding eigenvalues
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(20, 64)), rng.normal(size=(20, 64)) + 0.5
    value = fid_between(FeatureSet(a), FeatureSet(b))
    assert np.isfinite(value) and value > 0
    assert value == pytest.approx(
        scipy_fid(a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)), rel=1e-4
    )


def test_fid_of_known_gaussians() -> None:
    # closed form: identity vs 4*identity covariances, means 1 apart in each of d dims
    d = 8
    mu1, mu2 = np.zeros(d), np.ones(d)
    s1, s2 = np.eye(d), 4 * np.eye(d)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(d + d + 4 * d - 2 * 2 * d)


def test_fid_does_not_depend_on_extraction_batch_size() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (300, 12, 12, 1), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    ext = build_extractor("random", size=12)
    values = []
    for bs in (7, 64, 1000):
        fa, fb = ext.extract(a, bs).features, ext.extract(b, bs).features
        values.append(fid_between(FeatureSet(fa), FeatureSet(fb)))
    assert values[0] > 0
    assert values[1] == pytest.approx(values[0], rel=1e-6) and values[2] == pytest.approx(values[0], rel=1e-6)


def test_small_sample_warning_is_recorded() -> None:
    rng = np.random.default_rng(3)
    inputs = EvalInputs(FeatureSet(rng.normal(size=(100, 4))), FeatureSet(rng.normal(size=(100, 4))))
    records, _, warnings = compute_metrics(inputs, ["fid"], {"n_samples": 100})
    assert records["fid"]["warnings"] and "2048" in records["fid"]["warnings"][0]
    assert warnings == records["fid"]["warnings"]
