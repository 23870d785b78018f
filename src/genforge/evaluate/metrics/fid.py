"""Fréchet distance between Gaussians fitted to two feature sets (FID when the features are Inception's).

    FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

`tr((S1 S2)^(1/2))` is computed without a general (Schur) matrix square root: S1 S2 is similar
to the symmetric PSD matrix M = S1^(1/2) S2 S1^(1/2), so its eigenvalues are M's. We take
S1^(1/2) from a symmetric eigendecomposition (`eigh`, eigenvalues below 0 set to 0), form M,
symmetrise it against rounding, and sum the square roots of its eigenvalues (`eigvalsh`).
Everything stays real: no imaginary parts can arise (scipy's `sqrtm` of the non-symmetric
S1 S2 produces small imaginary parts that other implementations discard), and eigenvalues that
rounding pushes slightly below 0 (covariances of fewer samples than dimensions are singular)
are clipped to 0 before the square root. Statistics are float64 throughout.
"""

from __future__ import annotations

import numpy as np

from genforge.evaluate.metrics.base import METRICS, EvalInputs, FeatureSet, Metric, MetricValues, Output

MIN_RELIABLE = 2048  # below this FID is strongly biased upwards; compare only equal sample counts


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr((s1 s2)^(1/2)) for symmetric PSD s1, s2 (see the module docstring)."""
    r = _psd_sqrt(np.asarray(s1, np.float64))
    m = r @ np.asarray(s2, np.float64) @ r
    eig = np.linalg.eigvalsh((m + m.T) * 0.5)
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2)
    return float(max(value, 0.0))  # rounding can give -1e-12 for identical sets


def fid_between(a: FeatureSet, b: FeatureSet) -> float:
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def small_sample_warning(what: str, n: int) -> list[str]:
    if n >= MIN_RELIABLE:
        return []
    return [f"{what} computed on {n} samples (< {MIN_RELIABLE}): biased upwards, compare only at equal n"]


def _fid(inputs: EvalInputs) -> MetricValues:
    n = min(len(inputs.samples), len(inputs.reference))
    return MetricValues(
        {"fid": fid_between(inputs.samples, inputs.reference)}, warnings=small_sample_warning("FID", n)
    )


def _generalisation(inputs: EvalInputs) -> MetricValues:
    assert inputs.train is not None
    to_train = fid_between(inputs.samples, inputs.train)
    to_ref = fid_between(inputs.samples, inputs.reference)
    baseline = fid_between(inputs.reference, inputs.train)
    return MetricValues(
        {"fid_train": to_train, "fid_gap": to_ref - to_train},
        details={"fid_reference": to_ref, "fid_reference_vs_train": baseline},
        warnings=small_sample_warning("FID gap", min(len(inputs.samples), len(inputs.reference))),
    )


METRICS.register(
    "fid",
    Metric(
        _fid,
        {
            "fid": Output(
                "lower",
                "Fréchet distance of feature Gaussians to the reference; 0 = identical mean and covariance",
            )
        },
        cheap=True,
    ),
)
METRICS.register(
    "fid_generalisation",
    Metric(
        _generalisation,
        {
            "fid_train": Output("lower", "FID of the samples against the training split"),
            "fid_gap": Output(
                "lower",
                "FID(samples, held-out) - FID(samples, train): near FID(held-out, train)'s own small gap = "
                "generalises; large = the samples sit closer to the training images (memorisation)",
            ),
        },
        needs=("train",),
    ),
)
