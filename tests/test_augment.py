"""Classical batch augmentation: config, determinism, and what each op does to pixels."""

from __future__ import annotations

import math

import pytest
import torch

from genforge.augment import AugmentConfig, build_augment
from genforge.augment.classical import ClassicalAugment
from genforge.augment.registry import CLASSICAL_OPS
from genforge.core.config import from_dict, to_dict
from genforge.core.errors import ConfigError, DataError

EVERYTHING = {
    "hflip": {"p": 0.5},
    "vflip": {"p": 0.5},
    "crop": {"p": 0.5, "scale": [0.5, 1.0]},
    "rotate": {"p": 0.5, "degrees": 20},
    "translate": {"p": 0.5, "fraction": 0.1},
    "color": {"p": 0.8, "brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.1},
    "cutout": {"p": 0.5, "size": 0.4},
}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(n: int = 16, c: int = 3, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=gen(seed)) * 2 - 1


def aug(**ops) -> ClassicalAugment:
    return build_augment(from_dict(AugmentConfig, ops))


def ramp(n: int, h: int, w: int) -> torch.Tensor:
    """Each pixel holds its x coordinate in the normalised [-1, 1] frame of grid_sample."""
    xs = (2 * torch.arange(w) + 1) / w - 1
    return xs.expand(n, 1, h, w).clone()


def test_config_round_trip_and_errors():
    cfg = from_dict(AugmentConfig, EVERYTHING)
    assert from_dict(AugmentConfig, to_dict(cfg)) == cfg
    assert to_dict(cfg)["crop"]["scale"] == [0.5, 1.0]
    # every registered op is a config field, and the composed pipeline lists them in registry order
    assert set(CLASSICAL_OPS.names()) <= set(to_dict(cfg))
    assert build_augment(cfg).names == CLASSICAL_OPS.names_in_order()
    with pytest.raises(ConfigError, match=r"rotate\.p"):
        from_dict(AugmentConfig, {"rotate": {"p": 1.5}})
    with pytest.raises(ConfigError, match=r"crop\.scale"):
        from_dict(AugmentConfig, {"crop": {"scale": [0.9, 0.5]}})
    with pytest.raises(ConfigError, match="unknown field"):
        from_dict(AugmentConfig, {"sharpen": {"p": 0.5}})
    with pytest.raises(ConfigError, match="padding"):
        from_dict(AugmentConfig, {"padding": "wrap"})
    with pytest.raises(DataError, match="float"):
        build_augment(cfg)(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), gen(0))


def test_determinism_shape_and_range():
    a = aug(**EVERYTHING)
    x = batch(32)
    y1, y2, y3 = a(x, gen(1)), a(x, gen(1)), a(x, gen(2))
    assert torch.equal(y1, y2)
    assert not torch.allclose(y1, y3)
    assert y1.shape == x.shape and y1.dtype == x.dtype
    assert y1.min() >= -1 and y1.max() <= 1


def test_nothing_enabled_is_identity_and_p_zero_ops_draw_nothing():
    x = batch()
    assert aug()(x, gen(0)) is x
    assert torch.equal(aug(translate={"p": 1.0, "fraction": 0.0})(x, gen(0)), x)
    assert torch.equal(aug(rotate={"p": 1.0, "degrees": 0.0})(x, gen(0)), x)


def test_flips():
    x = batch(8)
    h = aug(hflip={"p": 1.0})
    assert torch.equal(h(x, gen(0)), x.flip(-1))
    assert torch.equal(h(h(x, gen(0)), gen(1)), x)
    assert torch.equal(aug(vflip={"p": 1.0})(x, gen(0)), x.flip(-2))
    both = aug(hflip={"p": 1.0}, vflip={"p": 1.0})
    assert torch.equal(both(x, gen(0)), x.flip(-1, -2))
    # mixed with rotation: samples that are only mirrored stay exact, rotated ones are resampled
    x = batch(64)
    y = aug(hflip={"p": 0.5}, rotate={"p": 0.5, "degrees": 20})(x, gen(5))
    same = (y == x).flatten(1).all(1)
    mirror = (y == x.flip(-1)).flatten(1).all(1)
    assert int(same.sum()) > 5 and int(mirror.sum()) > 5 and int((~same & ~mirror).sum()) > 20
    # with p = 0.5 each sample is either itself or its mirror, and both occur
    y = aug(hflip={"p": 0.5})(batch(64), gen(3))
    x = batch(64)
    same = torch.isclose(y, x, atol=1e-5).flatten(1).all(1)
    mirrored = torch.isclose(y, x.flip(-1), atol=1e-5).flatten(1).all(1)
    assert (same | mirrored).all() and 10 < int(mirrored.sum()) < 54


def test_warp_convention_matches_rot90():
    x = batch(2, h=12, w=12)
    a = aug(rotate={"p": 1.0})
    quarter = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).repeat(2, 1, 1)
    y = a._warp(x, quarter)
    assert any(torch.allclose(y, x.rot90(k, (2, 3)), atol=1e-5) for k in (1, -1))


