"""Restoration models are scored in pixel space against clean held-out images."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from genforge.data.canonical import SplitData, write_dataset
from genforge.evaluate.evaluate import EvalConfig, evaluate
from genforge.models.pipeline import save_model
from genforge.models.registry import build_model


def _grey_dataset(path, n=64):
    images = np.full((n, 16, 16, 1), 128, np.uint8)
    path.mkdir()
    write_dataset(path, {"train": SplitData(images), "val": SplitData(images)}, class_names=None, meta={})
    return path


def test_psnr_of_gaussian_corruption_matches_the_closed_form_and_gain_is_the_difference(tmp_path):
    torch.manual_seed(0)
    cfg = {"image_size": 16, "channels": 1, "widths": [8, 16], "corruption": {"kinds": ["gaussian"], "sigma": 0.05}}
    model = build_model("dae", cfg)
    run = tmp_path / "run"
    save_model(model, "dae", run, {"step": 0, "ema": False})
    ds = _grey_dataset(tmp_path / "ds")
    result = evaluate(run, ds, EvalConfig(n=64, seed=3))
    values = result["values"]
    # noise std 2 * sigma = 0.1 in [-1, 1] units on a mid-grey image: PSNR = 10 log10(4 / 0.01)
    assert abs(values["psnr_corrupted"] - 10 * math.log10(4 / 0.01)) < 0.3
    assert values["psnr_gain"] == values["psnr_restored"] - values["psnr_corrupted"]
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["metrics"]["psnr_gain"]["n_samples"] == 64
    # the same seed corrupts the same way: the numbers repeat exactly
    assert evaluate(run, ds, EvalConfig(n=64, seed=3))["values"] == values


def test_genforge_eval_on_a_restoration_run_prints_its_table_and_exits_0(tmp_path):
    from typer.testing import CliRunner

    from genforge.cli import app

    torch.manual_seed(0)
    cfg = {"image_size": 16, "channels": 1, "widths": [8, 16], "corruption": {"kinds": ["gaussian"], "sigma": 0.05}}
    run = tmp_path / "run"
    save_model(build_model("dae", cfg), "dae", run, {"step": 0, "ema": False})
    ds = _grey_dataset(tmp_path / "ds")
    res = CliRunner().invoke(app, ["eval", str(run), "--ref", str(ds), "--n", "32", "--split", "val"])
    assert res.exit_code == 0, res.output
    assert "psnr_gain" in res.output and str(run) in res.output
    assert abs(json.loads((run / "metrics.json").read_text())["values"]["psnr_gain"]) < 0.5  # untrained: no gain
