"""The default classifier evaluator on real MNIST: >= 98% held-out accuracy, and sane metrics."""

from __future__ import annotations

import numpy as np
import pytest

from genforge.data.canonical import open_dataset
from genforge.evaluate.evaluate import EvalConfig, evaluate
from genforge.evaluate.extractors.classifier import classifier_extractor
from test_eval_fixtures import mnist_dataset


@pytest.mark.slow
def test_mnist_classifier_evaluator(mnist_test_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    ds = open_dataset(mnist_dataset(mnist_test_dir, tmp_path / "mnist"))
    ext = classifier_extractor(ds)
    assert ext.info["heldout_split"] == "val"
    assert ext.info["heldout_accuracy"] >= 0.98
    test = ds.split("test")
    np.savez(tmp_path / "real.npz", images=np.asarray(test.images), labels=np.asarray(test.labels))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "noise.npz", images=rng.integers(0, 256, (1000, 28, 28, 1), dtype=np.uint8))
    cfg = EvalConfig(n=1000, kid_subsets=10, memorisation=False,
                     metrics=["fid", "kid", "prdc", "classifier_score", "conditional_accuracy"])  # fmt: skip
    real = evaluate(tmp_path / "real.npz", ds.path, cfg)["values"]
    noise = evaluate(tmp_path / "noise.npz", ds.path, cfg)["values"]
    assert real["conditional_accuracy"] >= 0.98
    assert real["classifier_score"] > 8 and noise["classifier_score"] < 3
    assert real["fid"] < noise["fid"] / 20 and real["kid"] < noise["kid"] / 20
    assert real["precision"] > 0.5 > noise["precision"] and real["coverage"] > 0.5 > noise["coverage"]
