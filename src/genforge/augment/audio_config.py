"""Audio augmentation configs: what a run used is exactly `to_dict(config)`, saved in run.json.

As for images, every waveform op has a field named after its registry entry (`WAVE_OPS`) whose
`p` is the per-sample probability of applying it (0 = off), and the audio DiffAugment's `policy`
lists `AUDIO_DIFF_OPS` names. SpecAugment acts on spectrograms, not waves, so it has its own
config that spectrogram models and the evaluator's training hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from genforge.audio.noise import NoiseRecipe
from genforge.augment.config import check_ada, check_nonneg, check_p, check_range
from genforge.core.errors import ConfigError


@dataclass
class SpeedConfig:
    """Speed perturbation: the clip is played `factor` times faster (pitch and tempo together,
    as Kaldi's 0.9/1.0/1.1 recipe), factor drawn uniformly in the range, then padded with zeros
    or cropped about its centre back to the clip length."""

    p: float = 0.0
    factor: tuple[float, float] = (0.9, 1.1)

    def __post_init__(self) -> None:
        check_p("speed", self.p)
        check_range("speed", "factor", self.factor, 0.25, 4.0)


@dataclass
class ShiftConfig:
    """Time shift by a whole number of samples drawn uniformly in [-fraction, fraction] x the clip
    length; `zeros` fills the samples shifted in with silence, `circular` wraps them round."""

    p: float = 0.0
    fraction: float = 0.1
    mode: Literal["zeros", "circular"] = "zeros"

    def __post_init__(self) -> None:
        check_p("shift", self.p)
        check_range("shift", "fraction", (0.0, self.fraction), 0.0, 1.0)


@dataclass
class GainConfig:
    """Loudness change by a gain in dB drawn uniformly in `db`."""

    p: float = 0.0
    db: tuple[float, float] = (-6.0, 6.0)

    def __post_init__(self) -> None:
        check_p("gain", self.p)
        check_range("gain", "db", self.db, -60.0, 60.0)


@dataclass
class NoiseConfig:
    """Additive noise at an SNR drawn uniformly in `snr_db`, of a kind drawn by weight from
    `kinds` (`audio.noise.NOISES` names: white, pink, brown, babble, hum, clicks). Babble is
    the sum of other clips of the same batch (never the clip itself, unless it is alone in it)."""

    p: float = 0.0
    kinds: dict[str, float] = field(default_factory=lambda: {"white": 1.0, "pink": 1.0, "babble": 1.0})
    snr_db: tuple[float, float] = (10.0, 30.0)

    def __post_init__(self) -> None:
        check_p("noise", self.p)
        self.recipe()  # the recipe validates kinds, weights and the SNR range, naming the field

    def recipe(self) -> NoiseRecipe:
        return NoiseRecipe(kinds=dict(self.kinds), snr_db=tuple(self.snr_db))


@dataclass
class SpecAugmentConfig:
    """SpecAugment (Park et al. 2019) masks on (B, F, frames) spectrograms: `freq_masks` bands of
    up to `freq_width` x F bins and `time_masks` spans of up to `time_width` x frames, each width
    drawn uniformly (whole bins/frames) and placed uniformly inside the spectrogram; masked cells
    take the sample's mean (`mean`, the paper's choice for normalised features) or 0."""

    p: float = 0.0
    freq_masks: int = 2
    freq_width: float = 0.15
    time_masks: int = 2
    time_width: float = 0.1
    fill: Literal["mean", "zero"] = "mean"

    def __post_init__(self) -> None:
        check_p("specaugment", self.p)
        check_nonneg("specaugment", freq_masks=self.freq_masks, time_masks=self.time_masks)
        check_range("specaugment", "freq_width", (0.0, self.freq_width), 0.0, 1.0)
        check_range("specaugment", "time_width", (0.0, self.time_width), 0.0, 1.0)


@dataclass
class AudioDiffAugmentConfig:
    """DiffAugment on waves for GAN discriminators: the same policy on real and generated
    batches, each op differentiable w.r.t. its input. Policy names: `shift` (up to
    `shift_ratio` x the length, zero-filled), `gain` (uniform in +-`gain_db`), `noise` (white
    noise at an SNR uniform in `snr_db`), `cutout` (a `cutout_ratio` x length span set to 0).
    `p` and the ADA fields mean what they mean for images (`DiffAugmentConfig`)."""

    policy: list[str] = field(default_factory=list)
    p: float = 1.0
    shift_ratio: float = 0.125
    gain_db: float = 6.0
    snr_db: tuple[float, float] = (10.0, 30.0)
    cutout_ratio: float = 0.25
    ada: bool = False
    ada_target: float = 0.6
    ada_speed_images: int = 500_000
    ada_interval: int = 4
    modality: ClassVar[str] = "audio"

    def __post_init__(self) -> None:
        check_p("diffaugment", self.p)
        check_range("diffaugment", "shift_ratio", (0.0, self.shift_ratio), 0.0, 1.0)
        check_range("diffaugment", "gain_db", (0.0, self.gain_db), 0.0, 60.0)
        if not self.snr_db[0] <= self.snr_db[1]:
            raise ConfigError(f"diffaugment.snr_db: expected low <= high, got {list(self.snr_db)}")
        check_range("diffaugment", "cutout_ratio", (0.0, self.cutout_ratio), 0.0, 1.0)
        check_ada("diffaugment", self.ada_target, self.ada_speed_images, self.ada_interval)


@dataclass
class AudioAugmentConfig:
    """Augmentation of real training waves (float (B, T) in [-1, 1]), ops applied in the order
    speed, shift, gain, noise (so the SNR is measured against the clip as the model sees it)."""

    speed: SpeedConfig = field(default_factory=SpeedConfig)
    shift: ShiftConfig = field(default_factory=ShiftConfig)
    gain: GainConfig = field(default_factory=GainConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    # gain and noise can leave [-1, 1], the range waves are stored in and generators produce
    clamp: bool = True
    # applied inside a GAN training step to real and generated waves alike, not to the data
    diffaugment: AudioDiffAugmentConfig = field(default_factory=AudioDiffAugmentConfig)
