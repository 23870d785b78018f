"""Speech enhancement metrics: SI-SDR exact on a constructed case, PESQ/STOI parity with direct
calls of the packages (neither wheel ships its reference recordings), digit strings, and the
evaluation's keys and baseline on an identity "model"."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genforge.audio.resample import resample
from genforge.audio.sdr import si_sdr
from genforge.core.errors import DataError
from genforge.evaluate.audio.enhancement import (
    EnhanceEvalConfig,
    babble_pool,
    babble_talkers,
    condition_key,
    digit_strings,
    enhancement_metrics,
    pesq_nb,
    score,
    stoi,
    trim_silence,
)

SR = 8000


def _speech_like(seconds: float, seed: int) -> np.ndarray:
    """Voiced syllables: a 120-180 Hz pulse train through two formant resonances, 4 per second."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = 120 + 60 * rng.random()
    source = np.sign(np.sin(2 * np.pi * f0 * t)) * 0.5
    spectrum = np.fft.rfft(source)
    freqs = np.fft.rfftfreq(n, 1 / SR)
    for formant in (500 + 300 * rng.random(), 1500 + 800 * rng.random()):
        spectrum *= 1 + 8 * np.exp(-(((freqs - formant) / 120) ** 2))
    voiced = np.fft.irfft(spectrum, n)
    envelope = np.clip(np.sin(2 * np.pi * 4 * t + rng.random() * 6), 0, None) ** 2
    x = voiced * envelope
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def test_si_sdr_closed_form():
    rng = np.random.default_rng(0)
    s = rng.standard_normal(4000)
    s -= s.mean()
    e = rng.standard_normal(4000)
    e -= e.mean()
    e -= (e @ s) / (s @ s) * s  # orthogonal to the reference
    a = 0.7
    expected = 10 * math.log10((a * a * (s @ s)) / (e @ e))
    got = float(si_sdr(torch.from_numpy(s), torch.from_numpy(a * s + e)))
    assert abs(got - expected) < 1e-6
    # scale-invariant, offset-invariant, and batched row by row
    y = torch.from_numpy(np.stack([a * s + e, 3.0 * (a * s + e) + 0.2]))
    assert torch.allclose(
        si_sdr(torch.from_numpy(np.stack([s, s])), y), torch.tensor([expected] * 2, dtype=y.dtype), atol=1e-6
    )
    with pytest.raises(ValueError, match="shapes differ"):
        si_sdr(torch.zeros(3, 10), torch.zeros(3, 9))


def _noisy(clean: np.ndarray, snr: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(clean))
    noise *= np.sqrt((clean**2).sum() / (noise**2).sum() / 10 ** (snr / 10))
    return (clean + noise).astype(np.float32)


def test_pesq_and_stoi_match_direct_package_calls():
    from pesq import pesq
    from pystoi import stoi as package_stoi

    clean = _speech_like(3.0, 1)
    for snr in (0.0, 10.0):
        noisy = _noisy(clean, snr, 2)
        assert pesq_nb(clean, noisy, SR) == pesq(SR, clean, noisy, "nb")
        assert stoi(clean, noisy, SR) == package_stoi(clean.astype(np.float64), noisy.astype(np.float64), SR)
    # 16 kHz audio is scored at PESQ's 8 kHz after the project's resampler
    clean16, noisy16 = resample(clean, SR, 16000), resample(_noisy(clean, 5.0, 3), SR, 16000)
    assert pesq_nb(clean16, noisy16, 16000) == pesq(
        SR, resample(clean16, 16000, SR), resample(noisy16, 16000, SR), "nb"
    )


def test_scores_rank_by_snr_and_peak_on_clean():
    clean = _speech_like(3.0, 4)
    perfect = score(clean, clean, SR)
    assert perfect["pesq"] > 4.4 and perfect["stoi"] > 0.999 and perfect["si_sdr"] > 60
    s0, s10 = score(clean, _noisy(clean, 0.0, 5), SR), score(clean, _noisy(clean, 10.0, 5), SR)
    for name in ("pesq", "stoi", "si_sdr"):
        assert perfect[name] > s10[name] > s0[name], name
    assert abs(s10["si_sdr"] - 10.0) < 0.2 and abs(s0["si_sdr"]) < 0.2  # white noise: SI-SDR ~ SNR


