"""The spectrogram route: the image families on log-mel "images", registered as `mel-vae`,
`mel-sngan` and `mel-ddpm`.

A `MelImage` representation maps waves (B, T) to square single-channel images (B, 1, M, M) in
[-1, 1]: the log-mel spectrogram (`genforge.audio.spectrogram`, M mel bands), its frames
cropped or padded to M (the hop defaults to length // (M - 1) so a clip's frames fill the
square), and log power clamped to [log_floor, log_ceiling] mapped linearly onto [-1, 1] with
fixed constants saved in the config. Generated images go back to waves through the Griffin-Lim
baseline vocoder (`log_mel_to_wave`, `griffin_lim_iters` iterations).

`SpectralModel` wraps an inner image model (built by name from `inner` + `inner_config`, both in
the saved config) and adopts its submodules as its own, so its state dict is the inner model's
and the trainer's phases and EMA name the inner model's modules unchanged. Digit and speaker
conditioning become one joint class for the inner model: label * num_speakers + speaker. With
`factored` (mel-sngan's default for new runs) the inner model also learns a table per digit and
one per speaker beside the joint one (`class_factors`), so what makes a voice is learnt from all
of its digits: a fine-tune to a new voice then reaches its plateau in about half the steps
(bench/results/voice_clone.md).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

# the inner image families register themselves on import
import genforge.models.diffusion  # noqa: F401
import genforge.models.gan  # noqa: F401
import genforge.models.vae  # noqa: F401
from genforge.audio.spectrogram import MelConfig, log_mel, log_mel_to_wave
from genforge.core.config import from_dict, to_dict
from genforge.core.errors import ConfigError, GenforgeError
from genforge.models.audio.adapt import SpeakerAdaptation, check_speaker_names, grow_joint_tables
from genforge.models.audio.conditioning import (
    effective_speakers,
    sample_condition,
    training_condition,
)
from genforge.models.base import Batch, GenerativeModel, ModelOutput, Phase
from genforge.models.registry import MODELS


@dataclass
class SpectralConfig:
    sample_rate: int = 8000
    length: int = 8000
    num_classes: int = 0  # > 0: conditioned on the digit
    num_speakers: int = 0  # the data's speakers; used when speaker_conditional
    speaker_names: list[str] = field(default_factory=list)  # the speakers' names by id (models/audio/adapt.py)
    speaker_conditional: bool = True
    n_mels: int = 64  # mel bands = the side of the square image
    # 0: the smallest power of two spanning 4 hops (75% overlap; 512 at 8 kHz for 1 s clips, 1,024 at
    # 16 kHz). Griffin-Lim needs that redundancy: real training clips through the log-mel image and 10
    # iterations back score FAD 5.7x the memoriser with the 256-sample window (50% overlap), 2.3x with
    # 512 and 5.1x with 1,024; a mel-sngan run of the spoken-digits scenario 11.6x -> 4.3x
    # (bench/results/audio_quality.md, session 32). Runs saved before keep their 256
    n_fft: int = 0
    hop_length: int = 0  # 0: length // (n_mels - 1), so a clip's frames fill the image
    f_min: float = 0.0
    f_max: float | None = None  # None: Nyquist
    log_floor: float = 1e-5  # mel power mapped to -1 (and the floor of the log)
    log_ceiling: float = 100.0  # mel power mapped to +1 (louder is clamped)
    # Griffin-Lim iterations: 10 keep sampling above 100x real time on 2 CPU cores; the log-mel
    # of the result differs from the target by 0.02 (normalised units) against 0.012 at 32
    griffin_lim_iters: int = 10
    inner: str = ""  # the image family; "" = the registered family's choice (default_config)
    inner_config: dict[str, Any] = field(default_factory=dict)
    # with digits and speakers: the inner model's joint (digit, speaker) class tables also add a
    # table per digit and one per speaker (`class_factors`, families that have it: mel-sngan's
    # default), so a voice is learnt from all its clips, not digit by digit: a fine-tune to a new voice
    # reaches its plateau in about half the steps (bench/results/voice_clone.md)
    factored: bool = False

    def __post_init__(self) -> None:
        check_speaker_names("spectral", self.speaker_names, self.num_speakers)
        if self.n_fft == 0 and self.length >= 1 and self.n_mels >= 2:
            self.n_fft = overlapping_n_fft(self.hop, self.n_mels)
        checks = [
            (self.sample_rate >= 1 and self.length >= 1, "sample_rate and length must be >= 1"),
            (self.num_classes >= 0 and self.num_speakers >= 0, "num_classes and num_speakers must be >= 0"),
            (self.n_mels >= 8, "n_mels (the image side) must be >= 8"),
            (
                self.hop_length >= 0 and self.griffin_lim_iters >= 0,
                "hop_length and griffin_lim_iters must be >= 0",
            ),
            (0 < self.log_floor < self.log_ceiling, "need 0 < log_floor < log_ceiling"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"spectral config: {message}")
        if self.n_mels > self.n_fft // 2 + 1:
            raise ConfigError(f"spectral config: n_mels {self.n_mels} exceeds the n_fft // 2 + 1 = "
                              f"{self.n_fft // 2 + 1} STFT bins; raise n_fft")  # fmt: skip
        if not 1 <= self.hop <= self.n_fft:
            raise ConfigError(
                f"spectral config: hop {self.hop} (length {self.length} over {self.n_mels} frames, or hop_length) "
                f"must lie in 1..n_fft {self.n_fft}; change n_mels, n_fft or hop_length"
            )

    @property
    def hop(self) -> int:
        return self.hop_length or self.length // (self.n_mels - 1)

    def mel(self) -> MelConfig:
        return MelConfig(
            self.sample_rate, self.n_fft, self.hop, self.n_mels, self.f_min, self.f_max, self.log_floor
        )


def overlapping_n_fft(hop: int, n_mels: int, hops: int = 4) -> int:
    """The smallest power of two that spans `hops` hops and has a bin for every mel band."""
    need = max(hops * hop, 2 * (n_mels - 1), 8)
    return 1 << (need - 1).bit_length()


class MelImage:
    """Waves (B, T) <-> log-mel images (B, 1, M, M) in [-1, 1] (module docstring)."""

    def __init__(self, cfg: SpectralConfig):
        self.mel, self.length, self.side = cfg.mel(), cfg.length, cfg.n_mels
        self.frames = self.mel.frames(cfg.length)
        self.low, self.high = math.log(cfg.log_floor), math.log(cfg.log_ceiling)

    def to_image(self, wave: torch.Tensor) -> torch.Tensor:
        # in fp32 whatever the autocast: log power in bf16 would lose the quiet bands
        with torch.autocast(wave.device.type, enabled=False):
            lm = log_mel(wave.float(), self.mel).clamp(max=self.high)
            x = (lm - self.low) * (2.0 / (self.high - self.low)) - 1.0
            return _fit(x, self.side, -1.0).unsqueeze(1)

    def to_log_mel(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 1, M, M) in [-1, 1] -> natural-log mel power (B, M, frames of the clip)."""
        x = _fit(image.float().squeeze(1).clamp(-1, 1), self.frames, -1.0)
        return (x + 1.0) * ((self.high - self.low) / 2.0) + self.low

    def to_wave(
        self, image: torch.Tensor, iterations: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Griffin-Lim: images -> waves (B, T) in [-1, 1]; the random initial phase comes from `generator`."""
        return log_mel_to_wave(self.to_log_mel(image), self.mel, self.length, iterations, generator=generator)


def _fit(x: torch.Tensor, frames: int, fill: float) -> torch.Tensor:
    """Crop or pad (with `fill`) the last axis to `frames`."""
    have = x.shape[-1]
    return x[..., :frames] if have >= frames else F.pad(x, (0, frames - have), value=fill)


def joint_classes(num_classes: int, num_speakers: int) -> int:
    """Classes of the inner model: one per (digit, speaker) pair, or per digit, or per speaker."""
    return num_classes * num_speakers if num_classes and num_speakers else num_classes or num_speakers


def inner_classes(digits: int, speakers: int, factored: bool) -> dict[str, Any]:
    """The inner model's config fields that the classes fix: `num_classes` (joint) and, when
    `factored` with digits and speakers, `class_factors` [digits, speakers]."""
    out: dict[str, Any] = {"num_classes": joint_classes(digits, speakers)}
    if factored and digits and speakers:
        out["class_factors"] = [digits, speakers]
    return out


def joint_labels(
    labels: torch.Tensor | None, speakers: torch.Tensor | None, num_speakers: int
) -> torch.Tensor | None:
    if labels is not None and speakers is not None:
        return labels * num_speakers + speakers
    return labels if labels is not None else speakers


class SpectralModel(SpeakerAdaptation, GenerativeModel):
    """An image family on `MelImage` images; subclasses name the inner family and its CPU sizes."""

    modality: ClassVar[str] = "audio"
    config_class: ClassVar[type] = SpectralConfig

    def __init__(self, config: SpectralConfig):
        super().__init__(config)
        c = config
        if not c.inner:
            raise ConfigError(
                f"{type(self).__name__}: config.inner is empty; build the config with default_config"
            )
        self.conditional = c.num_classes > 0
        self._speakers = effective_speakers(c.num_speakers, c.speaker_conditional)
        self.speaker_conditional = self._speakers > 0
        self.representation = MelImage(c)
        derived = {"image_size": c.n_mels, "channels": 1, **inner_classes(c.num_classes, self._speakers, c.factored)}
        clash = {
            k: (c.inner_config[k], v)
            for k, v in derived.items()
            if k in c.inner_config and c.inner_config[k] != v
        }
        if clash:
            raise ConfigError(
                "spectral config: inner_config fields the representation fixes differ: "
                + ", ".join(f"{k} (given {a!r}, the mel images need {b!r})" for k, (a, b) in clash.items())
            )
        inner_cls = MODELS.get(c.inner)
        if inner_cls.modality != "image":
            raise ConfigError(
                f"spectral config: inner {c.inner!r} is a {inner_cls.modality} model, not an image family"
            )
        if "class_factors" in derived and "class_factors" not in {f.name for f in dataclasses.fields(inner_cls.config_class)}:
            raise ConfigError(f"spectral config: factored needs an inner family with class_factors; {c.inner!r} has none")
        inner = inner_cls(
            from_dict(inner_cls.config_class, {**c.inner_config, **derived}, where=f"inner {c.inner} config")
        )
        # the inner model's submodules become this model's (same names, same state-dict keys);
        # the inner model itself is held outside the module tree so no parameter is counted twice
        self.__dict__["inner_model"] = inner
        for name, child in inner.named_children():
            self.add_module(name, child)
        self.ema_modules, self.private_modules = inner.ema_modules, inner.private_modules

    # --- configuration -----------------------------------------------------------------------

    # the `factored` setting of a new run (a saved config keeps its own)
    factored_default: ClassVar[bool] = False

    @classmethod
    def inner_choice(cls, joint: int) -> tuple[str, dict[str, Any]]:
        """(inner family name, its config overrides: a CPU recipe) for `joint` inner classes."""
        raise NotImplementedError

    @classmethod
    def default_config(cls, sample_rate: int, length: int, num_classes: int = 0, num_speakers: int = 0,
                       **overrides: Any) -> SpectralConfig:  # fmt: skip
        inner_over = dict(overrides.pop("inner_config", None) or {})
        data = {
            "sample_rate": sample_rate,
            "length": length,
            "num_classes": num_classes,
            "num_speakers": num_speakers,
        }
        base = from_dict(cls.config_class, {"factored": cls.factored_default, **data, **overrides},
                         where=f"{cls.__name__} config")  # fmt: skip
        speakers = effective_speakers(base.num_speakers, base.speaker_conditional)
        classes = inner_classes(base.num_classes, speakers, base.factored)
        name, recipe = cls.inner_choice(classes["num_classes"])
        if base.inner and base.inner != name:  # another inner family: its own defaults, not our recipe
            name, recipe = base.inner, {}
        derived = {"image_size": base.n_mels, "channels": 1, **classes}
        inner_cfg = MODELS.get(name).default_config(**derived, **{**recipe, **inner_over})
        return dataclasses.replace(base, inner=name, inner_config=to_dict(inner_cfg))

    @classmethod
    def adapt_base_config(cls, base_config: dict[str, Any], data_fields: dict[str, Any]) -> dict[str, Any]:
        out = super().adapt_base_config(base_config, data_fields)
        if out is base_config:
            return out
        classes = inner_classes(int(out.get("num_classes") or 0), int(out["num_speakers"]), bool(out.get("factored")))
        return {**out, "inner_config": {**(out.get("inner_config") or {}), **classes}}

    def base_state_optional(self, name: str) -> bool:
        return self.inner_model.base_state_optional(name)  # the inner's state keys are this model's

    def adaptation_parameters(self) -> list[str]:
        """The inner parameters sized by the joint classes, where digit and speaker enter (class
        tables, conditional norms, a cVAE's one-hot inputs): found by building the inner model
        with one more class and comparing shapes, so no family's layer names are listed here."""
        if not self.inner_model.config.num_classes:
            return []
        inner_cls = MODELS.get(self.config.inner)
        # one speaker more (one class more without speakers): the tensors that grow are these
        more = inner_classes(self.config.num_classes, self._speakers + 1, self.config.factored) if self._speakers else {
            "num_classes": self.inner_model.config.num_classes + 1}  # fmt: skip
        wider = dict(inner_cls(from_dict(inner_cls.config_class, {**to_dict(self.inner_model.config), **more}))
                     .named_parameters())  # fmt: skip
        return [n for n, p in self.inner_model.named_parameters() if wider[n].shape != p.shape]

    def _grow_speaker_tables(
        self, state: dict[str, torch.Tensor], base_names: list[str], names: list[str]
    ) -> dict[str, torch.Tensor]:
        return grow_joint_tables(self, state, self.config.num_classes, base_names, names)

    def private_training_problems(self) -> list[str]:
        # the inner family's fields live under model.inner_config here
        return [
            p.replace("model.", "model.inner_config.", 1)
            for p in self.inner_model.private_training_problems()
        ]

    @property
    def noise_multiplicity(self) -> int:
        # DPDM's K (train/privacy.py sets it) is the inner diffusion model's; an inner family
        # without one raises AttributeError, so privacy.noise_multiplicity is refused for it
        return self.inner_model.noise_multiplicity

    @noise_multiplicity.setter
    def noise_multiplicity(self, k: int) -> None:
        if not hasattr(self.inner_model, "noise_multiplicity"):
            raise AttributeError(f"{self.config.inner} draws one noise level per example")
        self.inner_model.noise_multiplicity = k

    # --- module plumbing: the inner model's own tensors and flags follow this model's -----------

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.inner_model._apply(fn, recurse=False)  # its own buffers (e.g. ddpm's alpha_bar)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        self.inner_model.training = mode
        return self

    # --- training and sampling -----------------------------------------------------------------

    def phases(self) -> list[Phase]:
        return self.inner_model.phases()

    def training_step(self, phase: str, batch: Batch, step: int) -> ModelOutput:
        lab, spk = training_condition(self.family, self.config.num_classes, self._speakers, batch.labels,
                                      batch.speakers)  # fmt: skip
        images = self.representation.to_image(batch.data)
        return self.inner_model.training_step(
            phase, Batch(images, joint_labels(lab, spk, self._speakers)), step
        )

    @torch.no_grad()
    def sample_images(self, n: int, *, generator: torch.Generator | None = None, labels: torch.Tensor | None = None,
                      speakers: torch.Tensor | None = None, **options: Any) -> torch.Tensor:  # fmt: skip
        """The inner model's log-mel images (n, 1, M, M) in [-1, 1], before the vocoder."""
        device = next(self.parameters()).device
        lab, spk = sample_condition(
            self.family, n, self.config.num_classes, self._speakers, labels, speakers, device
        )
        return self.inner_model.sample(
            n, generator=generator, labels=joint_labels(lab, spk, self._speakers), **options
        )

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, labels: torch.Tensor | None = None,
               speakers: torch.Tensor | None = None, griffin_lim_iters: int | None = None,
               **options: Any) -> torch.Tensor:  # fmt: skip
        """n clips (n, length) in [-1, 1]: inner samples through Griffin-Lim (its initial phase
        drawn from `generator` after the inner model's draws). Other options go to the inner model."""
        images = self.sample_images(n, generator=generator, labels=labels, speakers=speakers, **options)
        iters = self.config.griffin_lim_iters if griffin_lim_iters is None else int(griffin_lim_iters)
        if iters < 0:
            raise GenforgeError(f"griffin_lim_iters must be >= 0, got {iters}")
        return self.representation.to_wave(images, iters, generator)


@MODELS.register("mel-vae")
class MelVAE(SpectralModel):
    """cVAE (or a plain VAE when nothing conditions it) on log-mel images."""

    family = "spectral-vae"
    private_defaults = {"inner_config": MODELS.get("vae").private_defaults}

    @classmethod
    def inner_choice(cls, joint: int) -> tuple[str, dict[str, Any]]:
        # beta 1, lr 1e-3 (the cVAE's own) kept: unlike the 16x16 digits (presets/digits.yaml), the
        # Bernoulli likelihood on log-mel leaves 3-6 of the 32 latents active at beta 1 and 0.5 alike, and
        # on FSDD with its measured val clips held out (1,500 steps of 64, 3 sampling seeds, 500 clips,
        # bench/results/audio.md) beta 0.5 scores coverage 0.718 / conditional accuracy 0.867 / FAD
        # 13.8x the memoriser, lr 2e-3 0.723 / 0.913 / 12.7x, against 0.741 / 0.888 / 11.8x (training
        # seed 1: 0.711 / 0.914 / 12.4x); a Gaussian likelihood (sigma 0.3) wakes all 32 latents and
        # leaves the digit (accuracy 0.52)
        return ("cvae" if joint else "vae"), {"latent_dim": 32}


@MODELS.register("mel-sngan")
class MelSNGAN(SpectralModel):
    """Spectrally normalised hinge GAN (projection discriminator when conditional) on log-mel images."""

    family = "spectral-gan"
    private_defaults = {"inner_config": MODELS.get("sngan").private_defaults}

    factored_default = True

    @classmethod
    def inner_choice(cls, joint: int) -> tuple[str, dict[str, Any]]:
        # a per-sample norm in the generator (`g_norm: layer`, no batch statistics): at 10 minutes on
        # FSDD FAD 11.96x -> 10.62x the memoriser, coverage 0.700 -> 0.744, side by side; -10% FAD
        # over three development seeds (bench/results/audio_quality.md, session 31). Runs saved
        # before it have no g_norm in their config and load with batch norm, as they trained
        return "sngan", {"g_widths": [256, 128, 64, 32, 16], "d_widths": [32, 64, 128, 256], "g_norm": "layer"}


@MODELS.register("mel-ddpm")
class MelDDPM(SpectralModel):
    """DDPM with classifier-free guidance on log-mel images."""

    family = "spectral-diffusion"

    @classmethod
    def inner_choice(cls, joint: int) -> tuple[str, dict[str, Any]]:
        return "ddpm", {"base_channels": 32, "channel_mults": [1, 2, 2], "patch_size": 2,
                        "attention_resolutions": [8], "sample_steps": 20}  # fmt: skip
