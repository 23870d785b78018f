"""WaveGAN (Donahue et al. 2019): a 1-D GAN on raw waveforms, registered as `wavegan`.

The generator upsamples a latent x`stride` per stage with long 1-D kernels (transposed
convolutions as in the paper, or nearest upsampling + convolution); the discriminator mirrors it
with strided convolutions and phase shuffle. The objective reuses the image GANs' losses
(`models.gan.GAN_LOSSES`: WGAN-GP as in the paper by default, hinge with spectral norm as an
option) and their gradient penalty. Conditioning on digit and speaker: their embeddings are
concatenated to z in the generator and projected onto the discriminator's features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from genforge.core.config import from_dict
from genforge.core.errors import ConfigError, GenforgeError
from genforge.models.audio.adapt import SpeakerAdaptation, check_speaker_names
from genforge.models.audio.conditioning import (
    effective_speakers,
    sample_condition,
    training_condition,
)
from genforge.models.audio.nets import ConditionEmbedding, WaveDiscriminator, WaveGenerator
from genforge.models.base import Batch, GenerativeModel, ModelOutput, OptimizerSpec, Phase
from genforge.models.gan import GAN_LOSSES, discriminator_problems, frozen, gradient_penalty
from genforge.models.registry import MODELS


@dataclass
class WaveGANConfig:
    sample_rate: int = 8000
    length: int = 8000
    num_classes: int = 0  # > 0: conditioned on the digit
    num_speakers: int = 0  # the data's speakers; used when speaker_conditional
    speaker_names: list[str] = field(default_factory=list)  # the speakers' names by id (models/audio/adapt.py)
    speaker_conditional: bool = True
    latent_dim: int = 100
    cond_dim: int = 32  # width of the condition embedding concatenated to z
    # one x`stride` stage per generator width after the first (dense output = widths[0] channels);
    # the paper's model size d gives [16d, 8d, 4d, 2d, d] and D [d, 2d, 4d, 8d, 16d]; these are
    # d = 16 with 4 stages, what `wavegan_sizes` picks for 1 s at 8 kHz
    g_widths: list[int] = field(default_factory=lambda: [128, 64, 32, 16])
    d_widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    kernel: int = 25
    stride: int = 4
    upsample: Literal["transposed", "nearest"] = "transposed"
    phase_shuffle: int = 2  # radius n of phase shuffle in D (0 = off)
    # the CPU recipe: hinge loss, a spectrally normalised D and one D step per G step cost a fifth
    # of the paper's WGAN-GP with 5 critic steps (loss=wasserstein, gp_weight=10, n_critic=5,
    # spectral_norm=false, lr 1e-4, betas (0.5, 0.9)), which stays one --set away
    loss: str = "hinge"  # a models.gan.GAN_LOSSES name
    gp_weight: float = 0.0
    n_critic: int = 1
    spectral_norm: bool = True
    g_lr: float = 2e-4
    d_lr: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.9)

    def __post_init__(self) -> None:
        GAN_LOSSES.get(self.loss)
        check_speaker_names("wavegan", self.speaker_names, self.num_speakers)
        checks = [
            (self.sample_rate >= 1 and self.length >= 16, "sample_rate >= 1 and length >= 16"),
            (self.num_classes >= 0 and self.num_speakers >= 0, "num_classes and num_speakers >= 0"),
            (self.latent_dim >= 1 and self.cond_dim >= 1, "latent_dim and cond_dim >= 1"),
            (len(self.g_widths) >= 1 and min(self.g_widths) >= 1, "g_widths: at least one width >= 1"),
            (len(self.d_widths) >= 1 and min(self.d_widths) >= 1, "d_widths: at least one width >= 1"),
            (self.kernel >= self.stride >= 2 and self.kernel % 2 == 1, "kernel odd and >= stride >= 2"),
            (self.phase_shuffle >= 0 and self.n_critic >= 1 and self.gp_weight >= 0,
             "phase_shuffle >= 0, n_critic >= 1, gp_weight >= 0"),
            (self.g_lr > 0 and self.d_lr > 0, "g_lr and d_lr > 0"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"wavegan config: {message}")


def wavegan_sizes(length: int, d: int = 16, stride: int = 4) -> dict[str, Any]:
    """Widths for clips of `length` samples: enough x`stride` stages that the dense layer starts
    at about 16-32 samples (1 s at 8 kHz: 4 stages from 32), widths halving from 2**(k-1) d."""
    stages = max(1, round(math.log(max(length, 16) / 16) / math.log(stride)))
    g = [d * 2 ** (stages - 1 - i) for i in range(stages)]
    return {"g_widths": g, "d_widths": g[::-1]}


@MODELS.register("wavegan")
class WaveGAN(SpeakerAdaptation, GenerativeModel):
    family = "wavegan"
    modality = "audio"
    config_class = WaveGANConfig
    ema_modules = ("generator",)
    # only the discriminator sees real clips (DP-GAN, as the image GANs); the generator's phase
    # gets the trainer's public batch: zeros, with digits and speakers drawn uniformly
    private_modules = ("discriminator",)
    private_defaults = {"spectral_norm": False}

    def __init__(self, config: WaveGANConfig):
        super().__init__(config)
        c = config
        self.conditional = c.num_classes > 0
        speakers = effective_speakers(c.num_speakers, c.speaker_conditional)
        self.speaker_conditional = speakers > 0
        self._speakers = speakers
        self.condition = ConditionEmbedding(c.num_classes, speakers, c.cond_dim)
        cond_dim = c.cond_dim if self.condition.active else 0
        self.generator = WaveGenerator(
            c.latent_dim, c.length, c.g_widths, c.kernel, c.stride, c.upsample, cond_dim
        )
        self.discriminator = WaveDiscriminator(c.length, c.d_widths, c.kernel, c.stride, c.phase_shuffle,
                                               c.num_classes, speakers, c.spectral_norm)  # fmt: skip
        self.adversarial = GAN_LOSSES.get(c.loss)
        self._steps = {"discriminator": self._discriminator_step, "generator": self._generator_step}

    @classmethod
    def default_config(cls, sample_rate: int, length: int, num_classes: int = 0, num_speakers: int = 0,
                       **overrides: Any) -> WaveGANConfig:  # fmt: skip
        data = {
            "sample_rate": sample_rate,
            "length": length,
            "num_classes": num_classes,
            "num_speakers": num_speakers,
        }
        return from_dict(
            cls.config_class, {**data, **wavegan_sizes(length), **overrides}, where="wavegan config"
        )

    def adaptation_layers(self) -> tuple[str, ...]:
        # G's output conv and D's logit; the dense layer the condition enters holds most of G's
        # weights (it is the trunk), so a new voice moves its embedding row through it, frozen
        return (f"generator.convs.{len(self.generator.convs) - 1}.*", "discriminator.head.*")

    def phases(self) -> list[Phase]:
        c = self.config
        return [
            Phase(
                "discriminator", ["discriminator"], OptimizerSpec("adam", c.d_lr, c.betas), repeats=c.n_critic
            ),
            # the condition embedding feeds the generator only: it learns with it
            Phase("generator", ["generator", "condition"], OptimizerSpec("adam", c.g_lr, c.betas)),
        ]

    def private_training_problems(self) -> list[str]:
        c = self.config
        return discriminator_problems(c.gp_weight, c.spectral_norm, "hinge")

    def training_step(self, phase: str, batch: Batch, step: int) -> ModelOutput:
        if phase not in self._steps:
            raise GenforgeError(f"wavegan: unknown phase {phase!r}; known: {', '.join(self._steps)}")
        return self._steps[phase](batch)

    def _generate(
        self, z: torch.Tensor, labels: torch.Tensor | None, speakers: torch.Tensor | None
    ) -> torch.Tensor:
        return self.generator(z, self.condition(labels, speakers))

    def _condition(self, batch: Batch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return training_condition(
            "wavegan", self.config.num_classes, self._speakers, batch.labels, batch.speakers
        )

    def _discriminator_step(self, batch: Batch) -> ModelOutput:
        real = batch.data
        cond = self._condition(batch)
        with torch.no_grad():
            fake = self._generate(
                torch.randn(real.shape[0], self.config.latent_dim, device=real.device), *cond
            )
        d_real, d_fake = self.discriminator(real, cond), self.discriminator(fake, cond)
        loss = self.adversarial.discriminator(d_real, d_fake)
        terms: dict[str, torch.Tensor | float] = {
            "d_loss": loss.detach(), "d_real": d_real.detach().mean(), "d_fake": d_fake.detach().mean(),
        }  # fmt: skip
        if self.config.gp_weight > 0:
            eps = torch.rand(real.shape[0], 1, device=real.device, dtype=real.dtype)  # one per clip
            gp = gradient_penalty(self.discriminator, real, fake, cond, eps=eps)
            loss = loss + self.config.gp_weight * gp
            terms["gp"] = gp.detach()
        return ModelOutput(loss, terms)

    def _generator_step(self, batch: Batch) -> ModelOutput:
        real = batch.data
        cond = self._condition(batch)
        fake = self._generate(torch.randn(real.shape[0], self.config.latent_dim, device=real.device), *cond)
        with frozen(self.discriminator):
            loss = self.adversarial.generator(self.discriminator(fake, cond))
        return ModelOutput(loss, {"g_loss": loss.detach()})

    def noise(self, n: int, *, generator: torch.Generator | None = None, **options: Any) -> torch.Tensor:
        """All the randomness `sample` consumes: z ~ N(0, I), drawn on the CPU for seed stability."""
        return torch.randn(n, self.config.latent_dim, generator=generator)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, labels: torch.Tensor | None = None,
               speakers: torch.Tensor | None = None, latents: torch.Tensor | None = None,
               **options: Any) -> torch.Tensor:  # fmt: skip
        """n clips (n, length) in [-1, 1]; `latents` (from `noise`) replace the draw."""
        if options:
            raise GenforgeError(f"wavegan sample: unknown option(s) {', '.join(sorted(options))}")
        device = next(self.parameters()).device
        lab, spk = sample_condition(
            "wavegan", n, self.config.num_classes, self._speakers, labels, speakers, device
        )
        z = (self.noise(n, generator=generator) if latents is None else latents).to(device)
        return self._generate(z, lab, spk)
