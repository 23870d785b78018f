"""Differential privacy by one release: the Gaussian mechanism on the per-class embedding sums a
`data_statistics` family trains against (models/mmd.py, train/statistics.py).

The guarantee. The training split is read once, to build a (classes x (dim + 1)) table of clipped
per-class sums and counts whose sensitivity under adding or removing one example is 1 (L2); the
table plus N(0, sigma^2) per entry is (epsilon, delta)-DP, with sigma from Opacus' accountant for
one step at sample rate 1 (which is exactly the Gaussian mechanism; `calibrate_noise`). Everything
after (the generator's training, its weights, checkpoints, samples) only reads the noisy table:
post-processing, no further cost. The trainer's phases get public batches (zeros, uniform labels)
instead of private ones, as DP-SGD's public phases do, so no step can read the data.

What it does not cover is what DP-SGD's does not either (docs/privacy.md): the evaluator and the
data report of the private split, and the feature net when a run without privacy trained it.
A private run never trains the feature net on its data: it comes from a base run (`--init-from`,
public data) or stays random.
"""

from __future__ import annotations

from typing import Any

from genforge.core.errors import ConfigError
from genforge.models.base import Batch
from genforge.train.privacy import MECHANISMS, PrivacyConfig, PrivacyMechanism, calibrate_noise


class PrivateRelease(PrivacyMechanism):
    """One Gaussian release of the training split's statistics; every phase public."""

    def __init__(self, trainer: Any, config: PrivacyConfig):
        self.config = config
        n = len(trainer.dataset.split(trainer.config.split))
        if trainer.ctx.world_size > 1:
            raise ConfigError("privacy: a released-statistics run trains in one process; run it without torchrun")
        # the release draws its noise on the CPU, where the statistics are summed
        self._setup_common(trainer, config, n, noise_device="cpu")
        if config.noise_multiplicity != 1:
            raise ConfigError("privacy.noise_multiplicity: only DP-SGD on diffusion models averages noise levels")
        self.noise_multiplier = (
            config.noise_multiplier
            if config.noise_multiplier is not None
            else calibrate_noise(config.epsilon, config.delta, 1.0, 1, config.accountant)
        )
        self.phases = [ph.name for ph in trainer.phases]
        self.planned_steps = 1  # one release

    # --- the release -------------------------------------------------------------------------

    def release(self, statistics: Any) -> tuple[Any, Any]:
        """The noisy per-class means of a filled `ClassMeans`, counted by the accountant; a
        resumed or repeated call would spend again, so the trainer makes it once per run."""
        means = statistics.means(self.noise_multiplier, self.noise)
        self.accountant.history.append((self.noise_multiplier, 1.0, 1))
        return means

    # --- the trainer's hooks -------------------------------------------------------------------

    def exhausted(self, step: int) -> str | None:
        return None  # the one release is the whole cost; training steps read no data

    def fraction(self, step: int) -> float:
        return 0.0

    def run_phase(self, ph: Any, batch: Batch, step: int, repeat: int, body: Any) -> None:
        body(ph, self.public_batch(batch, step, repeat), step)

    def setup(self) -> dict[str, Any]:
        return {
            **self._setup_fields("Gaussian mechanism: one release of per-class embedding sums and counts",
                                 " (accountant)"),
            "sensitivity": 1.0,
            "sample_rate": 1.0,
            "private_modules": [],
            "private_phases": [],
            "public_phases": self.phases,
        }


MECHANISMS.register("release", PrivateRelease)
