"""What the audio evaluator sees: a fixed log-mel of each clip, normalised per utterance.

The mel settings follow from the sample rate alone (`mel_config_for`): a window of about 32 ms
(the nearest power of two in samples), half-window hops, 64 mel bands up to 8 kHz (or Nyquist),
so one dataset always gives one representation and the evaluator's hash pins it. Each clip's
log-mel is shifted and scaled to zero mean and unit variance over all its bins: the evaluator
judges what was said and by whom, not how loud (a quiet and a loud take of one digit look alike).
Training augmentation (`augment`) works on waves: a random circular time shift and a random gain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from genforge.audio.spectrogram import MelConfig, log_mel
from genforge.core.errors import DataError

WINDOW_S = 0.032  # analysis window, seconds
N_MELS = 64
F_MAX = 8000.0  # speech band; higher rates are cut here so every rate sees the same band
NORM_EPS = 1e-3  # std floor: a silent clip normalises to zeros instead of dividing by 0


def mel_config_for(sample_rate: int) -> MelConfig:
    """The evaluator's log-mel settings for audio at `sample_rate` Hz."""
    n_fft = 2 ** max(3, round(math.log2(WINDOW_S * sample_rate)))
    n_mels = min(N_MELS, n_fft // 2 + 1)
    return MelConfig(
        sample_rate=int(sample_rate),
        n_fft=n_fft,
        hop_length=n_fft // 2,
        n_mels=n_mels,
        f_max=min(F_MAX, sample_rate / 2),
    )


@dataclass(frozen=True)
class AudioPreprocess:
    """float32 clips (N, T) in [-1, 1] at `sample_rate` -> float (N, 1, n_mels, frames): the
    evaluator's input (log-mel, per-utterance zero mean and unit variance)."""

    sample_rate: int
    length: int  # samples per clip; other lengths are refused (evaluation pads/crops first)
    mel: MelConfig

    @classmethod
    def for_data(cls, sample_rate: int, length: int) -> AudioPreprocess:
        return cls(int(sample_rate), int(length), mel_config_for(sample_rate))

    def describe(self) -> dict[str, Any]:
        return {"representation": "log-mel, per-utterance mean/std normalised", "sample_rate": self.sample_rate,
                "length": self.length, "mel": self.mel.to_dict()}  # fmt: skip

    def waves(self, audio: np.ndarray) -> torch.Tensor:
        """A batch of clips as a float tensor, checked against the evaluator's clip shape."""
        arr = np.asarray(audio)
        if arr.ndim != 2 or arr.shape[1] != self.length:
            raise DataError(f"audio clips must be float (N, {self.length}) at {self.sample_rate} Hz, got shape "
                            f"{arr.shape}")  # fmt: skip
        return torch.from_numpy(np.array(arr, dtype=np.float32, copy=True))

    def transform(self, waves: torch.Tensor) -> torch.Tensor:
        """Waves (B, T) -> normalised log-mel (B, 1, n_mels, frames)."""
        x = log_mel(waves, self.mel)
        mean = x.mean(dim=(1, 2), keepdim=True)
        std = x.std(dim=(1, 2), keepdim=True).clamp_min(NORM_EPS)
        return ((x - mean) / std).unsqueeze(1)

    def apply(self, audio: np.ndarray) -> torch.Tensor:
        return self.transform(self.waves(audio))


@dataclass(frozen=True)
class Augment:
    """Random circular time shift of up to `max_shift` of the clip, random gain of up to
    +-`gain_db` dB (uniform in dB); both drawn per clip from the caller's generator."""

    max_shift: float = 0.1
    gain_db: float = 6.0

    def __call__(self, waves: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, t = waves.shape
        limit = int(self.max_shift * t)
        shifts = (
            torch.randint(-limit, limit + 1, (b,), generator=gen)
            if limit
            else torch.zeros(b, dtype=torch.long)
        )
        idx = (torch.arange(t)[None, :] - shifts[:, None]) % t
        gains = 10.0 ** ((torch.rand(b, generator=gen) * 2 - 1) * self.gain_db / 20.0)
        return (torch.gather(waves, 1, idx) * gains[:, None]).clamp(-1.0, 1.0)
