"""Convolutional encoders, decoders and a small U-Net for the autoencoding families (VAE, DAE),
and the per-image-size width rule that every conv family shares."""

from __future__ import annotations

import math

import torch
from torch import nn

from genforge.core.errors import ConfigError


def stages(image_size: int) -> int:
    """Stride-2 stages down to a 4..8 px map (28 -> 2 stages to 7 px, 32 -> 3 to 4 px, 64 -> 4 to 4 px)."""
    k = 0
    while image_size % 2 ** (k + 1) == 0 and image_size // 2 ** (k + 1) >= 4 and k < 4:
        k += 1
    if k == 0:
        raise ConfigError(f"image_size {image_size}: the conv models need an even size >= 8")
    return k


def stage_widths(image_size: int, base: int, cap: int, extra: int = 0) -> list[int]:
    """Widths from the full-resolution stage down, doubling per stage from `base` up to `cap`."""
    return [min(cap, base * 2**i) for i in range(stages(image_size) + extra)]


def check_divisible(image_size: int, n_stages: int, where: str, min_side: int = 2) -> int:
    """Side of the smallest map after n_stages halvings of image_size; a ConfigError when not exact."""
    side, rest = divmod(image_size, 2**n_stages)
    if rest or side < min_side:
        raise ConfigError(
            f"{where}: image_size {image_size} must be a multiple of 2**{n_stages} (one halving per width) "
            f"leaving at least {min_side} px; use fewer widths or another image size"
        )
    return side


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


def conv_block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 (stride 1) or 4x4 (stride 2, exact halving) conv -> GroupNorm -> SiLU."""
    kernel, pad = (4, 1) if stride == 2 else (3, 1)
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, pad),
        nn.GroupNorm(_groups(c_out), c_out),
        nn.SiLU(inplace=True),
    )


def up_block(c_in: int, c_out: int) -> nn.Sequential:
    """4x4 stride-2 transposed conv (exact doubling) -> GroupNorm -> SiLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.GroupNorm(_groups(c_out), c_out), nn.SiLU(inplace=True)
    )


class ConvEncoder(nn.Module):
    """Image -> `out_dim` vector: one stride-2 block per width, flatten, linear; `extra` features
    (e.g. a one-hot class) join before the linear head."""

    def __init__(self, channels: int, image_size: int, widths: list[int], out_dim: int, extra: int = 0):
        super().__init__()
        side = check_divisible(image_size, len(widths), "encoder")
        ins = [channels, *widths[:-1]]
        self.blocks = nn.Sequential(*(conv_block(a, b, stride=2) for a, b in zip(ins, widths, strict=True)))
        self.head = nn.Linear(widths[-1] * side * side + extra, out_dim)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        h = self.blocks(x).flatten(1)
        return self.head(h if extra is None else torch.cat([h, extra], 1))


class ConvDecoder(nn.Module):
    """Vector -> image-shaped output (logits or means, no final activation): the mirror of ConvEncoder."""

    def __init__(self, in_dim: int, channels: int, image_size: int, widths: list[int]):
        super().__init__()
        self.side = check_divisible(image_size, len(widths), "decoder")
        rev = widths[::-1]
        self.fc = nn.Linear(in_dim, rev[0] * self.side * self.side)
        self.blocks = nn.Sequential(*(up_block(a, b) for a, b in zip(rev, [*rev[1:], rev[-1]], strict=True)))
        self.out = nn.Conv2d(rev[-1], channels, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.silu(self.fc(z)).view(z.shape[0], -1, self.side, self.side)
        return self.out(self.blocks(h))


class UNet(nn.Module):
    """Small U-Net: a stem, one stride-2 block per width after the first, mirrored upsampling with
    skip concatenations. Predicts a residual that is added to its input (restoration is mostly
    an identity map)."""

    def __init__(self, channels: int, image_size: int, widths: list[int]):
        super().__init__()
        if len(widths) < 2:
            raise ConfigError(f"dae.widths {widths}: need at least 2 (stem width, one downsampling width)")
        check_divisible(image_size, len(widths) - 1, "dae")
        self.stem = conv_block(channels, widths[0])
        self.downs = nn.ModuleList(
            conv_block(a, b, stride=2) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.ups = nn.ModuleList(up_block(b, a) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.merges = nn.ModuleList(conv_block(2 * a, a) for a in widths[:-1])
        self.out = nn.Conv2d(widths[0], channels, 3, 1, 1)
        nn.init.zeros_(self.out.weight)  # start as the identity map
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        h = skips.pop()
        for up, merge in zip(reversed(self.ups), reversed(self.merges), strict=True):
            h = merge(torch.cat([up(h), skips.pop()], 1))
        return x + self.out(h)
