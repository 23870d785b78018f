"""The denoising U-Net: (x_t, t, labels) -> eps or v, with no knowledge of the noise schedule.

Export-friendly: no data-dependent Python control flow, the timestep embedding is tensor ops,
labels are an int64 tensor where index `num_classes` is the reserved "null" class used for
classifier-free guidance. Sizes that the downsampling does not divide are zero-padded up to the
next multiple inside the network and cropped back, with amounts fixed at construction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (Vaswani et al.) of integer or float timesteps (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, dtype=torch.float32, device=t.device) * (-math.log(max_period) / half)
    )
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: stable early training
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the pixels of a (small) feature map."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.scale = channels**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        attn = torch.softmax(torch.bmm(q.transpose(1, 2), k) * self.scale, dim=-1)  # (b, hw, hw)
        y = torch.bmm(v, attn.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.out(y)


class Level(nn.Module):
    """Residual blocks at one resolution, with optional attention after each."""

    def __init__(self, c_in: int, c_out: int, n_blocks: int, emb_dim: int, attention: bool, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResBlock(c_in if i == 0 else c_out, c_out, emb_dim, dropout) for i in range(n_blocks)
        )
        self.attn = nn.ModuleList(Attention(c_out) if attention else nn.Identity() for _ in range(n_blocks))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for block, attn in zip(self.blocks, self.attn, strict=True):
            x = attn(block(x, emb))
        return x


class UNet(nn.Module):
    """Encoder-decoder with one skip per resolution level.

    `channel_mults[i]` sets the width of level i; each level after the first halves the
    resolution. `attention_resolutions` lists feature-map sizes (pixels) that get self-attention.
    """

    def __init__(
        self,
        image_size: int,
        channels: int,
        base_channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention_resolutions: tuple[int, ...] = (),
        num_classes: int = 0,
        dropout: float = 0.0,
    ):
        super().__init__()
        factor = 2 ** (len(channel_mults) - 1)
        padded = -(-image_size // factor) * factor
        extra = padded - image_size
        self.pad = (
            extra // 2,
            extra - extra // 2,
            extra // 2,
            extra - extra // 2,
        )  # left, right, top, bottom
        self.image_size = image_size
        self.num_classes = num_classes
        emb_dim = 4 * base_channels
        self.emb_in = base_channels
        self.time_mlp = nn.Sequential(
            nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        # one extra row: the "null" class, i.e. no label (classifier-free guidance)
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None
        widths = [base_channels * m for m in channel_mults]
        sizes = [padded // 2**i for i in range(len(widths))]
        attn = set(attention_resolutions)
        self.conv_in = nn.Conv2d(channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c = base_channels
        for i, (w, s) in enumerate(zip(widths, sizes, strict=True)):
            self.down.append(Level(c, w, num_res_blocks, emb_dim, s in attn, dropout))
            last = i == len(widths) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(w, w, 3, stride=2, padding=1))
            c = w
        mid_attn = Attention(c) if sizes[-1] in attn else nn.Identity()
        self.mid = nn.ModuleList(
            [ResBlock(c, c, emb_dim, dropout), mid_attn, ResBlock(c, c, emb_dim, dropout)]
        )
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(widths))):
            w, s = widths[i], sizes[i]
            first = i == len(widths) - 1
            # the conv after nearest upsampling also narrows to this level's width: at the
            # higher resolution a conv at the lower level's width would cost 4x more
            self.upsample.append(nn.Identity() if first else nn.Conv2d(c, w, 3, padding=1))
            self.up.append(Level(c + w if first else 2 * w, w, num_res_blocks, emb_dim, s in attn, dropout))
            c = w
        self.norm_out = nn.GroupNorm(_groups(c), c)
        self.conv_out = nn.Conv2d(c, channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def embed(self, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.emb_in))
        if self.label_emb is not None:
            if labels is None:
                labels = torch.full_like(t, self.num_classes, dtype=torch.long)
            emb = emb + self.label_emb(labels)
        return emb

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(t, labels)
        h = self.conv_in(F.pad(x, self.pad) if any(self.pad) else x)
        skips = []
        for level, down in zip(self.down, self.downsample, strict=True):
            h = level(h, emb)
            skips.append(h)
            h = down(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for level, up, skip in zip(self.up, self.upsample, reversed(skips), strict=True):
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
            h = level(torch.cat([h, skip], dim=1), emb)
        out = self.conv_out(F.silu(self.norm_out(h)))
        if any(self.pad):
            left, _, top, _ = self.pad
            out = out[:, :, top : top + self.image_size, left : left + self.image_size]
        return out
