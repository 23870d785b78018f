"""Speech enhancement (`denoiser`): the restoration family on audio (task "restore").

Training pairs are made on the fly: every `training_step` corrupts the clean batch with the
config's `NoiseRecipe` (audio/noise.py; babble from the other clips of the batch; the global RNG,
which the trainer saves, so resume is exact) and the network learns to undo it. `restore(x)`
cleans float (n, T) waves of any length at the run's sample rate.

Two architectures, chosen by `arch`:
- "mask": a time-frequency mask. The STFT (`audio.spectrogram.stft`) of the input, its log
  magnitude normalised by the clip's RMS (so the model is gain-invariant) goes through a stack of
  residual dilated 1-D convolutions over frames (frequency bins are channels); the output is a
  magnitude mask in [0, 1] (`mask: magnitude`, noisy phase kept) or a bounded complex ratio mask
  (`mask: complex`, |M| < 1, which can also correct phase), applied to the noisy STFT and inverted
  with `istft`. `lstm: N` adds a residual BiLSTM (N units each way) over the frames after the
  convolutions, for context from the whole clip.
- "wave": a waveform U-Net (Demucs-style: strided conv + GLU encoder, BiLSTM bottleneck,
  transposed-conv decoder with skip connections) on the RMS-normalised wave.

Measured and picked (FSDD: 300 steps of 16 half-second crops of 4 speakers' clips, one thread;
digit strings of the fifth speaker at 5 dB; SI-SDR gain in dB / PESQ gain for white, pink, babble):
magnitude mask +5.9 / +6.0 / +1.1 dB, PESQ +0.01 / -0.04 / -0.32; complex mask +7.0 / +6.8 /
+1.8 dB, PESQ +0.33 / +0.30 / -0.07; waveform U-Net (16 channels, 1.0 M parameters, about the
same time per step) +1.3 / +0.8 / -1.7 dB, PESQ +0.15 / +0.04 / -0.20. The default is the complex
mask: the noisy phase caps what a magnitude mask can do to SI-SDR and PESQ, and the waveform
U-Net learns much more slowly per step. All three restore 3 s strings 40-110x faster than real
time on one loaded core. At 600 steps, `si_sdr_weight` 0.2 beat 0.05 (+7.2 / +7.1 / +1.9 dB against
+6.7 / +6.5 / +1.1, PESQ alike); feeding the noisy phase (`phase_input`) changed little (+7.0 /
+6.8 / +0.7 dB), nor did `hidden` 256 (at 1.5x the time per step); lr 3e-3 did worse than 1e-3.
With the defaults, 500 / 1000 / 1500 steps gave SI-SDR +6.7 / +7.3 / +7.3 dB (white), PESQ
+0.32 / +0.49 / +0.45: babble stays hard (+0.5 to +1.5 dB, PESQ -0.05 to -0.23).

Those probes scored the speaker the bench scores. Later ones (session 7) chose on other data:
trained on three of the four training speakers, scored on the fourth (10 digit strings at 5 dB),
2,000 steps, one thread; SI-SDR gain dB / PESQ gain / STOI gain, white, pink, babble:
defaults +6.9 / +6.4 / +0.1 dB, PESQ +0.67 / +0.56 / -0.02, STOI +0.05 / +0.04 / -0.06;
`lr_decay: cosine` +6.8 / +6.4 / +0.0 dB, PESQ +0.53 / +0.48 / -0.04, STOI +0.06 / +0.04 / -0.05;
that and `lstm: 64` (1.1x the CPU time per step) +6.6 / +6.1 / -0.0 dB, PESQ +0.53 / +0.49 /
-0.04; that and `compressed_weight: 1.0` (1.4x) +6.3 / +5.5 / +0.0 dB, PESQ +0.58 / +0.58 / 0.00,
STOI +0.03 / -0.01 / -0.07; `si_sdr_weight` 0.5 +7.0 / +6.5 / +0.0 dB, PESQ +0.55 / +0.46 /
-0.05. noisereduce on the same strings: PESQ +0.26 / +0.30 / -0.29, STOI +0.05 / +0.05 / -0.02,
SI-SDR +1.7 / +1.9 / +0.4 dB. None beat the defaults, which stay; babble gains nothing with any of
them (three training voices do not teach the network to tell one talker from others). The defaults
at 4,000 steps: +7.1 / +6.7 / +0.4 dB, PESQ +0.52 / +0.45 / -0.00, STOI +0.06 / +0.04 / -0.04,
about 0.2 dB more per doubling of the steps. A step takes 0.11-0.12 s of CPU time on one thread
(batch 16, 4,000-sample crops), so 10 minutes on one idle core is about 5,000 steps.

Two later options, probed the same way (four training voices, dev voice nicolas held out, 1,500
steps at 2 threads, 12 strings at 5 dB, noisereduce off; SI-SDR gain dB / PESQ gain, white, pink,
babble; process CPU time): the defaults +6.9 / +0.51, +6.2 / +0.42, +0.1 / +0.02 (307 s);
`join: true` (crops cut from strips of three clips joined by 0.1-0.25 s pauses, so the network
also hears noise alone between words) +6.9 / +0.47, +6.0 / +0.34, +0.1 (265 s); `refine: 16` (a
residual 2-D convolution stack over (bins, frames) on the complex mask, dilated along frequency)
+7.6 / +0.61, +6.8 / +0.50, +0.2 / -0.02 (470 s); both +7.6 / +0.74, +6.8 / +0.62, +0.2 / -0.01
(450 s); both with `refine: 32` +7.7 / +0.67, +6.8 / +0.59 (663 s); with `refine: 8` +7.6 /
+0.68, +6.8 / +0.52, +0.3 / +0.00 (391 s). The refiner is worth about three doublings of the
steps (0.7 dB) for 1.5x the time per step; the speech-enhancement scenario uses `join` and
`refine: 8`. Babble made of the held-out voice's own takes stays out of reach of every variant;
babble of another unheard voice scores alike (+3.5 dB at 5 dB, session 33, bench/results/enhancement.md).
Session 16, the same way on dev voice theo (2,000 steps, SI-SDR gain white / pink / babble against
the preset's +7.3 / +7.4 / +2.8): `mask_limit: 2` +7.0 / +6.9 / +2.8, `kernel: 5` +7.2 / +7.2 /
+2.9, `si_sdr_weight: 1.0` +7.2 / +7.3 / +2.8, `lr_decay: linear` +6.8 / +6.6 / +1.2: none kept.

Session 19, `clean_targets` (each training clip's own noise floor lowered first, audio/floor.py:
FSDD's training voices carry one 16-25 dB below their speech), side by side at 600 s on 2 threads,
SI-SDR gain at 5 dB white / pink / babble: held-out lucas +7.8 / +6.6 / +1.4 -> +7.9 / +6.7 / +2.6,
theo +7.5 / +7.6 / +3.4 -> +7.5 / +7.8 / +3.0; STOI up on white and pink in all 12 conditions, PESQ
on lucas at 10 dB +0.02 / -0.14 -> +0.15 / +0.03; theo's babble PESQ and STOI fell. Off by default
until babble is settled (bench/results/enhancement.md).

Sessions 24-25, the window: 64 ms with a 16 ms hop (`n_fft` 512, `hop_length` 128 at 8 kHz) against
the default 32 ms / 8 ms, at 600 s on 2 threads, chosen on dev voice nicolas (+7.4 / +6.9 / +0.6 ->
+7.6 / +7.2 / +3.2 dB at 5 dB), then held-out lucas +8.0 / +6.7 / +0.9 -> +8.2 / +7.0 / +3.0 and
theo +7.6 / +7.7 / +3.3 -> +7.5 / +7.8 / +3.6; STOI up or tied everywhere. The speech-enhancement
scenario uses it; `default_config` keeps 32 ms (measured at 8 kHz only).

Session 25, `atten_limit_db` (restore mixes 10^(-L/20) of the input back into the output; no
retraining), on the same trained 64 ms runs, PESQ gain at 5 dB (mean of white, pink, babble) without
-> with a 26 dB limit: nicolas (dev, where 26 dB was chosen) +0.65 -> +0.66, lucas +0.06 -> +0.40,
theo +0.46 -> +0.56; SI-SDR within 0.2 dB, STOI up or tied. At 10 dB it cost nicolas 0.23-0.26 of
PESQ gain on white and pink. The scenario uses it; off by default.

Session 30, `deep_filter: 2` (complex taps on the two frames either side of each bin beside the
mask, DeepFilterNet's filter) on dev voice nicolas at 600 s on 2 threads, against the preset in the
same session: SI-SDR gain +7.5 / +7.0 / +3.2 against +7.6 / +7.3 / +3.3 dB, PESQ gain 0.22-0.37
lower, 17% fewer steps. At a 64 ms window with a 16 ms hop the frames overlap by 75% and the bins
are 15.6 Hz apart already. Off by default.

Session 34, on dev voice nicolas at 600 s on 2 threads against the preset in the same session (+7.6 / +7.2 / +2.9
dB): 1 s crops at batch 8 (the same samples a step) +7.4 / +7.0 / +1.8; a 2-D convolution front end over the log
magnitude feeding the 1-D blocks (26% fewer steps) +7.5 / +7.2 / +2.7, its code not kept; batch 32 (more talkers
for training babble, 57% of the steps) +7.4 / +6.9 / +3.0. Oracle masks on the
evaluation's strings (bench/enhancement_oracle.py) gain +19-22 dB with this mask's form and +9-11 dB with a
magnitude mask, so the representation is not what limits the 8-dB goal.

Session 35, the same way: trained 4x as long (2,400 s, 24,295 steps) the preset gains +7.8 / +7.4 / +4.2 dB (+0.1 dB
per doubling on white and pink), and on the four voices it trained on it scores +4.4 to +6.1 dB of babble against
+8.0 to +9.5 on white and pink: babble is not fitted even there. A 128 ms window (+7.5 / +7.1 / +3.4) and hidden 256
(+7.4 / +7.0 / +3.0) did not help. `train.compile=true` compiles the mask's real-valued layers (`compile_regions`:
inductor builds no complex kernels, so the STFTs, the mask's product and the losses stay eager): 8,283 steps in
the 600 s against 6,198 eager (1.34x; seed 1: 8,959 against 6,057, 1.48x; 1.65x on the training step alone),
quality within the seed-to-seed range (PESQ moved by 0.25 between two compiled seeds).

Session 36, the same way: a band-split trunk that keeps the frequency axis (bands of 8 bins, 32 features each,
convolved along frames and along bands; code at commit 54f6b32) +7.6 / +7.0 / +3.0 dB at 5,086 compiled steps, and
within 0.3 dB of the frame network on all five voices' white, pink and babble: the 128-channel frame bottleneck is
not the limit, and it was dropped. One noise at a time: white only +8.1 dB on white (theo +7.9 against the preset's
+7.5); babble only +4.4 / +4.1 / +4.1 dB of babble at 600 / 1,200 / 2,400 s (up to 28,455 steps), so babble plateaus
near +4 dB in this family. fp32 training +7.6 / +7.2 / +3.5 (bf16's range).

Session 37, the same way: at the goal's full budget (600 s) the waveform U-Net gains +6.1 / +5.5 /
+1.9 dB (8,179 steps), and a Conv-TasNet (learned 2 ms basis, TCN mask; code at commit 97b9302)
+6.4 / +5.6 / +2.6 (2,747 steps; +6.9 / +6.0 / +2.6 at 1,200 s): the complex mask stays. Pink only
+8.1 dB on theo's pink, +7.4 on nicolas's.

Loss: multi-resolution STFT magnitude loss (spectral convergence + log-magnitude L1, Yamamoto et
al. 2020) plus `si_sdr_weight` x the negative SI-SDR of the estimate, plus `compressed_weight` x
an MSE of power-law compressed spectra (`compressed_loss`). The lr follows `lr_decay` over the
run's budget (constant by default).

The training step, `restore` and `sample` are shared with the image DAE
(`models.restoration.RestorationModel`): `sample` is the trainer's progress view only, (noisy,
restored) pairs of the latest training clips; a loaded model refuses it and points to `restore`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genforge.audio.floor import remove_floor
from genforge.audio.noise import NoiseRecipe, corrupt_batch
from genforge.audio.sdr import si_sdr
from genforge.audio.spectrogram import MelConfig, istft, stft
from genforge.core.config import from_dict
from genforge.core.errors import ConfigError, GenforgeError
from genforge.models.base import Batch, LRSchedule, ModelOutput
from genforge.models.registry import MODELS
from genforge.models.restoration import RestorationModel


@dataclass
class DenoiserConfig:
    sample_rate: int = 8000
    length: int = 8000  # the training clips' length (restore takes any length)
    num_classes: int = 0  # ignored: restoration uses neither digits nor speakers
    num_speakers: int = 0
    speaker_names: list[str] = field(default_factory=list)  # ignored, as num_speakers
    arch: Literal["mask", "wave"] = "mask"
    # mask
    mask: Literal["magnitude", "complex"] = "complex"
    # the complex mask's magnitude stays below this (a tanh bound); above 1 the mask may also
    # raise bins where the noise cancelled part of the speech
    mask_limit: float = 1.0
    n_fft: int = 256  # default_config scales these with the sample rate (32 ms window, 8 ms hop)
    hop_length: int = 64
    hidden: int = 128
    phase_input: bool = False  # also feed the noisy STFT's phase (cos, sin per bin) to the network
    blocks: int = 8  # residual blocks, dilations 1, 2, 4, 8, 1, 2, ...
    kernel: int = 3
    lstm: int = 0  # units per direction of a residual BiLSTM over frames after the blocks (0: none)
    # channels of a residual 2-D convolution stack over (bins, frames) that refines the complex
    # mask from it and the noisy log magnitude, bin by bin (0: none); dilated along frequency so
    # it spans a voice's harmonic spacing, which the 1-D blocks see only through `hidden` channels
    refine: int = 0
    # a complex filter over this many neighbouring frames on each side of each bin (deep
    # filtering, DeepFilterNet: Schroeter et al. 2022) beside the complex mask, which sees one
    # frame alone: a linear estimate from 2k + 1 frames can rebuild speech a single-frame mask
    # can only scale (0: the mask alone)
    deep_filter: int = 0
    # wave
    channels: int = 32  # first encoder layer; doubles per layer
    depth: int = 4
    wave_kernel: int = 8
    stride: int = 4
    # objective
    noise: NoiseRecipe = field(default_factory=NoiseRecipe)
    stft_resolutions: list[tuple[int, int]] = field(
        default_factory=lambda: [(128, 32), (256, 64), (512, 128)]
    )
    si_sdr_weight: float = 0.2  # per dB, against the STFT loss's O(1) terms
    # weight of a power-law compressed (|X|^0.3) complex spectral MSE at the model's STFT (0: off)
    compressed_weight: float = 0.0
    crop: int = 0  # train on random crops of this many samples (0: whole clips)
    # with crop: crops cut from strips of three clips' speech joined by silences of join_gap
    # seconds (as speech runs on: pauses between words, noise alone in them), not one clip's
    join: bool = False
    join_gap: tuple[float, float] = (0.1, 0.25)
    # lower each training clip's own stationary noise floor (audio/floor.py) before it is cropped,
    # corrupted and used as the target: a denoiser trained on clips with a floor learns to keep one
    clean_targets: bool = False
    # restoring mixes this share of the input back into the output, 10 ** (-limit / 20), so that
    # no part of it is attenuated by more than `atten_limit_db` (DeepFilterNet's attenuation
    # limit): a masking model's deepest cuts are where it removes speech with the noise and leaves
    # isolated remnants, which PESQ punishes. Training is unaffected. None: no limit
    atten_limit_db: float | None = None
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    # the lr over the run's budget (steps or wall time, train/schedule.py): warmup, then this decay
    lr_decay: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1

    def __post_init__(self) -> None:
        if self.sample_rate < 1 or self.length < 1:
            raise ConfigError(
                f"denoiser: sample_rate and length must be >= 1, got {self.sample_rate}, {self.length}"
            )
        if self.n_fft < 16 or self.n_fft & (self.n_fft - 1) or not 0 < self.hop_length <= self.n_fft // 2:
            raise ConfigError(
                f"denoiser: n_fft must be a power of two >= 16 and 0 < hop_length <= n_fft/2, got {self.n_fft}, "
                f"{self.hop_length}"
            )
        if min(self.hidden, self.blocks, self.kernel, self.channels, self.depth) < 1 or self.kernel % 2 == 0:
            raise ConfigError("denoiser: hidden, blocks, channels, depth >= 1 and an odd kernel")
        if self.stride < 2 or self.wave_kernel < self.stride:
            raise ConfigError(
                f"denoiser: stride >= 2 and wave_kernel >= stride, got {self.stride}, {self.wave_kernel}"
            )
        if not self.stft_resolutions or any(n < 16 or not 0 < h <= n for n, h in self.stft_resolutions):
            raise ConfigError(
                f"denoiser.stft_resolutions: (n_fft >= 16, 0 < hop <= n_fft) pairs, got "
                f"{self.stft_resolutions}"
            )
        if (
            min(
                self.si_sdr_weight,
                self.compressed_weight,
                self.crop,
                self.lstm,
                self.warmup_steps,
                self.refine,
                self.deep_filter,
            )
            < 0
        ):
            raise ConfigError(
                "denoiser: si_sdr_weight, compressed_weight, crop, lstm, warmup_steps, refine and deep_filter must "
                "be >= 0"
            )
        if not 0 <= self.join_gap[0] <= self.join_gap[1]:
            raise ConfigError(
                f"denoiser.join_gap: expected 0 <= low <= high seconds, got {list(self.join_gap)}"
            )
        if self.refine and self.mask != "complex":
            raise ConfigError("denoiser.refine: the 2-D refiner works on the complex mask (mask: complex)")
        if self.deep_filter and self.mask != "complex":
            raise ConfigError("denoiser.deep_filter: the filter's taps are complex (mask: complex)")
        if self.atten_limit_db is not None and not self.atten_limit_db > 0:
            raise ConfigError(
                f"denoiser.atten_limit_db: expected a limit > 0 dB (or null for none), got {self.atten_limit_db}"
            )
        if not self.mask_limit > 0:
            raise ConfigError(f"denoiser.mask_limit: expected a value > 0, got {self.mask_limit}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"denoiser.min_lr_ratio: expected a value in [0, 1], got {self.min_lr_ratio}")


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-5)


class _FrameNorm(nn.Module):
    """LayerNorm over channels at each frame of (B, C, T): independent of the clip's length."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class _Block(nn.Module):
    def __init__(self, channels: int, kernel: int, dilation: int):
        super().__init__()
        self.norm = _FrameNorm(channels)
        self.conv = nn.Conv1d(channels, channels, kernel, dilation=dilation, padding=dilation * (kernel // 2))
        self.mix = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(F.gelu(self.conv(self.norm(x))))


class _Recurrent(nn.Module):
    """Residual BiLSTM over the frames of (B, C, T): context from the whole clip, both ways."""

    def __init__(self, channels: int, units: int):
        super().__init__()
        self.norm = _FrameNorm(channels)
        self.lstm = nn.LSTM(channels, units, batch_first=True, bidirectional=True)
        self.proj = nn.Conv1d(2 * units, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lstm(self.norm(x).transpose(1, 2))[0]
        return x + self.proj(h.transpose(1, 2))


class _Refiner(nn.Module):
    """(B, 3, bins, frames) = (log magnitude, mask re, mask im) -> a residual (B, 2, bins, frames)
    for the mask: 2-D convolutions dilated 1, 2, 4 bins along frequency."""

    def __init__(self, channels: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1), nn.GELU()]
        for d in (2, 4):
            layers += [nn.Conv2d(channels, channels, 3, padding=(d, 1), dilation=(d, 1)), nn.GELU()]
        self.net = nn.Sequential(*layers, nn.Conv2d(channels, 2, 1))
        nn.init.zeros_(self.net[-1].weight)  # starts as the identity: the 1-D mask unchanged
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _bounded(re: torch.Tensor, im: torch.Tensor, limit: float) -> torch.Tensor:
    """The complex value re + i im with its magnitude squashed below `limit` (a tanh bound)."""
    mag = torch.sqrt(re * re + im * im + 1e-12)
    return torch.complex(re, im) * (limit * torch.tanh(mag / limit) / mag)


def _shifted(spec: torch.Tensor, k: int) -> torch.Tensor:
    """(B, bins, frames) with frame t holding frame t + k of `spec` (zeros past either end)."""
    frames = spec.shape[-1]
    if abs(k) >= frames:
        return torch.zeros_like(spec)
    zeros = spec.new_zeros(spec.shape[:-1] + (abs(k),))
    return torch.cat([spec[..., k:], zeros], -1) if k > 0 else torch.cat([zeros, spec[..., :k]], -1)


class MaskNet(nn.Module):
    """(B, T) noisy waves -> (B, T) enhanced, through a mask on the STFT."""

    def __init__(self, c: DenoiserConfig):
        super().__init__()
        self.stft_cfg = MelConfig(sample_rate=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length, n_mels=1)
        self.complex = c.mask == "complex"
        self.limit = c.mask_limit
        bins = c.n_fft // 2 + 1
        self.phase_input = c.phase_input
        self.inp = nn.Conv1d(bins * (3 if c.phase_input else 1), c.hidden, 1)
        blocks: list[nn.Module] = [_Block(c.hidden, c.kernel, 2 ** (i % 4)) for i in range(c.blocks)]
        self.blocks = nn.Sequential(*blocks, *([_Recurrent(c.hidden, c.lstm)] if c.lstm else []))
        self.out = nn.Sequential(
            _FrameNorm(c.hidden), nn.Conv1d(c.hidden, bins * (2 if self.complex else 1), 1)
        )
        self.refine = _Refiner(c.refine) if c.refine else None
        # the neighbouring frames' taps: a head beside the mask's on the same normalised features,
        # zero-initialised so that training starts from the mask alone
        self.offsets = [k for k in range(-c.deep_filter, c.deep_filter + 1) if k]
        self.taps = nn.Conv1d(c.hidden, bins * 2 * len(self.offsets), 1) if self.offsets else None
        if self.taps is not None:
            nn.init.zeros_(self.taps.weight)
            nn.init.zeros_(self.taps.bias)

    def compile_regions(self) -> list[nn.Module]:
        # the real-valued layers between the STFT and its inverse: inductor does not build complex
        # kernels, so the transforms, the mask's complex product and the losses stay eager
        return [self.inp, self.blocks, *self.out, *(m for m in (self.refine, self.taps) if m is not None)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        pad = max(0, self.stft_cfg.n_fft - length)  # torch.stft's reflect padding needs n_fft/2 samples
        spec = stft(F.pad(x, (0, pad)), self.stft_cfg)  # (B, bins, frames)
        magnitude = spec.abs()
        log_magnitude = torch.log(magnitude / _rms(x)[..., None] + 1e-4)
        feats = log_magnitude
        if self.phase_input:
            unit = spec / magnitude.clamp_min(1e-8)
            feats = torch.cat([feats, unit.real, unit.imag], 1)
        # self.out is (norm, mask conv): the taps read the same normalised features as the mask
        z = self.out[0](self.blocks(self.inp(feats)))
        h = self.out[1](z).float()  # the mask and the STFT in fp32 under autocast
        if not self.complex:
            return istft(spec * torch.sigmoid(h), self.stft_cfg, length + pad)[..., :length]
        re, im = h.chunk(2, 1)
        if self.refine is not None:
            delta = self.refine(torch.stack([log_magnitude, re, im], 1)).float()
            re, im = re + delta[:, 0], im + delta[:, 1]
        out = spec * _bounded(re, im, self.limit)  # |M| < limit
        if self.taps is not None:
            taps = self.taps(z).float().unflatten(1, (len(self.offsets), 2, spec.shape[1]))
            for j, k in enumerate(self.offsets):
                out = out + _shifted(spec, k) * _bounded(taps[:, j, 0], taps[:, j, 1], self.limit)
        return istft(out, self.stft_cfg, length + pad)[..., :length]


class WaveUNet(nn.Module):
    """(B, T) noisy waves -> (B, T) enhanced: a Demucs-style U-Net on the waveform."""

    def __init__(self, c: DenoiserConfig):
        super().__init__()
        self.kernel, self.stride, self.depth = c.wave_kernel, c.stride, c.depth
        self.encoder, self.decoder = nn.ModuleList(), nn.ModuleList()
        ch_in, ch = 1, c.channels
        for i in range(c.depth):
            self.encoder.append(
                nn.Sequential(
                    nn.Conv1d(ch_in, ch, c.wave_kernel, c.stride),
                    nn.ReLU(),
                    nn.Conv1d(ch, 2 * ch, 1),
                    nn.GLU(1),
                )
            )
            last = [] if i == 0 else [nn.ReLU()]
            self.decoder.insert(
                0,
                nn.Sequential(
                    nn.Conv1d(ch, 2 * ch, 1),
                    nn.GLU(1),
                    nn.ConvTranspose1d(ch, ch_in, c.wave_kernel, c.stride),
                    *last,
                ),
            )
            ch_in, ch = ch, 2 * ch
        self.lstm = nn.LSTM(ch_in, ch_in, num_layers=2, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * ch_in, ch_in)

    def compile_regions(self) -> list[nn.Module]:
        # compiled whole, a training step took 1.3x longer than eager (0.062 s against 0.047 at
        # 16 channels, batch 16, 2 threads, session 35): nothing is compiled
        return []

    def valid_length(self, length: int) -> int:
        """The smallest length >= `length` every strided layer covers without a remainder."""
        n = length
        for _ in range(self.depth):
            n = max(1, math.ceil((n - self.kernel) / self.stride) + 1)
        for _ in range(self.depth):
            n = (n - 1) * self.stride + self.kernel
        return n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        scale = _rms(x)
        h = F.pad(x / scale, (0, self.valid_length(length) - length))[:, None]
        skips = []
        for enc in self.encoder:
            h = enc(h)
            skips.append(h)
        h = h + self.proj(self.lstm(h.transpose(1, 2))[0]).transpose(1, 2)
        for dec in self.decoder:
            skip = skips.pop()
            h = dec(h + skip[..., : h.shape[-1]])
        return h[:, 0, :length].float() * scale


NETS = {"mask": MaskNet, "wave": WaveUNet}


def stft_loss(
    clean: torch.Tensor, estimate: torch.Tensor, resolutions: list[tuple[int, int]]
) -> torch.Tensor:
    """Multi-resolution STFT magnitude loss: mean over resolutions of spectral convergence plus
    log-magnitude L1."""
    total = clean.new_zeros(())
    for n_fft, hop in resolutions:
        cfg = MelConfig(n_fft=n_fft, hop_length=hop, n_mels=1)
        ref, est = stft(clean, cfg).abs(), stft(estimate, cfg).abs()
        convergence = torch.linalg.norm(ref - est) / torch.linalg.norm(ref).clamp_min(1e-7)
        log_mag = (torch.log(ref + 1e-5) - torch.log(est + 1e-5)).abs().mean()
        total = total + convergence + log_mag
    return total / len(resolutions)


def compressed_loss(
    clean: torch.Tensor, estimate: torch.Tensor, cfg: MelConfig, power: float = 0.3
) -> torch.Tensor:
    """MSE of power-law compressed spectra (|X|^power, complex with the phase kept, plus magnitude
    only), each clip scaled by its clean RMS: loud and quiet bins weigh closer to how they are heard
    than in a linear loss, without the log's weight on near-silent bins."""
    scale = _rms(clean)
    ref, est = stft(clean / scale, cfg), stft(estimate / scale, cfg)
    ref_mag, est_mag = ref.abs().clamp_min(1e-8), est.abs().clamp_min(1e-8)
    ref_c, est_c = ref_mag.pow(power), est_mag.pow(power)
    complex_term = (ref * (ref_c / ref_mag) - est * (est_c / est_mag)).abs().pow(2).mean()
    return complex_term + (ref_c - est_c).pow(2).mean()


@MODELS.register("denoiser")
class Denoiser(RestorationModel):
    family = "denoiser"
    modality = "audio"
    config_class = DenoiserConfig
    speaker_conditional = False
    preview_size = 16
    restores = "audio"
    restore_usage = "noisy.wav --out clean.wav"

    def __init__(self, config: DenoiserConfig):
        super().__init__(config)
        self.net = NETS[config.arch](config)

    @classmethod
    def default_config(  # type: ignore[override]
        cls, sample_rate: int, length: int, num_speakers: int = 0, num_classes: int = 0, **overrides: Any
    ) -> DenoiserConfig:
        # a 32 ms window and an 8 ms hop at any sample rate (256 / 64 samples at 8 kHz)
        n_fft = 2 ** max(4, round(math.log2(0.032 * sample_rate)))
        data = {
            "sample_rate": sample_rate,
            "length": length,
            "num_speakers": num_speakers,
            "num_classes": num_classes,
            "n_fft": n_fft,
            "hop_length": n_fft // 4,
        }
        return from_dict(DenoiserConfig, {**data, **overrides}, where="Denoiser config")

    def compile_regions(self) -> list[nn.Module]:
        return self.net.compile_regions()

    def lr_schedule(self) -> LRSchedule:
        c = self.config
        return LRSchedule(c.lr_decay, c.warmup_steps, c.min_lr_ratio)

    def corrupt(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noisy versions of clean (B, T) by the config's recipe; babble from the batch's other clips."""
        return corrupt_batch(clean, self.config.noise, self.config.sample_rate, generator)

    def stft_config(self) -> MelConfig:
        """The STFT of the mask (`n_fft`, `hop_length`), for the losses and target cleaning."""
        c = self.config
        return MelConfig(sample_rate=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length, n_mels=1)

    def clean_batch(self, batch: Batch) -> torch.Tensor:
        clean = batch.data.float().reshape(batch.data.shape[0], -1)
        c = self.config
        if c.clean_targets:
            clean = remove_floor(clean, self.stft_config())
        if c.join and c.crop:
            return self._joined_crops(clean)
        if not c.crop or c.crop >= clean.shape[-1]:
            return clean
        # centred on each clip's loudest sample (speech, not padding), jittered by a quarter crop
        centre = clean.abs().argmax(-1) + torch.randint(-c.crop // 4, c.crop // 4 + 1, (clean.shape[0],))
        start = (centre - c.crop // 2).clamp(0, clean.shape[-1] - c.crop)
        return torch.stack([row[s : s + c.crop] for row, s in zip(clean, start.tolist(), strict=True)])

    def _joined_crops(self, clean: torch.Tensor) -> torch.Tensor:
        """(B, crop) crops of strips: row i's speech, a silence, two other rows' speech (the
        clips' padding dropped), at a random offset; the global RNG, as the noise."""
        c = self.config
        n = len(clean)
        loud = clean.abs() > 1e-4
        idx = torch.arange(clean.shape[-1], device=clean.device)
        first = torch.where(loud, idx, clean.shape[-1]).amin(-1).tolist()
        last = torch.where(loud, idx, -1).amax(-1).tolist()
        speech = [row[a : b + 1] if b >= a else row[:0] for row, a, b in zip(clean, first, last, strict=True)]
        others = torch.randint(1, max(2, n), (n, 2)).tolist()  # offsets: another row unless n == 1
        gaps = (c.join_gap[0] + (c.join_gap[1] - c.join_gap[0]) * torch.rand(n, 2)) * c.sample_rate
        out = clean.new_zeros((n, c.crop))
        for i in range(n):
            parts = [speech[i]]
            for k in range(2):
                parts += [clean.new_zeros(int(gaps[i, k])), speech[(i + others[i][k]) % n]]
            strip = torch.cat(parts)
            if len(strip) <= c.crop:
                out[i, : len(strip)] = strip
                continue
            start = int(torch.randint(len(strip) - c.crop + 1, ()))
            out[i] = strip[start : start + c.crop]
        return out

    def restoration_loss(self, clean: torch.Tensor, estimate: torch.Tensor) -> ModelOutput:
        spectral = stft_loss(clean, estimate, self.config.stft_resolutions)
        voiced = _rms(clean)[:, 0] > 1e-4  # SI-SDR is undefined against a silent reference
        sdr = si_sdr(clean[voiced], estimate[voiced]).mean() if bool(voiced.any()) else clean.new_zeros(())
        loss = spectral - self.config.si_sdr_weight * sdr
        terms = {"stft": spectral.detach(), "si_sdr": sdr.detach()}
        if self.config.compressed_weight:
            compressed = compressed_loss(clean, estimate, self.stft_config())
            loss = loss + self.config.compressed_weight * compressed
            terms["compressed"] = compressed.detach()
        return ModelOutput(loss, terms)

    def private_training_problems(self) -> list[str]:
        # DP-SGD bounds one clip's influence by clipping its own gradient, which needs a loss
        # that is a mean of per-clip terms; this objective is not, whatever its settings
        return ["the denoiser's objective couples the clips of a batch (the STFT loss's spectral convergence "
                "divides by the whole batch's norm, babble noise mixes other clips into each input, SI-SDR "
                "averages over the batch's voiced clips), so no clip's gradient is its own; train it without "
                "--dp-epsilon"]  # fmt: skip

    def restore_input(self, audio: torch.Tensor) -> torch.Tensor:
        """Noisy float (n, T) waves at the config's sample rate, any T >= 1: enhanced to (n, T)."""
        if audio.dim() != 2 or audio.shape[-1] < 1:
            raise GenforgeError(f"denoiser restores float waves (n, T), got {tuple(audio.shape)}")
        return audio.float()

    @torch.no_grad()
    def restore(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output, with `atten_limit_db`'s share of the input mixed back in."""
        out = super().restore(x)
        if self.config.atten_limit_db is None:
            return out
        share = 10.0 ** (-self.config.atten_limit_db / 20.0)
        return ((1.0 - share) * out + share * self.restore_input(x).to(out.device)).clamp(-1.0, 1.0)
