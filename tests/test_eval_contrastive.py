"""The self-supervised `contrastive` evaluator (the simclr family) for unlabelled data."""

from __future__ import annotations

import numpy as np

from genforge.core.atomic import atomic_dir
from genforge.data.canonical import SplitData, open_dataset, write_dataset
from genforge.evaluate.evaluate import EvalConfig, evaluate
from genforge.evaluate.extractors.base import default_extractor
from genforge.evaluate.extractors.contrastive import ContrastiveConfig, contrastive_extractor
from test_eval_fixtures import squares

TINY = {"steps": 4, "batch_size": 16, "base_channels": 8, "max_channels": 16}


def _unlabelled(path):
    splits = {
        name: SplitData(squares(n, seed)[0]) for seed, (name, n) in enumerate((("train", 120), ("val", 80)))
    }
    with atomic_dir(path) as tmp:
        write_dataset(tmp, splits, class_names=None, meta={"source": "squares"})
    return open_dataset(path)


def test_contrastive_evaluator_is_deterministic_and_cached(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    ds = _unlabelled(tmp_path / "ds")
    assert default_extractor(ds) == "contrastive"
    first = contrastive_extractor(ds, ContrastiveConfig(**TINY))
    again = contrastive_extractor(ds, ContrastiveConfig(**TINY), retrain=True)
    assert first.weights_hash == again.weights_hash
    cached = contrastive_extractor(ds, ContrastiveConfig(**TINY))
    assert cached.info["train_seconds"] == again.info["train_seconds"]
    images, _ = squares(20, seed=5)
    feats = cached.extract(images).features
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(feats, first.extract(images, batch_size=3).features)
    other = contrastive_extractor(ds, ContrastiveConfig(**{**TINY, "seed": 1}))
    assert other.weights_hash != first.weights_hash


def test_eval_on_unlabelled_data_skips_class_metrics(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    ds = _unlabelled(tmp_path / "ds")
    np.savez(tmp_path / "s.npz", images=squares(60, seed=7)[0])
    cfg = EvalConfig(n=60, features="contrastive", extractor_options=TINY, kid_subsets=3, memorisation=False)
    res = evaluate(tmp_path / "s.npz", ds.path, cfg)
    assert res["extractor"]["id"] == "contrastive" and res["metrics"]["fid"]["extractor"] == "contrastive"
    assert {"classifier_score", "class_fid", "conditional_accuracy"} <= set(res["skipped"])
    assert np.isfinite(res["values"]["fid"]) and 0 <= res["values"]["coverage"] <= 1
