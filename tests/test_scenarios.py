"""Scenarios: the shipped presets are valid, gates judge metrics, `genforge run` chains every stage."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from genforge.cli import app
from genforge.core.errors import ConfigError
from genforge.evaluate.audio.enhancement import OUTPUTS as ENHANCEMENT_OUTPUTS
from genforge.evaluate.audio.evaluation import OUTPUT_NAMES as AUDIO_NAMES
from genforge.evaluate.audio.target import MEANINGS as TARGET_OUTPUTS
from genforge.evaluate.metrics.base import output_info
from genforge.evaluate.privacy.membership import OUTPUTS as MEMBERSHIP_OUTPUTS
from genforge.evaluate.privacy.utility import OUTPUTS as UTILITY_OUTPUTS
from genforge.evaluate.restoration import OUTPUTS as RESTORATION_OUTPUTS
from genforge.evaluate.text.evaluation import OUTPUTS as TEXT_OUTPUTS
from genforge.models.registry import MODELS
from genforge.scenarios.runner import check_gates, metric_value, real_data_note, run_scenario
from genforge.scenarios.schema import Gate, load_scenario, preset_names
from genforge.train.privacy import METRIC_KEYS as DP_VALUES

EXPECTED = {"digits", "mnist", "small-color", "few-shot", "restoration", "private", "shakespeare", "spoken-digits",
            "speech-enhancement"}
# audio generation values beside the image metrics they rename (evaluate/audio/evaluation.py)
AUDIO_EXTRA = {"fad_memoriser_ratio", "fad_control", "fad_memoriser", "speaker_accuracy"}


def test_every_shipped_scenario_is_valid():
    import genforge.models.zoo  # noqa: F401

    assert EXPECTED <= set(preset_names())
    for name in preset_names():
        sc = load_scenario(name)
        assert sc.model.name in MODELS, name
        for gate in sc.evaluate.gates:
            head = gate.metric.split(".")[0]
            others = {*RESTORATION_OUTPUTS, *UTILITY_OUTPUTS, *MEMBERSHIP_OUTPUTS, *DP_VALUES.values(), *TEXT_OUTPUTS,
                      *TARGET_OUTPUTS, *ENHANCEMENT_OUTPUTS, *AUDIO_NAMES.values(), *AUDIO_EXTRA}
            known = output_info(gate.metric) is not None or gate.metric in others or head == "memorisation"
            assert known, f"{name}: gate on unknown metric {gate.metric!r}"
            assert gate.min is not None or gate.max is not None


def test_unknown_scenario_and_bad_field_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="shipped scenarios are"):
        load_scenario("no-such-scenario")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  nmae: dcgan\n")
    with pytest.raises(ConfigError, match="nmae"):
        load_scenario(str(bad))


def test_gates_read_flat_values_and_dotted_paths():
    metrics = {"values": {"fid": 12.0, "coverage": 0.7}, "memorisation": {"features": {"copy_rate": 0.02}}}
    assert metric_value(metrics, "fid") == 12.0
    assert metric_value(metrics, "memorisation.features.copy_rate") == 0.02
    assert metric_value(metrics, "missing") is None
    sc = load_scenario("digits")
    sc.evaluate.gates = [Gate("fid", max=10.0), Gate("coverage", min=0.5), Gate("missing", min=0.0)]
    results = check_gates(sc, metrics)
    assert [g.passed for g in results] == [False, True, False]  # a missing metric fails its gate


def test_a_failed_gate_says_what_real_data_scores_and_when_the_gate_lies_beyond_it():
    # cifar10 in grayscale: real images teach TSTR's classifier 0.462 and the evaluator reads them at 0.54
    metrics = {
        "values": {"tstr_accuracy": 0.25, "trtr_accuracy": 0.462, "conditional_accuracy": 0.5, "coverage": 0.7},
        "metrics": {
            "tstr_accuracy": {"value": 0.25, "real": "trtr_accuracy", "details": {}},
            "trtr_accuracy": {"value": 0.462, "details": {}},
            "conditional_accuracy": {"value": 0.5, "details": {"reference_value": 0.97}},
            "coverage": {"value": 0.7, "details": {}},
        },
    }
    sc = load_scenario("digits")
    sc.evaluate.gates = [Gate("tstr_accuracy", min=0.85), Gate("conditional_accuracy", min=0.9),
                         Gate("coverage", min=0.5), Gate("coverage", min=0.9)]  # fmt: skip
    results = check_gates(sc, metrics)
    assert [g.real for g in results] == [0.462, 0.97, None, None]
    notes = [real_data_note(g, gate) for g, gate in zip(results, sc.evaluate.gates, strict=True)]
    assert notes[0] == ("tstr_accuracy: real held-out data scores 0.462 here, so the gate (>= 0.85) lies beyond "
                        "real data")  # fmt: skip
    assert notes[1] == "conditional_accuracy: real held-out data scores 0.97 here"  # a generator could pass
    assert notes[2:] == ["", ""]  # passed, or nothing measured on real data


def test_run_chains_every_stage_and_exits_nonzero_when_a_gate_fails(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--out", str(out), "--steps", "30"])
    # 30 steps make blurry digits: the digits gates must fail, and say so with exit code 1
    assert result.exit_code == 1, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] is False
    assert {g["metric"] for g in summary["gates"]} >= {"conditional_accuracy", "coverage"}
    for path in ("dataset/manifest.json", "dataset/report.html", "model.safetensors", "metrics.json",
                 "report.html", "export/model.onnx", "scenario.yaml"):  # fmt: skip
        assert (out / path).is_file(), path
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["target"]["step"] == 30
    assert "FAILED" in result.output and "genforge serve" in result.output
    # the failed conditional-accuracy gate says what the real held-out digits score on the evaluator
    real = {g["metric"]: g["real_value"] for g in summary["gates"]}["conditional_accuracy"]
    assert real == metrics["metrics"]["conditional_accuracy"]["details"]["reference_value"] > 0.9
    assert "conditional_accuracy: real held-out data scores" in result.output


def test_restoration_scenario_evaluates_in_pixel_space(tmp_path):
    out = tmp_path / "restore"
    result = CliRunner().invoke(app, ["run", "--scenario", "restoration", "--out", str(out), "--steps", "40"])
    assert result.exit_code in (0, 1), result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(RESTORATION_OUTPUTS) <= set(metrics["values"])


def test_shakespeare_scenario_chains_text_stages_on_a_small_file(tmp_path):
    """The text scenario on a user's own .txt file: ingest (position split), gpt training,
    text evaluation, report and gates, with a step budget small enough for a test."""
    corpus = tmp_path / "play.txt"
    lines = [f"LORD {i % 7}:\nO gentle night, thou art the {i}th star of my sorrow.\n\n" for i in range(300)]
    corpus.write_text("".join(lines))
    result = run_scenario("shakespeare", data=str(corpus), out=tmp_path / "run", steps=30)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["scenario"] == "shakespeare" and summary["exports"] == []
    assert {g["metric"] for g in summary["gates"]} == {"bits_per_char", "distinct_2", "copied_window_ratio"}
    assert all(g["value"] is not None for g in summary["gates"])  # every gate found its metric
    assert result.passed == all(g["passed"] for g in summary["gates"])
    manifest = json.loads((tmp_path / "run" / "dataset" / "manifest.json").read_text())
    assert manifest["modality"] == "text" and manifest["tokenizer"]["kind"] == "char"
    assert (tmp_path / "run" / "report.html").is_file()
