"""Seeded additive noise for speech: coloured, babble, hum, clicks and the user's own recordings,
mixed into clean clips at a chosen signal-to-noise ratio.

Every generator in `NOISES` returns float (n, length) noise normalised to unit RMS per row, drawn
only from the `torch.Generator` passed in (the global RNG when it is None, which the trainer saves
for resume), so a seed fixes the noise. `mix_at_snr` scales the noise so that the power ratio of
clean to added noise over the whole clip is exactly the target; a `NoiseRecipe` (a typed config,
saved with the run) draws a kind per clip by weight, an SNR from a range, and optionally
band-limits and clips the mixture (what a phone line or an overdriven input does to speech).

Kinds:
- white: Gaussian, flat spectrum.
- pink / brown: white noise shaped in the frequency domain to power ~ 1/f and 1/f^2
  (-3 and -6 dB per octave), flat below 20 Hz so brown noise does not drift off as a DC walk.
- babble: the sum of 3-6 clips from `pool` (other speech), each at unit RMS, circularly shifted
  and tiled to `length`: a crowd of talkers, the case spectral gating cannot separate.
- hum: mains hum at 50 or 60 Hz with harmonics up to Nyquist (amplitude 1/k, random phases).
- clicks: sparse impulses (2-20 per second), each a few-sample decaying burst of random sign.
- recordings: random crops of `pool` (the recipe passes the user's noise files, read with
  soundfile, mixed to mono and resampled with `audio.resample`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from genforge.core.errors import ConfigError, DataError
from genforge.core.registry import Registry

NoiseFn = Callable[[int, int, int, "torch.Generator | None", "torch.Tensor | None"], torch.Tensor]
NOISES: Registry[NoiseFn] = Registry("noise kind")

_COLOUR_FLOOR_HZ = 20.0  # below this pink/brown are flat (no DC drift)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


def _unit_rms(x: torch.Tensor) -> torch.Tensor:
    return x / x.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-12)


def _coloured(exponent: float) -> NoiseFn:
    """Noise with power spectrum ~ f^-exponent (0 white, 1 pink, 2 brown)."""

    def make(n: int, length: int, sample_rate: int, g: torch.Generator | None, pool: torch.Tensor | None):
        white = torch.randn((n, length), generator=g)
        if exponent == 0:
            return _unit_rms(white)
        freqs = torch.fft.rfftfreq(length, d=1.0 / sample_rate).clamp_min(_COLOUR_FLOOR_HZ)
        shaped = torch.fft.irfft(torch.fft.rfft(white) * freqs.pow(-exponent / 2), n=length)
        return _unit_rms(shaped)

    return make


NOISES.register("white", _coloured(0.0))
NOISES.register("pink", _coloured(1.0))
NOISES.register("brown", _coloured(2.0))


def _need_pool(kind: str, pool: torch.Tensor | None) -> torch.Tensor:
    if pool is None or pool.dim() != 2 or pool.shape[0] < 1 or pool.shape[1] < 1:
        shape = None if pool is None else tuple(pool.shape)
        raise ConfigError(f"noise {kind!r} needs `pool`: float clips (P, T) with P >= 1, got {shape}")
    return pool.detach().float().cpu()  # noise is drawn on the CPU: a seed gives the same noise anywhere


def _crops(pool: torch.Tensor, picks: torch.Tensor, length: int, g: torch.Generator | None) -> torch.Tensor:
    """Rows `picks` (any shape) of `pool`, each circularly shifted by a random offset and tiled
    to `length`: shape picks.shape + (length,)."""
    width = pool.shape[1]
    shift = torch.randint(width, picks.shape, generator=g)
    pos = (shift[..., None] + torch.arange(length)) % width
    return pool[picks[..., None], pos]


@NOISES.register("babble")
def babble(n: int, length: int, sample_rate: int, g: torch.Generator | None, pool: torch.Tensor | None):
    pool = _need_pool("babble", pool)
    talkers = torch.randint(3, 7, (n,), generator=g)  # 3-6 voices per row
    picks = torch.randint(pool.shape[0], (n, 6), generator=g)
    voices = _unit_rms(_crops(pool, picks, length, g))  # a silent clip stays silent (0 / floor)
    voices = voices * (torch.arange(6)[None, :] < talkers[:, None])[..., None]
    return _unit_rms(voices.sum(1))


@NOISES.register("hum")
def hum(n: int, length: int, sample_rate: int, g: torch.Generator | None, pool: torch.Tensor | None):
    mains = torch.where(torch.rand(n, generator=g) < 0.5, 50.0, 60.0)
    harmonics = torch.arange(1, 11, dtype=torch.float64)  # up to the 10th, below Nyquist only
    freq = mains[:, None].double() * harmonics  # (n, 10)
    phase = torch.rand(freq.shape, generator=g, dtype=torch.float64) * 2 * math.pi
    amp = (1.0 / harmonics) * (freq < sample_rate / 2)
    t = torch.arange(length, dtype=torch.float64) / sample_rate
    wave = (amp[..., None] * torch.sin(2 * math.pi * freq[..., None] * t + phase[..., None])).sum(1)
    return _unit_rms(wave.float())


@NOISES.register("clicks")
def clicks(n: int, length: int, sample_rate: int, g: torch.Generator | None, pool: torch.Tensor | None):
    rate = 2.0 + 18.0 * torch.rand((n, 1), generator=g)  # clicks per second
    hits = torch.rand((n, length), generator=g) < rate / sample_rate
    hits[:, 0] |= ~hits.any(1)  # at least one click, so the row has power to scale
    impulses = hits * torch.where(torch.rand((n, length), generator=g) < 0.5, -1.0, 1.0)
    impulses = impulses * (0.3 + 0.7 * torch.rand((n, length), generator=g))
    # a click is a short decaying burst (about 1 ms), not a single sample
    taps = max(2, int(sample_rate / 1000))
    kernel = torch.exp(-torch.arange(taps, dtype=torch.float32) * (4.0 / taps)).flip(0)
    burst = torch.nn.functional.conv1d(impulses[:, None], kernel[None, None], padding=taps - 1)
    return _unit_rms(burst[:, 0, :length])


@NOISES.register("recordings")
def recordings(n: int, length: int, sample_rate: int, g: torch.Generator | None, pool: torch.Tensor | None):
    pool = _need_pool("recordings", pool)
    return _unit_rms(_crops(pool, torch.randint(pool.shape[0], (n,), generator=g), length, g))


def make_noise(
    kind: str,
    n: int,
    length: int,
    sample_rate: int,
    generator: torch.Generator | None,
    pool: torch.Tensor | None = None,
) -> torch.Tensor:
    """float32 (n, length) CPU noise of `kind` (a `NOISES` name), unit RMS per row. `pool` (P, T) is
    the speech babble is made of (required for babble) or the recordings to crop."""
    if n < 0 or length < 1 or sample_rate < 1:
        raise ConfigError(
            f"make_noise: n >= 0, length and sample_rate >= 1, got {n}, {length}, {sample_rate}"
        )
    return NOISES.get(kind)(n, length, sample_rate, generator, pool).float()


def mix_at_snr(clean: torch.Tensor, noise: torch.Tensor, snr_db: torch.Tensor | float) -> torch.Tensor:
    """clean + g * noise with g chosen per row so that 10 log10(sum clean^2 / sum (g noise)^2)
    equals `snr_db` (a float or one value per row). Not clipped: clipping would change the SNR."""
    if clean.shape != noise.shape or clean.dim() != 2:
        raise ConfigError(
            f"mix_at_snr: clean and noise must both be (n, T), got {tuple(clean.shape)} and "
            f"{tuple(noise.shape)}"
        )
    snr = torch.as_tensor(snr_db, dtype=torch.float64, device=clean.device).reshape(-1, 1)
    p_clean = clean.double().pow(2).sum(-1, keepdim=True)
    p_noise = noise.double().pow(2).sum(-1, keepdim=True)
    if bool((p_noise == 0).any()):
        raise ConfigError("mix_at_snr: a noise row is all zeros; it cannot be scaled to an SNR")
    gain = (p_clean / (p_noise * 10.0 ** (snr / 10.0))).sqrt()
    return (clean.double() + gain * noise.double()).to(clean.dtype)


@dataclass
class NoiseRecipe:
    """How training (or evaluation) corrupts clean speech. Each clip gets one kind, drawn by
    weight, and an SNR uniform in `snr_db`; then, each with its probability, the mixture is
    band-limited (a smooth low-pass at a cutoff drawn from `lowpass_hz`) and clipped (at a level
    drawn from `clip_level`, a fraction of its peak)."""

    kinds: dict[str, float] = field(
        default_factory=lambda: {
            "white": 1.0,
            "pink": 1.0,
            "brown": 1.0,
            "babble": 1.0,
            "hum": 0.5,
            "clicks": 0.5,
        }
    )
    snr_db: tuple[float, float] = (0.0, 15.0)
    band_limit: float = 0.0  # probability of band-limiting a mixture
    lowpass_hz: tuple[float, float] = (1500.0, 3500.0)
    clip: float = 0.0  # probability of clipping a mixture
    clip_level: tuple[float, float] = (0.3, 0.8)
    folder: str | None = None  # the user's noise recordings (kind "recordings"), any rate, mixed to mono
    recordings_weight: float = 1.0  # weight of kind "recordings" when `folder` is set

    def __post_init__(self) -> None:
        if not self.kinds:
            raise ConfigError("noise.kinds: give at least one of " + ", ".join(NOISES.names()))
        for kind, weight in self.kinds.items():
            NOISES.get(kind)
            if kind == "recordings":
                raise ConfigError(
                    "noise.kinds: `recordings` comes from `folder` (weight `recordings_weight`)"
                )
            if not isinstance(weight, int | float) or weight < 0:
                raise ConfigError(f"noise.kinds.{kind}: weight must be a number >= 0, got {weight!r}")
        if sum(self.kinds.values()) + (self.recordings_weight if self.folder else 0) <= 0:
            raise ConfigError("noise.kinds: the weights sum to 0")
        lo, hi = self.snr_db
        if not lo <= hi:
            raise ConfigError(f"noise.snr_db: expected low <= high, got {list(self.snr_db)}")
        if not (0 <= self.band_limit <= 1 and 0 <= self.clip <= 1):
            raise ConfigError("noise: band_limit and clip are probabilities in [0, 1]")
        if not 0 < self.lowpass_hz[0] <= self.lowpass_hz[1]:
            raise ConfigError(f"noise.lowpass_hz: expected 0 < low <= high, got {list(self.lowpass_hz)}")
        if not 0 < self.clip_level[0] <= self.clip_level[1] <= 1:
            raise ConfigError(f"noise.clip_level: expected 0 < low <= high <= 1, got {list(self.clip_level)}")
        if self.recordings_weight < 0:
            raise ConfigError("noise.recordings_weight: must be >= 0")

    def weighted_kinds(self) -> tuple[list[str], torch.Tensor]:
        names = [k for k, w in self.kinds.items() if w > 0]
        weights = [self.kinds[k] for k in names]
        if self.folder and self.recordings_weight > 0:
            names.append("recordings")
            weights.append(self.recordings_weight)
        return names, torch.tensor(weights, dtype=torch.float64)


_RECORDINGS: dict[tuple[str, int, int], torch.Tensor] = {}


def load_recordings(folder: str | Path, sample_rate: int, min_length: int = 1) -> torch.Tensor:
    """The audio files in `folder` (recursively) as mono float32 clips at `sample_rate`, each
    cropped to the shortest one's length (at least `min_length`; shorter files are tiled), (P, T).
    Cached per process: training reads them once."""
    from genforge.audio.resample import resample
    from genforge.audio.wav import decode_audio

    key = (str(Path(folder).resolve()), int(sample_rate), int(min_length))
    if key in _RECORDINGS:
        return _RECORDINGS[key]
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: noise folder not found")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{root}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in the noise folder")
    clips = []
    for path in files:
        audio, rate = decode_audio(path)
        mono = resample(audio.mean(1), rate, sample_rate)
        if not np.any(mono):
            raise DataError(f"{path}: noise recording is silent")
        clips.append(mono)
    width = max(min_length, min(len(c) for c in clips))
    pool = torch.from_numpy(np.stack([np.resize(c, width) for c in clips]).astype(np.float32))
    _RECORDINGS[key] = pool
    return pool


def _lowpass(x: torch.Tensor, cutoff: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Smooth (raised-cosine, 20% of the cutoff wide) low-pass per row, in the frequency domain."""
    freqs = torch.fft.rfftfreq(x.shape[-1], d=1.0 / sample_rate).to(x.device)
    width = 0.2 * cutoff[:, None]
    ramp = ((freqs[None] - cutoff[:, None]) / width + 0.5).clamp(0, 1)
    gain = 0.5 * (1 + torch.cos(math.pi * ramp))
    return torch.fft.irfft(torch.fft.rfft(x) * gain, n=x.shape[-1])


