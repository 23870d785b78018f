"""Noise schedules and the algebra of the forward process, independent of any network.

Tables are numpy float64 so the same numbers drive PyTorch training, PyTorch sampling and a
numpy/onnxruntime sampler. The conversions between x0, eps and v use only `+ - * /` and `** 0.5`,
so they accept numpy arrays, torch tensors and Python floats alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from genforge.core.registry import Registry

MAX_BETA = 0.999  # Nichol & Dhariwal clip betas so the last steps do not collapse alpha_bar to 0

SCHEDULES: Registry[Callable[[int], np.ndarray]] = Registry("noise schedule")


@SCHEDULES.register("linear")
def linear_betas(timesteps: int) -> np.ndarray:
    """Ho et al. 2020: betas linear in [1e-4, 0.02] for 1000 steps, rescaled for other lengths."""
    scale = 1000.0 / timesteps
    return np.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=np.float64)


def cosine_alpha_bar(t: np.ndarray | float, timesteps: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal 2021, eq. 17: alpha_bar(t) = f(t) / f(0), f(t) = cos((t/T + s)/(1 + s) * pi/2)^2."""

    def f(u: Any) -> Any:
        return np.cos((np.asarray(u, dtype=np.float64) / timesteps + s) / (1 + s) * math.pi / 2) ** 2

    return f(t) / f(0.0)


@SCHEDULES.register("cosine")
def cosine_betas(timesteps: int) -> np.ndarray:
    ab = cosine_alpha_bar(np.arange(timesteps + 1), timesteps)
    return np.minimum(1.0 - ab[1:] / ab[:-1], MAX_BETA)


@dataclass(frozen=True)
class Schedule:
    """Index i in 0..T-1 is diffusion step i+1: x_i = sqrt(alpha_bar[i]) x0 + sqrt(1 - alpha_bar[i]) eps."""

    betas: np.ndarray  # float64 (T,)

    @property
    def timesteps(self) -> int:
        return int(self.betas.shape[0])

    @property
    def alpha_bar(self) -> np.ndarray:
        return np.cumprod(1.0 - self.betas)

    def alpha_bar_at(self, index: int) -> float:
        """alpha_bar of step `index`; index -1 is the clean data (alpha_bar = 1)."""
        return 1.0 if index < 0 else float(self.alpha_bar[index])


def make_schedule(name: str, timesteps: int) -> Schedule:
    return Schedule(betas=SCHEDULES.get(name)(timesteps))


def q_sample(x0: Any, eps: Any, alpha_bar: Any) -> Any:
    """A draw of x_t given x0 and the noise."""
    return alpha_bar**0.5 * x0 + (1 - alpha_bar) ** 0.5 * eps


def x0_from_eps(x_t: Any, eps: Any, alpha_bar: Any) -> Any:
    return (x_t - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar**0.5


def eps_from_x0(x_t: Any, x0: Any, alpha_bar: Any) -> Any:
    return (x_t - alpha_bar**0.5 * x0) / (1 - alpha_bar) ** 0.5


def v_from_eps(x0: Any, eps: Any, alpha_bar: Any) -> Any:
    """Salimans & Ho 2022: v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0."""
    return alpha_bar**0.5 * eps - (1 - alpha_bar) ** 0.5 * x0


def eps_from_v(x_t: Any, v: Any, alpha_bar: Any) -> Any:
    # x_t and v are a rotation of (x0, eps) by the same angle, so eps = sqrt(ab) v + sqrt(1-ab) x_t
    return alpha_bar**0.5 * v + (1 - alpha_bar) ** 0.5 * x_t


@dataclass(frozen=True)
class Prediction:
    """What the network predicts: the training target and how to turn an output into eps."""

    target: Callable[[Any, Any, Any], Any]  # (x0, eps, alpha_bar) -> target
    to_eps: Callable[[Any, Any, Any], Any]  # (x_t, output, alpha_bar) -> eps


PREDICTIONS: Registry[Prediction] = Registry("prediction type")
PREDICTIONS.register("eps", Prediction(target=lambda x0, eps, ab: eps, to_eps=lambda x_t, out, ab: out))
PREDICTIONS.register("v", Prediction(target=v_from_eps, to_eps=eps_from_v))
