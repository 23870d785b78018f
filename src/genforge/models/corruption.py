"""Seeded image corruptions for training and demonstrating restoration models.

Images are float (B, C, H, W) in [-1, 1]. Each corruption is registered in `CORRUPTIONS`; a config
lists one or more kinds and, with several, every image gets one kind drawn uniformly (a mixture).
All randomness comes from the `torch.Generator` passed in (or the global RNG when none is), so the
same seed gives the same corrupted batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from genforge.core.errors import ConfigError
from genforge.core.registry import Registry


@dataclass
class CorruptionConfig:
    kinds: list[str] = field(default_factory=lambda: ["gaussian"])  # CORRUPTIONS names
    sigma: float = 0.2  # Gaussian noise std in [0, 1] pixel units (so 0.2 = 51 grey levels)
    amount: float = 0.1  # salt-and-pepper: fraction of pixels set to black or white
    rectangles: int = 1  # inpainting holes per image
    rect_size: tuple[float, float] = (0.2, 0.5)  # hole side as a fraction of the image side (low, high)
    strokes: int = 2  # free-form brush strokes per image
    stroke_vertices: int = 4  # points per stroke polyline
    stroke_width: float = 0.1  # brush width as a fraction of the image side
    fill: float = 0.0  # value of masked pixels, in [-1, 1] (0 = mid grey)

    def __post_init__(self) -> None:
        if not self.kinds:
            raise ConfigError("corruption.kinds: list at least one of " + ", ".join(CORRUPTIONS.names()))
        for kind in self.kinds:
            CORRUPTIONS.get(kind)
        if self.sigma < 0 or not 0 <= self.amount <= 1 or not -1 <= self.fill <= 1:
            raise ConfigError("corruption: sigma must be >= 0, amount in [0, 1], fill in [-1, 1]")
        lo, hi = self.rect_size
        if not 0 < lo <= hi <= 1:
            raise ConfigError(
                f"corruption.rect_size: expected 0 < low <= high <= 1, got {list(self.rect_size)}"
            )
        if self.rectangles < 1 or self.strokes < 1 or self.stroke_vertices < 2 or self.stroke_width <= 0:
            raise ConfigError("corruption: rectangles, strokes >= 1, stroke_vertices >= 2, stroke_width > 0")


Corruption = Callable[[torch.Tensor, CorruptionConfig, "torch.Generator | None"], torch.Tensor]
CORRUPTIONS: Registry[Corruption] = Registry("corruption")


def _rand(shape: tuple[int, ...], g: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    # drawn on the CPU so a seed gives the same corruption on every device
    return torch.rand(shape, generator=g).to(like.device, like.dtype)


@CORRUPTIONS.register("gaussian")
def gaussian_noise(x: torch.Tensor, cfg: CorruptionConfig, g: torch.Generator | None) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=g).to(x.device, x.dtype)
    return (x + 2.0 * cfg.sigma * noise).clamp(-1, 1)


@CORRUPTIONS.register("salt_pepper")
def salt_and_pepper(x: torch.Tensor, cfg: CorruptionConfig, g: torch.Generator | None) -> torch.Tensor:
    b, _, h, w = x.shape
    hit = _rand((b, 1, h, w), g, x) < cfg.amount  # whole pixels, all channels
    value = torch.where(_rand((b, 1, h, w), g, x) < 0.5, -1.0, 1.0).to(x.dtype)
    return torch.where(hit, value, x)


def _grid(h: int, w: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in [0, 1], shapes (H, 1) and (1, W)."""
    ys = (torch.arange(h, device=like.device, dtype=like.dtype) + 0.5) / h
    xs = (torch.arange(w, device=like.device, dtype=like.dtype) + 0.5) / w
    return ys[:, None], xs[None, :]


def rectangle_mask(
    shape: tuple[int, ...], cfg: CorruptionConfig, g: torch.Generator | None, like: torch.Tensor
):
    """bool (B, 1, H, W): True inside `cfg.rectangles` random holes per image."""
    b, _, h, w = shape
    lo, hi = cfg.rect_size
    size = lo + (hi - lo) * _rand((b, cfg.rectangles, 2), g, like)  # (height, width) fractions
    corner = _rand((b, cfg.rectangles, 2), g, like) * (1 - size)
    ys, xs = _grid(h, w, like)
    y0, x0 = corner[..., 0, None, None], corner[..., 1, None, None]
    inside = (
        (ys >= y0) & (ys < y0 + size[..., 0, None, None]) & (xs >= x0) & (xs < x0 + size[..., 1, None, None])
    )
    return inside.any(1, keepdim=True)


def stroke_mask(shape: tuple[int, ...], cfg: CorruptionConfig, g: torch.Generator | None, like: torch.Tensor):
    """bool (B, 1, H, W): True under `cfg.strokes` random-walk polylines per image (free-form masks)."""
    b, _, h, w = shape
    s, v = cfg.strokes, cfg.stroke_vertices
    start = _rand((b, s, 1, 2), g, like)
    angle = _rand((b, s, v - 1), g, like) * 2 * math.pi
    length = 0.1 + 0.25 * _rand((b, s, v - 1), g, like)
    steps = torch.stack([torch.sin(angle), torch.cos(angle)], -1) * length[..., None]
    points = (start + torch.cumsum(torch.cat([torch.zeros_like(start), steps], 2), 2)).clamp(0, 1)
    a, d = points[:, :, :-1], points[:, :, 1:] - points[:, :, :-1]  # segments a + t d, (B, S, V-1, 2)
    ys, xs = _grid(h, w, like)
    py, px = ys - a[..., 0, None, None], xs - a[..., 1, None, None]  # (B, S, V-1, H, W)
    dy, dx = d[..., 0, None, None], d[..., 1, None, None]
    t = ((py * dy + px * dx) / (dy * dy + dx * dx).clamp_min(1e-12)).clamp(0, 1)
    dist2 = (py - t * dy) ** 2 + (px - t * dx) ** 2
    return (dist2 <= (cfg.stroke_width / 2) ** 2).flatten(1, 2).any(1, keepdim=True)


def _masked(mask_fn: Callable) -> Corruption:
    def corrupt(x: torch.Tensor, cfg: CorruptionConfig, g: torch.Generator | None) -> torch.Tensor:
        return torch.where(mask_fn(x.shape, cfg, g, x), torch.full_like(x, cfg.fill), x)

    return corrupt


CORRUPTIONS.register("rectangles", _masked(rectangle_mask))
CORRUPTIONS.register("strokes", _masked(stroke_mask))


def corrupt(
    images: torch.Tensor, cfg: CorruptionConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Corrupt a batch; with several kinds each image gets one, drawn uniformly."""
    if len(cfg.kinds) == 1:
        return CORRUPTIONS.get(cfg.kinds[0])(images, cfg, generator)
    choice = torch.randint(len(cfg.kinds), (images.shape[0],), generator=generator).to(images.device)
    out = images.clone()
    for i, kind in enumerate(cfg.kinds):
        sel = choice == i
        if bool(sel.any()):
            out[sel] = CORRUPTIONS.get(kind)(images[sel], cfg, generator)
    return out
