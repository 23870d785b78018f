"""VAE family: vae, beta-vae, cvae: likelihoods, KL, ELBO training, sampling, reconstruction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genforge.core.errors import ConfigError
from genforge.models.base import Batch
from genforge.models.nets.latent import seeded_normal
from genforge.models.pipeline import load_pipeline, save_model, to_uint8
from genforge.models.registry import MODELS
from genforge.models.vae import LIKELIHOODS, VAE, BetaVAE, ConditionalVAE, kl_normal

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks (conftest.one_thread)


def _digits(n=16, size=28, channels=1, seed=0):
    """Blurry blobs at random places: structured data a VAE can learn within a few steps."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 2, generator=g) * 0.5 + 0.25
    ys = torch.linspace(0, 1, size)
    d2 = (ys[None, :, None] - centre[:, 0, None, None]) ** 2 + (
        ys[None, None, :] - centre[:, 1, None, None]
    ) ** 2
    img = torch.exp(-d2 / 0.02) * 2 - 1
    return img[:, None].expand(n, channels, size, size).contiguous()


def test_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g) * 0.5
    n = 200_000
    z = mu + torch.exp(0.5 * logvar) * torch.randn(n, 3, 4, generator=g)
    log_q = (-0.5 * ((z - mu) ** 2 / logvar.exp() + logvar + math.log(2 * math.pi))).sum(-1)
    log_p = (-0.5 * (z**2 + math.log(2 * math.pi))).sum(-1)
    samples = log_q - log_p
    mc, stderr = samples.mean(0), samples.std(0) / math.sqrt(n)
    exact = kl_normal(mu, logvar)
    assert torch.all((mc - exact).abs() < 4 * stderr + 1e-3), (mc, exact, stderr)


def test_likelihoods_match_reference_formulas():
    g = torch.Generator().manual_seed(1)
    x, out = torch.rand(2, 1, 4, 4, generator=g) * 2 - 1, torch.randn(2, 1, 4, 4, generator=g)
    bern = LIKELIHOODS.get("bernoulli").nll(out, x, torch.tensor(0.0))
    ref = F.binary_cross_entropy_with_logits(out, (x + 1) / 2, reduction="none").sum((1, 2, 3))
    torch.testing.assert_close(bern, ref)
    log_sigma = torch.tensor(math.log(0.3))
    gauss = LIKELIHOODS.get("gaussian").nll(out, x, log_sigma)
    ref = -torch.distributions.Normal(out, 0.3).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(gauss, ref)
    assert VAE.default_config(28, 1).likelihood_name == "bernoulli"
    assert VAE.default_config(32, 3).likelihood_name == "gaussian"


@pytest.mark.parametrize(
    "name,size,channels", [("vae", 28, 1), ("beta-vae", 32, 3), ("cvae", 64, 3), ("vae", 64, 1)]
)
def test_shapes(name, size, channels):
    cls = MODELS.get(name)
    cfg = cls.default_config(size, channels, num_classes=3)
    m = cls(cls.default_config(size, channels, num_classes=3, widths=[w // 4 for w in cfg.widths]))
    x = _digits(4, size, channels)
    out = m.training_step("main", Batch(x, torch.tensor([0, 1, 2, 0])), 0)
    assert set(out.terms) >= {"recon", "kl", "elbo"} and torch.isfinite(out.loss)
    out.loss.backward()
    m.eval()
    s = m.sample(3, generator=torch.Generator().manual_seed(0))
    r = m.reconstruct(x, torch.tensor([0, 1, 2, 0]))
    assert s.shape == (3, channels, size, size) and r.shape == x.shape
    assert s.min() >= -1 and s.max() <= 1 and r.min() >= -1 and r.max() <= 1


def test_beta_weights_the_kl_term():
    assert BetaVAE.default_config(28, 1).beta == 4.0 and VAE.default_config(28, 1).beta == 1.0
    m = BetaVAE(BetaVAE.default_config(28, 1, widths=[8, 16]))
    out = m.training_step("main", Batch(_digits(4)), 0)
    torch.testing.assert_close(out.loss.detach(), out.terms["recon"] + 4.0 * out.terms["kl"])
    torch.testing.assert_close(out.terms["elbo"], -(out.terms["recon"] + out.terms["kl"]))


@pytest.mark.parametrize("channels", [1, 3])
def test_negative_elbo_falls(channels):
    torch.manual_seed(0)
    m = VAE(VAE.default_config(28, channels, widths=[16, 32], latent_dim=8))
    (phase,) = m.phases()
    params = [p for name in phase.modules for p in getattr(m, name).parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=phase.optimizer.lr)
    batch, losses = Batch(_digits(16, channels=channels)), []
    for step in range(25):
        out = m.training_step("main", batch, step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < first - 0.2 * abs(first), losses


def test_conditional_vae_depends_on_the_class():
    m = ConditionalVAE(ConditionalVAE.default_config(28, 1, num_classes=10, widths=[8, 16])).eval()
    a = m.sample(4, generator=torch.Generator().manual_seed(3), labels=torch.full((4,), 2))
    b = m.sample(4, generator=torch.Generator().manual_seed(3), labels=torch.full((4,), 7))
    assert (a - b).abs().mean() > 1e-3
    with pytest.raises(ConfigError, match="num_classes"):
        ConditionalVAE(ConditionalVAE.default_config(28, 1))


def test_save_load_identical_samples(tmp_path):
    torch.manual_seed(0)
    m = ConditionalVAE(ConditionalVAE.default_config(32, 3, num_classes=4, widths=[8, 16, 32]))
    m.training_step("main", Batch(_digits(4, 32, 3), torch.arange(4)), 0).loss.backward()
    m.eval()
    save_model(m, "cvae", tmp_path, {"step": 1})
    pipe = load_pipeline(tmp_path)
    images, labels = pipe.generate(5, seed=9, class_label=3)
    expected = m.sample(5, generator=torch.Generator().manual_seed(9), labels=torch.full((5,), 3))
    assert np.array_equal(images, to_uint8(expected)) and list(labels) == [3] * 5
    assert m.ema_modules == ("decoder",)


def test_interpolation_endpoints_decode_the_seeds_latents():
    m = VAE(VAE.default_config(28, 1, widths=[8, 16])).eval()
    path = m.interpolate(4, seed_a=5, seed_b=6)
    assert path.shape == (4, 1, 28, 28)
    ends = m.likelihood.mean(m.decode(torch.cat([seeded_normal((1, 16), 5), seeded_normal((1, 16), 6)])))
    torch.testing.assert_close(path[[0, -1]], ends, atol=1e-5, rtol=1e-5)
