"""A scenario's `public:` section: a base trained without DP on public data (glyphs rendered from
fonts), then the private run fine-tunes it with DP-SGD; only the fine-tune spends epsilon."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from genforge.core.config import from_dict
from genforge.core.errors import ConfigError
from genforge.data.sources.glyphs import font_files
from genforge.scenarios.runner import _ingest, _pretrain, _train
from genforge.scenarios.schema import Scenario

QUIET = {"progress": "none", "tensorboard": False, "sample_every": 0}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks (conftest.one_thread)


def _scenario(public: dict | None, **extra) -> Scenario:
    return from_dict(Scenario, {
        "name": "dp-public", "data": {"source": "digits", "size": [8, 8], "limit": 300, "val_fraction": 0.5},
        "model": {"name": "cvae", "conditional": True},
        "train": {"max_time": None, "steps": 4, "config": {"batch_size": 32, **QUIET}},
        "privacy": {"epsilon": 50.0, "delta": 1e-3, "noise_multiplier": 1.0},
        **({"public": public} if public else {}), **extra,
    })  # fmt: skip


def test_dp_fine_tune_of_a_public_base_spends_epsilon_and_records_the_base(tmp_path):
    if len(font_files()) < 2:
        pytest.skip("fewer than 2 TrueType fonts on this machine (fc-list, /usr/share/fonts)")
    sc = _scenario({"source": "glyphs:0123456789?per_class=8", "steps": 3, "max_time": None,
                    "config": {"batch_size": 16}})  # fmt: skip
    console = Console(file=io.StringIO())
    dataset = _ingest(sc, tmp_path / "run" / "dataset", console)
    base_run, record = _pretrain(sc, dataset, tmp_path / "run", console)
    base = json.loads((base_run / "model.json").read_text())
    assert "privacy" not in base and base["step"] == 3  # trained without DP, on the glyphs
    assert record["epsilon_spent"] == 0.0 and record["train"]["step"] == 3
    assert record["fingerprint"] == base["dataset"]["fingerprint"] != json.loads(
        (dataset / "manifest.json").read_text())["fingerprint"]  # fmt: skip

    summary = _train(sc, dataset, tmp_path / "run", console, base_run)
    info = json.loads((tmp_path / "run" / "model.json").read_text())
    assert summary["step"] == 4
    assert info["init_from"]["path"] == str(base_run.resolve()) and info["init_from"]["step"] == 3
    assert info["init_from"]["dataset_fingerprint"] == record["fingerprint"]
    # the accountant counts the fine-tune's 4 DP steps only
    p = info["privacy"]
    assert p["steps"] == 4 and 0.0 < p["epsilon"] <= 50.0
    # the report's privacy section names the base and what the epsilon covers
    from genforge.evaluate.report import _privacy_section

    html = _privacy_section(info)
    assert "Fine-tuned from the base run" in html and str(base_run.resolve()) in html
    assert "this run's DP steps alone" in html


def test_public_classes_must_be_the_private_ones(tmp_path):
    if len(font_files()) < 2:
        pytest.skip("fewer than 2 TrueType fonts on this machine (fc-list, /usr/share/fonts)")
    sc = _scenario({"source": "glyphs:012?per_class=2", "steps": 1})
    console = Console(file=io.StringIO())
    dataset = _ingest(sc, tmp_path / "dataset", console)
    with pytest.raises(ConfigError, match=r"classes \['0', '1', '2'\] must be the private data's"):
        _pretrain(sc, dataset, tmp_path / "run", console)
    # a scenario for any labelled data trains without the base instead, and says why
    sc = _scenario({"source": "glyphs:012?per_class=2", "steps": 1, "if_classes_differ": "skip"})
    base_run, record = _pretrain(sc, dataset, tmp_path / "run2", console)
    assert base_run is None and "must be the private data's" in record["skipped"]
    assert not (tmp_path / "run2" / "public" / "base").exists()


def test_a_base_on_other_classes_passes_on_what_does_not_depend_on_them(tmp_path):
    """`if_classes_differ: transfer` (the private scenario on data other than digits): the base
    trains on its own classes, the private mmd run keeps its feature net, not its class tables."""
    if len(font_files()) < 2:
        pytest.skip("fewer than 2 TrueType fonts on this machine (fc-list, /usr/share/fonts)")
    from safetensors.numpy import load_file

    small = {"widths": [16, 8], "latent_dim": 4, "per_class": 4, "kernel": 3,
             "features": {"width": 4, "dense": 8, "pool": 2, "train_steps": 5, "train_batch": 16}}  # fmt: skip
    sc = from_dict(Scenario, {
        "name": "dp-transfer", "data": {"source": "digits", "size": [8, 8], "limit": 300, "val_fraction": 0.5},
        "model": {"name": "mmd", "conditional": True, "config": small},
        "train": {"max_time": None, "steps": 2, "config": {"batch_size": 32, **QUIET}},
        "privacy": {"epsilon": 10.0, "delta": 1e-3},
        "public": {"source": "glyphs:012?per_class=4", "steps": 1, "max_time": None, "if_classes_differ": "transfer"},
    })  # fmt: skip
    console = Console(file=io.StringIO())
    dataset = _ingest(sc, tmp_path / "run" / "dataset", console)
    base_run, record = _pretrain(sc, dataset, tmp_path / "run", console)
    assert base_run is not None and record["classes_differ"]["public"] == ["0", "1", "2"]
    _train(sc, dataset, tmp_path / "run", console, base_run)
    base, run = load_file(str(base_run / "model.safetensors")), load_file(str(tmp_path / "run" / "model.safetensors"))
    assert base["features.conv1.weight"].tolist() == run["features.conv1.weight"].tolist()
    assert base["features.head.weight"].shape[0] == 3 and run["features.head.weight"].shape[0] == 10
    info = json.loads((tmp_path / "run" / "model.json").read_text())
    assert info["statistics"]["feature_net"].startswith("trained before this run")
    assert info["config"]["num_classes"] == 10


def test_public_and_adapt_are_exclusive():
    with pytest.raises(ConfigError, match="public: and adapt:"):
        _scenario({"source": "glyphs:0123456789"}, adapt={"speaker": "x"})


def test_run_budget_flags_also_budget_the_public_base():
    from genforge.scenarios.runner import apply_overrides

    sc = _scenario({"source": "glyphs:0123456789", "steps": 1500, "max_time": "3m"})
    quick = apply_overrides(sc, None, None, 4, None)
    assert quick.public is not None and (quick.public.steps, quick.public.max_time) == (4, None)
    timed = apply_overrides(sc, None, "1m", None, None)
    assert timed.public is not None and (timed.public.steps, timed.public.max_time) == (1500, "1m")
    assert apply_overrides(sc, None, None, None, None).public == sc.public
