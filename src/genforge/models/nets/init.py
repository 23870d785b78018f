"""Weight initialisation schemes for the convolutional GANs.

`torch` leaves PyTorch's defaults (Kaiming-uniform with a = sqrt(5): weights up to 1/sqrt(fan_in)).
`glorot` is Keras' default (Glorot-uniform weights, zero biases), which the TensorFlow DCGAN
tutorial, and so the seed article, trains with; `normal` is the DCGAN paper's N(0, 0.02).
The article's DCGAN collapses to a single pattern within a few hundred steps on MNIST from
PyTorch's defaults and does not from either of the others (bench/results/quality.md).
"""

from __future__ import annotations

from typing import Literal

from torch import nn
from torch.nn.utils import parametrize

Scheme = Literal["torch", "glorot", "normal"]
LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def initialise(module: nn.Module, scheme: Scheme) -> None:
    """Re-initialise every conv/linear weight (zero biases) of `module` by `scheme`, in place."""
    if scheme == "torch":
        return
    for m in module.modules():
        if not isinstance(m, LAYERS):
            continue
        # spectrally normalised layers keep the raw weight as the parametrization's original
        weight = m.parametrizations.weight.original if parametrize.is_parametrized(m, "weight") else m.weight
        if scheme == "glorot":
            nn.init.xavier_uniform_(weight)
        else:
            nn.init.normal_(weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
