"""`genforge eval` on a speech-enhancement run: the audio evaluation hands restore runs to the
enhancement metrics (AUDIO_TASKS "restore"), which write the headline gains, per-condition keys
and the speaker-disjointness of the held-out split into metrics.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audio_fixtures import make_synth_dataset, synth_clips
from cli_runner import run_cli
from genforge.data.audio import AudioSplitData, write_audio_dataset
from genforge.evaluate.evaluate import EvalConfig, evaluate
from genforge.models.audio.denoiser import Denoiser
from genforge.models.pipeline import save_model

HEADLINE = [
    "pesq_gain",
    "stoi_gain",
    "si_sdr_gain",
    "noisereduce_pesq_gain",
    "noisereduce_stoi_gain",
    "noisereduce_si_sdr_gain",
    "noisy_pesq",
    "restored_pesq",
    "noisereduce_pesq",
    "rtf",
    "noisereduce_rtf",
]
OPTIONS = {"kinds": ["white", "babble"], "snr_db": [0.0, 5.0]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("enh") / "run"
    save_model(
        Denoiser(Denoiser.default_config(8000, 4000, hidden=16, blocks=2)).eval(),
        "denoiser",
        path,
        {"step": 7, "ema": True},
    )
    return path


def _disjoint_dataset(path):
    """Speakers 0-1 in train, speaker 2 alone in val, as `--group-by speaker` splits."""
    splits = {}
    for name, speakers, seed in (("train", (0, 1), 0), ("val", (2,), 1)):
        audio, labels, _ = synth_clips(30, 3, 1, 4000, 8000, seed)
        spk = np.array([speakers[i % len(speakers)] for i in range(30)])
        splits[name] = AudioSplitData(audio, labels, fields={"speaker": spk})
    path.mkdir(parents=True)
    write_audio_dataset(
        path,
        splits,
        sample_rate=8000,
        class_names=["0", "1", "2"],
        item_fields={"speaker": ["a", "b", "c"]},
        meta={"source": "synthetic"},
    )
    return path


def test_eval_writes_the_enhancement_metrics(run, tmp_path):
    data = _disjoint_dataset(tmp_path / "data")
    result = evaluate(run, data, EvalConfig(n=2, options=OPTIONS), out=tmp_path / "metrics.json")
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["values"] == pytest.approx(result["values"], nan_ok=True)
    values = saved["values"]
    for key in HEADLINE:
        assert np.isfinite(values[key]), key
    for kind in OPTIONS["kinds"]:
        for snr in ("0db", "5db"):
            assert f"{kind}_{snr}_pesq_gain" in values and f"{kind}_{snr}_noisereduce_si_sdr_gain" in values
    # the headline is the 5 dB mean over the kinds
    assert values["si_sdr_gain"] == pytest.approx(
        (values["white_5db_si_sdr_gain"] + values["babble_5db_si_sdr_gain"]) / 2
    )
    assert saved["task"] == "restore" and saved["modality"] == "audio"
    assert saved["details"]["speaker_disjoint"] is True and saved["details"]["strings"] == 2
    assert min(saved["details"]["string_seconds"]) >= 2.5
    assert saved["target"]["step"] == 7 and saved["reference"]["split"] == "val"
    assert saved["config"]["training_noise"]["kinds"]["babble"] == 1.0
    assert not saved["warnings"]
    assert set(saved["metrics"]) >= set(HEADLINE) and all("db_" not in k for k in saved["metrics"])


def test_shared_speakers_are_flagged_and_the_cli_runs(run, tmp_path, monkeypatch, capsys):
    data = make_synth_dataset(tmp_path / "synth", n_train=30, n_val=30)  # both speakers in both splits
    out = tmp_path / "m.json"
    code, stdout, err = run_cli(monkeypatch, capsys, "eval", run, "--ref", data, "--n", "2", "--out", out)
    assert code == 0, err
    assert "pesq_gain" in stdout and f"wrote {out}" in stdout
    result = json.loads(out.read_text())
    assert result["details"]["speaker_disjoint"] is False
    assert any("shares speakers with train (s0, s1)" in w for w in result["warnings"])
    # the defaults: white, pink and babble at 0, 5 and 10 dB
    assert {
        k.split("_")[0] + "_" + k.split("_")[1] for k in result["values"] if k.endswith("db_pesq_gain")
    } == {f"{kind}_{snr}db" for kind in ("white", "pink", "babble") for snr in (0, 5, 10)}
