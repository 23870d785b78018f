"""The shared audio layer: mel filterbank, log-mel, Griffin-Lim, WAV round trip, resampling,
and the canonical audio dataset's reader and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genforge.audio.resample import resample
from genforge.audio.spectrogram import MelConfig, griffin_lim, log_mel, log_mel_to_wave, mel_filterbank, stft
from genforge.audio.wav import decode_audio, encode_wav, write_wav
from genforge.core.errors import DataError
from genforge.data.audio import AudioSplitData, write_audio_dataset
from genforge.data.canonical import open_dataset


def sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spec.argmax()])


def test_filterbank_covers_the_band_with_unit_peaks():
    cfg = MelConfig(sample_rate=8000, n_fft=256, n_mels=64)
    fb = mel_filterbank(cfg)
    assert fb.shape == (64, 129)
    assert torch.all(fb.max(1).values > 0.3)  # no empty band
    assert float(fb.max()) <= 1.0 + 1e-6
    # band centres rise with the band index
    centres = (fb * torch.arange(129)).sum(1) / fb.sum(1)
    assert torch.all(centres[1:] > centres[:-1])


def test_log_mel_puts_a_tone_in_its_band():
    cfg = MelConfig()
    low, high = (log_mel(torch.from_numpy(sine(f, 8000, 1.0))[None], cfg)[0].mean(1) for f in (300, 3000))
    assert int(low.argmax()) < int(high.argmax())
    assert log_mel(torch.zeros(1, 8000), cfg).min() == pytest.approx(np.log(cfg.log_floor), rel=1e-6)


def test_griffin_lim_rebuilds_a_tone_at_its_level_and_is_seeded():
    cfg = MelConfig()
    x = torch.from_numpy(sine(440, 8000, 1.0))[None]
    mag = stft(x, cfg).abs()
    y1 = griffin_lim(mag, cfg, 8000, generator=torch.Generator().manual_seed(0))
    y2 = griffin_lim(mag, cfg, 8000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y1, y2)
    assert abs(peak_hz(y1[0].numpy(), 8000) - 440) <= 2
    assert float(y1.std()) == pytest.approx(float(x.std()), rel=0.05)
    z = log_mel_to_wave(log_mel(x, cfg), cfg, 8000, generator=torch.Generator().manual_seed(0))
    assert abs(peak_hz(z[0].numpy(), 8000) - 440) <= 10
    assert float(z.std()) == pytest.approx(float(x.std()), rel=0.2)


def test_wav_round_trip_and_clear_error(tmp_path):
    x = sine(440, 8000, 0.5)
    a, sr = decode_audio(encode_wav(x, 8000))
    assert sr == 8000 and a.shape == (4000, 1)
    assert np.abs(a[:, 0] - x).max() < 1 / 32767 + 1e-6  # 16-bit PCM quantisation
    write_wav(tmp_path / "x.wav", x, 8000)
    assert decode_audio(tmp_path / "x.wav")[0].shape == (4000, 1)
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really")
    with pytest.raises(DataError, match="bad.wav: not a readable audio file"):
        decode_audio(tmp_path / "bad.wav")


def test_resample_keeps_frequency_and_level():
    x = sine(1000, 16000, 1.0)
    y = resample(x, 16000, 8000)
    assert len(y) == 8000
    assert abs(peak_hz(y, 8000) - 1000) <= 1
    core = slice(400, -400)  # away from the filter's edges
    level = 20 * np.log10(np.sqrt(np.mean(y[core] ** 2)) / np.sqrt(np.mean(x**2)))
    assert abs(level) < 0.1


def test_canonical_audio_dataset_round_trip_and_checks(tmp_path):
    rng = np.random.default_rng(0)
    train = AudioSplitData(rng.uniform(-0.5, 0.5, (6, 100)).astype(np.float32), np.array([0, 1, 0, 1, 0, 1]),
                           lengths=np.array([100, 90, 80, 100, 100, 50]), fields={"speaker": np.array([0, 1, 0, 1, -1, 0])})
    val = AudioSplitData(rng.uniform(-0.5, 0.5, (2, 100)).astype(np.float32), np.array([0, 1]),
                         fields={"speaker": np.array([1, 0])})
    manifest = write_audio_dataset(tmp_path, {"train": train, "val": val}, sample_rate=8000, class_names=["a", "b"],
                                   item_fields={"speaker": ["ann", "bob"]})
    assert manifest["modality"] == "audio" and manifest["clip_length"] == 100
    ds = open_dataset(tmp_path)
    assert ds.modality == "audio" and ds.sample_rate == 8000 and ds.speaker_names == ["ann", "bob"]
    assert np.array_equal(ds.train_split.audio, train.audio)
    assert ds.train_split.speakers.tolist() == [0, 1, 0, 1, -1, 0]
    assert ds.train_split.lengths.tolist() == [100, 90, 80, 100, 100, 50]
    assert ds.reference_split.name == "val" and ds.train_split.class_counts == [3, 3]
    assert ds.model_fields() == {"sample_rate": 8000, "length": 100, "num_speakers": 2,
                                 "speaker_names": ["ann", "bob"]}
    with pytest.raises(DataError, match="no per-item field 'accent'"):
        ds.train_split.field("accent")
    # a manifest that lies about the clip length is caught when the audio is read
    m = json.loads((tmp_path / "manifest.json").read_text())
    m["clip_length"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match=r"audio.npy: expected float32 \(6, 99\)"):
        _ = open_dataset(tmp_path).train_split.audio
    with pytest.raises(DataError, match="non-finite"):
        bad = AudioSplitData(np.full((1, 10), np.nan, np.float32))
        write_audio_dataset(tmp_path / "bad", {"train": bad}, sample_rate=8000, class_names=None)
