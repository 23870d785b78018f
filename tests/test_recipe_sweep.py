"""bench/recipe_sweep.py: variants are the shipped scenario with dotted overrides, checked before
any run, and only development sets are accepted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import recipe_sweep as rs  # noqa: E402
from genforge.core.errors import ConfigError  # noqa: E402
from genforge.scenarios.schema import load_scenario  # noqa: E402


def test_variant_overrides_the_shipped_scenario_and_nothing_else(tmp_path) -> None:
    sc = rs.scenario_dict("mnist")
    path = rs.write_variant("mnist-x", sc, {"model.config.d_lr": 4e-4, "train.steps": 10}, None, tmp_path)
    variant, shipped = load_scenario(str(path)), load_scenario("mnist")
    assert variant.model.config == {**shipped.model.config, "d_lr": 4e-4}
    assert variant.train.steps == 10 and variant.train.max_time == shipped.train.max_time
    assert variant.evaluate.gates == shipped.evaluate.gates
    assert "export" not in yaml.safe_load(path.read_text())
    assert rs.scenario_dict("mnist") == sc  # the overrides went into a copy
    quick = load_scenario(str(rs.write_variant("mnist-q", sc, {"train.steps": 10}, 3, tmp_path)))
    assert quick.train.steps == 3


def test_a_key_the_scenario_does_not_have_fails_before_any_run(tmp_path) -> None:
    with pytest.raises(ConfigError, match="nonsense"):
        rs.write_variant("bad", rs.scenario_dict("mnist"), {"train.nonsense": 1}, None, tmp_path)
    with pytest.raises(ValueError, match="not a section"):
        rs.apply({"train": {"steps": 5}}, {"train.steps.x": 1})


def test_variants_file_is_checked(tmp_path) -> None:
    good = tmp_path / "v.yaml"
    good.write_text("wide: {model.config.d_widths: [64, 128, 256]}\n")
    assert rs.load_variants(good) == {"base": {}, "wide": {"model.config.d_widths": [64, 128, 256]}}
    clash = tmp_path / "clash.yaml"
    clash.write_text("base: {train.steps: 1}\n")
    with pytest.raises(ValueError, match="as shipped"):
        rs.load_variants(clash)
    flat = tmp_path / "flat.yaml"
    flat.write_text("- a\n")
    with pytest.raises(ValueError, match="mapping"):
        rs.load_variants(flat)
    shipped = rs.load_variants(REPO / "bench" / "variants" / "mnist_d.yaml")
    for name, over in shipped.items():  # the file in the repo holds variants of the shipped scenario
        load_scenario(str(rs.write_variant(name, rs.scenario_dict("mnist"), over, None, tmp_path)))


def test_measured_sets_are_refused(capsys) -> None:
    with pytest.raises(SystemExit):
        rs.main(["--scenario", "mnist", "--sets", "dev-lower10,glyphs40"])
    assert "glyphs40 not development sets" in capsys.readouterr().err