def test_trim_and_digit_strings():
    clip = np.concatenate([np.zeros(800), _speech_like(0.5, 6), np.zeros(1600)]).astype(np.float32)
    trimmed = trim_silence(clip, SR)
    assert 3000 <= len(trimmed) <= 4000 and np.abs(trimmed).max() == np.abs(clip).max()
    clips = [_speech_like(0.4 + 0.05 * i, i) for i in range(12)]
    strings = digit_strings(clips, 5, SR, 2.5, (0.1, 0.2), np.random.default_rng(0))
    for s in strings:
        assert len(s.clean) >= 2.5 * SR and len(set(s.members)) == len(s.members)
        speech = sum(len(clips[i]) for i in s.members)
        gaps = len(s.clean) - speech
        assert 0.1 * SR * (len(s.members) - 1) - len(s.members) <= gaps <= 0.2 * SR * (len(s.members) - 1)
    pool = babble_pool(clips, strings[0].members, 9000, 4, np.random.default_rng(1))
    assert pool.shape == (4, 9000) and float(pool.abs().min(1).values.max()) == 0.0


def test_strings_keep_to_one_voice_and_babble_talks_in_the_others():
    clips = [_speech_like(0.4 + 0.02 * i, i) for i in range(24)]
    speakers = np.array([0, 1, 2] * 8)
    strings = digit_strings(clips, 6, SR, 2.5, (0.1, 0.2), np.random.default_rng(0), speakers)
    assert [s.voice for s in strings] == [0, 1, 2, 0, 1, 2]  # the voices take turns
    for s in strings:
        assert set(speakers[s.members].tolist()) == {s.voice}
        tagged = [np.full(len(c), i + 1, np.float32) for i, c in enumerate(clips)]  # clip i reads i + 1
        pool = babble_pool(tagged, s.members, 40000, 6, np.random.default_rng(1), speakers, s.voice)
        heard = {int(v) - 1 for v in torch.unique(pool).tolist() if v}
        assert heard and set(speakers[sorted(heard)].tolist()) == {0, 1, 2} - {s.voice}
    assert babble_talkers(speakers) == "other held-out voices"
    assert babble_talkers(np.zeros(24, int)).startswith("the same voice's")
    assert babble_talkers(None).endswith("(speakers unrecorded)")
    # one voice (or none recorded): the strings and babble of the single pool, as before
    one = digit_strings(clips, 3, SR, 2.5, (0.1, 0.2), np.random.default_rng(0), np.zeros(24, int))
    none = digit_strings(clips, 3, SR, 2.5, (0.1, 0.2), np.random.default_rng(0))
    assert [s.members for s in one] == [s.members for s in none] and {s.voice for s in one} == {-1}
    with pytest.raises(DataError, match="of speaker 2 hold"):
        digit_strings(clips, 3, SR, 2.5, (0.1, 0.2), np.random.default_rng(0), np.array([0, 1] * 11 + [2, 2]))


def test_identity_model_gains_nothing_and_noisereduce_is_scored():
    clips = [_speech_like(0.45, i) for i in range(16)]
    cfg = EnhanceEvalConfig(strings=2, kinds=["white", "babble"], snr_db=[0.0, 5.0])
    values, details = enhancement_metrics(lambda x: x, clips, SR, cfg)
    for key in ("pesq_gain", "stoi_gain", "si_sdr_gain"):
        assert values[key] == pytest.approx(0.0, abs=1e-9)
        assert f"noisereduce_{key}" in values
    assert values["noisy_si_sdr"] == pytest.approx(5.0, abs=0.3)  # headline: the 5 dB conditions
    assert {condition_key(k, s) for k in cfg.kinds for s in cfg.snr_db} == set(details["conditions"])
    assert values["babble_0db_noisy_si_sdr"] < values["babble_5db_noisy_si_sdr"]
    assert values["rtf"] > 0 and values["noisereduce_rtf"] > 0
    assert values["white_5db_noisereduce_si_sdr_gain"] > 0  # spectral gating helps on stationary noise
    again, _ = enhancement_metrics(lambda x: x, clips, SR, cfg)
    assert again["babble_0db_noisereduce_pesq"] == values["babble_0db_noisereduce_pesq"]  # seeded
