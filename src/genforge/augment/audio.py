"""Audio augmentation of float (B, T) waves, vectorised over the batch.

Waveform ops (speed, shift, gain, noise) each draw their per-sample parameters from the
caller's generator (`draw_*`, identity values for the samples they skip) and then apply them,
so a test can draw the same parameters and check what an op did. SpecAugment masks act on
(B, F, frames) spectrograms. The audio DiffAugment ops are differentiable w.r.t. their input,
for GAN discriminators (`AudioDiffAugment`, chosen for an `AudioDiffAugmentConfig` by
`augment.build_diffaugment`).

Speed perturbation resamples by linear interpolation in torch: cheap and batched, but without
an anti-aliasing filter, so speeding up by f folds content above rate / (2 f) back down; at the
usual factors (0.9-1.1) that is a sliver of the band. Data processing resamples with soxr.
"""

from __future__ import annotations

import torch

from genforge.audio.noise import corrupt_batch, make_noise, mix_at_snr
from genforge.augment.audio_config import (
    AudioAugmentConfig,
    AudioDiffAugmentConfig,
    GainConfig,
    NoiseConfig,
    ShiftConfig,
    SpecAugmentConfig,
    SpeedConfig,
)
from genforge.augment.draws import chosen, integers, uniform
from genforge.augment.registry import AUDIO_DIFF_OPS, AUGMENTATIONS, WAVE_OPS, ModalityAugment
from genforge.core.errors import DataError

CPU = torch.device("cpu")


def _check_waves(x: torch.Tensor, who: str) -> None:
    if not (x.is_floating_point() and x.ndim == 2):
        raise DataError(f"{who} expects a float (B, T) batch of waves, got {x.dtype} {tuple(x.shape)}")


# ---- shift -------------------------------------------------------------------------------


def draw_shifts(cfg: ShiftConfig, n: int, length: int, g: torch.Generator | None) -> torch.Tensor:
    """int64 (n,) shifts in samples (positive = later), 0 for samples the op skips."""
    on = chosen(g, n, cfg.p, CPU)
    reach = int(cfg.fraction * length + 0.5)
    return integers(g, n, -reach, reach + 1, CPU) * on


def shift_by(x: torch.Tensor, shifts: torch.Tensor, mode: str = "zeros") -> torch.Tensor:
    """x (B, T) with row i delayed by shifts[i] samples (early if negative): wrapped round
    (`circular`) or with zeros shifted in. A gather, so gradients pass straight to the samples kept."""
    length = x.shape[1]
    src = torch.arange(length, device=x.device)[None, :] - shifts.to(x.device)[:, None]
    if mode == "circular":
        return x.gather(1, src % length)
    inside = (src >= 0) & (src < length)
    return torch.where(
        inside, x.gather(1, src.clamp(0, length - 1)), torch.zeros((), dtype=x.dtype, device=x.device)
    )


def _shift(x: torch.Tensor, cfg: ShiftConfig, g: torch.Generator | None, sample_rate: int) -> torch.Tensor:
    return shift_by(x, draw_shifts(cfg, len(x), x.shape[1], g), cfg.mode)


# ---- gain --------------------------------------------------------------------------------


def draw_gains_db(cfg: GainConfig, n: int, g: torch.Generator | None) -> torch.Tensor:
    """float (n,) gains in dB, 0 for samples the op skips."""
    on = chosen(g, n, cfg.p, CPU)
    return uniform(g, n, cfg.db[0], cfg.db[1], CPU) * on


def apply_gain(x: torch.Tensor, db: torch.Tensor) -> torch.Tensor:
    return x * torch.pow(10.0, db / 20.0).to(device=x.device, dtype=x.dtype)[:, None]


def _gain(x: torch.Tensor, cfg: GainConfig, g: torch.Generator | None, sample_rate: int) -> torch.Tensor:
    return apply_gain(x, draw_gains_db(cfg, len(x), g))


# ---- speed -------------------------------------------------------------------------------


def draw_speeds(cfg: SpeedConfig, n: int, g: torch.Generator | None) -> torch.Tensor:
    """float (n,) speed factors, 1 for samples the op skips."""
    on = chosen(g, n, cfg.p, CPU)
    return torch.where(on, uniform(g, n, cfg.factor[0], cfg.factor[1], CPU), torch.ones(n))


