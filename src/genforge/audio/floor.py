"""A recording's stationary noise floor, estimated from its quietest frames and removed.

Speech corpora recorded outside a booth carry a noise floor: in FSDD, four of the five voices sit
16-25 dB below their speech (median over clips, 10th against 90th percentile frame power), the
fifth 44 dB. A denoiser trained to reproduce such clips learns to keep that floor, and leaves it in
the speech of a clean voice (models/audio/denoiser.py, `clean_targets`).

`remove_floor` estimates each clip's noise power spectrum as the mean spectrum of its quietest
frames (a `quiet` share of the frames that are not digital silence) and applies a power-subtraction
gain, bounded below by `gain_floor`, so bins well above the floor pass unchanged and the floor
is lowered by up to 20 dB. Stationary noise only: it is for cleaning training targets, not a
denoiser for users (noisereduce's spectral gating is that, and genforge's learned one).
"""

from __future__ import annotations

import torch

from genforge.audio.spectrogram import MelConfig, istft, stft

# frames below this fraction of a clip's loudest frame's power are digital silence (padding,
# joins), not the recording's floor: -70 dB, under any real room's floor
SILENCE = 1e-7


def floor_spectrum(power: torch.Tensor, quiet: float) -> torch.Tensor:
    """(B, bins, frames) power -> (B, bins, 1): the mean over each clip's quietest `quiet` share
    of its non-silent frames (at least one); zero for an all-silent clip."""
    frame = power.sum(1)  # (B, frames)
    active = frame > SILENCE * frame.amax(-1, keepdim=True)
    count = active.sum(-1, keepdim=True)  # (B, 1)
    k = (count.float() * quiet).round().clamp_min(1).minimum(count.clamp_min(1).float())
    ranks = torch.where(active, frame, torch.inf).argsort(-1).argsort(-1)  # 0 = quietest active frame
    chosen = (ranks < k) & active
    return (power * chosen[:, None]).sum(-1, keepdim=True) / k[:, None]


def remove_floor(
    wave: torch.Tensor, cfg: MelConfig, quiet: float = 0.2, gain_floor: float = 0.1, over: float = 2.0
) -> torch.Tensor:
    """(B, T) waves with each clip's stationary noise floor lowered (see the module docstring)."""
    if wave.dim() != 2:
        raise ValueError(f"remove_floor: expected (B, T) waves, got {tuple(wave.shape)}")
    if not 0.0 < quiet <= 1.0 or not 0.0 <= gain_floor <= 1.0:
        raise ValueError(f"remove_floor: quiet in (0, 1] and gain_floor in [0, 1], got {quiet}, {gain_floor}")
    length = wave.shape[-1]
    pad = max(0, cfg.n_fft - length)
    spec = stft(torch.nn.functional.pad(wave.float(), (0, pad)), cfg)
    power = spec.real.square() + spec.imag.square()
    noise = floor_spectrum(power, quiet)
    # the gain reads the power smoothed over 3 x 3 (bins, frames): a noise bin's own power scatters
    # (exponentially) around the floor's mean, and `over` times the floor is subtracted from it
    smooth = torch.nn.functional.avg_pool2d(power[:, None], 3, 1, 1, count_include_pad=False)[:, 0]
    gain = (1.0 - over * noise / smooth.clamp_min(1e-20)).clamp_min(gain_floor**2).sqrt()
    return istft(spec * gain, cfg, length + pad)[..., :length]
