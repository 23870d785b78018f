"""The denoising U-Net: (x_t, t, labels) -> eps or v, with no knowledge of the noise schedule.

Export-friendly: no data-dependent Python control flow, the timestep embedding is tensor ops,
labels are an int64 tensor where index `num_classes` is the reserved "null" class used for
classifier-free guidance. Shapes are fixed at construction: an image size that the patch size
does not divide is zero-padded up to the next multiple and cropped back; a level of odd size
halves to the size rounded up (the stride-2 convolution pads), and the decoder crops each
upsampled map back to its skip's size. So 28 px with 2x2 patches runs at 14 -> 7 -> 4, not at 32.

`patch_size` p > 1 folds each p x p block of pixels into channels before the first convolution
(pixel-unshuffle) and unfolds the output the same way: the network then runs at 1/p the
resolution with p^2 times the input channels, so no convolution is left at full resolution with
few channels, where a CPU convolution is least efficient (see bench/results/diffusion.md).
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


def level_sizes(image_size: int, patch_size: int, levels: int) -> list[int]:
    """Feature-map size per level: the image padded to a multiple of the patch, in patches, then
    halved per level with odd sizes rounding up (what a stride-2, padding-1 convolution gives)."""
    sizes = [-(-image_size // patch_size)]
    for _ in range(levels - 1):
        sizes.append(-(-sizes[-1] // 2))
    return sizes


class GroupNorm(nn.GroupNorm):
    """GroupNorm computed in fp32: under CPU bf16 autocast PyTorch runs it on bf16 input, and on
    channels-last bf16 its kernel is ~7x slower than on fp32 (bench/results/diffusion.md)."""

    def __init__(self, channels: int):
        super().__init__(_groups(channels), channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps).to(x.dtype)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = GroupNorm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = GroupNorm(c_out)
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
        self.norm = GroupNorm(channels)
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
        patch_size: int = 1,
    ):
        super().__init__()
        self.patch = patch_size
        padded = -(-image_size // patch_size) * patch_size
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
        sizes = level_sizes(image_size, patch_size, len(widths))
        # per decoder level: the skip's size when upsampling the level below overshoots it
        self.crops = [s if 2 * -(-s // 2) != s else 0 for s in reversed(sizes)]
        attn = set(attention_resolutions)
        self.conv_in = nn.Conv2d(channels * patch_size**2, base_channels, 3, padding=1)
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
        self.norm_out = GroupNorm(c)
        self.conv_out = nn.Conv2d(c, channels * patch_size**2, 3, padding=1)
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
        h = F.pad(x, self.pad) if any(self.pad) else x
        h = self.conv_in(F.pixel_unshuffle(h, self.patch) if self.patch > 1 else h)
        skips = []
        for level, down in zip(self.down, self.downsample, strict=True):
            h = level(h, emb)
            skips.append(h)
            h = down(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for level, up, skip, crop in zip(self.up, self.upsample, reversed(skips), self.crops, strict=True):
            if not isinstance(up, nn.Identity):
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
                h = up(h[:, :, :crop, :crop] if crop else h)
            h = level(torch.cat([h, skip], dim=1), emb)
        out = self.conv_out(F.silu(self.norm_out(h)))
        if self.patch > 1:
            out = F.pixel_shuffle(out, self.patch)
        if any(self.pad):
            left, _, top, _ = self.pad
            out = out[:, :, top : top + self.image_size, left : left + self.image_size]
        return out
