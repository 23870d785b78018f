"""GANs: DCGAN (the seed article's, fixed), WGAN-GP, SNGAN and their class-conditional forms.

One model class, `GAN`, holds a generator and a discriminator (`models.nets.dcgan`); the
registered names differ in their default config: the adversarial loss (from `GAN_LOSSES`), the
discriminator's normalisation, the gradient penalty and the number of critic steps. Any of them
becomes class-conditional with `num_classes > 0` (conditional batch norm in the generator and a
projection discriminator); `cgan` is the conditional DCGAN by name.

DiffAugment (`genforge.augment`) is applied, when its policy is set, to real and fake batches in
the discriminator step and to fakes in the generator step; with `ada` its probability follows
an ADA controller fed with the discriminator's sign on reals.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genforge.augment import DiffAugmentConfig, build_ada, build_diffaugment
from genforge.core.errors import ConfigError, GenforgeError
from genforge.core.registry import Registry
from genforge.models.base import Batch, GenerativeModel, LRSchedule, ModelOutput, OptimizerSpec, Phase
from genforge.models.nets.conv import stage_widths
from genforge.models.nets.dcgan import Discriminator, Generator
from genforge.models.nets.init import initialise
from genforge.models.nets.latent import class_labels, interpolation_latents
from genforge.models.nets.norm import GENERATOR_NORMS
from genforge.models.registry import MODELS


@dataclass(frozen=True)
class AdversarialLoss:
    discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits on real, on fake) -> loss
    generator: Callable[[torch.Tensor], torch.Tensor]  # logits on fake -> loss


def _bce_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    # on logits: the article passed sigmoid outputs to a from-logits loss, squashing its gradients
    return F.binary_cross_entropy_with_logits(
        real, torch.ones_like(real)
    ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))


def _bce_g(fake: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))  # non-saturating


def _wasserstein_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return fake.mean() - real.mean()


def _hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def _negative_mean(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


GAN_LOSSES: Registry[AdversarialLoss] = Registry("GAN loss")
GAN_LOSSES.register("bce", AdversarialLoss(_bce_d, _bce_g))
GAN_LOSSES.register("wasserstein", AdversarialLoss(_wasserstein_d, _negative_mean))
GAN_LOSSES.register("hinge", AdversarialLoss(_hinge_d, _negative_mean))


def gradient_penalty(
    critic: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    labels: torch.Tensor | None = None,
    eps: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gulrajani et al. 2017: E[(||grad_x D(x)||_2 - 1)^2] at random interpolates of real and fake."""
    if eps is None:
        eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    # under autocast the fakes come out of the generator in bf16/fp16 while real images are fp32
    x = torch.lerp(fake.detach().to(real.dtype), real.detach(), eps).requires_grad_(True)
    # a critic with patch logits (n, 2P) is judged by their mean per sample, as its loss weighs them
    (grad,) = torch.autograd.grad(critic(x, labels).reshape(len(x), -1).mean(1).sum(), x, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0).square().mean()


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """No parameter gradients for `module` (its input gradients still flow)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class Augmentation(nn.Module):
    """DiffAugment with, when configured, the ADA controller that drives its probability.

    The controller's state lives in a buffer of this module, so the model's state dict (and with
    it every trainer checkpoint) carries it and a resumed run continues with the same p.
    """

    def __init__(self, config: DiffAugmentConfig):
        super().__init__()
        self.diffaugment = build_diffaugment(config)
        self.ada = build_ada(config)
        # p, last r (nan = none yet), observed batches, pending [sign sum, outputs, images]
        self.register_buffer("ada_state", torch.tensor([config.p, math.nan, 0, 0, 0, 0], dtype=torch.float64))

    @property
    def p(self) -> float:
        return self.diffaugment.p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.diffaugment(x)

    def observe(self, d_real: torch.Tensor) -> None:
        if self.ada is not None:
            self.diffaugment.p = self.ada.observe(d_real)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if self.ada is not None:
            st = self.ada.state_dict()
            last_r = math.nan if st["last_r"] is None else st["last_r"]
            self.ada_state.copy_(
                torch.tensor([st["p"], last_r, st["calls"], *st["pending"]], dtype=torch.float64)
            )
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.ada is not None:
            p, last_r, calls, *pending = self.ada_state.tolist()
            self.ada.load_state_dict(
                {
                    "p": p,
                    "last_r": None if math.isnan(last_r) else last_r,
                    "calls": int(calls),
                    "pending": pending,
                }
            )
            self.diffaugment.p = self.ada.p


@dataclass
class GANConfig:
    image_size: int = 28
    channels: int = 1
    num_classes: int = 0  # > 0: conditional batch norm in G, projection D
    latent_dim: int = 100
    g_widths: list[int] = field(
        default_factory=lambda: [256, 128, 64]
    )  # one stride-2 stage per width after the first
    d_widths: list[int] = field(default_factory=lambda: [64, 128])  # one stride-2 conv each
    kernel: int = 5
    g_activation: Literal["relu", "leaky_relu"] = "relu"
    leak: float = 0.2
    d_dropout: float = 0.3
    d_norm: Literal["none", "batch", "layer"] = "none"
    # D's stage (1 = the first) whose feature map also gets a real/fake logit per position, a
    # PatchGAN-style local judge beside the global one, weighted equally in the loss (0: none)
    d_local: int = 0
    spectral_norm: bool = False
    loss: str = "bce"  # a GAN_LOSSES name
    gp_weight: float = 0.0
    n_critic: int = 1
    g_lr: float = 1e-4
    d_lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    # how stride-2 transposed convolutions are computed: same parameters and function either way
    upsample: Literal["transposed", "subpixel"] = "transposed"
    # the generator step reuses the fakes (and their graph) of the discriminator step of the same
    # step, as PyTorch's DCGAN example does, instead of running the generator twice; only with n_critic 1
    reuse_fakes: bool = True
    # alternating: G's step sees D after D's update (PyTorch's DCGAN example); simultaneous: both
    # losses from one forward, both gradients before either update (the TensorFlow DCGAN tutorial's
    # train_step, so the seed article's): one discriminator pass on the fakes fewer per step
    update: Literal["alternating", "simultaneous"] = "alternating"
    # weight init (nets/init.py): Keras' Glorot for the article's DCGAN, which collapses from
    # PyTorch's defaults; the spectrally normalised and gradient-penalty GANs keep PyTorch's
    init: Literal["torch", "glorot", "normal"] = "glorot"
    diffaugment: DiffAugmentConfig = field(default_factory=DiffAugmentConfig)
    # conditional only: weight of a class cross-entropy read through D's projection table (its
    # rows as class prototypes), on the real images for D and on the fakes for G (0 = off)
    class_weight: float = 0.0
    # conditional only: the class ids as tuples (e.g. [digits, speakers] for digit * speakers +
    # speaker): the generator's conditional norms add a table per factor (nets/norm.py); empty = off
    class_factors: list[int] = field(default_factory=list)
    # StyleGAN's per-pixel noise inputs in the generator's last `g_noise` hidden stages
    # (nets/dcgan.py): fine detail that varies from sample to sample; 0 = none. Their per-channel
    # scales start at `g_noise_init`. On mel-sngan's log-mel images (three seeds, 5 minutes) they
    # moved FAD by -2.5%, within the seeds' 1.4x spread, and training shrank the scales to ~0.001
    # from 0.1 (from zero it never raised them): off by default (bench/results/audio_quality.md)
    g_noise: int = 0
    g_noise_init: float = 0.1
    # what the generator normalises its hidden maps with (nets/norm.py's GENERATOR_NORMS): batch
    # (running statistics when sampling), or layer / pixel, per sample, no batch statistics
    g_norm: str = "batch"
    # both optimisers' lr over the run's budget (LRSchedule: constant | cosine | linear, down to
    # lr_min_ratio of the lr at the end)
    lr_decay: str = "constant"
    lr_min_ratio: float = 0.1

    def __post_init__(self) -> None:
        GAN_LOSSES.get(self.loss)
        GENERATOR_NORMS.get(self.g_norm)
        if self.class_factors and (math.prod(self.class_factors) != self.num_classes
                                   or min(self.class_factors) < 1):  # fmt: skip
            raise ConfigError(f"gan.class_factors: positive numbers whose product is num_classes "
                              f"({self.num_classes}); got {self.class_factors}")  # fmt: skip
        if self.class_weight < 0 or (self.class_weight > 0 and self.num_classes == 0):
            raise ConfigError(f"gan.class_weight: >= 0, and > 0 only with num_classes > 0; got {self.class_weight}")
        for name in ("image_size", "channels", "latent_dim", "kernel", "n_critic"):
            if getattr(self, name) < 1:
                raise ConfigError(f"gan.{name}: must be >= 1, got {getattr(self, name)}")
        if self.kernel % 2 == 0:
            raise ConfigError(f"gan.kernel: must be odd ('same' padding), got {self.kernel}")
        if self.num_classes < 0 or self.gp_weight < 0 or not 0 <= self.d_dropout < 1:
            raise ConfigError("gan: num_classes and gp_weight must be >= 0 and d_dropout in [0, 1)")
        if not self.d_widths:
            raise ConfigError("gan.d_widths: need at least one discriminator layer")
        if not 0 <= self.d_local <= len(self.d_widths):
            raise ConfigError(f"gan.d_local: a discriminator stage 1 to {len(self.d_widths)} (or 0: none), "
                              f"got {self.d_local}")  # fmt: skip
        if self.update == "simultaneous" and self.n_critic != 1:
            raise ConfigError(
                f"gan.update: simultaneous updates take one D and one G gradient per step; n_critic is {self.n_critic}"
            )


def gan_size_defaults(image_size: int) -> dict[str, Any]:
    if image_size == 28:  # the article's (TensorFlow tutorial's) networks
        return {"g_widths": [256, 128, 64], "d_widths": [64, 128]}
    g = stage_widths(image_size, 32, 256, extra=1)[::-1]  # dense width first, halving per stage
    return {"g_widths": g, "d_widths": g[::-1][1:]}


class GAN(GenerativeModel):
    family = "gan"
    config_class = GANConfig
    ema_modules = ("generator",)
    # only the discriminator sees real images: DP-SGD on its phase, the generator trained through
    # it without noise (DP-GAN, GS-WGAN); with a fresh fake batch per step and public labels
    private_modules = ("discriminator",)
    private_defaults = {"reuse_fakes": False}

    def __init__(self, config: GANConfig):
        super().__init__(config)
        c = config
        self.conditional = c.num_classes > 0
        self.generator = Generator(
            c.latent_dim,
            c.channels,
            c.image_size,
            c.g_widths,
            c.kernel,
            c.g_activation,
            c.leak,
            c.num_classes,
            c.upsample,
            c.class_factors,
            c.g_noise,
            c.g_noise_init,
            c.g_norm,
        )
        self.discriminator = Discriminator(
            c.channels,
            c.image_size,
            c.d_widths,
            c.kernel,
            c.leak,
            c.d_dropout,
            c.d_norm,
            c.spectral_norm,
            c.num_classes,
            c.d_local,
        )
        initialise(self.generator, c.init)
        initialise(self.discriminator, c.init)
        self.adversarial = GAN_LOSSES.get(c.loss)
        self.augment = Augmentation(c.diffaugment) if c.diffaugment.policy else None
        self._fakes: tuple[int, torch.Tensor, torch.Tensor | None] | None = None
        self._steps = {
            "discriminator": self._discriminator_step,
            "generator": self._generator_step,
            "adversarial": self._simultaneous_step,
        }

    @classmethod
    def default_config(cls, image_size: int, channels: int, num_classes: int = 0, **overrides: Any) -> Any:
        return super().default_config(
            image_size, channels, num_classes, **{**gan_size_defaults(image_size), **overrides}
        )

    def phases(self) -> list[Phase]:
        c = self.config
        group = "adversarial" if c.update == "simultaneous" else ""
        schedule = LRSchedule(c.lr_decay, min_ratio=c.lr_min_ratio)
        return [
            Phase(
                "discriminator",
                ["discriminator"],
                OptimizerSpec("adam", c.d_lr, c.betas),
                repeats=c.n_critic,
                group=group,
                schedule=schedule,
            ),
            Phase("generator", ["generator"], OptimizerSpec("adam", c.g_lr, c.betas), group=group, schedule=schedule),
        ]

    def base_state_optional(self, name: str) -> bool:
        # DiffAugment's adaptive state (ADA's p): a fine-tune may add DiffAugment its base lacked
        return name.startswith("augment.")

    def private_training_problems(self) -> list[str]:
        c, problems = self.config, []
        if c.update == "simultaneous":
            problems.append("model.update: simultaneous updates take the generator's gradient from the "
                            "discriminator's forward on the private batch; use alternating")
        if c.reuse_fakes and c.n_critic == 1 and self.conditional:
            problems.append("model.reuse_fakes: the generator step would reuse fakes drawn for the private "
                            "batch's labels; set it to false")
        problems += discriminator_problems(c.gp_weight, c.spectral_norm, "bce or hinge")
        if c.d_norm == "batch":
            problems.append("model.d_norm: batch norm mixes the examples of a batch, so no example's gradient "
                            "is its own; use layer or none")
        if self.augment is not None and self.augment.ada is not None:
            problems.append("augment.diffaugment.ada: the ADA controller sets its probability from the "
                            "discriminator's outputs on private images, outside the guarantee; use a fixed p")
        return problems

    def training_step(self, phase: str, batch: Batch, step: int) -> ModelOutput:
        if phase not in self._steps:
            raise GenforgeError(
                f"{type(self).__name__}: unknown phase {phase!r}; known: {', '.join(self._steps)}"
            )
        return self._steps[phase](batch, step)

    def _labels(self, batch: Batch) -> torch.Tensor | None:
        if not self.conditional:
            return None
        if batch.labels is None or bool((batch.labels < 0).any()):
            raise GenforgeError(
                f"{type(self).__name__} is class-conditional (num_classes={self.config.num_classes}) "
                "but the batch has unlabelled images; use a labelled dataset or num_classes: 0"
            )
        return batch.labels

    def _generate(self, n: int, labels: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        return self.generator(torch.randn(n, self.generator.latent_width, device=device), labels)

    def _discriminator_step(self, batch: Batch, step: int) -> ModelOutput:
        real, labels = batch.images, self._labels(batch)
        keep = self.config.reuse_fakes and self.config.n_critic == 1 and torch.is_grad_enabled()
        with torch.set_grad_enabled(keep):
            fake = self._generate(real.shape[0], labels, real.device)
        self._fakes = (step, fake, labels) if keep else None
        out, _ = self._discriminate(real, fake.detach(), labels)
        return out

    def _judge(self, images: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's real/fake logits and, with `class_weight`, the class cross-entropy of `images`."""
        if not self.config.class_weight:
            return self.discriminator(images, labels), None
        logits, classes = self.discriminator(images, labels, classes=True)
        return logits, F.cross_entropy(classes.float(), labels)

    def _discriminate(
        self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[ModelOutput, tuple[torch.Tensor, torch.Tensor | None]]:
        """D's loss on real vs fake, and D's judgement (`_judge`) of the (augmented) fakes."""
        if self.augment is not None:
            real, fake = self.augment(real), self.augment(fake)
        d_real, class_real = self._judge(real, labels)
        d_fake, class_fake = self._judge(fake, labels)
        loss = self.adversarial.discriminator(d_real, d_fake)
        terms: dict[str, torch.Tensor | float] = {
            "d_loss": loss.detach(),
            "d_real": d_real.detach().mean(),
            "d_fake": d_fake.detach().mean(),
        }
        if class_real is not None:
            loss = loss + self.config.class_weight * class_real
            terms["d_class"] = class_real.detach()
        if self.config.gp_weight > 0:
            gp = gradient_penalty(self.discriminator, real, fake, labels)
            loss = loss + self.config.gp_weight * gp
            terms["gp"] = gp.detach()
        if self.augment is not None:
            self.augment.observe(d_real.detach())
            terms["augment_p"] = self.augment.p
        return ModelOutput(loss, terms), (d_fake, class_fake)

    def _generator_loss(self, judged: tuple[torch.Tensor, torch.Tensor | None]) -> ModelOutput:
        d_fake, class_fake = judged
        loss = self.adversarial.generator(d_fake)
        terms = {"g_loss": loss.detach()}
        if class_fake is not None:
            loss = loss + self.config.class_weight * class_fake
            terms["g_class"] = class_fake.detach()
        return ModelOutput(loss, terms)

    def _simultaneous_step(self, batch: Batch, step: int) -> ModelOutput:
        """Both players' losses from one forward; the trainer takes D's gradient for D's
        parameters and G's for G's before either optimiser steps."""
        real, labels = batch.images, self._labels(batch)
        fake = self._generate(real.shape[0], labels, real.device)
        d_out, judged = self._discriminate(real, fake, labels)
        g_out = self._generator_loss(judged)
        return ModelOutput(d_out.loss + g_out.loss, parts={"discriminator": d_out, "generator": g_out})

    def _generator_step(self, batch: Batch, step: int) -> ModelOutput:
        cached, self._fakes = self._fakes, None
        if cached is not None and cached[0] == step and cached[1].requires_grad:
            _, fake, labels = cached
        else:
            labels = self._labels(batch)
            fake = self._generate(batch.images.shape[0], labels, batch.images.device)
        if self.augment is not None:
            fake = self.augment(fake)
        with frozen(self.discriminator):
            return self._generator_loss(self._judge(fake, labels))

    def _sample_labels(self, n: int, labels: torch.Tensor | int | None) -> torch.Tensor | None:
        if not self.conditional:
            return None
        return class_labels(labels, n, self.config.num_classes, next(self.parameters()).device)

    def noise(self, n: int, *, generator: torch.Generator | None = None, **options: Any) -> torch.Tensor:
        """All the randomness `sample` consumes: z ~ N(0, I) and any noise maps, drawn on the CPU
        for seed stability."""
        return torch.randn(n, self.generator.latent_width, generator=generator)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        latents: torch.Tensor | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """`latents` (from `noise`) replace the draw, so a service can batch many requests' noise."""
        z = (self.noise(n, generator=generator) if latents is None else latents).to(
            next(self.parameters()).device
        )
        return self.generator(z, self._sample_labels(n, labels))

    @torch.no_grad()
    def interpolate(
        self, n_steps: int, seed_a: int, seed_b: int, labels: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """Images along the latent path between the noises of two seeds (spherical interpolation)."""
        z = interpolation_latents(self.generator.latent_width, n_steps, seed_a, seed_b)
        device = next(self.parameters()).device
        return self.generator(z.to(device), self._sample_labels(n_steps, 0 if labels is None else labels))


@dataclass
class WGANGPConfig(GANConfig):
    loss: str = "wasserstein"
    init: Literal["torch", "glorot", "normal"] = "torch"
    gp_weight: float = 10.0
    n_critic: int = 5
    d_norm: Literal["none", "batch", "layer"] = "layer"
    d_dropout: float = 0.0
    betas: tuple[float, float] = (0.0, 0.9)


@dataclass
class SNGANConfig(GANConfig):
    loss: str = "hinge"
    init: Literal["torch", "glorot", "normal"] = "torch"
    spectral_norm: bool = True
    d_dropout: float = 0.0
    g_lr: float = 2e-4
    d_lr: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.9)



def discriminator_problems(gp_weight: float, spectral_norm: bool, losses: str) -> list[str]:
    """A GAN discriminator's settings that DP-SGD through Opacus cannot honour (`losses`: the
    family's losses that need no penalty), as private_training_problems lists them."""
    problems = []
    if gp_weight > 0:
        problems.append("model.gp_weight: the gradient penalty differentiates the discriminator twice, "
                        f"which Opacus' per-sample gradients cannot follow; use 0 (loss {losses})")
    if spectral_norm:
        problems.append("model.spectral_norm: spectral norm reparametrises the weights, and Opacus computes "
                        "per-sample gradients of a layer's own parameters only; use false")
    return problems

@MODELS.register("dcgan")
class DCGAN(GAN):
    config_class = GANConfig


@MODELS.register("wgan-gp")
class WGANGP(GAN):
    config_class = WGANGPConfig


@MODELS.register("sngan")
class SNGAN(GAN):
    config_class = SNGANConfig


@MODELS.register("cgan")
class ConditionalGAN(GAN):
    """The conditional DCGAN; it needs classes."""

    config_class = GANConfig

    def __init__(self, config: GANConfig):
        if config.num_classes < 1:
            raise ConfigError(
                "cgan: num_classes must be >= 1 (a labelled dataset); use dcgan for unlabelled data"
            )
        super().__init__(config)
