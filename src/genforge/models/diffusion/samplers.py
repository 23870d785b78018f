"""Reverse-process samplers: DDIM (Song et al. 2021, with eta) and DDPM ancestral (Ho et al. 2020).

The step functions and the loop are pure arithmetic on `x` and `eps` (numpy arrays or torch
tensors) with the alpha_bar values as Python floats, so a numpy/onnxruntime sampler reuses them
unchanged. The loop only needs a callable `eps_fn(x_t, t_index) -> eps`; it knows no networks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from genforge.core.errors import ConfigError
from genforge.core.registry import Registry
from genforge.models.diffusion.schedule import Schedule, eps_from_x0, x0_from_eps


def sample_timesteps(timesteps: int, steps: int) -> np.ndarray:
    """`steps` step indices from T-1 down to 0, evenly spaced (strictly decreasing for steps <= T)."""
    if not 1 <= steps <= timesteps:
        raise ConfigError(f"sampling steps must be in 1..{timesteps} (the model's timesteps), got {steps}")
    return np.linspace(timesteps - 1, 0, steps).round().astype(np.int64)


def predict_x0(x: Any, eps: Any, alpha_bar: float, clip: bool) -> tuple[Any, Any]:
    """x0 implied by eps; with `clip`, x0 is clipped to the data range [-1, 1] and eps made consistent."""
    x0 = x0_from_eps(x, eps, alpha_bar)
    if clip:
        x0 = x0.clip(-1.0, 1.0)
        eps = eps_from_x0(x, x0, alpha_bar)
    return x0, eps


def ddim_sigma(alpha_bar: float, alpha_bar_prev: float, eta: float) -> float:
    """Song et al. eq. 16: eta = 0 is deterministic DDIM, eta = 1 matches the DDPM posterior variance."""
    return eta * ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)) ** 0.5


def ddim_step(
    x: Any,
    eps: Any,
    alpha_bar: float,
    alpha_bar_prev: float,
    eta: float = 0.0,
    noise: Any = None,
    clip: bool = True,
) -> Any:
    """x_prev from x_t and the predicted noise; `noise` (same shape as x) is needed when eta > 0."""
    x0, eps = predict_x0(x, eps, alpha_bar, clip)
    sigma = ddim_sigma(alpha_bar, alpha_bar_prev, eta)
    out = alpha_bar_prev**0.5 * x0 + max(1 - alpha_bar_prev - sigma**2, 0.0) ** 0.5 * eps
    if sigma > 0:
        if noise is None:
            raise ValueError("ddim_step: eta > 0 needs a noise array")
        out = out + sigma * noise
    return out


def posterior(x0: Any, x: Any, alpha_bar: float, alpha_bar_prev: float) -> tuple[Any, float]:
    """Mean and variance of q(x_prev | x_t, x0) (Ho et al. eq. 6-7), for any pair of steps of the chain."""
    alpha = alpha_bar / alpha_bar_prev  # product of the alphas between the two steps
    beta = 1 - alpha
    mean = (beta * alpha_bar_prev**0.5 * x0 + (1 - alpha_bar_prev) * alpha**0.5 * x) / (1 - alpha_bar)
    return mean, beta * (1 - alpha_bar_prev) / (1 - alpha_bar)


def ddpm_step(
    x: Any,
    eps: Any,
    alpha_bar: float,
    alpha_bar_prev: float,
    eta: float = 1.0,
    noise: Any = None,
    clip: bool = True,
) -> Any:
    """Ancestral step: a draw from the posterior with x0 predicted from eps (`eta` is unused)."""
    x0, _ = predict_x0(x, eps, alpha_bar, clip)
    mean, var = posterior(x0, x, alpha_bar, alpha_bar_prev)
    if var > 0:
        if noise is None:
            raise ValueError("ddpm_step: needs a noise array")
        mean = mean + var**0.5 * noise
    return mean


@dataclass(frozen=True)
class Sampler:
    step: Callable[..., Any]
    full_chain: bool  # default number of steps: all T steps (else the model's sample_steps)
    needs_noise: Callable[[float], bool]  # given eta


SAMPLERS: Registry[Sampler] = Registry("sampler")
SAMPLERS.register("ddim", Sampler(step=ddim_step, full_chain=False, needs_noise=lambda eta: eta > 0))
SAMPLERS.register("ddpm", Sampler(step=ddpm_step, full_chain=True, needs_noise=lambda eta: True))


def guide(cond: Any, uncond: Any, scale: float) -> Any:
    """Classifier-free guidance (Ho & Salimans 2022): 0 = unconditional, 1 = conditional."""
    return uncond + scale * (cond - uncond)


def sample_loop(
    eps_fn: Callable[[Any, int], Any],
    x: Any,
    schedule: Schedule,
    steps: int,
    sampler: str = "ddim",
    eta: float = 0.0,
    noise_fn: Callable[[], Any] | None = None,
    clip: bool = True,
) -> Any:
    """Run the reverse process from x = x_T (numpy or torch); returns the final x0 estimate.

    `eps_fn(x_t, t_index)` predicts the noise; `noise_fn()` draws fresh noise shaped like x
    (needed by DDPM and by DDIM with eta > 0).
    """
    spec = SAMPLERS.get(sampler)
    if eta < 0:
        raise ConfigError(f"eta must be >= 0, got {eta}")
    ts = sample_timesteps(schedule.timesteps, steps)
    noisy = spec.needs_noise(eta)
    if noisy and noise_fn is None:
        raise ValueError(f"sampler {sampler!r} with eta={eta} needs a noise_fn")
    for i, t in enumerate(ts.tolist()):
        ab, ab_prev = (
            schedule.alpha_bar_at(t),
            schedule.alpha_bar_at(int(ts[i + 1]) if i + 1 < len(ts) else -1),
        )
        eps = eps_fn(x, t)
        x = spec.step(x, eps, ab, ab_prev, eta=eta, noise=noise_fn() if noisy else None, clip=clip)
    return x
