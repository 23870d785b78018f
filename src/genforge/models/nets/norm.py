"""Normalisation layers for generators, class-conditional or not.

`GENERATOR_NORMS` names what a generator normalises its hidden maps with (GANConfig.g_norm):
- batch: batch norm (DCGAN, SNGAN, BigGAN). Training normalises with the batch's statistics,
  sampling with running averages of them, which the live weights wrote over the last ~10 batches
  (momentum 0.1): a sample depends on those, and under an EMA of the weights they come from other
  weights than the ones sampled.
- layer: each sample's map normalised over (channels, height, width): no batch statistics, the
  same function in training and sampling.
- pixel: each position's channel vector scaled to unit RMS (Karras et al. 2018, ProGAN's
  generator): per sample and per position.
Each is followed by a learnt per-channel scale and shift (per class when conditional).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from genforge.core.registry import Registry


class PixelNorm(nn.Module):
    """x / RMS over channels at each position; with `channels`, then a learnt scale and shift."""

    def __init__(self, channels: int = 0, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels)) if channels else None
        self.bias = nn.Parameter(torch.zeros(channels)) if channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + self.eps)
        if self.weight is None:
            return y
        return y * self.weight[:, None, None] + self.bias[:, None, None]


# name -> factory(channels, affine): the norm over a (n, channels, h, w) map, with or without
# its own per-channel scale and shift (a conditional norm looks them up per class instead)
NormFactory = Callable[[int, bool], nn.Module]


def _check_norm(name: str, factory: NormFactory) -> None:
    out = factory(2, True)(torch.randn(3, 2, 4, 4))
    if out.shape != (3, 2, 4, 4):
        raise ValueError(f"generator norm {name!r}: maps (3, 2, 4, 4) to {tuple(out.shape)}")


GENERATOR_NORMS: Registry[NormFactory] = Registry("generator norm", _check_norm)
GENERATOR_NORMS.register("batch", lambda c, affine: nn.BatchNorm2d(c, affine=affine))
GENERATOR_NORMS.register("layer", lambda c, affine: nn.GroupNorm(1, c, affine=affine))
GENERATOR_NORMS.register("pixel", lambda c, affine: PixelNorm(c if affine else 0))


def factor_indices(labels: torch.Tensor, factors: list[int]) -> list[torch.Tensor]:
    """The mixed-radix digits of joint class ids: with factors [A, B], class a * B + b -> [a, b]."""
    out, rest = [], labels
    for f in reversed(factors):
        out.append(rest % f)
        rest = rest // f
    return out[::-1]


class ConditionalNorm2d(nn.Module):
    """A norm (batch by default) whose scale and shift are looked up per class (de Vries et al.
    2017; Miyato & Koyama 2018).

    Starts as the identity affine map for every class, so a conditional generator begins
    exactly like its unconditional counterpart.

    `factors` (their product = num_classes) reads a class id as a tuple, e.g. (digit, speaker)
    for class digit * speakers + speaker, and adds one table per factor to the class's own: the
    scale for (3, anna) is gain[(3, anna)] + gain_0[3] + gain_1[anna]. What the classes of one
    speaker share is then learnt from all of them, where a table per class learns each (digit,
    speaker) pair from its own examples only. The factor tables start at zero, so the layer
    starts exactly as without them.
    """

    def __init__(self, num_features: int, num_classes: int, factors: list[int] | None = None, norm: str = "batch"):
        super().__init__()
        # named `bn` whatever the norm: the checkpoints' key for its running statistics
        self.bn = GENERATOR_NORMS.get(norm)(num_features, False)
        self.gain = nn.Embedding(num_classes, num_features)
        self.bias = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)
        self.factors = list(factors or [])
        self.factor_gains = nn.ModuleList(nn.Embedding(f, num_features) for f in self.factors)
        self.factor_biases = nn.ModuleList(nn.Embedding(f, num_features) for f in self.factors)
        for table in [*self.factor_gains, *self.factor_biases]:
            nn.init.zeros_(table.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        gain, bias = self.gain(labels), self.bias(labels)
        if self.factors:
            for i, g, b in zip(factor_indices(labels, self.factors), self.factor_gains, self.factor_biases, strict=True):
                gain, bias = gain + g(i), bias + b(i)
        return self.bn(x) * gain[:, :, None, None] + bias[:, :, None, None]
