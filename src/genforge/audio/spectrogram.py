"""Log-mel spectrograms (torch, batched) and the way back to a waveform.

One `MelConfig` describes a representation: its STFT (`n_fft`, `hop_length`, Hann window,
centred frames), its mel filterbank (HTK mel scale, triangular filters, `n_mels` bands between
`f_min` and `f_max`) and the log floor. Models that work on spectrograms, the evaluator's
features, near-duplicate fingerprints and report thumbnails all compute it here, so a
spectrogram means the same thing in every stage.

Back to audio: `mel_to_linear` (non-negative least squares by projected gradient on the
filterbank) then `griffin_lim` (fast Griffin-Lim, Perraudin et al. 2013, momentum 0.99).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 8000
    n_fft: int = 256
    hop_length: int = 128
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float | None = None  # None: Nyquist
    log_floor: float = 1e-5  # log(max(mel power, floor)): about -100 dB

    def __post_init__(self) -> None:
        if self.n_fft < 8 or self.hop_length < 1 or self.n_mels < 1 or self.sample_rate < 1:
            raise ValueError(f"MelConfig: n_fft >= 8, hop_length, n_mels and sample_rate >= 1, got {self}")
        if self.n_mels > self.n_fft // 2 + 1:
            raise ValueError(f"MelConfig: n_mels {self.n_mels} exceeds the {self.n_fft // 2 + 1} STFT bins")

    @property
    def top(self) -> float:
        return float(self.f_max if self.f_max is not None else self.sample_rate / 2)

    def frames(self, length: int) -> int:
        """STFT frames of a clip of `length` samples (centred frames)."""
        return length // self.hop_length + 1

    def to_dict(self) -> dict:
        return asdict(self)


def hz_to_mel(f: torch.Tensor | float) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(cfg: MelConfig) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters, peak 1, on the HTK mel scale."""
    n_freqs = cfg.n_fft // 2 + 1
    freqs = torch.linspace(0, cfg.sample_rate / 2, n_freqs, dtype=torch.float64)
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(cfg.f_min)), float(hz_to_mel(cfg.top)), cfg.n_mels + 2,
                                     dtype=torch.float64))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lower) / (centre - lower).clamp_min(1e-9)
    down = (upper - freqs[None]) / (upper - centre).clamp_min(1e-9)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    # a band narrower than one STFT bin would be empty: give it its nearest bin
    empty = fb.sum(1) == 0
    if bool(empty.any()):
        nearest = (freqs[None] - centre).abs().argmin(1)
        fb[empty, nearest[empty]] = 1.0
    return fb.float()


_FB_CACHE: dict[tuple, torch.Tensor] = {}


def _filterbank(cfg: MelConfig, device: torch.device) -> torch.Tensor:
    key = (cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.top, str(device))
    if key not in _FB_CACHE:
        _FB_CACHE[key] = mel_filterbank(cfg).to(device)
    return _FB_CACHE[key]


def _window(cfg: MelConfig, device: torch.device) -> torch.Tensor:
    return torch.hann_window(cfg.n_fft, device=device)


def stft(wave: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """Complex STFT (B, n_fft//2+1, frames) of waves (B, T)."""
    return torch.stft(wave.float(), cfg.n_fft, cfg.hop_length, window=_window(cfg, wave.device),
                      center=True, return_complex=True)


def istft(spec: torch.Tensor, cfg: MelConfig, length: int) -> torch.Tensor:
    return torch.istft(spec, cfg.n_fft, cfg.hop_length, window=_window(cfg, spec.device), center=True,
                       length=length)


def mel_power(wave: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """Mel-band power (B, n_mels, frames) of waves (B, T) in [-1, 1]."""
    power = stft(wave, cfg).abs().pow(2)
    return torch.matmul(_filterbank(cfg, wave.device), power)


def log_mel(wave: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """Natural-log mel power (B, n_mels, frames), floored at `cfg.log_floor`."""
    return torch.log(mel_power(wave, cfg).clamp_min(cfg.log_floor))


def mel_to_linear(mel: torch.Tensor, cfg: MelConfig, iterations: int = 60) -> torch.Tensor:
    """Linear-frequency power (B, n_fft//2+1, frames) whose mel projection is closest to `mel`
    (mel power, not log) under power >= 0: projected gradient descent from the pseudo-inverse."""
    fb = _filterbank(cfg, mel.device)
    pinv = torch.linalg.pinv(fb)
    x = torch.matmul(pinv, mel).clamp_min(0)
    step = 1.0 / float(torch.linalg.matrix_norm(fb, ord=2) ** 2)
    for _ in range(iterations):
        x = (x - step * torch.matmul(fb.T, torch.matmul(fb, x) - mel)).clamp_min(0)
    return x


def griffin_lim(magnitude: torch.Tensor, cfg: MelConfig, length: int, iterations: int = 32,
                momentum: float = 0.99, generator: torch.Generator | None = None) -> torch.Tensor:
    """Waves (B, length) whose STFT magnitude approximates `magnitude` (B, n_fft//2+1, frames).
    The initial phase is random (drawn from `generator`, so a seed fixes the output)."""
    phase = torch.rand(magnitude.shape, generator=generator, dtype=torch.float32) * (2 * math.pi)
    angles = torch.polar(torch.ones_like(magnitude), phase.to(magnitude.device))
    previous = torch.zeros_like(angles)
    for _ in range(iterations):
        rebuilt = stft(istft(magnitude * angles, cfg, length), cfg)
        accelerated = rebuilt - (momentum / (1 + momentum)) * previous
        angles = accelerated / accelerated.abs().clamp_min(1e-8)
        previous = rebuilt
    return istft(magnitude * angles, cfg, length)


def log_mel_to_wave(logmel: torch.Tensor, cfg: MelConfig, length: int, iterations: int = 32,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """The Griffin-Lim baseline vocoder: log-mel (B, n_mels, frames) -> waves (B, length)."""
    power = mel_to_linear(torch.exp(logmel.float()), cfg)
    return griffin_lim(power.sqrt(), cfg, length, iterations, generator=generator).clamp(-1, 1)
