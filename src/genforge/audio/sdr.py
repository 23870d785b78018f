"""Scale-invariant signal-to-distortion ratio (SI-SDR; Le Roux et al., "SDR - half-baked or well
done?", ICASSP 2019), in torch so a model can train on it and evaluation can report it.

SI-SDR(s, s_hat) = 10 log10(|a s|^2 / |a s - s_hat|^2) with a = <s_hat, s> / |s|^2 (the optimal
scaling of the reference), both signals mean-removed first as in the paper's reference code.
"""

from __future__ import annotations

import torch


def si_sdr(reference: torch.Tensor, estimate: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """SI-SDR in dB of `estimate` against `reference`, both (..., T): one value per row (...)."""
    if reference.shape != estimate.shape:
        raise ValueError(f"si_sdr: shapes differ, {tuple(reference.shape)} and {tuple(estimate.shape)}")
    s = reference - reference.mean(-1, keepdim=True)
    y = estimate - estimate.mean(-1, keepdim=True)
    scale = (y * s).sum(-1, keepdim=True) / (s.pow(2).sum(-1, keepdim=True) + eps)
    target = scale * s
    residual = target - y
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / (residual.pow(2).sum(-1) + eps))
