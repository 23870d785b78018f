"""`genforge eval` and `genforge evaluator train` end to end on tiny data, the reference-statistics
cache, determinism of the whole evaluation, and the training callback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from genforge.cli import app
from genforge.core.errors import DataError, GenforgeError
from genforge.data.canonical import open_dataset
from genforge.evaluate.callback import EvalCallback
from genforge.evaluate.evaluate import EvalConfig, evaluate, read_npz
from genforge.evaluate.extractors.base import build_extractor
from genforge.evaluate.stats_cache import reference_features
from test_eval_fixtures import squares, squares_dataset, tiny_run

FAST = ["--features", "classifier"]
# epochs, batch_size, lr, width, feature_dim, seed
SMALL_CLASSIFIER = (2, 32, 3e-3, 8, 16, 0)


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    ds = squares_dataset(tmp_path / "ds")
    # a small evaluator keeps the test fast; its config enters the cache key like any other
    from genforge.evaluate.extractors import classifier

    # dataclass defaults live on __init__: patching them changes the config (and its cache key)
    monkeypatch.setattr(classifier.ClassifierConfig.__init__, "__defaults__", SMALL_CLASSIFIER)
    return tmp_path, ds


def _npz(path: Path, images: np.ndarray, labels: np.ndarray | None = None) -> Path:
    arrays = {"images": images} if labels is None else {"images": images, "labels": labels}
    np.savez(path, **arrays)
    return path


def test_eval_npz_writes_comparable_metrics(env) -> None:
    tmp, ds = env
    real, labels = squares(300, seed=11)
    npz = _npz(tmp / "real.npz", real, labels)
    noise = _npz(tmp / "noise.npz", np.random.default_rng(0).integers(0, 256, real.shape, dtype=np.uint8))
    res = CliRunner().invoke(app, ["eval", str(npz), "--ref", str(ds), "--n", "300", *FAST, "--metric", "fid",
                                   "--metric", "kid", "--metric", "prdc", "--metric", "classifier_score",
                                   "--metric", "conditional_accuracy", "--metric", "fid_generalisation"])  # fmt: skip
    assert res.exit_code == 0, res.output
    m = json.loads((tmp / "real.metrics.json").read_text())
    fid = m["metrics"]["fid"]
    for key in ("n_samples", "n_reference", "extractor", "extractor_hash", "preprocessing", "reference_split",
                "reference_fingerprint", "model_step", "ema"):  # fmt: skip
        assert key in fid, key
    assert fid["n_samples"] == 300 and fid["reference_split"] == "val"
    assert fid["reference_fingerprint"] == open_dataset(ds).fingerprint
    assert any("2048" in w for w in m["warnings"])
    assert m["memorisation"]["pixels"]["copy_rate"] < 0.05
    assert (tmp / m["memorisation"]["pairs_file"]).is_file()
    assert m["values"]["conditional_accuracy"] > 0.9
    CliRunner().invoke(app, ["eval", str(noise), "--ref", str(ds), *FAST, "--no-memorisation"])
    bad = json.loads((tmp / "noise.metrics.json").read_text())["values"]
    v = m["values"]
    assert bad["fid"] > 5 * v["fid"] and bad["kid"] > 5 * v["kid"]
    assert bad["precision"] < v["precision"] and bad["coverage"] < v["coverage"]


def test_eval_is_deterministic_and_reuses_reference_stats(env) -> None:
    tmp, ds = env
    images, _ = squares(200, seed=12)
    npz = _npz(tmp / "s.npz", images)
    cfg = EvalConfig(n=200, features="classifier", memorisation=False, kid_subsets=5)
    first = evaluate(npz, ds, cfg, tmp / "a.json")
    assert first["reference"]["cached"] is False
    second = evaluate(npz, ds, cfg, tmp / "b.json")
    assert second["reference"]["cached"] is True
    assert first["values"] == second["values"]
    assert first["extractor"]["hash"] == second["extractor"]["hash"]
    stats = list((tmp / "cache" / "stats").glob("*.npz"))
    assert len(stats) == 2  # val (reference) and train (generalisation gap)
    with np.load(stats[0]) as z:
        assert z["mu"].dtype == np.float64 and z["sigma"].shape == (16, 16)
    # unlabelled samples: per-class FID falls back to the classifier's argmax, no conditional accuracy
    assert "conditional_accuracy" in first["skipped"]
    assert first["metrics"]["class_fid_mean"]["details"]["class_source"] == "classifier argmax"


def test_eval_run_directory_generates_from_the_model(env) -> None:
    tmp, ds = env
    run = tiny_run(tmp / "run", ds, num_classes=4, step=123)
    res = evaluate(run, ds, EvalConfig(n=120, features="random", memorisation=False, kid_subsets=3))
    assert (run / "metrics.json").is_file()
    assert res["target"]["kind"] == "run" and res["target"]["step"] == 123 and res["target"]["ema"] is True
    assert res["metrics"]["fid"]["model_step"] == 123 and res["metrics"]["fid"]["n_samples"] == 120
    again = evaluate(
        run, ds, EvalConfig(n=120, features="random", memorisation=False, kid_subsets=3), tmp / "c.json"
    )
    assert again["values"] == res["values"]
    other = evaluate(
        run,
        ds,
        EvalConfig(n=120, seed=1, features="random", memorisation=False, kid_subsets=3),
        tmp / "d.json",
    )
    assert other["values"]["fid"] != res["values"]["fid"]


def test_bad_inputs_name_the_file(env) -> None:
    tmp, ds = env
    bad = tmp / "bad.npz"
    np.savez(bad, pictures=np.zeros((2, 4, 4, 1), np.uint8))
    with pytest.raises(DataError, match="bad.npz.*no 'images'"):
        read_npz(bad)
    np.savez(bad, images=np.full((2, 4, 4, 1), 2.0, np.float32))  # more forms: test_eval_inputs.py
    with pytest.raises(DataError, match="bad.npz: float pixel values span"):
        read_npz(bad)
    with pytest.raises(GenforgeError, match="run directory"):
        evaluate(tmp / "nothing.txt", ds)
    res = CliRunner().invoke(app, ["eval", str(tmp / "nothing"), "--ref", str(ds)])
    assert res.exit_code != 0


def test_evaluator_train_prints_heldout_accuracy(env) -> None:
    tmp, ds = env
    res = CliRunner().invoke(app, ["evaluator", "train", str(ds)])
    assert res.exit_code == 0, res.output
    assert "held-out accuracy (val):" in res.output
    acc = float(res.output.split("held-out accuracy (val):")[1].split("%")[0])
    assert acc > 90


class FakeTrainer:
    """What EvalCallback uses of the trainer: dataset, device, ema_weights, eval_labels, log_metrics."""

    def __init__(self, dataset, model):
        import contextlib

        self.dataset, self.device, self.step, self.model = dataset, "cpu", 0, model
        self.logged: list[tuple[int, dict]] = []
        self.ema_weights = lambda: contextlib.nullcontext(model)

    def eval_labels(self, n):
        return None

    def log_metrics(self, step, values):
        self.logged.append((step, values))


def test_callback_draws_noise_on_the_cpu_whatever_the_trainer_device(env) -> None:
    """Families draw their noise on the CPU (seed stability across devices); a generator made on
    the trainer's device broke every in-training check of a CUDA run (found on an H200). Here the
    trainer claims a CUDA device on a CPU-only build, where a CUDA generator cannot be made at all."""
    tmp, ds = env
    from test_eval_fixtures import TinyConfig, TinyGenerator

    model = TinyGenerator(TinyConfig())
    cpu, cuda = FakeTrainer(open_dataset(ds), model), FakeTrainer(open_dataset(ds), model)
    cuda.device = "cuda"
    cb = EvalCallback(every=1, n=30, features="random")
    np.testing.assert_array_equal(cb.sample(cuda)[0], cb.sample(cpu)[0])


def test_callback_logs_cheap_metrics_every_n_steps(env) -> None:
    tmp, ds = env
    from test_eval_fixtures import TinyConfig, TinyGenerator

    trainer = FakeTrainer(open_dataset(ds), TinyGenerator(TinyConfig()))
    cb = EvalCallback(every=2, n=60, features="random", kid_subsets=3)
    cb.on_train_start(trainer)
    for step in range(1, 6):
        trainer.step = step
        cb.on_step_end(trainer, step)
    cb.on_train_end(trainer)
    assert [s for s, _ in trainer.logged] == [2, 4, 5]
    values = trainer.logged[0][1]
    assert {"eval/fid", "eval/kid", "eval/precision", "eval/recall", "eval/density", "eval/coverage"} <= set(
        values
    )
    assert values == trainer.logged[1][1]  # fixed seed, unchanged model: identical numbers
    # the callback's numbers are the same computation as `genforge eval` on the same samples
    images, _ = cb.sample(trainer)
    ext = build_extractor("random", open_dataset(ds))
    ref, info = reference_features(open_dataset(ds), "val", ext)
    assert info["cached"]
    npz = _npz(tmp / "cb.npz", images)
    res = evaluate(npz, ds, EvalConfig(n=60, features="random", memorisation=False, kid_subsets=3,
                                       kid_subset_size=60, metrics=["fid"]))  # fmt: skip
    assert res["values"]["fid"] == pytest.approx(values["eval/fid"], rel=1e-9)