def change_speed(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Row i played factors[i] times faster about the clip's centre: y(t) = x(c + (t - c) f),
    read by linear interpolation, zeros where that falls outside the clip (a faster clip is
    shorter, so it is padded; a slower one is cropped). Rows with factor 1 are returned as they are."""
    moved = (factors != 1).nonzero().squeeze(1)
    if not len(moved):
        return x
    length = x.shape[1]
    centre = (length - 1) / 2
    t = torch.arange(length, dtype=torch.float64)
    pos = centre + (t[None, :] - centre) * factors[moved].double()[:, None]  # float64: exact for long clips
    left = pos.floor()
    frac = (pos - left).to(x.dtype).to(x.device)
    inside = ((pos >= 0) & (pos <= length - 1)).to(x.device)
    left = left.long().clamp(0, length - 1).to(x.device)
    right = (left + 1).clamp(max=length - 1)
    rows = x[moved.to(x.device)]
    a, b = rows.gather(1, left), rows.gather(1, right)
    out = x.clone()
    out[moved.to(x.device)] = torch.where(
        inside, a + (b - a) * frac, torch.zeros((), dtype=x.dtype, device=x.device)
    )
    return out


def _speed(x: torch.Tensor, cfg: SpeedConfig, g: torch.Generator | None, sample_rate: int) -> torch.Tensor:
    return change_speed(x, draw_speeds(cfg, len(x), g))


# ---- noise -------------------------------------------------------------------------------


def _noise(x: torch.Tensor, cfg: NoiseConfig, g: torch.Generator | None, sample_rate: int) -> torch.Tensor:
    """Mix noise into the chosen rows (`audio.noise.corrupt_batch`: no clip babbles over itself)."""
    on = chosen(g, len(x), cfg.p, CPU)
    if not on.any():
        return x
    return corrupt_batch(x, cfg.recipe(), sample_rate, g, rows=on)


WAVE_OPS.register("speed", _speed)
WAVE_OPS.register("shift", _shift)
WAVE_OPS.register("gain", _gain)
WAVE_OPS.register("noise", _noise)


class AudioAugment:
    """`augment(waves, generator) -> waves` for the ops of `config` with p > 0, in registry order."""

    def __init__(self, config: AudioAugmentConfig, sample_rate: int):
        self.config, self.sample_rate = config, int(sample_rate)
        self.ops = [
            (name, WAVE_OPS.get(name), getattr(config, name))
            for name in WAVE_OPS.names_in_order()
            if getattr(config, name).p > 0
        ]

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.ops]

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_waves(x, "audio augment")
        if not self.ops:
            return x
        for _, op, cfg in self.ops:
            x = op(x, cfg, generator, self.sample_rate)
        return x.clamp(-1.0, 1.0) if self.config.clamp else x


# ---- SpecAugment -------------------------------------------------------------------------


def draw_spec_masks(
    cfg: SpecAugmentConfig, n: int, size: tuple[int, int], g: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the [start, stop) of each frequency band (n, freq_masks, 2) and each time span
    (n, time_masks, 2) SpecAugment masks; empty ([0, 0)) for samples it skips."""
    on = chosen(g, n, cfg.p, CPU)
    spans = []
    for count, width, extent in (
        (cfg.freq_masks, cfg.freq_width, size[0]),
        (cfg.time_masks, cfg.time_width, size[1]),
    ):
        widest = int(width * extent)
        width_drawn = integers(g, n * count, 0, widest + 1, CPU).view(n, count)
        # start uniform in [0, extent - width]: every mask lies wholly inside the spectrogram
        start = (uniform(g, n * count, 0.0, 1.0, CPU).view(n, count) * (extent - width_drawn + 1)).long()
        stop = start + width_drawn
        spans.append(torch.stack([start, stop], -1) * on.view(n, 1, 1))
    return spans[0], spans[1]


def spec_augment(
    spec: torch.Tensor, generator: torch.Generator | None, config: SpecAugmentConfig
) -> torch.Tensor:
    """SpecAugment masks on a float (B, F, frames) or (B, 1, F, frames) spectrogram batch (e.g.
    `audio.spectrogram.log_mel`); identity for p = 0. Masked cells take the fill value, the rest
    pass through (with their gradients)."""
    if not (spec.is_floating_point() and (spec.ndim == 3 or (spec.ndim == 4 and spec.shape[1] == 1))):
        raise DataError(
            f"spec_augment expects a float (B, F, frames) batch, got {spec.dtype} {tuple(spec.shape)}"
        )
    if config.p <= 0:
        return spec
    x = spec.reshape(len(spec), *spec.shape[-2:])
    n, f, frames = x.shape
    bands, spans = draw_spec_masks(config, n, (f, frames), generator)

    def covered(extent: int, where: torch.Tensor) -> torch.Tensor:
        idx = torch.arange(extent)[None, None, :]
        return ((idx >= where[..., :1]) & (idx < where[..., 1:])).any(1)  # (n, extent)

    mask = (covered(f, bands)[:, :, None] | covered(frames, spans)[:, None, :]).to(x.device)
    fill = (
        x.mean((1, 2), keepdim=True)
        if config.fill == "mean"
        else torch.zeros((), dtype=x.dtype, device=x.device)
    )
    return torch.where(mask, fill, x).reshape(spec.shape)


# ---- DiffAugment on waves ----------------------------------------------------------------


@AUDIO_DIFF_OPS.register("shift")
def diff_shift(
    x: torch.Tensor, p: float, cfg: AudioDiffAugmentConfig, g: torch.Generator | None
) -> torch.Tensor:
    """Integer shift by up to `shift_ratio` x the length, zeros shifted in (a gather: straight gradients)."""
    n, length = x.shape
    on = chosen(g, n, p, CPU)
    reach = int(cfg.shift_ratio * length + 0.5)
    return shift_by(x, integers(g, n, -reach, reach + 1, CPU) * on)


@AUDIO_DIFF_OPS.register("gain")
def diff_gain(
    x: torch.Tensor, p: float, cfg: AudioDiffAugmentConfig, g: torch.Generator | None
) -> torch.Tensor:
    n = len(x)
    on = chosen(g, n, p, CPU)
    return apply_gain(x, uniform(g, n, -cfg.gain_db, cfg.gain_db, CPU) * on)


@AUDIO_DIFF_OPS.register("noise")
def diff_noise(
    x: torch.Tensor, p: float, cfg: AudioDiffAugmentConfig, g: torch.Generator | None
) -> torch.Tensor:
    """White noise at an SNR uniform in `snr_db`. Its level follows the detached input, so the
    gradient w.r.t. the input is the identity (and a silent row, whose level is 0, stays finite)."""
    n, length = x.shape
    on = chosen(g, n, p, CPU).to(x.device)
    snr = uniform(g, n, cfg.snr_db[0], cfg.snr_db[1], CPU)
    # white noise is the same at every sample rate; the rate argument only shapes coloured kinds
    noise = make_noise("white", n, length, 1, g).to(x.device)
    clean = x.detach()
    added = mix_at_snr(clean, noise.to(clean.dtype), snr.to(x.device)) - clean
    return torch.where(on[:, None], x + added, x)


@AUDIO_DIFF_OPS.register("cutout")
def diff_cutout(
    x: torch.Tensor, p: float, cfg: AudioDiffAugmentConfig, g: torch.Generator | None
) -> torch.Tensor:
    """Zero a span of `cutout_ratio` x the length placed uniformly inside the clip."""
    n, length = x.shape
    on = chosen(g, n, p, CPU)
    size = int(cfg.cutout_ratio * length + 0.5)
    start = integers(g, n, 0, length - size + 1, CPU)
    t = torch.arange(length)[None, :]
    cut = (t >= start[:, None]) & (t < start[:, None] + size) & on[:, None]
    return x * (~cut).to(device=x.device, dtype=x.dtype)


class AudioDiffAugment:
    """`augment(waves, generator) -> waves` for `config.policy` on (B, T) or (B, 1, T) batches;
    `p` may be changed between steps (by hand or by `AdaController`)."""

    def __init__(self, config: AudioDiffAugmentConfig):
        self.config = config
        self.p = config.p
        self.ops = [AUDIO_DIFF_OPS.get(name) for name in config.policy]

    @property
    def enabled(self) -> bool:
        return bool(self.ops)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not (x.is_floating_point() and (x.ndim == 2 or (x.ndim == 3 and x.shape[1] == 1))):
            raise DataError(
                f"audio DiffAugment expects a float (B, T) or (B, 1, T) batch, got {x.dtype} {tuple(x.shape)}"
            )
        if self.p <= 0 or not self.ops:
            return x
        y = x.reshape(len(x), x.shape[-1])
        for op in self.ops:
            y = op(y, self.p, self.config, generator)
        return y.reshape(x.shape)


AUGMENTATIONS.register(
    "audio",
    ModalityAugment(
        config=AudioAugmentConfig,
        build=lambda config, dataset: AudioAugment(config, dataset.sample_rate),
        diff_config=AudioDiffAugmentConfig,
        build_diff=AudioDiffAugment,
    ),
)
