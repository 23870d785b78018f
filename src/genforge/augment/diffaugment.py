"""DiffAugment (Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training", 2020).

The same policy is applied to real and generated batches inside a GAN step (each batch with its
own draws), and every op is differentiable w.r.t. its input, so the generator's gradient passes
through. Ops follow the paper's reference code; `p` (set by hand or by `AdaController`) is the
per-sample probability of each transform, and samples it skips come back bit-identical.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genforge.augment.config import DiffAugmentConfig
from genforge.augment.draws import box_mask, chosen, integers, uniform
from genforge.augment.registry import DIFF_OPS
from genforge.core.errors import DataError


def _per_sample(x: torch.Tensor, p: float, generator: torch.Generator | None, transformed) -> torch.Tensor:
    """`transformed(draws)` on the samples chosen with probability p, x elsewhere."""
    n = len(x)
    on = chosen(generator, n, p, x.device).view(n, 1, 1, 1)
    return torch.where(on, transformed, x)


@DIFF_OPS.register("color")
def color(x: torch.Tensor, p: float, cfg: DiffAugmentConfig, g: torch.Generator | None) -> torch.Tensor:
    """Brightness (+U[-0.5, 0.5]), saturation (x U[0, 2] about the channel mean), contrast
    (x U[0.5, 1.5] about the image mean), each chosen independently per sample."""
    n = len(x)

    def draw(low: float, high: float) -> torch.Tensor:
        return uniform(g, n, low, high, x.device).view(n, 1, 1, 1).to(x.dtype)

    x = _per_sample(x, p, g, x + draw(-0.5, 0.5))
    mean = x.mean(1, keepdim=True)
    x = _per_sample(x, p, g, (x - mean) * draw(0.0, 2.0) + mean)
    mean = x.mean((1, 2, 3), keepdim=True)
    return _per_sample(x, p, g, (x - mean) * draw(0.5, 1.5) + mean)


@DIFF_OPS.register("translation")
def translation(x: torch.Tensor, p: float, cfg: DiffAugmentConfig, g: torch.Generator | None) -> torch.Tensor:
    """Integer shift by up to `translation_ratio` of each side; pixels shifted in are 0."""
    n, c, h, w = x.shape
    on = chosen(g, n, p, x.device)
    reach_h, reach_w = int(h * cfg.translation_ratio + 0.5), int(w * cfg.translation_ratio + 0.5)
    dy = integers(g, n, -reach_h, reach_h + 1, x.device) * on
    dx = integers(g, n, -reach_w, reach_w + 1, x.device) * on
    # index a 1-pixel zero border for every source pixel outside the image
    padded = F.pad(x, [1, 1, 1, 1])
    rows = (torch.arange(h, device=x.device) + dy[:, None] + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device) + dx[:, None] + 1).clamp(0, w + 1)
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


@DIFF_OPS.register("cutout")
def cutout(x: torch.Tensor, p: float, cfg: DiffAugmentConfig, g: torch.Generator | None) -> torch.Tensor:
    """Zero a square of `cutout_ratio` x each side at an integer offset, clipped at the borders."""
    n, _, h, w = x.shape
    on = chosen(g, n, p, x.device)
    size_h, size_w = int(h * cfg.cutout_ratio + 0.5), int(w * cfg.cutout_ratio + 0.5)
    top = integers(g, n, 0, h + (1 - size_h % 2), x.device) - size_h // 2
    left = integers(g, n, 0, w + (1 - size_w % 2), x.device) - size_w // 2
    mask = box_mask(top.float(), left.float(), size_h, size_w, (h, w)).to(x.dtype)
    return x * torch.where(on.view(n, 1, 1, 1), mask, torch.ones_like(mask))


class DiffAugment:
    """`augment(batch, generator) -> batch` for `config.policy`; `p` may be changed between steps."""

    def __init__(self, config: DiffAugmentConfig):
        self.config = config
        self.p = config.p
        self.ops = [DIFF_OPS.get(name) for name in config.policy]

    @property
    def enabled(self) -> bool:
        return bool(self.ops)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not (x.is_floating_point() and x.ndim == 4):
            raise DataError(f"DiffAugment expects a float (B,C,H,W) batch, got {x.dtype} {tuple(x.shape)}")
        if self.p <= 0:
            return x
        for op in self.ops:
            x = op(x, self.p, self.config, generator)
        return x