@dataclass
class NoisyBatch:
    noisy: torch.Tensor  # float (n, T)
    kinds: list[str]  # the kind each row got
    snr_db: torch.Tensor  # (n,) the SNR of the additive mixture (before band-limiting and clipping)


def apply_recipe(
    clean: torch.Tensor,
    recipe: NoiseRecipe,
    sample_rate: int,
    generator: torch.Generator | None = None,
    pool: torch.Tensor | None = None,
) -> NoisyBatch:
    """Corrupt clean (n, T) by `recipe`. `pool` (P, T') is the speech babble is made of (the
    training batch itself, or held-out clips); without it, babble is not drawn."""
    n, length = clean.shape
    names, weights = recipe.weighted_kinds()
    if pool is None and "babble" in names:
        weights[names.index("babble")] = 0.0
        if float(weights.sum()) <= 0:
            raise ConfigError("noise recipe: only babble is enabled, but no speech pool was given")
    choice = torch.multinomial(weights, n, replacement=True, generator=generator)
    lo, hi = recipe.snr_db
    snr = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)
    noise = torch.zeros((n, length))
    for i, kind in enumerate(names):
        rows = (choice == i).nonzero().flatten()
        if len(rows):
            source = load_recordings(recipe.folder, sample_rate) if kind == "recordings" else pool
            noise[rows] = make_noise(kind, len(rows), length, sample_rate, generator, source)
    noisy = mix_at_snr(clean.float().cpu(), noise, snr)
    band = torch.rand(n, generator=generator) < recipe.band_limit
    cutoff = recipe.lowpass_hz[0] + (recipe.lowpass_hz[1] - recipe.lowpass_hz[0]) * torch.rand(
        n, generator=generator
    )
    if bool(band.any()):
        noisy[band] = _lowpass(noisy[band], cutoff[band], sample_rate)
    clipped = torch.rand(n, generator=generator) < recipe.clip
    level = recipe.clip_level[0] + (recipe.clip_level[1] - recipe.clip_level[0]) * torch.rand(
        n, generator=generator
    )
    if bool(clipped.any()):
        peak = noisy[clipped].abs().amax(-1, keepdim=True) * level[clipped, None]
        noisy[clipped] = torch.maximum(torch.minimum(noisy[clipped], peak), -peak)
    return NoisyBatch(noisy.to(clean.device, clean.dtype), [names[int(c)] for c in choice], snr.float())


def corrupt_batch(
    clean: torch.Tensor,
    recipe: NoiseRecipe,
    sample_rate: int,
    generator: torch.Generator | None = None,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """A copy of clean (B, T) with the rows of the bool mask `rows` (default: all) corrupted by
    `recipe`, babble made of the batch's own clips: a row of the first half babbles with the second
    half's clips and vice versa, so no clip is mixed into its own noise (a denoiser would learn to
    remove the very voice it must keep; a batch of one has only itself to draw on)."""
    n = len(clean)
    rows = torch.ones(n, dtype=torch.bool) if rows is None else rows.cpu()
    out = clean.clone()
    half = n // 2
    halves = (torch.arange(n) < half, torch.arange(n) >= half)
    for mine, others in (halves, halves[::-1]):
        pick = (rows & mine).nonzero().squeeze(1).to(clean.device)
        if not len(pick):
            continue
        pool = clean[others.to(clean.device)] if others.any() else clean
        out[pick] = apply_recipe(clean[pick], recipe, sample_rate, generator, pool.detach().float().cpu()).noisy
    return out
