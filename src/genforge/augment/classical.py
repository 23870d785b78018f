"""Classical augmentation of float (B,C,H,W) batches in [-1, 1], vectorised over the batch.

Geometric ops (flips, random resized crop, rotation, translation) each contribute a per-sample
affine matrix; their product is applied with one `affine_grid` + `grid_sample` over the samples
that moved. Colour jitter and cutout act on pixels. Every draw comes from the caller's generator.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from genforge.augment.config import (
    AugmentConfig,
    ColorConfig,
    CropConfig,
    CutoutConfig,
    FlipConfig,
    RotateConfig,
    TranslateConfig,
)
from genforge.augment.draws import box_mask, chosen, uniform
from genforge.augment.registry import CLASSICAL_OPS, GeometricOp, PixelOp
from genforge.core.errors import DataError

CPU = torch.device("cpu")
# ITU-R 601 luma, as torchvision's grayscale
LUMA = (0.299, 0.587, 0.114)
RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
YIQ_TO_RGB = torch.linalg.inv(RGB_TO_YIQ)


def _affine(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor, tx, ty) -> torch.Tensor:
    """(B,3,3) matrices [[a, b, tx], [c, d, ty], [0, 0, 1]]."""
    m = torch.zeros(len(a), 3, 3)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = a, b, tx
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = c, d, ty
    m[:, 2, 2] = 1.0
    return m


def _flip_matrices(axis: int):
    def matrices(cfg: FlipConfig, n: int, size: tuple[int, int], g: torch.Generator | None) -> torch.Tensor:
        sign = 1.0 - 2.0 * chosen(g, n, cfg.p, CPU).float()
        m = torch.eye(3).repeat(n, 1, 1)
        m[:, axis, axis] = sign
        return m

    return matrices


def _crop_matrices(cfg: CropConfig, n: int, size: tuple[int, int], g: torch.Generator | None) -> torch.Tensor:
    on = chosen(g, n, cfg.p, CPU)
    area = uniform(g, n, *cfg.scale, CPU)
    log_ratio = uniform(g, n, math.log(cfg.ratio[0]), math.log(cfg.ratio[1]), CPU)
    # crop width and height as fractions of the image's: w * h = area, and in pixels width / height = ratio
    ratio = log_ratio.exp() * size[0] / size[1]
    w = torch.sqrt(area * ratio).clamp(max=1.0)
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1 - w) * uniform(g, n, -1.0, 1.0, CPU)
    cy = (1 - h) * uniform(g, n, -1.0, 1.0, CPU)
    one, zero = torch.ones(n), torch.zeros(n)
    w, h, cx, cy = (torch.where(on, v, base) for v, base in ((w, one), (h, one), (cx, zero), (cy, zero)))
    return _affine(w, zero, zero, h, cx, cy)


def _rotate_matrices(
    cfg: RotateConfig, n: int, size: tuple[int, int], g: torch.Generator | None
) -> torch.Tensor:
    on = chosen(g, n, cfg.p, CPU)
    angle = uniform(g, n, -math.radians(cfg.degrees), math.radians(cfg.degrees), CPU) * on
    cos, sin = angle.cos(), angle.sin()
    h, w = size
    # a rotation in pixel space seen in normalised coordinates, which stretch x by 2/W and y by 2/H
    zero = torch.zeros(n)
    return _affine(cos, -sin * h / w, sin * w / h, cos, zero, zero)


def _translate_matrices(
    cfg: TranslateConfig, n: int, size: tuple[int, int], g: torch.Generator | None
) -> torch.Tensor:
    on = chosen(g, n, cfg.p, CPU)
    tx = 2 * cfg.fraction * uniform(g, n, -1.0, 1.0, CPU) * on
    ty = 2 * cfg.fraction * uniform(g, n, -1.0, 1.0, CPU) * on
    one, zero = torch.ones(n), torch.zeros(n)
    return _affine(one, zero, zero, one, tx, ty)


def _gray(y: torch.Tensor) -> torch.Tensor:
    """(B,1,H,W) luma of y in [0, 1], accumulated in place (no full-size temporary)."""
    if y.shape[1] != 3:
        return y.mean(1, keepdim=True)
    gray = y[:, :1] * LUMA[0]
    for c in (1, 2):
        gray.add_(y[:, c : c + 1], alpha=LUMA[c])
    return gray


def _hue_rotate(y: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate each sample's chroma by `turns` full turns in YIQ space (one 3x3 matrix per sample)."""
    cos, sin = torch.cos(2 * math.pi * turns), torch.sin(2 * math.pi * turns)
    rot = torch.zeros(len(turns), 3, 3, device=y.device)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    mats = (YIQ_TO_RGB.to(y.device) @ rot @ RGB_TO_YIQ.to(y.device)).to(y.dtype)
    # nine per-sample multiply-adds: torch's batched matmul is slow for 3x3 @ 3xHW on the CPU
    out = torch.empty_like(y)
    for i in range(3):
        torch.mul(y[:, 0], mats[:, i, 0].view(-1, 1, 1), out=out[:, i])
        for j in (1, 2):
            out[:, i].addcmul_(y[:, j], mats[:, i, j].view(-1, 1, 1))
    return out


