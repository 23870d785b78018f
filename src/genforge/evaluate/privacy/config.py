"""Settings of the privacy evaluations: synthetic-data utility (TSTR) and the membership-inference
audit. Plain dataclasses with no heavy imports, so scenario files validate them at load time
(before minutes of training) and `genforge eval` options map onto them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class UtilityConfig:
    """Train on synthetic, test on real (TSTR) beside train on real, test on real (TRTR)."""

    # None: on for class-conditional runs (labelled samples), off for samples files; True: also
    # for a samples file with labels, and unlabelled samples are an error rather than a skip
    enabled: bool | None = None
    # synthetic training examples; None: as many as the real train split holds, so TSTR and
    # TRTR train on the same number of examples and differ only in where they come from
    n: int | None = None
    # overrides of the modality's fixed classifier recipe (images: UtilityRecipe's fields)
    recipe: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n is not None and self.n < 2:
            raise ValueError(f"utility.n must be >= 2, got {self.n}")


@dataclass
class MembershipConfig:
    """The membership-inference audit: members (train split) against non-members (held-out)."""

    enabled: bool = True
    n: int = 1000  # records per side, at most the smaller of the two splits
    # attack names to run (as reported, e.g. distance_pixels, gan_discriminator); None: all that apply
    attacks: list[str] | None = None
    draws: int = 4  # fixed noise draws per record for stochastic scores (ELBO, denoising loss)
    # diffusion: noise levels as fractions of the schedule's timesteps (Carlini et al. 2023 found
    # the loss at small t, ~0.1 T, the most telling)
    levels: list[float] = field(default_factory=lambda: [0.02, 0.1, 0.3])
    batch_size: int = 250

    def __post_init__(self) -> None:
        checks = {"n": self.n >= 2, "draws": self.draws >= 1, "batch_size": self.batch_size >= 1,
                  "levels": bool(self.levels) and all(0 <= v < 1 for v in self.levels)}  # fmt: skip
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"membership.{name} out of range: {getattr(self, name)!r}")
