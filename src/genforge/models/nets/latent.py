"""Latent noise and interpolation shared by the latent-variable families (GAN, VAE)."""

from __future__ import annotations

import torch


def seeded_normal(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(int(seed)))


def slerp(a: torch.Tensor, b: torch.Tensor, n_steps: int) -> torch.Tensor:
    """n_steps points on the great circle from a to b (rows), for Gaussian latents whose norm
    concentrates on a shell, so that midpoints stay typical; falls back to lerp for parallel a, b."""
    t = torch.linspace(0, 1, n_steps)[:, None]
    a, b = a.reshape(1, -1), b.reshape(1, -1)
    cos = (a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1, 1))
    if omega.abs() < 1e-4:
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def interpolation_latents(dim: int, n_steps: int, seed_a: int, seed_b: int) -> torch.Tensor:
    """(n_steps, dim) latents walking from the noise of seed_a to that of seed_b."""
    if n_steps < 2:
        from genforge.core.errors import GenforgeError

        raise GenforgeError(f"interpolation needs at least 2 steps, got {n_steps}")
    return slerp(seeded_normal((dim,), seed_a), seeded_normal((dim,), seed_b), n_steps)


def class_labels(
    labels: torch.Tensor | int | None, n: int, num_classes: int, device: torch.device
) -> torch.Tensor:
    """n int64 class labels: `labels` broadcast and range-checked, or 0, 1, 2, ... cycling when None."""
    if labels is None:
        return torch.arange(n, device=device) % num_classes
    labels = torch.as_tensor(labels, dtype=torch.long, device=device).expand(n)
    if bool((labels < 0).any() or (labels >= num_classes).any()):
        from genforge.core.errors import GenforgeError

        raise GenforgeError(
            f"class labels must be in 0..{num_classes - 1} (unlabelled images cannot train a conditional model)"
        )
    return labels
