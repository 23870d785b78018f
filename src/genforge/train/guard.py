"""Divergence guard: a non-finite loss rolls training back to the last good state with a lower lr.

The losses of the steps since the last check are summed on the device (a NaN or inf anywhere
makes the sum non-finite), so a check costs one scalar read however many steps it covers, and
the hot loop never synchronises on its own.
"""

from __future__ import annotations

import torch

from genforge.core.errors import GenforgeError


class DivergenceGuard:
    def __init__(self, lr_factor: float, max_retries: int):
        self.lr_factor, self.max_retries = lr_factor, max_retries
        self.retries = 0
        self.lr_scale = 1.0
        self._sum: torch.Tensor | None = None

    def observe(self, loss: torch.Tensor) -> None:
        value = loss.detach().float()
        self._sum = value if self._sum is None else self._sum + value

    def pending(self) -> torch.Tensor:
        """1.0 when a non-finite loss was seen since the last check, else 0.0 (a device tensor)."""
        if self._sum is None:
            return torch.zeros(())
        return (~torch.isfinite(self._sum)).float()

    def reset(self) -> None:
        self._sum = None

    def diverged(self, step: int, why: str) -> float:
        """Record a divergence at `step`; returns the new lr scale, or raises after the retries."""
        self.reset()
        if self.retries >= self.max_retries:
            raise GenforgeError(
                f"training diverged at step {step} ({why}) after {self.retries} rollback(s) with the learning "
                f"rate lowered to {self.lr_scale:g}x; lower the learning rate or check the data and model config"
            )
        self.retries += 1
        self.lr_scale *= self.lr_factor
        return self.lr_scale

    def state(self) -> dict[str, float | int]:
        return {"retries": self.retries, "lr_scale": self.lr_scale}

    def load_state(self, state: dict[str, float | int]) -> None:
        self.retries = int(state.get("retries", 0))
        self.lr_scale = float(state.get("lr_scale", 1.0))
