"""bench/audio_quality.py: each family's scenario is the spoken-digits preset with only the model,
the budget (early stop off) and, when asked, the batch changed."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import audio_quality as aq  # noqa: E402
from genforge.scenarios.schema import load_scenario  # noqa: E402


def test_scenario_copy_changes_model_budget_and_batch_only(tmp_path) -> None:
    shipped = load_scenario("spoken-digits")
    copy = load_scenario(str(aq.scenario_copy(tmp_path, "mel-sngan", "10m", None, 200)))
    assert copy.model.name == "mel-sngan" and copy.train.max_time == "10m"
    assert copy.train.early_stop.enabled is False and copy.evaluate.n == 200
    assert copy.train.config == shipped.train.config  # the preset's batch (64)
    assert copy.evaluate.gates == shipped.evaluate.gates and copy.data == shipped.data
    small = load_scenario(str(aq.scenario_copy(tmp_path, "mel-sngan", "10m", None, 200, batch_size=16)))
    assert small.train.config == {**shipped.train.config, "batch_size": 16}
