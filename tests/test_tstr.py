"""Train on synthetic, test on real (TSTR) beside TRTR: real training images as "synthetic" data
reproduce TRTR, shuffled labels give chance, a seed fixes every number, TRTR is cached, and
`genforge eval` writes the values for a conditional run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from genforge.cli import app
from genforge.core.errors import ConfigError, DataError
from genforge.data.canonical import open_dataset
from genforge.evaluate.metrics.base import real_value
from genforge.evaluate.privacy.config import UtilityConfig
from genforge.evaluate.privacy.utility import utility
from genforge.evaluate.report import write_report
from privacy_fixtures import replay_run
from test_eval_fixtures import CLASSES, squares, squares_dataset, tiny_run

# epochs, batch_size, lr, width, feature_dim, seed: a small evaluator keeps the CLI tests fast
SMALL_CLASSIFIER = (2, 32, 3e-3, 8, 16, 0)
# a small TSTR recipe for the same reason (the shipped one: evaluate.privacy.utility.UtilityRecipe)
SMALL_RECIPE = {"epochs": 3, "batch_size": 32, "width": 8, "feature_dim": 16}
SMALL = UtilityConfig(recipe=SMALL_RECIPE)


@pytest.fixture(autouse=True)
def one_thread():
    # tiny networks: a second intra-op thread only contends on the shared 2-core machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def ds(tmp_path, monkeypatch):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    return open_dataset(squares_dataset(tmp_path / "ds"))


def test_real_train_images_as_synthetic_data_reproduce_trtr(ds) -> None:
    train = ds.train_split
    res = utility(np.asarray(train.images), np.asarray(train.labels), ds, "val", SMALL, seed=0)
    v = res.values
    # the same images, labels, recipe and seed: the same fit, bit for bit
    assert v["tstr_accuracy"] == v["trtr_accuracy"] and v["tstr_ratio"] == 1.0
    assert v["trtr_accuracy"] > 0.9  # the recipe learns the quadrant task
    # fresh real images of the same distribution (another draw): close to TRTR
    fresh, labels = squares(len(train), seed=7)
    other = utility(fresh, labels, ds, "val", SMALL, seed=0).values
    assert abs(other["tstr_accuracy"] - other["trtr_accuracy"]) < 0.08
    assert res.details["synthetic_count"] == len(train) and res.details["test_count"] == len(ds.split("val"))


def test_shuffled_labels_give_chance(ds) -> None:
    train = ds.train_split
    truth = np.asarray(train.labels)
    # each true class gets every label equally often: the labels carry no information about the
    # image (a plain permutation leaves chance majorities a classifier can learn)
    rng = np.random.default_rng(0)
    labels = np.empty_like(truth)
    for c in range(CLASSES):
        rows = np.flatnonzero(truth == c)
        labels[rows] = rng.permutation(np.arange(len(rows)) % CLASSES)
    v = utility(np.asarray(train.images), labels, ds, "val", SMALL, seed=0).values
    assert abs(v["tstr_accuracy"] - 1 / CLASSES) < 0.12, v
    assert v["trtr_accuracy"] > 0.9 and v["tstr_ratio"] < 0.5


def test_deterministic_under_a_seed_and_trtr_cached(ds, tmp_path) -> None:
    images, labels = squares(300, seed=5)
    cfg = UtilityConfig(recipe={**SMALL_RECIPE, "epochs": 2})
    first = utility(images, labels, ds, "val", cfg, seed=3)
    second = utility(images, labels, ds, "val", cfg, seed=3)
    assert first.values == second.values
    assert first.details["trtr_cached"] is False and second.details["trtr_cached"] is True
    assert list((tmp_path / "cache" / "utility").glob("trtr-*.json"))
    # another seed is another recipe: its own TRTR entry
    third = utility(images, labels, ds, "val", cfg, seed=4)
    assert third.details["trtr_cached"] is False and third.details["recipe"]["seed"] == 4


def test_bad_labels_and_recipe_fields_are_named(ds) -> None:
    images, labels = squares(50, seed=5)
    with pytest.raises(DataError, match=r"0\.\.3"):
        utility(images, labels + 10, ds, "val", SMALL, seed=0)
    with pytest.raises(DataError, match="labelled samples"):
        utility(images, None, ds, "val", SMALL, seed=0)
    with pytest.raises(ConfigError, match="utility.recipe.*epochz"):
        utility(images, labels, ds, "val", UtilityConfig(recipe={"epochz": 1}), seed=0)


@pytest.fixture()
def small_evaluator(monkeypatch):
    from genforge.evaluate.extractors import classifier
    from genforge.evaluate.privacy.utility import UtilityRecipe

    # dataclass defaults live on __init__: patching them changes the evaluator config (and cache key)
    monkeypatch.setattr(classifier.ClassifierConfig.__init__, "__defaults__", SMALL_CLASSIFIER)
    monkeypatch.setattr(UtilityRecipe.__init__, "__defaults__", (3, 32, 3e-3, 8, 16, 0))


def test_eval_cli_writes_tstr_for_a_conditional_run(ds, tmp_path, small_evaluator) -> None:
    run = replay_run(tmp_path / "replay", ds.path)
    res = CliRunner().invoke(app, ["eval", str(run), "--ref", str(ds.path), "--n", "400", "--features", "classifier",
                                   "--metric", "fid", "--no-memorisation", "--no-mia"])  # fmt: skip
    assert res.exit_code == 0, res.output
    m = json.loads((run / "metrics.json").read_text())
    v = m["values"]
    # the replayed train split, in the training class mix: TSTR trains on exactly the train split
    assert v["tstr_accuracy"] == v["trtr_accuracy"] and v["tstr_ratio"] == 1.0
    rec = m["metrics"]["tstr_accuracy"]
    assert rec["better"] == "higher" and rec["n_samples"] == 400 and rec["reference_split"] == "val"
    # what real data scores on TSTR's gate: TRTR, named by the record and found by real_value
    assert rec["real"] == "trtr_accuracy" and real_value(m, "tstr_accuracy") == v["trtr_accuracy"]
    assert "tstr_ratio" in res.output and m["skipped"]["membership"].startswith("turned off")
    assert m["config"]["utility"]["enabled"] is None and m["timing"]["privacy_s"] >= 0
    html = write_report(run).read_text()
    assert "Synthetic-data utility and membership inference" in html and "TSTR accuracy" in html
    # fewer eval samples than the train split: the run generates TSTR's own 400
    res = CliRunner().invoke(app, ["eval", str(run), "--ref", str(ds.path), "--n", "100", "--features", "classifier",
                                   "--metric", "fid", "--no-memorisation", "--no-mia", "-o", str(tmp_path / "m.json")])  # fmt: skip
    assert res.exit_code == 0, res.output
    m2 = json.loads((tmp_path / "m.json").read_text())
    assert m2["metrics"]["tstr_accuracy"]["n_samples"] == 400 and m2["values"]["tstr_ratio"] == 1.0


def test_unconditional_runs_skip_tstr_unless_asked(ds, tmp_path, small_evaluator) -> None:
    run = tiny_run(tmp_path / "tiny", ds.path)
    args = ["eval", str(run), "--ref", str(ds.path), "--n", "100", "--metric", "fid", "--no-memorisation", "--no-mia"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    m = json.loads((run / "metrics.json").read_text())
    assert "tstr_accuracy" not in m["values"] and "labelled samples" in m["skipped"]["utility"]
    res = CliRunner().invoke(app, [*args, "--tstr"])
    assert isinstance(res.exception, DataError) and "TSTR was asked for" in str(res.exception)


def test_a_samples_file_with_fewer_than_n_is_used_whole_with_a_warning(ds, tmp_path, small_evaluator) -> None:
    from genforge.evaluate.evaluate import EvalConfig, evaluate

    images, labels = squares(120, seed=9)
    np.savez(tmp_path / "s.npz", images=images, labels=labels)
    cfg = EvalConfig(n=100, features="classifier", metrics=["fid"], memorisation=False,
                     utility=UtilityConfig(enabled=True, n=300))  # fmt: skip
    m = evaluate(tmp_path / "s.npz", ds.path, cfg, tmp_path / "m.json")
    assert m["metrics"]["tstr_accuracy"]["n_samples"] == 120  # the file's all, not just the eval's 100
    assert any("fewer than the 300" in w for w in m["warnings"])
    assert m["metrics"]["tstr_accuracy"]["details"]["synthetic_count"] == 120
    # without --tstr a samples file is not scored: it is most often not a generator's output
    cfg.utility = UtilityConfig()
    m = evaluate(tmp_path / "s.npz", ds.path, cfg, tmp_path / "m.json")
    assert "tstr_accuracy" not in m["values"] and "--tstr" in m["skipped"]["utility"]
