"""Noise recipes for speech enhancement (audio/noise.py): exact SNRs, spectral colours, seeds,
the recipe config and the user's own noise recordings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genforge.audio.noise import NOISES, NoiseRecipe, apply_recipe, load_recordings, make_noise, mix_at_snr
from genforge.audio.wav import write_wav
from genforge.core.config import from_dict, to_dict
from genforge.core.errors import ConfigError, DataError

SR = 8000
KINDS = ["white", "pink", "brown", "babble", "hum", "clicks", "recordings"]


def _speech_like(n: int, length: int, seed: int) -> torch.Tensor:
    """Bursty tones: power varies along the clip, with silent stretches, like padded digits."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / SR
    f = 200 + 600 * torch.rand((n, 1), generator=g)
    env = (torch.sin(2 * torch.pi * 2.0 * t) > 0.2).float()
    return 0.3 * env * torch.sin(2 * torch.pi * f * t)


def _snr(clean: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
    noise = (mixed - clean).double()
    return 10 * torch.log10(clean.double().pow(2).sum(-1) / noise.pow(2).sum(-1))


def test_every_kind_is_registered_and_unit_rms():
    assert sorted(KINDS) == NOISES.names()
    pool = _speech_like(8, 3000, 1)
    for kind in KINDS:
        x = make_noise(kind, 5, 4000, SR, torch.Generator().manual_seed(0), pool)
        assert x.shape == (5, 4000) and x.dtype == torch.float32
        assert torch.allclose(x.pow(2).mean(-1).sqrt(), torch.ones(5), atol=1e-4), kind


@pytest.mark.parametrize("kind", KINDS)
def test_mixture_snr_within_a_tenth_of_a_db(kind):
    clean = _speech_like(6, 8000, 2)
    pool = _speech_like(10, 5000, 3)
    target = torch.tensor([-5.0, 0.0, 2.5, 5.0, 10.0, 15.0])
    noise = make_noise(kind, 6, 8000, SR, torch.Generator().manual_seed(4), pool)
    mixed = mix_at_snr(clean, noise, target)
    assert (_snr(clean, mixed) - target.double()).abs().max() < 0.1
    # a scalar SNR applies to every row
    assert (_snr(clean, mix_at_snr(clean, noise, 7.0)) - 7.0).abs().max() < 0.1


def _slope(kind: str) -> float:
    """Slope of log10 power against log10 frequency between 100 Hz and 3 kHz (averaged spectra)."""
    x = make_noise(kind, 64, 8192, SR, torch.Generator().manual_seed(5))
    power = torch.fft.rfft(x).abs().pow(2).mean(0).double()
    freqs = torch.fft.rfftfreq(8192, 1 / SR).double()
    band = (freqs >= 100) & (freqs <= 3000)
    return float(np.polyfit(np.log10(freqs[band].numpy()), np.log10(power[band].numpy()), 1)[0])


def test_colours_have_their_spectral_slopes():
    assert abs(_slope("white")) < 0.1
    assert abs(_slope("pink") + 1.0) < 0.1  # -3 dB per octave
    assert abs(_slope("brown") + 2.0) < 0.1  # -6 dB per octave


def test_hum_sits_on_the_mains_frequency_and_clicks_are_sparse():
    hum = make_noise("hum", 8, SR, SR, torch.Generator().manual_seed(6))
    peaks = torch.fft.rfft(hum).abs().argmax(-1)  # 1 s clips: bin = Hz
    assert set(peaks.tolist()) <= {50, 60} and len(set(peaks.tolist())) == 2
    clicks = make_noise("clicks", 8, SR, SR, torch.Generator().manual_seed(6))
    busy = (clicks.abs() > 1e-3 * clicks.abs().amax(-1, keepdim=True)).float().mean(-1)
    assert float(busy.max()) < 0.25 and bool((busy > 0).all())


def test_seeded_and_babble_is_made_of_the_pool():
    pool = _speech_like(6, 3000, 7)
    a = make_noise("babble", 4, 4000, SR, torch.Generator().manual_seed(1), pool)
    b = make_noise("babble", 4, 4000, SR, torch.Generator().manual_seed(1), pool)
    c = make_noise("babble", 4, 4000, SR, torch.Generator().manual_seed(2), pool)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the pool's tones are the only frequencies in the babble
    spectrum = torch.fft.rfft(a).abs().mean(0)
    pool_spectrum = torch.fft.rfft(pool, n=4000).abs().mean(0)
    assert float(spectrum[pool_spectrum < 1e-3 * pool_spectrum.max()].max()) < 0.05 * float(spectrum.max())
    with pytest.raises(ConfigError, match="babble.*pool"):
        make_noise("babble", 2, 100, SR, None)
    with pytest.raises(ConfigError, match="unknown noise kind 'rain'"):
        make_noise("rain", 2, 100, SR, None)


def test_mix_rejects_mismatched_shapes_and_silent_noise():
    with pytest.raises(ConfigError, match=r"\(n, T\)"):
        mix_at_snr(torch.zeros(2, 10), torch.ones(2, 9), 0.0)
    with pytest.raises(ConfigError, match="all zeros"):
        mix_at_snr(torch.ones(2, 10), torch.zeros(2, 10), 0.0)


def test_recipe_draws_kinds_by_weight_and_snr_in_range():
    recipe = NoiseRecipe(kinds={"white": 3.0, "pink": 1.0, "hum": 0.0}, snr_db=(2.0, 4.0))
    clean = _speech_like(400, 800, 8)
    out = apply_recipe(clean, recipe, SR, torch.Generator().manual_seed(9))
    assert set(out.kinds) == {"white", "pink"}
    assert 0.65 < out.kinds.count("white") / 400 < 0.85
    assert float(out.snr_db.min()) >= 2.0 and float(out.snr_db.max()) <= 4.0
    assert (_snr(clean, out.noisy) - out.snr_db.double()).abs().max() < 0.1
    again = apply_recipe(clean, recipe, SR, torch.Generator().manual_seed(9))
    assert torch.equal(out.noisy, again.noisy)
    # the config round-trips through JSON as the run records it
    assert from_dict(NoiseRecipe, to_dict(recipe)) == recipe


def test_recipe_babble_needs_a_pool_and_band_limit_and_clip_apply():
    with pytest.raises(ConfigError, match="only babble"):
        apply_recipe(_speech_like(2, 800, 1), NoiseRecipe(kinds={"babble": 1.0}), SR)
    clean = _speech_like(16, 4000, 10)
    limited = apply_recipe(
        clean,
        NoiseRecipe(kinds={"white": 1.0}, band_limit=1.0, lowpass_hz=(1000.0, 1000.0)),
        SR,
        torch.Generator().manual_seed(0),
    ).noisy
    freqs = torch.fft.rfftfreq(4000, 1 / SR)
    power = torch.fft.rfft(limited).abs().pow(2).mean(0)
    assert float(power[freqs > 1200].sum()) < 1e-6 * float(power.sum())
    clipped = apply_recipe(
        clean,
        NoiseRecipe(kinds={"white": 1.0}, clip=1.0, clip_level=(0.5, 0.5)),
        SR,
        torch.Generator().manual_seed(0),
    ).noisy
    unclipped = apply_recipe(
        clean, NoiseRecipe(kinds={"white": 1.0}), SR, torch.Generator().manual_seed(0)
    ).noisy
    assert torch.allclose(clipped.abs().amax(-1), 0.5 * unclipped.abs().amax(-1), rtol=1e-5)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"kinds": {}}, "at least one"),
        ({"kinds": {"rain": 1.0}}, "unknown noise kind"),
        ({"kinds": {"white": -1.0}}, "kinds.white"),
        ({"snr_db": [10.0, 0.0]}, "snr_db"),
        ({"clip": 2.0}, "probabilities"),
        ({"kinds": {"recordings": 1.0}}, "folder"),
    ],
)
def test_recipe_rejects_bad_fields(fields, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(NoiseRecipe, fields)


def test_user_noise_folder_is_resampled_and_used(tmp_path):
    t = np.arange(16000) / 16000
    write_wav(tmp_path / "fan.wav", (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    stereo = np.stack([np.sin(2 * np.pi * 1000 * t[:12000]), np.zeros(12000)], 1).astype(np.float32) * 0.2
    (tmp_path / "sub").mkdir()
    write_wav(tmp_path / "sub" / "beep.wav", stereo, 16000)
    (tmp_path / "notes.txt").write_text("not audio")
    pool = load_recordings(tmp_path, SR)
    assert pool.shape == (2, 6000)  # 16 kHz -> 8 kHz, cropped to the shorter file
    peaks = torch.fft.rfft(pool).abs().argmax(-1) * SR / 6000
    assert sorted(peaks.tolist()) == [440.0, 1000.0]
    recipe = NoiseRecipe(kinds={"white": 0.0}, folder=str(tmp_path))
    out = apply_recipe(_speech_like(4, 8000, 3), recipe, SR, torch.Generator().manual_seed(1))
    assert out.kinds == ["recordings"] * 4
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.wav").write_bytes(b"RIFF nonsense")
    with pytest.raises(DataError, match="broken.wav"):
        load_recordings(tmp_path / "bad", SR)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no audio files"):
        load_recordings(tmp_path / "empty", SR)


def test_corrupt_batch_never_babbles_a_clip_over_itself():
    # each clip a pure tone of its own frequency: the noise added to a row may hold the other
    # rows' tones (babble of the batch) but never its own (a denoiser would learn to remove it)
    from genforge.audio.noise import corrupt_batch

    rate, length = 8000, 4000
    freqs = [300.0, 700.0, 1100.0, 1500.0, 1900.0, 2300.0]
    t = torch.arange(length) / rate
    clean = torch.stack([torch.sin(2 * torch.pi * f * t) for f in freqs])
    recipe = NoiseRecipe(kinds={"babble": 1.0}, snr_db=(0.0, 0.0))
    for seed in range(5):
        noisy = corrupt_batch(clean, recipe, rate, torch.Generator().manual_seed(seed))
        spectrum = torch.fft.rfft(noisy - clean).abs()
        bins = [int(f * length / rate) for f in freqs]
        for row, own in enumerate(bins):
            others = [spectrum[row, b] for b in bins if b != own]
            assert spectrum[row, own] < 1e-3 * max(others), (seed, row)
    rows = torch.tensor([True, False, False, True, False, False])
    partly = corrupt_batch(clean, recipe, rate, torch.Generator().manual_seed(0), rows=rows)
    assert torch.equal(partly[~rows], clean[~rows]) and not torch.allclose(partly[rows], clean[rows])
