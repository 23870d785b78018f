"""DCGAN-style generator and discriminator, generalised over image size, channels and classes.

The generator is the TensorFlow DCGAN tutorial's (which the seed article means): a bias-free dense
layer to `widths[0]` maps at the start size, a stride-1 5x5 transposed convolution to `widths[1]`,
then stride-2 5x5 transposed convolutions, each but the last followed by a norm (batch norm unless
`norm` names another of nets/norm.py's) and the activation, ending in tanh. With widths
(256, 128, 64) at 28 px that is z -> 7x7x256 -> 7x7x128 -> 14x14x64 -> 28x28xC. The
discriminator is strided 5x5 convolutions with LeakyReLU and dropout, flattened into a linear
logit (no sigmoid: losses take logits).

`noise_stages` k > 0 adds StyleGAN's noise inputs (Karras et al. 2019) to the generator's last k
hidden stages: one N(0, 1) value per pixel, scaled per channel by a learned weight that starts at
`noise_init`, added to the convolution's output before its norm. They give the network a source of
per-pixel variation that the dense layer's z, spread by upsampling, does not: fine detail that
differs from sample to sample. The maps are part of the latent (z's first `latent_dim` values, then
the maps row-major, stage by stage), so a sample stays a function of its latent and a seed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from genforge.core.errors import ConfigError
from genforge.models.nets.conv import check_divisible
from genforge.models.nets.norm import GENERATOR_NORMS, ConditionalNorm2d
from genforge.models.nets.upsample import upsample_conv


def _activation(name: str, leak: float) -> nn.Module:
    # in place: the preceding norm's affine map does not need its output for its backward
    return nn.LeakyReLU(leak, inplace=True) if name == "leaky_relu" else nn.ReLU(inplace=True)


class Dropout(nn.Module):
    """Inverted dropout with its mask drawn as 16-bit random integers (p resolved to 1/65536).

    Same function as `nn.Dropout`, cheaper mask: on CPU `bernoulli_` (what `nn.Dropout` uses)
    draws one engine call per element and took about a tenth of a DCGAN training step. Here every
    64-bit draw of the engine yields four int16 lanes, compared against a threshold (2 threads,
    3.2M elements: int16 draws 6.7 ms, int64 draws viewed as int16 2.1 ms).
    Draws from the global RNG, like `nn.Dropout`, so a trainer's saved RNG state resumes it.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.threshold = round(p * 65536) - 32768

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        n = x.numel()
        # random_(min, None) covers all 64 bits; random_() alone leaves the sign bit 0
        bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
        keep = bits.view(torch.int16)[:n].view(x.shape) >= self.threshold
        # one multiply by a scaled mask: backward is then a single multiply too (4x cheaper than where)
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