def test_rotation_matrices_are_pixel_space_rotations_within_range():
    cfg = from_dict(AugmentConfig, {"rotate": {"p": 1.0, "degrees": 30}}).rotate
    h, w = 16, 32
    m = CLASSICAL_OPS.get("rotate").matrices(cfg, 200, (h, w), gen(0))
    to_pixels = torch.diag(torch.tensor([w / 2, h / 2, 1.0]))
    r = to_pixels @ m @ torch.linalg.inv(to_pixels)
    assert torch.allclose(
        r[:, :2, :2] @ r[:, :2, :2].transpose(1, 2), torch.eye(2).expand(200, 2, 2), atol=1e-5
    )
    angles = torch.atan2(r[:, 1, 0], r[:, 0, 0]).abs()
    assert angles.max() <= math.radians(30) + 1e-6 and angles.max() > math.radians(25)


def test_random_resized_crop_zooms_inside_the_image():
    x = ramp(64, 16, 16)
    y = aug(crop={"p": 1.0, "scale": [0.25, 0.25], "ratio": [1.0, 1.0]})(x, gen(0))
    # a crop of a quarter of the area at aspect 1 is half as wide, so the ramp's slope halves;
    # bilinear sampling reproduces a linear image exactly away from the outermost half pixel
    slope = (y[..., 2:-1] - y[..., 1:-2]) / (2 / 16)
    assert torch.allclose(slope, torch.full_like(slope, 0.5), atol=1e-4)
    assert y.min() >= -1 and y.max() <= 1
    assert y[..., 0].std() > 0.05  # the crop's position varies between samples


def test_translation_shifts_within_the_fraction():
    x = ramp(64, 16, 16)
    y = aug(translate={"p": 1.0, "fraction": 0.25}, padding="border")(x, gen(0))
    shift = (y - x)[..., 6:10].mean((1, 2, 3))  # centre columns never reach the border
    assert torch.allclose((y - x)[..., 6:10], shift.view(-1, 1, 1, 1).expand(64, 1, 16, 4), atol=1e-4)
    assert shift.abs().max() <= 2 * 0.25 + 1e-5 and shift.abs().max() > 0.3
    assert shift.std() > 0.1


def test_color_jitter_brightness_contrast_saturation_hue():
    x = batch(32) * 0.4  # mid-range values, so jitter never clips
    y = (x + 1) / 2
    out = (aug(color={"p": 1.0, "brightness": 0.3, "contrast": 0, "saturation": 0})(x, gen(0)) + 1) / 2
    factor = out / y
    assert torch.allclose(factor, factor.flatten(1)[:, :1].view(-1, 1, 1, 1).expand_as(factor), atol=1e-4)
    assert factor.min() >= 0.7 - 1e-5 and factor.max() <= 1.3 + 1e-5
    # contrast keeps each image's mean luma
    out = (aug(color={"p": 1.0, "brightness": 0, "contrast": 0.3, "saturation": 0})(x, gen(0)) + 1) / 2
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert torch.allclose((out * luma).sum(1).mean((1, 2)), (y * luma).sum(1).mean((1, 2)), atol=1e-5)
    assert not torch.allclose(out, y, atol=1e-3)
    # saturation leaves a gray image gray and unchanged
    gray = x[:, :1].repeat(1, 3, 1, 1)
    sat = aug(color={"p": 1.0, "brightness": 0, "contrast": 0, "saturation": 0.5})
    assert torch.allclose(sat(gray, gen(0)), gray, atol=1e-5)
    # hue rotation keeps luma (Y of YIQ) and changes colour
    hue = (
        aug(color={"p": 1.0, "brightness": 0, "contrast": 0, "saturation": 0, "hue": 0.05})(x, gen(0)) + 1
    ) / 2
    assert torch.allclose((hue * luma).sum(1), (y * luma).sum(1), atol=1e-4)
    assert (hue - y).abs().max() > 0.01
    # one channel: brightness and contrast apply, saturation and hue are skipped
    one = batch(4, c=1)
    assert aug(color={"p": 1.0, "hue": 0.2})(one, gen(0)).shape == one.shape


def test_color_p_selects_samples_exactly():
    x = batch(64)
    y = aug(color={"p": 0.5})(x, gen(4))
    untouched = (y == x).flatten(1).all(1)
    assert 10 < int(untouched.sum()) < 54


def test_cutout_zeroes_the_expected_fraction():
    x = torch.ones(2000, 1, 32, 32)
    y = aug(cutout={"p": 1.0, "size": 0.5})(x, gen(0))
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    # centre uniform over the image, square of side a clipped at the borders: per axis the
    # expected covered share is a - a^2 / 4
    a = 0.5
    assert abs(float((y == 0).float().mean()) - (a - a * a / 4) ** 2) < 0.01
    # each cut region is one axis-aligned box no larger than the square
    box = y[:, 0] == 0
    rows, cols = box.any(2).sum(1), box.any(1).sum(1)
    assert torch.equal(box.sum((1, 2)), rows * cols) and rows.max() <= 16 and cols.max() <= 16
    half = aug(cutout={"p": 0.5, "size": 0.5})(x[:400], gen(1))
    assert 150 < int((half == 0).flatten(1).any(1).sum()) < 250


@pytest.mark.parametrize("channels", [1, 3])
def test_every_op_at_once_keeps_shape_range_and_grayscale_input(channels):
    a = aug(**{k: {**v, "p": 1.0} for k, v in EVERYTHING.items()})
    x = batch(64, c=channels, h=12, w=20)
    y = a(x, gen(0))
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert y.min() >= -1 and y.max() <= 1
    assert not torch.equal(y, a(x, gen(1)))
