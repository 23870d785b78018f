"""ADA-style control of the augmentation probability (Karras et al., "Training Generative
Adversarial Networks with Limited Data", 2020).

The overfitting heuristic r_t = E[sign(D(real))] over the last `interval` batches is compared
with `target`; p moves by sign(r_t - target) * (images seen) / speed_images, so p can cross
0 -> 1 in `speed_images` real images. All state is plain numbers, for checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from genforge.augment.config import DiffAugmentConfig
from genforge.core.errors import ConfigError


class AdaController:
    def __init__(
        self,
        target: float = 0.6,
        speed_images: int = 500_000,
        interval: int = 4,
        p: float = 0.0,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        """`reduce`, under DDP, sums a small tensor over ranks (e.g. an all_reduce) so every rank
        adjusts p from the same global statistics."""
        if speed_images < 1 or interval < 1 or not 0.0 <= p <= 1.0:
            raise ConfigError(
                f"ada: need speed_images >= 1, interval >= 1, 0 <= p <= 1; got {speed_images}, {interval}, {p}"
            )
        self.target, self.speed_images, self.interval, self.p = (
            float(target),
            int(speed_images),
            int(interval),
            float(p),
        )
        self.reduce = reduce
        self.last_r: float | None = None
        self._calls = 0
        self._stats: torch.Tensor | None = (
            None  # [sum of signs, number of outputs, images]; kept on D's device
        )

    @classmethod
    def from_config(cls, config: DiffAugmentConfig, **kwargs: Any) -> AdaController:
        return cls(config.ada_target, config.ada_speed_images, config.ada_interval, config.p, **kwargs)

    def observe(self, d_real: torch.Tensor) -> float:
        """Record D's outputs on a real batch (one row per image); returns p, adjusted every `interval` calls.

        The statistics stay on D's device until an adjustment, so most steps do not synchronise.
        """
        d = d_real.detach().reshape(len(d_real), -1).float()
        stats = torch.stack(
            [
                d.sign().sum(),
                torch.tensor(float(d.numel()), device=d.device),
                torch.tensor(float(len(d)), device=d.device),
            ]
        )
        self._stats = stats if self._stats is None else self._stats.to(stats.device) + stats
        self._calls += 1
        if self._calls % self.interval == 0:
            self._adjust()
        return self.p

    def _adjust(self) -> None:
        stats = self._stats
        if self.reduce is not None:
            stats = self.reduce(stats.clone())
        sign_sum, count, images = (float(v) for v in stats.cpu())
        self._stats = None
        if count == 0:
            return
        self.last_r = sign_sum / count
        step = images / self.speed_images
        direction = (self.last_r > self.target) - (self.last_r < self.target)
        self.p = min(1.0, max(0.0, self.p + direction * step))

    def state_dict(self) -> dict[str, Any]:
        pending = [0.0, 0.0, 0.0] if self._stats is None else [float(v) for v in self._stats.cpu()]
        return {"p": self.p, "last_r": self.last_r, "calls": self._calls, "pending": pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p, self.last_r, self._calls = float(state["p"]), state.get("last_r"), int(state.get("calls", 0))
        pending = state.get("pending", [0.0, 0.0, 0.0])
        self._stats = None if not any(pending) else torch.tensor(pending, dtype=torch.float32)