class Generator(nn.Module):
    def __init__(
        self,
        latent_dim: int,
        channels: int,
        image_size: int,
        widths: list[int],
        kernel: int = 5,
        activation: str = "relu",
        leak: float = 0.2,
        num_classes: int = 0,
        upsample: str = "transposed",
        class_factors: list[int] | None = None,
        noise_stages: int = 0,
        noise_init: float = 0.1,
        norm: str = "batch",
    ):
        super().__init__()
        if len(widths) < 2:
            raise ConfigError(f"generator widths {widths}: need at least 2 (dense width, first conv width)")
        if not 0 <= noise_stages <= len(widths) - 1:
            raise ConfigError(
                f"generator noise_stages {noise_stages}: expected 0 to {len(widths) - 1} (its hidden stages)"
            )
        self.start = check_divisible(image_size, len(widths) - 1, "generator", min_side=3)
        self.num_classes = num_classes
        self.fc = nn.Linear(latent_dim, widths[0] * self.start**2, bias=False)
        convs = [nn.ConvTranspose2d(widths[0], widths[1], kernel, stride=1, padding=kernel // 2, bias=False)]
        outs = [*widths[2:], channels]
        convs += [
            upsample_conv(upsample, c_in, c_out, kernel, bias=c_out == channels)
            for c_in, c_out in zip(widths[1:], outs, strict=True)
        ]
        self.convs = nn.ModuleList(convs)
        normed = widths[:]  # a norm after the dense layer and after every conv but the last
        if num_classes:
            self.norms = nn.ModuleList(ConditionalNorm2d(w, num_classes, class_factors, norm) for w in normed)
        else:
            self.norms = nn.ModuleList(GENERATOR_NORMS.get(norm)(w, True) for w in normed)
        self.act = _activation(activation, leak)
        self.latent_dim = latent_dim
        # hidden stage i (the output of convs[i]) is start * 2**i pixels a side
        self.noise_first = len(widths) - 1 - noise_stages
        self.noise_sides = [self.start * 2**i for i in range(self.noise_first, len(widths) - 1)]
        self.noise_sizes = [side * side for side in self.noise_sides]  # each map's values in the latent
        self.noise_scales = nn.ParameterList(
            nn.Parameter(torch.full((1, w, 1, 1), float(noise_init))) for w in widths[1 + self.noise_first :]
        )

    @property
    def latent_width(self) -> int:
        """The values one sample's latent holds: z, then every noise map."""
        return self.latent_dim + sum(self.noise_sizes)

    def _norm(self, i: int, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.act(self.norms[i](x, labels) if self.num_classes else self.norms[i](x))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if z.shape[-1] != self.latent_width:
            raise ValueError(f"generator latents: expected {self.latent_width} values per sample, got {z.shape[-1]}")
        maps = z[:, self.latent_dim :].split(self.noise_sizes, 1) if self.noise_sizes else ()
        x = self.fc(z[:, : self.latent_dim]).view(z.shape[0], -1, self.start, self.start)
        x = self._norm(0, x, labels)
        for i, conv in enumerate(self.convs[:-1]):
            x = conv(x)
            if i >= self.noise_first:
                k = i - self.noise_first
                side = self.noise_sides[k]
                x = x + self.noise_scales[k] * maps[k].unflatten(1, (1, side, side)).to(x.dtype)
            x = self._norm(i + 1, x, labels)
        return torch.tanh(self.convs[-1](x))


class Discriminator(nn.Module):
    """Strided convolutions -> flatten -> linear logit; with classes, a projection term
    <embed(y), features> is added to the logit (Miyato & Koyama 2018)."""

    def __init__(
        self,
        channels: int,
        image_size: int,
        widths: list[int],
        kernel: int = 5,
        leak: float = 0.2,
        dropout: float = 0.3,
        norm: str = "none",
        spectral: bool = False,
        num_classes: int = 0,
        local_stage: int = 0,  # 0 (none) or 1..len(widths), checked by GANConfig.d_local
    ):
        super().__init__()
        wrap = spectral_norm if spectral else (lambda m: m)
        layers: list[nn.Module] = []
        c_in, size = channels, image_size
        self.local_end = 0  # layers of `features` up to the local stage's output
        for i, w in enumerate(widths):
            layers.append(wrap(nn.Conv2d(c_in, w, kernel, stride=2, padding=kernel // 2)))
            # never normalise the first layer's output (DCGAN); "layer" is the critic-safe choice
            # for gradient penalties, which batch statistics would couple across samples
            if i > 0 and norm == "batch":
                layers.append(nn.BatchNorm2d(w))
            elif i > 0 and norm == "layer":
                layers.append(nn.GroupNorm(1, w))
            layers.append(nn.LeakyReLU(leak, inplace=True))
            if dropout > 0:
                layers.append(Dropout(dropout))
            c_in, size = w, (size + 1) // 2
            if i + 1 == local_stage:
                self.local_end = len(layers)
        self.features = nn.Sequential(*layers)
        # a PatchGAN-style head: one real/fake logit per position of that stage's feature map,
        # each judging the patch its receptive field covers (the fine texture a global logit
        # over the last, coarsest map weighs little)
        self.local = wrap(nn.Conv2d(widths[local_stage - 1], 1, 1)) if local_stage else None
        n_features = c_in * size * size
        self.head = wrap(nn.Linear(n_features, 1))
        self.embed = wrap(nn.Embedding(num_classes, n_features)) if num_classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, classes: bool = False) -> Any:
        """Real/fake logits (n,); with `classes`, also class logits (n, num_classes): the
        features against every row of the projection table (its rows read as class prototypes).
        With a local head the logits are (n, 2P): the global logit repeated P times beside the P
        patch logits, so that a loss's mean over them weighs the two halves equally."""
        patches = None
        if self.local is None:
            h = self.features(x)
        else:
            h = self.features[: self.local_end](x)
            patches = self.local(h).flatten(1)
            h = self.features[self.local_end :](h)
        h = h.flatten(1)
        logits = self.head(h).squeeze(1)
        if self.embed is not None:
            logits = logits + (self.embed(labels) * h).sum(1)
        if patches is not None:
            logits = torch.cat([logits[:, None].expand_as(patches), patches], 1)
        if classes:
            if self.embed is None:
                raise ValueError("class logits need a conditional discriminator (num_classes > 0)")
            return logits, h @ self.embed.weight.t()
        return logits
