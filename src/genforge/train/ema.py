"""Exponential moving average of the sampling modules (generator, decoder, denoiser)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class EMA:
    """Shadow copies of the floating-point parameters and buffers of `modules` of `model`.

    Parameters move towards the live ones with `decay` (ramped up early in training when
    `warmup`, so the average is not dominated by the random initialisation); buffers such as
    BatchNorm statistics are copied, since averaging them has no meaning.
    """

    def __init__(
        self, model: nn.Module, modules: tuple[str, ...] | list[str], decay: float, warmup: bool = True
    ):
        self.decay, self.warmup = decay, warmup
        self.names: list[str] = []
        self.live_params: list[torch.Tensor] = []
        self.live_buffers: list[torch.Tensor] = []
        self.buffer_names: list[str] = []
        for mod_name in modules:
            mod = getattr(model, mod_name, None)
            if not isinstance(mod, nn.Module):
                raise TypeError(f"ema module {mod_name!r} is not a submodule of {type(model).__name__}")
            for name, p in mod.named_parameters():
                self.names.append(f"{mod_name}.{name}")
                self.live_params.append(p)
            for name, b in mod.named_buffers():
                if b.is_floating_point():
                    self.buffer_names.append(f"{mod_name}.{name}")
                    self.live_buffers.append(b)
        self.shadow_params = [p.detach().clone() for p in self.live_params]
        self.shadow_buffers = [b.detach().clone() for b in self.live_buffers]

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        if self.shadow_params:
            live = [p.detach() for p in self.live_params]
            torch._foreach_lerp_(self.shadow_params, live, 1.0 - self.decay_at(step))
        if self.shadow_buffers:
            torch._foreach_copy_(self.shadow_buffers, self.live_buffers)

    @contextlib.contextmanager
    @torch.no_grad()
    def applied(self) -> Iterator[None]:
        """Temporarily put the EMA weights into the model (for sampling and the final save)."""
        backup = [t.detach().clone() for t in self.live_params + self.live_buffers]
        torch._foreach_copy_(self.live_params + self.live_buffers, self.shadow_params + self.shadow_buffers)
        try:
            yield
        finally:
            torch._foreach_copy_(self.live_params + self.live_buffers, backup)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        names = self.names + self.buffer_names
        return dict(zip(names, self.shadow_params + self.shadow_buffers, strict=True))

    @torch.no_grad()
    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        names = self.names + self.buffer_names
        missing = [n for n in names if n not in tensors]
        if missing:
            raise KeyError(f"EMA state lacks {', '.join(missing[:5])}")
        torch._foreach_copy_(self.shadow_params + self.shadow_buffers, [tensors[n] for n in names])
