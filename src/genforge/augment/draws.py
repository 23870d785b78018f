"""Random draws for batch augmentation, taken from an explicit `torch.Generator`.

Numbers are drawn on the generator's device and then moved to the batch's, so a CPU generator
gives the same augmentation whether the batch lives on the CPU or an accelerator.
"""

from __future__ import annotations

import torch


def _device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def uniform(
    generator: torch.Generator | None, n: int, low: float, high: float, device: torch.device
) -> torch.Tensor:
    """n floats uniform in [low, high)."""
    u = torch.rand(n, generator=generator, device=_device(generator))
    return (low + (high - low) * u).to(device)


def chosen(generator: torch.Generator | None, n: int, p: float, device: torch.device) -> torch.Tensor:
    """n booleans, each True with probability p (which samples an op applies to)."""
    return (torch.rand(n, generator=generator, device=_device(generator)) < p).to(device)


def integers(
    generator: torch.Generator | None, n: int, low: int, high: int, device: torch.device
) -> torch.Tensor:
    """n int64 uniform in [low, high)."""
    return torch.randint(low, high, (n,), generator=generator, device=_device(generator)).to(device)


def box_mask(
    top: torch.Tensor, left: torch.Tensor, height: float, width: float, size: tuple[int, int]
) -> torch.Tensor:
    """float (B,1,H,W): 0 inside each sample's box [top, top+height) x [left, left+width)
    (pixel centres, clipped to the image), 1 elsewhere."""
    h, w = size
    rows = torch.arange(h, device=top.device, dtype=torch.float32) + 0.5
    cols = torch.arange(w, device=top.device, dtype=torch.float32) + 0.5
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + height)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + width)
    return (~(in_rows[:, :, None] & in_cols[:, None, :])).unsqueeze(1).float()
