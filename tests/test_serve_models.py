"""Tiny test-only models for the service and export tests, and helpers that serve them.

`serve-toy` is a linear generator (latent -> 8x8x1) with the latents hook; `serve-toy-plain`
lacks the hook (requests then run one at a time); `serve-toy-restore` is a restoration model.
Importing this module registers them (the subprocess server of the shutdown test does too).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genforge.models.base import GenerativeModel
from genforge.models.pipeline import load_pipeline, save_model
from genforge.models.registry import MODELS


@dataclass
class ToyConfig:
    image_size: int = 8
    channels: int = 1
    num_classes: int = 0
    latent_dim: int = 16
    delay_ms: float = 0.0  # each forward pass sleeps this long (concurrency, timeout, shutdown tests)


class Toy(GenerativeModel):
    family = "toy"
    config_class = ToyConfig

    def __init__(self, config: ToyConfig):
        super().__init__(config)
        c = config
        self.conditional = c.num_classes > 0
        self.net = nn.Linear(c.latent_dim, c.channels * c.image_size**2)
        self.embed = nn.Embedding(max(1, c.num_classes), c.latent_dim)
        self.forward_sizes: list[int] = []  # batch size of every forward pass, for the tests

    def noise(self, n: int, generator: torch.Generator | None = None, **options: Any) -> torch.Tensor:
        return torch.randn(n, self.config.latent_dim, generator=generator)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional:
            z = z + self.embed(labels)
        c = self.config
        return torch.tanh(self.net(z)).view(-1, c.channels, c.image_size, c.image_size)  # -1: traceable batch

    @torch.no_grad()
    def sample(self, n, *, generator=None, labels=None, latents=None, **options):
        if options:
            raise ValueError(f"unknown options {options}")
        z = self.noise(n, generator) if latents is None else latents
        self.forward_sizes.append(n)
        if self.config.delay_ms:
            time.sleep(self.config.delay_ms / 1000)
        return self.decode(z, labels)

    def export_spec(self):
        z = torch.zeros(2, self.config.latent_dim)
        if self.conditional:
            return (
                _Decoder(self),
                (z, torch.zeros(2, dtype=torch.long)),
                ["z", "labels"],
                ["images"],
                _axes("z", "labels"),
            )
        return _Decoder(self), (z,), ["z"], ["images"], _axes("z")


def _axes(*names: str) -> dict[str, dict[int, str]]:
    return {name: {0: "batch"} for name in (*names, "images")}


class _Decoder(nn.Module):
    def __init__(self, toy: Toy):
        super().__init__()
        self.toy = toy

    def forward(self, z, labels=None):
        return self.toy.decode(z, labels)


class PlainToy(Toy):
    """Draws its noise inside `sample` only: no way to merge requests."""

    noise = None  # type: ignore[assignment]

    @torch.no_grad()
    def sample(self, n, *, generator=None, labels=None, **options):
        z = torch.randn(n, self.config.latent_dim, generator=generator)
        self.forward_sizes.append(n)
        return self.decode(z, labels)


class RestoreToy(Toy):
    task = "restore"

    def __init__(self, config: ToyConfig):
        super().__init__(config)
        self.conv = nn.Conv2d(config.channels, config.channels, 3, padding=1)

    @torch.no_grad()
    def restore(self, images: torch.Tensor) -> torch.Tensor:
        self.forward_sizes.append(len(images))
        return torch.tanh(self.conv(images))

    def sample(self, n, **kwargs):
        raise NotImplementedError("a restoration model does not sample")

    def export_spec(self):
        x = torch.zeros(2, self.config.channels, self.config.image_size, self.config.image_size)
        return _Restorer(self), (x,), ["corrupted"], ["images"], _axes("corrupted")


class _Restorer(nn.Module):
    def __init__(self, toy: RestoreToy):
        super().__init__()
        self.toy = toy

    def forward(self, x):
        return torch.tanh(self.toy.conv(x))


for _name, _cls in (("serve-toy", Toy), ("serve-toy-plain", PlainToy), ("serve-toy-restore", RestoreToy)):
    if _name not in MODELS:
        MODELS.register(_name, _cls)

METRICS = {"fid": 12.5, "kid": {"mean": 0.01, "std": 0.002}, "precision": 0.7}


def make_run(
    directory: Path, name: str = "serve-toy", metrics: dict | None = None, seed: int = 0, **config: Any
) -> Path:
    """A run directory holding model `name` with random weights (and metrics.json if given)."""
    torch.manual_seed(seed)
    cls = MODELS.get(name)
    model = cls(cls.config_class(**config))
    info = {"dataset": {"fingerprint": "f" * 64, "name": "toy"}, "step": 7, "ema": False}
    if model.conditional:
        info["dataset"]["class_names"] = [f"c{i}" for i in range(model.config.num_classes)]
    save_model(model, name, directory, info)
    if metrics is not None:
        (directory / "metrics.json").write_text(json.dumps(metrics))
    return directory


@contextlib.contextmanager
def serving(run_dir: Path, **overrides: Any) -> Iterator[Any]:
    """A real server on a free loopback port, in a thread, ready; yields the ServiceServer."""
    from genforge.deploy.config import ServeConfig
    from genforge.deploy.server import ServiceServer

    cfg = ServeConfig(run_dir=str(run_dir), port=0, **{"max_wait_ms": 5.0, **overrides})
    server = ServiceServer(cfg).start()
    try:
        server.wait_ready(60)
        yield server
    finally:
        server.stop()


# the toy models themselves ------------------------------------------------------------------------


def test_toy_latents_path_equals_generator_path(tmp_path):
    pipe = load_pipeline(make_run(tmp_path, num_classes=3))
    z = pipe.model.noise(5, torch.Generator().manual_seed(4))
    labels = torch.tensor([0, 1, 2, 0, 1])
    via_latents = pipe.model.sample(5, latents=z, labels=labels)
    via_seed = pipe.model.sample(5, generator=torch.Generator().manual_seed(4), labels=labels)
    assert torch.equal(via_latents, via_seed)
    assert via_seed.shape == (5, 1, 8, 8) and via_seed.abs().max() <= 1


def test_make_run_writes_loadable_run(tmp_path):
    make_run(tmp_path, "serve-toy-restore", metrics=METRICS)
    pipe = load_pipeline(tmp_path)
    assert pipe.model.task == "restore" and pipe.info["step"] == 7
    assert json.loads((tmp_path / "metrics.json").read_text()) == METRICS
    x = torch.zeros(2, 1, 8, 8)
    assert np.allclose(
        pipe.model.restore(x).numpy(), torch.tanh(pipe.model.conv.bias).detach().view(1, 1, 1, 1).numpy()
    )
