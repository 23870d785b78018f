"""Normalisation layers for class-conditional generators."""

from __future__ import annotations

import torch
from torch import nn


def factor_indices(labels: torch.Tensor, factors: list[int]) -> list[torch.Tensor]:
    """The mixed-radix digits of joint class ids: with factors [A, B], class a * B + b -> [a, b]."""
    out, rest = [], labels
    for f in reversed(factors):
        out.append(rest % f)
        rest = rest // f
    return out[::-1]


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift are looked up per class (de Vries et al. 2017; Miyato & Koyama 2018).

    Starts as the identity affine map for every class, so a conditional generator begins
    exactly like its unconditional counterpart.

    `factors` (their product = num_classes) reads a class id as a tuple, e.g. (digit, speaker)
    for class digit * speakers + speaker, and adds one table per factor to the class's own: the
    scale for (3, anna) is gain[(3, anna)] + gain_0[3] + gain_1[anna]. What the classes of one
    speaker share is then learnt from all of them, where a table per class learns each (digit,
    speaker) pair from its own examples only. The factor tables start at zero, so the layer
    starts exactly as without them.
    """

    def __init__(self, num_features: int, num_classes: int, factors: list[int] | None = None):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
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
