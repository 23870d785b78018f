"""Hooks into the training loop, e.g. evaluation every N steps (wired in by the CLI).

The trainer calls each callback's methods in list order on the main process only (rank 0).
A callback logs through `trainer.log_metrics(step, {...})`, which writes metrics.jsonl and
TensorBoard and makes the values usable as `train.best_metric`. Callbacks run with the global
RNG forked, so they never change the training sequence (exact resume still holds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from genforge.train.trainer import Trainer


class Callback:
    """Base with no-op hooks; override the ones you need."""

    def on_train_start(self, trainer: Trainer) -> None:
        pass

    def on_step_end(self, trainer: Trainer, step: int) -> None:
        """After optimisation step `step` (1-based: the number of completed steps)."""

    def on_checkpoint(self, trainer: Trainer, step: int, path: Any) -> None:
        pass

    def on_train_end(self, trainer: Trainer) -> None:
        pass


class EveryN(Callback):
    """Runs `fn(trainer, step)` every `n` completed steps and once at the end."""

    def __init__(self, n: int, fn, at_end: bool = True):
        if n < 1:
            raise ValueError("EveryN: n must be >= 1")
        self.n, self.fn, self.at_end = n, fn, at_end
        self._last = -1

    def on_step_end(self, trainer: Trainer, step: int) -> None:
        if step % self.n == 0:
            self._last = step
            self.fn(trainer, step)

    def on_train_end(self, trainer: Trainer) -> None:
        if self.at_end and self._last != trainer.step:
            self.fn(trainer, trainer.step)
