"""Memorisation audit: planted copies of training images are flagged, fresh samples are not."""

from __future__ import annotations

import numpy as np
import pytest

from genforge.evaluate.extractors.base import build_extractor
from genforge.evaluate.memorisation import AuditConfig, audit, save_pairs
from genforge.evaluate.neighbours import nearest
from test_eval_fixtures import squares


def _setup():
    train, _ = squares(600, seed=0)
    heldout, _ = squares(300, seed=1)
    fresh, _ = squares(200, seed=2)
    rng = np.random.default_rng(0)
    planted_idx = rng.choice(len(train), 20, replace=False)
    # copies with a little noise: still far closer to their source than any held-out image is
    copies = np.clip(train[planted_idx].astype(int) + rng.integers(-3, 4, train[planted_idx].shape), 0, 255)
    samples = np.concatenate([fresh, copies.astype(np.uint8)])
    ext = build_extractor("random", size=16)
    feats = {name: ext.extract(x).features for name, x in (("s", samples), ("t", train), ("h", heldout))}
    return samples, train, heldout, feats, planted_idx


def test_planted_copies_are_caught_and_fresh_samples_are_not(tmp_path) -> None:
    samples, train, heldout, f, planted_idx = _setup()
    result = audit(samples, f["s"], train, f["t"], heldout, f["h"], AuditConfig(percentile=1.0))
    for space in ("features", "pixels"):
        a = result[space]
        assert a.flagged[200:].all(), space  # every planted copy
        assert np.array_equal(a.nn_index[200:], planted_idx), space  # ...matched to its source image
        assert a.flagged[:200].mean() < 0.05, space  # fresh samples: about the calibration percentile
        assert a.summary["copy_rate"] == pytest.approx(a.flagged.mean())
    save_pairs(tmp_path / "pairs.npz", result, samples, train, count=5)
    with np.load(tmp_path / "pairs.npz") as z:
        assert z["pixels_flagged"].all()
        assert (z["pixels_sample_index"] >= 200).all()
        np.testing.assert_array_equal(z["pixels_train_images"], train[z["pixels_train_index"]])
        assert np.all(np.diff(z["pixels_distance"]) >= 0)


def test_threshold_is_the_heldout_percentile() -> None:
    samples, train, heldout, f, _ = _setup()
    result = audit(samples, f["s"], train, f["t"], heldout, f["h"], AuditConfig(percentile=10.0))
    _, held = nearest(
        heldout.reshape(len(heldout), -1).astype(np.float32) / 255,
        train.reshape(len(train), -1).astype(np.float32) / 255,
    )
    assert result["pixels"].threshold == pytest.approx(np.percentile(held, 10.0), rel=1e-6)


def test_nearest_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 7)).astype(np.float32), rng.normal(size=(80, 7)).astype(np.float32)
    idx, dist = nearest(x, y, block=16)
    d = np.linalg.norm(x[:, None, :] - y[None, :, :], axis=2)
    np.testing.assert_array_equal(idx, d.argmin(1))
    np.testing.assert_allclose(dist, d.min(1), rtol=1e-4)
