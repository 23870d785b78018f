"""Denoising autoencoder and the seeded corruptions it trains on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genforge.core.errors import ConfigError, GenforgeError
from genforge.models.base import Batch
from genforge.models.corruption import CORRUPTIONS, CorruptionConfig, corrupt
from genforge.models.dae import DAE
from genforge.models.pipeline import load_pipeline, save_model


@pytest.fixture(autouse=True, scope="module")
def _threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # small convs run faster on one thread when the cores are shared
    yield
    torch.set_num_threads(saved)


def _shapes(n, size=28, seed=0):
    """Bright rectangles on a dark ground: simple data with edges a denoiser must keep."""
    g = torch.Generator().manual_seed(seed)
    corner = (torch.rand(n, 2, generator=g) * size * 0.5).long()
    extent = (torch.rand(n, 2, generator=g) * size * 0.4).long() + 4
    ys, xs = torch.arange(size)[:, None], torch.arange(size)[None, :]
    y0, x0 = corner[:, 0, None, None], corner[:, 1, None, None]
    box = (
        (ys >= y0) & (ys < y0 + extent[:, 0, None, None]) & (xs >= x0) & (xs < x0 + extent[:, 1, None, None])
    )
    return torch.where(box, 0.8, -0.8)[:, None].float()


def test_corruptions_are_seeded_and_do_what_they_say():
    x = torch.zeros(64, 3, 28, 28)
    for kind in CORRUPTIONS.names():
        cfg = CorruptionConfig(kinds=[kind])
        a = corrupt(x + 0.5, cfg, torch.Generator().manual_seed(1))
        assert torch.equal(a, corrupt(x + 0.5, cfg, torch.Generator().manual_seed(1))), kind
        assert not torch.equal(a, corrupt(x + 0.5, cfg, torch.Generator().manual_seed(2))), kind
        assert a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    noisy = corrupt(x, CorruptionConfig(kinds=["gaussian"], sigma=0.1), torch.Generator().manual_seed(0))
    assert abs(noisy.std().item() - 0.2) < 0.005  # sigma in [0, 1] pixel units = 2 sigma on [-1, 1]
    sp = corrupt(x, CorruptionConfig(kinds=["salt_pepper"], amount=0.2), torch.Generator().manual_seed(0))
    hit = (sp != 0).all(1)  # whole pixels, every channel
    assert abs(hit.float().mean().item() - 0.2) < 0.01 and ((sp != 0).any(1) == hit).all()
    rect = corrupt(
        x + 0.5,
        CorruptionConfig(kinds=["rectangles"], rect_size=(0.5, 0.5)),
        torch.Generator().manual_seed(0),
    )
    assert abs((rect == 0).float().mean().item() - 0.25) < 0.03  # one hole of half the side each way
    strokes = corrupt(x + 0.5, CorruptionConfig(kinds=["strokes"]), torch.Generator().manual_seed(0))
    frac = (strokes == 0).flatten(1).float().mean(1)
    assert (frac > 0).all() and frac.mean() < 0.5


def test_mixture_draws_one_kind_per_image():
    x = torch.full((200, 1, 16, 16), 0.5)
    cfg = CorruptionConfig(kinds=["rectangles", "salt_pepper"], amount=0.05, fill=-0.25)
    y = corrupt(x, cfg, torch.Generator().manual_seed(0))
    holes = (y == -0.25).flatten(1).any(1)
    salted = (y.abs() == 1).flatten(1).any(1)
    assert not (holes & salted).any() and 60 < holes.sum() < 140 and 60 < salted.sum() < 140


def test_bad_corruption_config_is_named():
    with pytest.raises(ConfigError, match="unknown corruption 'blur'"):
        CorruptionConfig(kinds=["blur"])
    with pytest.raises(ConfigError, match="rect_size"):
        CorruptionConfig(rect_size=(0.6, 0.2))


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (64, 1)])
def test_shapes(size, channels):
    cfg = DAE.default_config(size, channels, num_classes=10)
    m = DAE(DAE.default_config(size, channels, widths=[w // 4 for w in cfg.widths]))
    x = torch.rand(2, channels, size, size) * 2 - 1
    out = m.training_step("main", Batch(x), 0)
    out.loss.backward()
    assert m.restore(x).shape == x.shape
    with pytest.raises(GenforgeError, match="shape"):
        m.restore(torch.zeros(1, channels, size + 2, size + 2))


def test_dae_restores_instead_of_sampling():
    m = DAE(DAE.default_config(28, 1))
    assert m.task == "restore" and m.ema_modules == ("net",)
    with pytest.raises(GenforgeError, match="restoration model"):
        m.sample(4)
    # during training, sample() is the trainer's progress grid: (corrupted, restored) pairs
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    m.training_step("main", Batch(x), 0)
    m.eval()
    grid = m.sample(5, generator=torch.Generator().manual_seed(0))
    noisy = corrupt(x, m.config.corruption, torch.Generator().manual_seed(0))
    assert grid.shape == (5, 1, 28, 28)
    torch.testing.assert_close(grid[0::2], noisy)
    torch.testing.assert_close(grid[1::2], m.restore(noisy[:2]))
    from genforge.models.gan import DCGAN

    assert DCGAN.task == "generate"


@pytest.mark.parametrize("loss", ["l1", "l2"])
def test_training_reduces_error_below_the_noisy_input(loss):
    torch.manual_seed(0)
    cfg = DAE.default_config(
        28, 1, widths=[16, 32, 32], loss=loss, lr=3e-3, corruption={"kinds": ["gaussian"], "sigma": 0.2}
    )
    m = DAE(cfg)
    opt = torch.optim.Adam(m.net.parameters(), lr=cfg.lr)
    for step in range(40):
        out = m.training_step("main", Batch(_shapes(16, seed=step)), step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    clean = _shapes(32, seed=999)
    noisy = corrupt(clean, cfg.corruption, torch.Generator().manual_seed(5))
    m.eval()
    before = (noisy - clean).square().mean().item()
    after = (m.restore(noisy) - clean).square().mean().item()
    assert after < 0.5 * before, (before, after)


def test_save_load_identical_restorations(tmp_path):
    m = DAE(DAE.default_config(32, 3, widths=[8, 16], corruption={"kinds": ["strokes", "gaussian"]}))
    with torch.no_grad():
        m.net.out.weight.normal_(0, 0.1)  # away from the identity init, so the check has teeth
    m.eval()
    save_model(m, "dae", tmp_path, {"step": 0})
    pipe = load_pipeline(tmp_path)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    assert np.array_equal(pipe.model.restore(x).numpy(), m.restore(x).numpy())
    assert not torch.equal(m.restore(x), x.clamp(-1, 1))
    assert pipe.model.config.corruption.kinds == ["strokes", "gaussian"]
    with pytest.raises(GenforgeError, match="restoration model"):
        pipe.generate(2)
