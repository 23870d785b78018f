"""Augmentation configs: what a run used is exactly `to_dict(config)`, saved in run.json.

Every classical op has a field named after its registry entry; `p` is the per-sample
probability of applying it (0 = off). DiffAugment's `policy` lists registry names too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from genforge.core.errors import ConfigError


def check_p(owner: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"{owner}.p: a probability in [0, 1] is expected, got {p}")


def check_range(owner: str, name: str, lo_hi: tuple[float, float], lowest: float, highest: float) -> None:
    lo, hi = lo_hi
    if not lowest <= lo <= hi <= highest:
        raise ConfigError(f"{owner}.{name}: expected {lowest} <= low <= high <= {highest}, got {list(lo_hi)}")


def check_nonneg(owner: str, **values: float) -> None:
    for name, value in values.items():
        if value < 0:
            raise ConfigError(f"{owner}.{name}: expected a value >= 0, got {value}")


def check_ada(owner: str, target: float, speed_images: int, interval: int) -> None:
    check_range(owner, "ada_target", (-1.0, target), -1.0, 1.0)
    if speed_images < 1 or interval < 1:
        raise ConfigError(f"{owner}.ada_speed_images and ada_interval must be >= 1")


@dataclass
class FlipConfig:
    p: float = 0.0

    def __post_init__(self) -> None:
        check_p("flip", self.p)


@dataclass
class CropConfig:
    """Random resized crop: a region of `scale` x the image area and `ratio` aspect, resized back."""

    p: float = 0.0
    scale: tuple[float, float] = (0.6, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self) -> None:
        check_p("crop", self.p)
        check_range("crop", "scale", self.scale, 1e-3, 1.0)
        check_range("crop", "ratio", self.ratio, 1e-2, 1e2)


@dataclass
class RotateConfig:
    p: float = 0.0
    degrees: float = 15.0  # angle drawn uniformly in [-degrees, degrees]

    def __post_init__(self) -> None:
        check_p("rotate", self.p)
        check_nonneg("rotate", degrees=self.degrees)


@dataclass
class TranslateConfig:
    p: float = 0.0
    fraction: float = 0.125  # shift drawn uniformly in [-fraction, fraction] of width / height

    def __post_init__(self) -> None:
        check_p("translate", self.p)
        check_range("translate", "fraction", (0.0, self.fraction), 0.0, 1.0)


@dataclass
class ColorConfig:
    """torchvision-style jitter: each factor is drawn in [1 - x, 1 + x]; hue shifts by up to `hue` turns.

    Saturation and hue act on 3-channel images only.
    """

    p: float = 0.0
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.0

    def __post_init__(self) -> None:
        check_p("color", self.p)
        check_nonneg("color", brightness=self.brightness, contrast=self.contrast, saturation=self.saturation)
        check_range("color", "hue", (0.0, self.hue), 0.0, 0.5)


@dataclass
class CutoutConfig:
    """A square of side `size` x the image side, centred anywhere in the image (clipped), set to 0."""

    p: float = 0.0
    size: float = 0.5

    def __post_init__(self) -> None:
        check_p("cutout", self.p)
        check_range("cutout", "size", (0.0, self.size), 0.0, 1.0)


@dataclass
class DiffAugmentConfig:
    """DiffAugment (Zhao et al. 2020) for GAN training; an empty policy turns it off.

    The paper's policy is ["color", "translation", "cutout"]. `p` is the per-sample probability
    of each transform (1 = the paper); with `ada` it is the starting value that the ADA
    controller (Karras et al. 2020) then moves so that E[sign(D(real))] approaches `ada_target`,
    fast enough for p to cross 0 -> 1 in `ada_speed_images` real images.
    """

    policy: list[str] = field(default_factory=list)
    p: float = 1.0
    translation_ratio: float = 0.125
    cutout_ratio: float = 0.5
    ada: bool = False
    ada_target: float = 0.6
    ada_speed_images: int = 500_000
    ada_interval: int = 4  # adjust p every this many observed batches
    # which registered DiffAugment builds it (augment.registry.AUGMENTATIONS)
    modality: ClassVar[str] = "image"

    def __post_init__(self) -> None:
        check_p("diffaugment", self.p)
        check_range("diffaugment", "translation_ratio", (0.0, self.translation_ratio), 0.0, 1.0)
        check_range("diffaugment", "cutout_ratio", (0.0, self.cutout_ratio), 0.0, 1.0)
        check_ada("diffaugment", self.ada_target, self.ada_speed_images, self.ada_interval)


@dataclass
class AugmentConfig:
    """Classical augmentation of real training batches (float NCHW in [-1, 1])."""

    hflip: FlipConfig = field(default_factory=FlipConfig)
    vflip: FlipConfig = field(default_factory=FlipConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    rotate: RotateConfig = field(default_factory=RotateConfig)
    translate: TranslateConfig = field(default_factory=TranslateConfig)
    color: ColorConfig = field(default_factory=ColorConfig)
    cutout: CutoutConfig = field(default_factory=CutoutConfig)
    # how geometric ops fill pixels from outside the image
    padding: Literal["reflection", "zeros", "border"] = "reflection"
    # applied inside a GAN training step to real and generated images alike, not to the data
    diffaugment: DiffAugmentConfig = field(default_factory=DiffAugmentConfig)
