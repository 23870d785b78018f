"""Tiny models and data for the trainer's tests, registered under test-only names.

Other trainer test files import this module (and subprocesses import it through `launcher`), so
the models register once per process. Its own tests check the pieces the trainer is built from.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from genforge.data.canonical import SplitData, write_dataset
from genforge.models.base import Batch, GenerativeModel, ModelOutput, OptimizerSpec, Phase
from genforge.models.registry import MODELS

TESTS_DIR = Path(__file__).resolve().parent


@dataclass
class TinyAEConfig:
    image_size: int = 8
    channels: int = 1
    num_classes: int = 0
    latent: int = 4
    noise: float = 0.1  # input noise from the global RNG (exercises RNG save/restore)
    dropout: float = 0.1  # dropout uses the global RNG too
    lr: float = 0.01
    nan_at_step: int = -1  # the loss is NaN at this step, once (divergence guard tests)
    nan_from_step: int = -1  # the loss is NaN at every step from this one on
    step_sleep: float = 0.0  # seconds per step, so a subprocess can be killed mid-run


class TinyAE(GenerativeModel):
    """Linear autoencoder; samples decode Gaussian latents."""

    family = "test"
    config_class = TinyAEConfig
    ema_modules = ("decoder",)

    def __init__(self, config: TinyAEConfig):
        super().__init__(config)
        d = config.channels * config.image_size**2
        self.encoder = nn.Sequential(nn.Flatten(), nn.Dropout(config.dropout), nn.Linear(d, config.latent))
        self.decoder = nn.Linear(config.latent, d)
        self._fired = False

    def phases(self) -> list[Phase]:
        return [Phase("main", ["encoder", "decoder"], OptimizerSpec("adam", self.config.lr, (0.9, 0.999)))]

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        c, s = self.config.channels, self.config.image_size
        return torch.tanh(self.decoder(z)).view(-1, c, s, s)

    def training_step(self, phase: str, batch: Batch, step: int) -> ModelOutput:
        if self.config.step_sleep:
            time.sleep(self.config.step_sleep)
        x = batch.images
        noisy = x + self.config.noise * torch.randn_like(x) if self.config.noise else x
        recon = self._decode(self.encoder(noisy))
        loss = F.mse_loss(recon, x)
        if step == self.config.nan_at_step and not self._fired:
            self._fired = True
            loss = loss * float("nan")
        if 0 <= self.config.nan_from_step <= step:
            loss = loss * float("nan")
        return ModelOutput(loss, {"mse": loss.detach()})

    @torch.no_grad()
    def sample(self, n, *, generator=None, labels=None, **options):
        z = torch.randn(n, self.config.latent, generator=generator)
        return self._decode(z)

    @torch.no_grad()
    def interpolate(self, n_steps, seed_a, seed_b, labels=None, **options):
        za = torch.randn(1, self.config.latent, generator=torch.Generator().manual_seed(seed_a))
        zb = torch.randn(1, self.config.latent, generator=torch.Generator().manual_seed(seed_b))
        t = torch.linspace(0, 1, n_steps).unsqueeze(1)
        return self._decode((1 - t) * za + t * zb)


class TinyRestorer(TinyAE):
    """The autoencoder as a restoration model: restore = reconstruct."""

    task = "restore"

    @torch.no_grad()
    def restore(self, corrupted: torch.Tensor) -> torch.Tensor:
        return self._decode(self.encoder(corrupted))


@dataclass
class TinyGANConfig:
    image_size: int = 8
    channels: int = 1
    num_classes: int = 0
    latent: int = 4
    d_repeats: int = 1


class TinyGAN(GenerativeModel):
    """Linear generator and discriminator; the training noise comes from a generator the model holds."""

    family = "test"
    config_class = TinyGANConfig
    ema_modules = ("generator",)

    def __init__(self, config: TinyGANConfig):
        super().__init__(config)
        d = config.channels * config.image_size**2
        self.generator = nn.Linear(config.latent, d)
        self.discriminator = nn.Sequential(nn.Flatten(), nn.Linear(d, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))
        self.noise = torch.Generator().manual_seed(99)

    def phases(self) -> list[Phase]:
        spec = OptimizerSpec("adam", 1e-3, (0.5, 0.999))
        return [
            Phase("discriminator", ["discriminator"], spec, repeats=self.config.d_repeats),
            Phase("generator", ["generator"], spec),
        ]

    def _fake(self, n: int, generator: torch.Generator) -> torch.Tensor:
        c, s = self.config.channels, self.config.image_size
        return torch.tanh(self.generator(torch.randn(n, self.config.latent, generator=generator))).view(
            n, c, s, s
        )

    def training_step(self, phase: str, batch: Batch, step: int) -> ModelOutput:
        fake = self._fake(len(batch.images), self.noise)
        if phase == "discriminator":
            real_logits = self.discriminator(batch.images)
            fake_logits = self.discriminator(fake.detach())
            loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
            return ModelOutput(loss, {"real_score": real_logits.mean().detach()})
        loss = F.softplus(-self.discriminator(fake)).mean()
        return ModelOutput(loss)

    @torch.no_grad()
    def sample(self, n, *, generator=None, labels=None, **options):
        return self._fake(n, generator)


for _name, _cls in (("test-ae", TinyAE), ("test-restorer", TinyRestorer), ("test-gan", TinyGAN)):
    if _name not in MODELS:
        MODELS.register(_name, _cls)


def make_dataset(directory: Path, n: int = 64, size: int = 8, seed: int = 0) -> Path:
    """n structured size x size grey images (bright bars at random rows), 2 labelled classes."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 1), np.uint8)
    labels = rng.integers(0, 2, n)
    for i in range(n):
        row = rng.integers(0, size)
        if labels[i]:
            images[i, row, :, 0] = 255
        else:
            images[i, :, row, 0] = 255
    val = images[: n // 4].copy()
    splits = {"train": SplitData(images, labels), "val": SplitData(val, labels[: n // 4])}
    directory.mkdir(parents=True, exist_ok=True)
    write_dataset(directory, splits, class_names=["col", "row"], meta={"source": "test"})
    return directory


LAUNCHER = """import sys
import time
sys.path.insert(0, {tests!r})
import test_train_models  # noqa: F401  registers the tiny models
from genforge.cli import main
main()
"""


def write_launcher(directory: Path) -> Path:
    """A script that runs the genforge CLI with the tiny models registered (for subprocess tests)."""
    path = directory / "launcher.py"
    path.write_text(LAUNCHER.format(tests=str(TESTS_DIR)))
    return path


def cli_env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"})
    return env


PYTHON = sys.executable


# --- tests of the trainer's building blocks ------------------------------------------------------


def test_parse_duration():
    from genforge.core.errors import ConfigError
    from genforge.train.budget import parse_duration

    assert parse_duration("90s") == 90.0
    assert parse_duration("5m") == 300.0
    assert parse_duration("1h30m") == 5400.0
    assert parse_duration("2.5") == 2.5
    for bad in ("5x", "m5", "", "-3s", "1h 2q"):
        with pytest.raises(ConfigError, match="duration|positive"):
            parse_duration(bad, "train.max_time")


def test_budget_stops_at_first_limit():
    from genforge.train.budget import Budget

    b = Budget(steps=10, images=1000, seconds=60.0)
    assert b.exhausted(9, 999, 59.0) is None
    assert "step" in b.exhausted(10, 0, 0.0)
    assert "image" in b.exhausted(1, 1000, 0.0)
    assert "time" in b.exhausted(1, 0, 60.0)
    assert b.fraction(5, 100, 3.0) == pytest.approx(0.5)


def test_ema_matches_reference_and_warmup():
    from genforge.train.ema import EMA

    torch.manual_seed(0)
    model = TinyAE(TinyAEConfig())
    ema = EMA(model, ("decoder",), decay=0.9, warmup=True)
    ref = model.decoder.weight.detach().clone()
    for step in range(5):
        with torch.no_grad():
            model.decoder.weight.add_(1.0)
        ema.update(step)
        d = min(0.9, (1 + step) / (10 + step))
        ref = d * ref + (1 - d) * model.decoder.weight.detach()
    shadow = ema.state_tensors()["decoder.weight"]
    torch.testing.assert_close(shadow, ref, rtol=1e-6, atol=1e-6)
    live = model.decoder.weight.detach().clone()
    with ema.applied():
        torch.testing.assert_close(model.decoder.weight.detach(), ref, rtol=1e-6, atol=1e-6)
    assert torch.equal(model.decoder.weight.detach(), live)  # restored exactly


def test_optimizer_state_roundtrip_through_flat_form():
    from genforge.train.checkpoint import optimizer_from_flat, optimizer_to_flat

    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.Adam([p], lr=0.1, betas=(0.5, 0.9))
    for _ in range(3):
        opt.zero_grad()
        (p**2).sum().backward()
        opt.step()
    tensors, meta = optimizer_to_flat(opt, "optim/x")
    tensors = {k: v.clone() for k, v in tensors.items()}  # as read back from a file: not the live state
    import json

    meta = json.loads(json.dumps(meta))
    q = nn.Parameter(p.detach().clone())
    opt2 = torch.optim.Adam([q], lr=0.5)
    optimizer_from_flat(opt2, tensors, meta, "optim/x")
    for o, param in ((opt, p), (opt2, q)):
        o.zero_grad()
        (param**2).sum().backward()
        o.step()
    assert torch.equal(p, q)
    assert opt2.param_groups[0]["betas"] == (0.5, 0.9)


def test_rng_state_roundtrip_through_json():
    import json
    import random

    from genforge.train.checkpoint import rng_state, set_rng_state

    state = json.loads(json.dumps(rng_state()))
    a = (torch.rand(3), np.random.rand(2), random.random())
    set_rng_state(state)
    b = (torch.rand(3), np.random.rand(2), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_grid_layout():
    from genforge.train.samples import make_grid

    imgs = np.stack([np.full((2, 3, 1), i, np.uint8) for i in range(1, 6)])
    grid = make_grid(imgs, ncols=3, pad=1)
    assert grid.shape == (2 * 3 + 1, 3 * 4 + 1, 1)
    assert grid[1, 1, 0] == 1 and grid[1, 5, 0] == 2 and grid[4, 1, 0] == 4
    assert grid[4, 9, 0] == 0  # the sixth cell is empty padding
