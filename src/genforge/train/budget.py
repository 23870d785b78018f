"""Training budgets: steps, images, wall time or a further rule (the privacy budget), whichever
ends first."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from genforge.core.errors import ConfigError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(text: str | float | int, where: str = "duration") -> float:
    """Seconds in "90", "90s", "5m", "1h", "1h30m", "1.5h"."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        s = str(text).strip().lower().replace(" ", "")
        try:
            seconds = float(s)
        except ValueError:
            parts = _PART.findall(s)
            if not parts or "".join(n + u for n, u in parts) != s:
                raise ConfigError(
                    f"{where}: cannot read {text!r} as a duration; use e.g. 90s, 5m, 1h or 1h30m"
                ) from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"{where}: must be positive, got {text!r}")
    return seconds


class StopRule(Protocol):
    """A further limit on training, e.g. the privacy budget (train/privacy.py)."""

    def exhausted(self, step: int) -> str | None:
        """Why step `step` must not run, or None."""

    def fraction(self, step: int) -> float:
        """Progress in [0, 1] towards the limit."""


@dataclass
class Budget:
    steps: int | None = None
    images: int | None = None
    seconds: float | None = None
    rules: list[Any] = field(default_factory=list)  # StopRules, checked after the three limits

    def exhausted(self, step: int, images: int, elapsed: float) -> str | None:
        """The reason training must stop now, or None."""
        if self.steps is not None and step >= self.steps:
            return f"step budget reached ({self.steps} steps)"
        if self.images is not None and images >= self.images:
            return f"image budget reached ({self.images} images)"
        if self.seconds is not None and elapsed >= self.seconds:
            return f"time budget reached ({self.seconds:g} s)"
        for rule in self.rules:
            reason = rule.exhausted(step)
            if reason is not None:
                return reason
        return None

    def fraction(self, step: int, images: int, elapsed: float) -> float:
        """Progress in [0, 1] towards the nearest limit (for the progress bar)."""
        parts = []
        if self.steps:
            parts.append(step / self.steps)
        if self.images:
            parts.append(images / self.images)
        if self.seconds:
            parts.append(elapsed / self.seconds)
        parts += [rule.fraction(step) for rule in self.rules]
        return min(1.0, max(parts, default=0.0))
