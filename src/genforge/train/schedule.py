"""Learning-rate schedules: a phase's `LRSchedule` as a multiplier of its optimiser's lr.

The multiplier is a function of the step (warmup) and of the run's progress through its budget
(decay), both restored from a checkpoint, so a resumed run continues on the same curve. Progress
comes from `Budget.fraction`: with a step or image budget it is exact; with a wall-time budget it
follows the clock, which is what lets a time-budgeted run end at the bottom of its decay.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from genforge.core.errors import ConfigError
from genforge.core.registry import Registry
from genforge.models.base import LRSchedule

# decay shape: progress in [0, 1] -> multiplier in [0, 1] (1 at the start, 0 at the end)
DECAYS: Registry[Callable[[float], float]] = Registry("lr decay")
DECAYS.register("constant", lambda p: 1.0)
DECAYS.register("cosine", lambda p: 0.5 * (1.0 + math.cos(math.pi * p)))
DECAYS.register("linear", lambda p: 1.0 - p)


def check_schedule(schedule: LRSchedule, where: str) -> None:
    DECAYS.get(schedule.decay)
    if schedule.warmup_steps < 0 or not 0.0 <= schedule.min_ratio <= 1.0:
        raise ConfigError(f"{where}: warmup_steps >= 0 and min_ratio in [0, 1] expected, got {schedule}")


def is_constant(schedule: LRSchedule) -> bool:
    return schedule.decay == "constant" and schedule.warmup_steps == 0


def lr_factor(schedule: LRSchedule, step: int, progress: float) -> float:
    """The multiplier at `step` (0-based, the step about to run) and budget `progress` in [0, 1]."""
    if step < schedule.warmup_steps:
        return (step + 1) / (schedule.warmup_steps + 1)
    shape = DECAYS.get(schedule.decay)(min(max(progress, 0.0), 1.0))
    return schedule.min_ratio + (1.0 - schedule.min_ratio) * shape if schedule.decay != "constant" else 1.0
