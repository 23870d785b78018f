"""Evaluating audio on synthetic spoken-digit stand-ins: the evaluator's input, determinism and
cache; FAD, the control and memoriser rows, conditional and speaker accuracy; clips from an .npz,
a WAV folder and a run; metrics.json; `genforge evaluator train`, `eval` and `report` on audio."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from audio_fixtures import make_synth_dataset
from cli_runner import run_cli
from genforge.audio.resample import resample
from genforge.audio.wav import decode_audio, write_wav
from genforge.core.errors import ConfigError, DataError, GenforgeError
from genforge.data.canonical import open_dataset
from genforge.evaluate.audio import evaluator as evaluator_module
from genforge.evaluate.audio.evaluation import AUDIO_TASKS, task_evaluation
from genforge.evaluate.audio.evaluator import AudioEvaluatorConfig, audio_evaluator
from genforge.evaluate.audio.features import AudioPreprocess, Augment, mel_config_for
from genforge.evaluate.audio.samples import balanced_speakers, fit_length
from genforge.evaluate.evaluate import EvalConfig, evaluate, read_metrics
from genforge.models.base import GenerativeModel
from genforge.models.pipeline import save_model
from genforge.models.registry import MODELS

RATE, LENGTH = 8000, 4000
# FAD of a set against itself: zero up to the matrix square root's rounding, which reached 1.7e-8
# on an AMD EPYC (1e-9 held on the Xeons); a model's FAD against real clips is 1e-2 and above
FAD_OF_ITSELF = 1e-6


@dataclass
class FastEvaluatorConfig(AudioEvaluatorConfig):
    """The evaluator the CLI trains by default, made small for tests (same recipe, fewer steps)."""

    steps: int = 80
    width: int = 8
    feature_dim: int = 32


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One evaluator cache for the module, and the CLI's default evaluator made small."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: a second thread only contends on the shared machine
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENFORGE_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setattr(evaluator_module, "AudioEvaluatorConfig", FastEvaluatorConfig)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory, cache) -> Path:
    return make_synth_dataset(tmp_path_factory.mktemp("synth") / "ds", n_train=120, n_val=60, classes=3,
                              speakers=2, length=LENGTH, sample_rate=RATE)  # fmt: skip


@pytest.fixture(scope="module")
def val(data):
    split = open_dataset(data).split("val")
    return np.array(split.audio), np.array(split.labels), np.array(split.speakers)


def npz(path: Path, audio: np.ndarray, labels: np.ndarray | None = None, rate: int = RATE, **more) -> Path:
    arrays = {"audio": audio, "sample_rate": rate, **more}
    if labels is not None:
        arrays["labels"] = labels
    np.savez(path, **arrays)
    return path


def score(target: Path, data: Path, **cfg) -> dict:
    return evaluate(target, data, EvalConfig(**{"n": 60, **cfg}))


# --- the evaluator's input ---------------------------------------------------------------------


def test_mel_config_follows_the_sample_rate() -> None:
    for rate, n_fft, f_max in ((8000, 256, 4000), (16000, 512, 8000), (44100, 1024, 8000)):
        cfg = mel_config_for(rate)
        assert (cfg.n_fft, cfg.hop_length, cfg.n_mels, cfg.top) == (n_fft, n_fft // 2, 64, f_max)


def test_preprocess_normalises_each_utterance(val) -> None:
    pre = AudioPreprocess.for_data(RATE, LENGTH)
    clip = val[0][:1]
    x, quiet = pre.apply(clip), pre.apply(clip * 0.25)
    assert x.shape == (1, 1, 64, LENGTH // 128 + 1)
    assert float(x.mean()) == pytest.approx(0.0, abs=1e-5) and float(x.std()) == pytest.approx(1.0, abs=1e-3)
    # 12 dB quieter is the same utterance to the evaluator (up to the bins that hit the log floor)
    assert float((x - quiet).abs().median()) < 0.05
    assert float(pre.apply(np.zeros((1, LENGTH), np.float32)).abs().max()) == 0.0  # silence: zeros, not NaN
    with pytest.raises(DataError, match=r"\(N, 4000\)"):
        pre.apply(np.zeros((2, LENGTH + 1), np.float32))


def test_augment_is_seeded_shift_and_gain() -> None:
    waves = torch.rand(4, 1000) - 0.5
    aug = Augment(max_shift=0.1, gain_db=6.0)
    a, b = aug(waves, torch.Generator().manual_seed(3)), aug(waves, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(waves, torch.Generator().manual_seed(4)))
    # a circular shift keeps every sample: only the gain changes the energy, by at most 6 dB
    ratio = (a.pow(2).sum(1) / waves.pow(2).sum(1)).log10() * 10
    assert bool((ratio.abs() <= 6.0 + 1e-4).all()) and float(ratio.abs().max()) > 0.5
    assert torch.allclose(
        torch.sort(a[0].abs()).values / float(a[0].abs().max()),
        torch.sort(waves[0].abs()).values / float(waves[0].abs().max()),
        atol=1e-6,
    )


def test_fit_length_and_balanced_speakers() -> None:
    assert np.array_equal(fit_length(np.arange(1, 4, dtype=np.float32), 7), [0, 0, 1, 2, 3, 0, 0])
    assert np.array_equal(fit_length(np.arange(10, dtype=np.float32), 4), [3, 4, 5, 6])
    spk = balanced_speakers(20, 5, seed=0)
    assert np.bincount(spk).tolist() == [4] * 5
    labels = (
        np.arange(20) % 10
    )  # interleaved classes: a cycle of speakers would pair speaker s with 2 digits only
    assert len({(int(a), int(b)) for a, b in zip(labels, spk, strict=True)}) > 10


# --- determinism and the cache -----------------------------------------------------------------


def test_evaluator_is_deterministic_and_cached(data, monkeypatch) -> None:
    ds = open_dataset(data)
    cfg = AudioEvaluatorConfig(steps=30, width=8, feature_dim=32, seed=5)
    first = audio_evaluator(ds, cfg)
    again = audio_evaluator(ds, cfg, retrain=True)  # trained a second time from scratch
    assert first.weights_hash == again.weights_hash and first.hash == again.hash
    other = audio_evaluator(ds, AudioEvaluatorConfig(steps=30, width=8, feature_dim=32, seed=6))
    assert other.weights_hash != first.weights_hash
    feats = [e.extract(np.array(ds.split("val").audio)) for e in (first, again)]
    assert np.array_equal(feats[0].features, feats[1].features)
    assert feats[0].speaker_probs is not None and feats[0].speaker_probs.shape == (60, 2)

    def no_training(*a, **k):
        raise AssertionError("the cached evaluator was trained again")

    monkeypatch.setattr(evaluator_module, "train_audio_evaluator", no_training)
    loaded = audio_evaluator(ds, cfg)
    assert loaded.weights_hash == first.weights_hash and loaded.info["cache"] == first.info["cache"]
    assert {"heldout_accuracy", "heldout_speaker_accuracy", "train_seconds"} <= set(loaded.info)


# --- metrics -----------------------------------------------------------------------------------


def test_real_clips_score_near_the_floor_and_noise_far(data, val, tmp_path) -> None:
    audio, labels, _ = val
    rng = np.random.default_rng(0)
    real = score(npz(tmp_path / "real.npz", audio, labels), data)
    noise = score(npz(tmp_path / "noise.npz", (rng.uniform(-0.5, 0.5, audio.shape)).astype(np.float32)), data)
    silence = score(npz(tmp_path / "silence.npz", np.zeros_like(audio)), data)
    fad_real = real["values"]["fad"]
    assert fad_real == pytest.approx(0.0, abs=1e-9)  # the reference itself
    floor, control = real["baselines"]["memoriser"]["values"], real["baselines"]["control"]["values"]
    for bad in (noise, silence):
        assert bad["values"]["fad"] > 20 * max(floor["fad"], control["fad"])
        assert bad["values"]["coverage"] < 0.2 and bad["values"]["fad_memoriser_ratio"] > 20
        assert bad["values"]["copy_rate"] == 0.0
    # the memoriser floor: training clips replayed are flagged as copies, and sit close to the reference
    assert floor["copy_rate"] > 0.9 and floor["fad"] < noise["values"]["fad"] / 20
    assert noise["values"]["fad_memoriser"] == pytest.approx(floor["fad"])  # the same floor beside every row


def test_conditional_accuracy_reads_the_labels(data, val, tmp_path) -> None:
    audio, labels, _ = val
    right = score(npz(tmp_path / "right.npz", audio, labels), data)["values"]
    wrong = score(npz(tmp_path / "wrong.npz", audio, (labels + 1) % 3), data)["values"]
    assert (
        right["conditional_accuracy"] >= 0.6
        and right["conditional_accuracy"] > wrong["conditional_accuracy"] + 0.3
    )
    assert wrong["class_fad_mean"] > right["class_fad_mean"]


def test_wav_folder_resampled_with_labels_from_folders(data, val, tmp_path) -> None:
    audio, labels, _ = val
    folder = tmp_path / "wavs"
    for i, (clip, label) in enumerate(zip(audio[:30], labels[:30], strict=True)):
        write_wav(folder / str(label) / f"{i:03d}.wav", resample(clip, RATE, 16000), 16000)
    m = score(folder, data)
    assert m["target"]["kind"] == "folder" and m["target"]["resampled"] and m["target"]["labels_from"]
    direct = score(npz(tmp_path / "same.npz", audio[:30], labels[:30]), data)
    # 16-bit WAV at 16 kHz and back: the evaluator hears the same digits
    assert m["values"]["conditional_accuracy"] == pytest.approx(
        direct["values"]["conditional_accuracy"], abs=0.05
    )
    assert (
        m["values"]["fad"]
        < 0.2 * score(npz(tmp_path / "n.npz", np.full_like(audio, 0.3)), data)["values"]["fad"]
    )
    assert m["metrics"]["fad"]["n_samples"] == 30


def test_metrics_json_layout(data, val, tmp_path) -> None:
    audio, labels, _ = val
    path = npz(tmp_path / "s.npz", audio, labels)
    score(path, data)
    m = read_metrics(tmp_path / "s.metrics.json")
    assert m["modality"] == "audio" and m["extractor"]["id"] == "audio-classifier"
    expected = {"fad", "kad", "precision", "recall", "density", "coverage", "classifier_score", "classifier_confidence",
                "conditional_accuracy", "class_fad_mean", "fad_train", "fad_gap", "copy_rate", "fad_control",
                "fad_memoriser", "fad_memoriser_ratio"}  # fmt: skip
    assert expected <= set(m["values"])
    for name, rec in m["metrics"].items():
        assert rec["value"] == m["values"][name] and rec["better"] in ("lower", "higher") and rec["meaning"]
        assert rec["extractor_hash"] == m["extractor"]["hash"] and rec["reference_split"] == "val"
    assert set(m["baselines"]) == {"control", "memoriser"} and m["baselines"]["control"]["count"] == 60
    assert {"features", "waveform"} <= set(m["memorisation"])
    with np.load(tmp_path / m["memorisation"]["pairs_file"]) as z:
        assert z["features_sample_images"].shape[1:] == (LENGTH,)
        nearest = np.array(open_dataset(data).split("train").audio)[z["waveform_train_index"]]
        assert np.array_equal(z["waveform_train_images"], nearest)


def test_bad_inputs_name_the_file_and_field(data, val, tmp_path) -> None:
    audio, labels, _ = val
    np.savez(tmp_path / "no_rate.npz", audio=audio)
    with pytest.raises(DataError, match=r"no_rate\.npz.*sample_rate"):
        score(tmp_path / "no_rate.npz", data)
    with pytest.raises(DataError, match=r"labels must lie in 0\.\.2"):
        score(npz(tmp_path / "bad_labels.npz", audio, labels + 5), data)
    with pytest.raises(DataError, match=r"loud\.npz.*peaks at 3"):
        score(npz(tmp_path / "loud.npz", audio * 0 + 3.0), data)
    with pytest.raises(ConfigError, match="audio-classifier"):
        score(npz(tmp_path / "ok.npz", audio), data, features="classifier")
    with pytest.raises(ConfigError, match="unknown nope"):
        score(npz(tmp_path / "ok.npz", audio), data, metrics=["fad", "nope"])
    only = score(npz(tmp_path / "few.npz", audio, labels), data, metrics=["fad", "conditional_accuracy"])
    assert {"fad", "conditional_accuracy"} <= set(only["metrics"]) and "kad" not in only["metrics"]


# --- runs: a test-only audio family that returns noise --------------------------------------------


@dataclass
class NoiseConfig:
    sample_rate: int = RATE
    length: int = LENGTH
    num_classes: int = 0
    num_speakers: int = 0
    amplitude: float = 0.3


class NoiseAudio(GenerativeModel):
    """Uniform noise; conditional on a class and a speaker in name only."""

    family = "test"
    modality = "audio"
    config_class = NoiseConfig

    def __init__(self, config: NoiseConfig):
        super().__init__(config)
        self.conditional = config.num_classes > 0
        self.speaker_conditional = config.num_speakers > 0
        self.amplitude = nn.Parameter(torch.tensor(float(config.amplitude)))

    def sample(self, n, *, generator=None, labels=None, speakers=None, **options):
        return (torch.rand(n, 1, self.config.length, generator=generator) * 2 - 1) * self.amplitude


class RestoreAudio(NoiseAudio):
    task = "test-restore"


for _name, _cls in (("test-audio-noise", NoiseAudio), ("test-audio-restore", RestoreAudio)):
    if _name not in MODELS:
        MODELS.register(_name, _cls)


def noise_run(path: Path, data: Path, name: str = "test-audio-noise") -> Path:
    ds = open_dataset(data)
    model = MODELS.get(name)(NoiseConfig(num_classes=ds.num_classes, num_speakers=ds.num_speakers))
    save_model(model, name, path, {"dataset": ds.describe(), "step": 7, "ema": False})
    return path


def test_cli_evaluator_eval_and_report_on_a_run(data, tmp_path, monkeypatch, capsys) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "evaluator", "train", data)
    assert code == 0, out
    digit = re.search(r"held-out digit accuracy \(val, 60 clips\): ([\d.]+)%", out)
    speaker = re.search(r"held-out speaker accuracy \(val, 60 clips of 2 speakers\): ([\d.]+)%", out)
    assert digit and speaker, out
    run = noise_run(tmp_path / "run", data)
    code, out, _ = run_cli(monkeypatch, capsys, "eval", run, "--ref", data, "-n", "40")
    assert code == 0, out
    m = read_metrics(run / "metrics.json")
    assert m["target"]["kind"] == "run" and m["target"]["step"] == 7 and m["target"]["speaker_conditional"]
    assert "fad" in out and "copy rate: features" in out and "waveform" in out
    v = m["values"]
    assert v["conditional_accuracy"] < 0.7 and "speaker_accuracy" in v  # noise: near chance (1/3 and 1/2)
    assert v["fad"] > 10 * m["baselines"]["memoriser"]["values"]["fad"]
    code, out, _ = run_cli(monkeypatch, capsys, "report", run, "--ref", data)
    assert code == 0, out
    page = (run / "report.html").read_text()
    wavs = re.findall(r'<audio controls[^>]* src="data:audio/wav;base64,([^"]+)"', page)
    # 2 generated + 2 real per class (3 classes), and 6 memorisation pairs in 2 spaces
    assert len(wavs) == 12 + 24, len(wavs)
    clip, rate = decode_audio(base64.b64decode(wavs[0]))
    assert rate == RATE and clip.shape == (LENGTH, 1) and float(np.abs(clip).max()) > 0.1
    assert page.count('src="data:image/png;base64,') >= len(wavs)
    for text in (
        "memoriser (40 clips)",
        "control (40 clips)",
        "fad_memoriser_ratio",
        "speaker_accuracy",
        "nearest training clip",
        "speaker s1",
    ):
        assert text in page, text


def test_cli_eval_on_a_samples_file(data, val, tmp_path, monkeypatch, capsys) -> None:
    path = npz(tmp_path / "real.npz", val[0], val[1])
    code, out, _ = run_cli(monkeypatch, capsys, "eval", path, "--ref", data)
    assert code == 0, out
    m = json.loads((tmp_path / "real.metrics.json").read_text())
    assert m["metrics"]["fad"]["n_samples"] == 60 and m["values"]["fad"] < FAD_OF_ITSELF


def test_tasks_dispatch_by_the_run_models_task(data, tmp_path) -> None:
    run = noise_run(tmp_path / "restore", data, "test-audio-restore")
    calls = []

    def fake(target, ref, config, out=None):
        calls.append(Path(target))
        return {"format": "genforge-metrics"}

    AUDIO_TASKS.register("test-restore", fake)
    assert evaluate(run, data, EvalConfig(n=4)) == {"format": "genforge-metrics"} and calls == [run]
    assert task_evaluation("generate").__name__ == "evaluate_generated"
    with pytest.raises(GenforgeError, match="no evaluation for audio models of task 'paint'"):
        task_evaluation("paint")


def test_cli_eval_and_report_on_a_tiny_trained_wavegan(data, tmp_path, monkeypatch, capsys) -> None:
    from genforge.train.launch import build_trainer

    sets = ["model.g_widths=[32, 16]", "model.d_widths=[8, 16]", "model.n_critic=1", "train.progress=none",
            "train.tensorboard=false", "train.sample_every=0"]  # fmt: skip
    run = tmp_path / "wavegan"
    build_trainer(run, model_name="wavegan", data=data, flags={"steps": 4, "batch_size": 8, "seed": 3}, sets=sets,
                  conditional=True).fit()  # fmt: skip
    code, out, _ = run_cli(monkeypatch, capsys, "eval", run, "--ref", data, "-n", "30")
    assert code == 0, out
    m = read_metrics(run / "metrics.json")
    target = m["target"]
    assert (target["model"], target["step"], target["speaker_conditional"]) == ("wavegan", 4, True)
    assert m["metrics"]["fad"]["n_samples"] == 30 and m["baselines"]["memoriser"]["count"] == 30
    # four steps of training: far from the data, and the evaluator says so
    assert m["values"]["fad_memoriser_ratio"] > 3 and 0 <= m["values"]["speaker_accuracy"] <= 1
    code, out, _ = run_cli(monkeypatch, capsys, "report", run)  # the run's own dataset
    assert code == 0, out
    page = (run / "report.html").read_text()
    assert page.count("<audio controls") == 12 + 24 and "fad_memoriser_ratio" in page


def test_data_without_speakers_or_labels(tmp_path, cache) -> None:
    data = make_synth_dataset(tmp_path / "nospk", n_train=40, n_val=20, classes=2, speakers=0, length=LENGTH)
    split = open_dataset(data).split("val")
    path = npz(tmp_path / "s.npz", np.array(split.audio), np.array(split.labels))
    m = evaluate(path, data, EvalConfig(n=20))
    assert m["extractor"]["num_speakers"] == 0 and "speaker_accuracy" in m["skipped"]
    assert "speaker_accuracy" not in m["baselines"]["control"]["values"] and m["values"]["fad"] < FAD_OF_ITSELF
    with pytest.raises(ConfigError, match="target_speaker' only, got colour"):
        evaluate(path, data, EvalConfig(n=20, options={"colour": "red"}))
    unlabelled = tmp_path / "unlabelled"
    make_synth_dataset(unlabelled, n_train=40, n_val=20, classes=2, speakers=0, length=LENGTH)
    labels = unlabelled / "train" / "labels.npy"
    np.save(labels, np.full(40, -1, np.int64))
    with pytest.raises(DataError, match="every clip is labelled"):
        audio_evaluator(open_dataset(unlabelled), AudioEvaluatorConfig(steps=2, width=4))