def _color(x: torch.Tensor, cfg: ColorConfig, g: torch.Generator | None) -> torch.Tensor:
    n, dev = len(x), x.device
    on = chosen(g, n, cfg.p, dev)
    brightness, contrast, saturation = (
        uniform(g, n, 1 - v, 1 + v, dev).view(n, 1, 1, 1)
        for v in (cfg.brightness, cfg.contrast, cfg.saturation)
    )
    turns = uniform(g, n, -cfg.hue, cfg.hue, dev)
    pick = on.nonzero().squeeze(1)
    if not len(pick):
        return x
    # only the chosen samples, in place on their copy: full-size temporaries cost more than the arithmetic
    y = x[pick].add_(1).mul_(0.5)
    y.mul_(brightness[pick]).clamp_(0, 1)
    mean = _gray(y).mean((1, 2, 3), keepdim=True)
    y.sub_(mean).mul_(contrast[pick]).add_(mean).clamp_(0, 1)
    if x.shape[1] == 3:
        gray = _gray(y)
        y.sub_(gray).mul_(saturation[pick]).add_(gray).clamp_(0, 1)
        if cfg.hue > 0:
            y = _hue_rotate(y, turns[pick]).clamp_(0, 1)
    y.mul_(2).sub_(1)
    if len(pick) == n:
        return y
    out = x.clone()
    out[pick] = y
    return out


def _cutout(x: torch.Tensor, cfg: CutoutConfig, g: torch.Generator | None) -> torch.Tensor:
    n, _, h, w = x.shape
    on = chosen(g, n, cfg.p, x.device)
    side_h, side_w = cfg.size * h, cfg.size * w
    top = uniform(g, n, 0.0, h, x.device) - side_h / 2
    left = uniform(g, n, 0.0, w, x.device) - side_w / 2
    mask = box_mask(top, left, side_h, side_w, (h, w)).to(x.dtype)
    return x * torch.where(on.view(n, 1, 1, 1), mask, torch.ones_like(mask))


CLASSICAL_OPS.register("hflip", GeometricOp(_flip_matrices(0)))
CLASSICAL_OPS.register("vflip", GeometricOp(_flip_matrices(1)))
CLASSICAL_OPS.register("crop", GeometricOp(_crop_matrices))
CLASSICAL_OPS.register("rotate", GeometricOp(_rotate_matrices))
CLASSICAL_OPS.register("translate", GeometricOp(_translate_matrices))
CLASSICAL_OPS.register("color", PixelOp(_color))
CLASSICAL_OPS.register("cutout", PixelOp(_cutout))


class ClassicalAugment:
    """`augment(batch, generator) -> batch` for the ops of `config` with p > 0, in registry order."""

    def __init__(self, config: AugmentConfig):
        self.config = config
        self.ops = [
            (name, CLASSICAL_OPS.get(name), getattr(config, name))
            for name in CLASSICAL_OPS.names_in_order()
            if getattr(config, name).p > 0
        ]

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.ops]

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not (x.is_floating_point() and x.ndim == 4):
            raise DataError(f"augment expects a float (B,C,H,W) batch, got {x.dtype} {tuple(x.shape)}")
        n, _, h, w = x.shape
        geometric = [(op, cfg) for _, op, cfg in self.ops if isinstance(op, GeometricOp)]
        if geometric:
            m = torch.eye(3).repeat(n, 1, 1)
            for op, cfg in geometric:
                m = m @ op.matrices(cfg, n, (h, w), generator)
            x = self._warp(x, m)
        for _, op, cfg in self.ops:
            if isinstance(op, PixelOp):
                x = op.apply(x, cfg, generator)
        return x

    def _warp(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        # samples whose whole transform is a mirror are flipped exactly, at a fraction of grid_sample's cost
        mirror = (
            (m[:, 0, 1] == 0)
            & (m[:, 1, 0] == 0)
            & (m[:, :2, 2] == 0).all(1)
            & (m[:, :2, :2].abs().sum((1, 2)) == 2)
        )
        for axis, dim in ((0, -1), (1, -2)):
            flip = (mirror & (m[:, axis, axis] < 0)).to(x.device)
            if flip.any():
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(dim), x)
        moved = ~mirror
        if not moved.any():
            return x
        theta = m[moved, :2].to(device=x.device, dtype=x.dtype)
        sub = x[moved.to(x.device)]
        grid = F.affine_grid(theta, list(sub.shape), align_corners=False)
        warped = F.grid_sample(
            sub, grid, mode="bilinear", padding_mode=self.config.padding, align_corners=False
        )
        if moved.all():
            return warped
        out = x.clone()
        out[moved.to(x.device)] = warped
        return out
