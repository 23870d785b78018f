"""Variational autoencoders: `vae`, `beta-vae` (beta = 4 by default) and `cvae` (class-conditional).

Conv encoder -> (mu, log-variance) of a diagonal Gaussian posterior, reparameterised sample,
conv decoder -> the parameters of the likelihood: Bernoulli logits (binary cross-entropy on
images mapped to [0, 1], the usual choice for MNIST-like data) or a Gaussian mean with a fixed or
learned global sigma (Rybkin et al. 2021). "auto" picks Bernoulli for 1 channel, Gaussian for 3.
The loss is the negative ELBO with the KL term weighted by `beta`, both summed over pixels/latents
and averaged over the batch; `sample` returns the decoder's mean image for prior draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genforge.core.errors import ConfigError, GenforgeError
from genforge.core.registry import Registry
from genforge.models.base import Batch, GenerativeModel, ModelOutput, OptimizerSpec, Phase
from genforge.models.nets.conv import ConvDecoder, ConvEncoder, stage_widths
from genforge.models.nets.latent import class_labels, interpolation_latents
from genforge.models.registry import MODELS


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample, summed over latent dimensions."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(1)


@dataclass(frozen=True)
class Likelihood:
    nll: Callable[
        [torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor
    ]  # (out, x, log_sigma) -> per sample
    mean: Callable[[torch.Tensor], torch.Tensor]  # decoder output -> image in [-1, 1]


def _bernoulli_nll(out: torch.Tensor, x: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    target = (x + 1.0) * 0.5
    return F.binary_cross_entropy_with_logits(out, target, reduction="none").flatten(1).sum(1)


def _gaussian_nll(out: torch.Tensor, x: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    z = (x - out) * torch.exp(-log_sigma)
    return (0.5 * z.square() + log_sigma + 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


LIKELIHOODS: Registry[Likelihood] = Registry("likelihood")
LIKELIHOODS.register("bernoulli", Likelihood(_bernoulli_nll, lambda out: torch.sigmoid(out) * 2.0 - 1.0))
LIKELIHOODS.register("gaussian", Likelihood(_gaussian_nll, lambda out: out.clamp(-1.0, 1.0)))


@dataclass
class VAEConfig:
    image_size: int = 28
    channels: int = 1
    num_classes: int = 0  # used by cvae only
    latent_dim: int = 16
    widths: list[int] = field(default_factory=lambda: [32, 64])  # one stride-2 stage each
    beta: float = 1.0
    likelihood: Literal["auto", "bernoulli", "gaussian"] = "auto"
    variance: Literal["learned", "fixed"] = "learned"  # Gaussian likelihood's global sigma
    sigma: float = 0.1  # fixed value, or initial value when learned (in [-1, 1] pixel units)
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        if self.latent_dim < 1 or not self.widths or self.beta < 0 or self.sigma <= 0 or self.num_classes < 0:
            raise ConfigError(
                "vae: latent_dim >= 1, widths non-empty, beta >= 0, sigma > 0, num_classes >= 0 expected"
            )

    @property
    def likelihood_name(self) -> str:
        if self.likelihood != "auto":
            return self.likelihood
        return "bernoulli" if self.channels == 1 else "gaussian"


@dataclass
class BetaVAEConfig(VAEConfig):
    beta: float = 4.0


class LikelihoodScale(nn.Module):
    """The Gaussian likelihood's global log sigma (a module so a phase can name it)."""

    def __init__(self, sigma: float, learned: bool):
        super().__init__()
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)), requires_grad=learned)


