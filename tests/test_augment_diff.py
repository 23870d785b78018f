"""DiffAugment (against the paper's reference code) and the ADA probability controller."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from genforge.augment import AdaController, DiffAugmentConfig, build_ada, build_diffaugment
from genforge.augment.diffaugment import color, cutout, translation
from genforge.core.config import from_dict, to_dict
from genforge.core.errors import ConfigError

PAPER = {"policy": ["color", "translation", "cutout"]}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(n: int = 8, c: int = 3, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=gen(seed)) * 2 - 1


# The reference functions below are the paper's code (mit-han-lab/data-efficient-gans,
# DiffAugment_pytorch.py) with its random draws passed in.
def ref_translation(x, shift_x, shift_y):
    b, _, h, w = x.shape
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(b), torch.arange(h), torch.arange(w), indexing="ij"
    )
    grid_x = torch.clamp(grid_x + shift_x.view(-1, 1, 1) + 1, 0, h + 1)
    grid_y = torch.clamp(grid_y + shift_y.view(-1, 1, 1) + 1, 0, w + 1)
    x_pad = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return x_pad.permute(0, 2, 3, 1).contiguous()[grid_batch, grid_x, grid_y].permute(0, 3, 1, 2)


def ref_cutout(x, offset_x, offset_y, size):
    b, _, h, w = x.shape
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(b), torch.arange(size[0]), torch.arange(size[1]), indexing="ij"
    )
    grid_x = torch.clamp(grid_x + offset_x.view(-1, 1, 1) - size[0] // 2, min=0, max=h - 1)
    grid_y = torch.clamp(grid_y + offset_y.view(-1, 1, 1) - size[1] // 2, min=0, max=w - 1)
    mask = torch.ones(b, h, w)
    mask[grid_batch, grid_x, grid_y] = 0
    return x * mask.unsqueeze(1)


def ref_color(x, brightness, saturation, contrast):
    x = x + (brightness.view(-1, 1, 1, 1) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (saturation.view(-1, 1, 1, 1) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (contrast.view(-1, 1, 1, 1) + 0.5) + mean


def test_ops_match_the_paper_reference_at_p_one():
    cfg = from_dict(DiffAugmentConfig, PAPER)
    x = batch(32, h=16, w=12)
    n = len(x)
    # replay the generator in the order each op draws: which samples, then the op's numbers
    g = gen(7)
    torch.rand(n, generator=g)
    sx, sy = torch.randint(-2, 3, (n,), generator=g), torch.randint(-2, 3, (n,), generator=g)
    assert torch.equal(translation(x, 1.0, cfg, gen(7)), ref_translation(x, sx, sy))

    g = gen(8)
    torch.rand(n, generator=g)
    ox, oy = torch.randint(0, 17, (n,), generator=g), torch.randint(0, 13, (n,), generator=g)
    assert torch.equal(cutout(x, 1.0, cfg, gen(8)), ref_cutout(x, ox, oy, (8, 6)))

    g = gen(9)
    draws = []
    for _ in range(3):
        draws.append(torch.rand(n, generator=g))
        torch.rand(n, generator=g)
    assert torch.allclose(color(x, 1.0, cfg, gen(9)), ref_color(x, *draws), atol=1e-5)


def test_determinism_p_zero_identity_and_partial_p():
    d = build_diffaugment(from_dict(DiffAugmentConfig, PAPER))
    x = batch(64)
    assert torch.equal(d(x, gen(1)), d(x, gen(1)))
    assert not torch.equal(d(x, gen(1)), d(x, gen(2)))
    d.p = 0.0
    assert d(x, gen(1)) is x
    # an empty policy is off whatever p is
    off = build_diffaugment(DiffAugmentConfig())
    assert not off.enabled and off(x, gen(0)) is x
    # at p = 0.3 a sample escapes all five transforms with probability 0.7^5 ~ 0.17 and is then bit-identical
    d.p = 0.3
    untouched = (d(x, gen(3)) == x).flatten(1).all(1).float().mean()
    assert 0.05 < float(untouched) < 0.35


def test_unknown_policy_and_bad_values_are_config_errors():
    with pytest.raises(ConfigError, match="unknown DiffAugment policy 'flip'"):
        build_diffaugment(from_dict(DiffAugmentConfig, {"policy": ["color", "flip"]}))
    with pytest.raises(ConfigError, match=r"diffaugment\.p"):
        from_dict(DiffAugmentConfig, {"p": -0.1})
    cfg = from_dict(DiffAugmentConfig, {**PAPER, "p": 0.0, "ada": True})
    assert from_dict(DiffAugmentConfig, to_dict(cfg)) == cfg


def test_gradients_flow_through_every_op():
    cfg = from_dict(DiffAugmentConfig, PAPER)
    x = batch(4).requires_grad_(True)
    build_diffaugment(cfg)(x, gen(0)).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    small = torch.rand(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    for op in (color, translation, cutout):
        assert torch.autograd.gradcheck(lambda t, op=op: op(t, 0.7, cfg, gen(5)), (small,))


def test_generator_receives_gradient_through_augmented_fakes():
    # one GAN step's shape: the same policy on real and generated images, D sees both
    torch.manual_seed(0)
    gen_net = torch.nn.Linear(8, 3 * 8 * 8)
    disc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 1))
    d = build_diffaugment(from_dict(DiffAugmentConfig, PAPER))
    g = gen(0)
    real = batch(16, h=8, w=8)
    fake = torch.tanh(gen_net(torch.randn(16, 8, generator=g))).view(16, 3, 8, 8)
    loss = F.softplus(-disc(d(fake, g))).mean() + F.softplus(disc(d(real, g))).mean()
    loss.backward()
    assert gen_net.weight.grad.abs().sum() > 0


def test_ada_moves_p_towards_the_target_at_the_set_speed():
    ada = AdaController(target=0.6, speed_images=1024, interval=4, p=0.0)
    overfit = torch.ones(64, 1)  # D sure every real image is real: r_t = 1 > 0.6
    ps = [ada.observe(overfit) for _ in range(16)]
    # 4 batches of 64 = 256 images per adjustment: p rises by 256 / 1024, reaching 1 after 1024 images
    assert ps[:4] == [0.0, 0.0, 0.0, 0.25] and ps[7] == 0.5 and ps[15] == 1.0
    assert ada.last_r == 1.0
    assert ada.observe(overfit) == 1.0 and [ada.observe(overfit) for _ in range(3)][-1] == 1.0  # clamped
    healthy = torch.tensor([1.0, -1.0] * 32)  # r_t = 0 < 0.6: p falls
    ps = [ada.observe(healthy) for _ in range(8)]
    assert ps[3] == 0.75 and ps[7] == 0.5 and ada.last_r == 0.0
    # one logit per image but several per-pixel outputs (patch D): signs are averaged over all
    patch = AdaController(target=0.6, speed_images=100, interval=1, p=0.5)
    patch.observe(torch.cat([torch.ones(10, 4), -torch.ones(10, 1)], 1))  # r = 3/5 = 0.6: no move
    assert patch.p == 0.5 and abs(patch.last_r - 0.6) < 1e-9


def test_ada_state_resume_and_ddp_reduce():
    signs = [torch.randn(32, generator=gen(i)) + 0.8 for i in range(20)]
    full = AdaController(target=0.6, speed_images=500, interval=3)
    expected = [full.observe(s) for s in signs]
    first = AdaController(target=0.6, speed_images=500, interval=3)
    for s in signs[:7]:  # stop mid-interval, with pending statistics
        first.observe(s)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = AdaController(target=0.6, speed_images=500, interval=3)
    resumed.load_state_dict(state)
    assert [resumed.observe(s) for s in signs[7:]] == expected[7:]
    # two ranks with identical statistics: the reduced image count doubles each step
    ddp = AdaController(target=0.6, speed_images=1024, interval=1, reduce=lambda t: t * 2)
    assert ddp.observe(torch.ones(64)) == 128 / 1024


def test_build_ada_follows_the_config():
    assert build_ada(from_dict(DiffAugmentConfig, PAPER)) is None
    ada = build_ada(from_dict(DiffAugmentConfig, {**PAPER, "ada": True, "p": 0.1, "ada_target": 0.5}))
    assert isinstance(ada, AdaController) and ada.p == 0.1 and ada.target == 0.5 and ada.interval == 4
    with pytest.raises(ConfigError):
        AdaController(speed_images=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_every_augmentation_keeps_the_batch_dtype(dtype):
    from genforge.augment import AugmentConfig, build_augment

    everything = {name: {"p": 1.0} for name in ("hflip", "crop", "rotate", "translate", "color", "cutout")}
    everything["color"]["hue"] = 0.1
    x = batch(4).to(dtype)
    assert build_augment(from_dict(AugmentConfig, everything))(x, gen(0)).dtype == dtype
    assert build_diffaugment(from_dict(DiffAugmentConfig, PAPER))(x, gen(0)).dtype == dtype