class VAE(GenerativeModel):
    family = "vae"
    config_class = VAEConfig
    ema_modules = ("decoder",)
    uses_labels = False
    # DP-SGD needs every trained parameter inside a layer's forward; a learned sigma is not
    private_defaults = {"variance": "fixed"}

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        c = config
        self.conditional = self.uses_labels
        if self.conditional and c.num_classes < 1:
            raise ConfigError(f"{type(self).__name__}: num_classes must be >= 1 (a labelled dataset)")
        n_cond = c.num_classes if self.conditional else 0
        self.encoder = ConvEncoder(c.channels, c.image_size, c.widths, 2 * c.latent_dim, extra=n_cond)
        self.decoder = ConvDecoder(c.latent_dim + n_cond, c.channels, c.image_size, c.widths)
        self.scale = LikelihoodScale(c.sigma, c.variance == "learned")
        self.likelihood = LIKELIHOODS.get(c.likelihood_name)

    @classmethod
    def default_config(cls, image_size: int, channels: int, num_classes: int = 0, **overrides: Any) -> Any:
        sizes = {"widths": stage_widths(image_size, 32, 256), "latent_dim": 16 if channels == 1 else 64}
        return super().default_config(image_size, channels, num_classes, **{**sizes, **overrides})

    def phases(self) -> list[Phase]:
        return [
            Phase(
                "main",
                ["encoder", "decoder", "scale"],
                OptimizerSpec("adam", self.config.lr, self.config.betas),
            )
        ]

    def private_training_problems(self) -> list[str]:
        if self.scale.log_sigma.requires_grad:
            return ["model.variance: a learned likelihood sigma is a parameter used outside any layer's "
                    "forward, which Opacus cannot give per-sample gradients; use fixed"]
        return []

    def _condition(self, labels: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor | None:
        if not self.conditional:
            return None
        k = self.config.num_classes
        return F.one_hot(class_labels(labels, n, k, device), k).float()

    def encode(
        self, images: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y = self._condition(labels, images.shape[0], images.device)
        mu, logvar = self.encoder(images, y).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Raw decoder output: Bernoulli logits or Gaussian means."""
        y = self._condition(labels, z.shape[0], z.device)
        return self.decoder(z if y is None else torch.cat([z, y], 1))

    def training_step(self, phase: str, batch: Batch, step: int) -> ModelOutput:
        if self.conditional and batch.labels is None:
            raise GenforgeError(f"{type(self).__name__} is class-conditional but the batch has no labels")
        x = batch.images
        mu, logvar = self.encode(x, batch.labels)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        recon = self.likelihood.nll(self.decode(z, batch.labels), x, self.scale.log_sigma).mean()
        kl = kl_normal(mu, logvar).mean()
        loss = recon + self.config.beta * kl
        terms: dict[str, torch.Tensor | float] = {
            "recon": recon.detach(),
            "kl": kl.detach(),
            "elbo": -(recon + kl).detach(),
        }
        if self.likelihood is LIKELIHOODS.get("gaussian"):
            terms["sigma"] = self.scale.log_sigma.detach().exp()
        return ModelOutput(loss, terms)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decoded posterior means, in [-1, 1]."""
        mu, _ = self.encode(images, labels)
        return self.likelihood.mean(self.decode(mu, labels))

    def noise(self, n: int, *, generator: torch.Generator | None = None, **options: Any) -> torch.Tensor:
        """All the randomness `sample` consumes: z ~ N(0, I), drawn on the CPU for seed stability."""
        return torch.randn(n, self.config.latent_dim, generator=generator)

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
        return self.likelihood.mean(self.decode(z, labels))

    @torch.no_grad()
    def interpolate(
        self, n_steps: int, seed_a: int, seed_b: int, labels: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """Decoded images along the spherical path between the prior draws of two seeds."""
        device = next(self.parameters()).device
        z = interpolation_latents(self.config.latent_dim, n_steps, seed_a, seed_b).to(device)
        return self.likelihood.mean(self.decode(z, 0 if labels is None and self.conditional else labels))


MODELS.register("vae", VAE)


@MODELS.register("beta-vae")
class BetaVAE(VAE):
    config_class = BetaVAEConfig


@MODELS.register("cvae")
class ConditionalVAE(VAE):
    uses_labels = True
