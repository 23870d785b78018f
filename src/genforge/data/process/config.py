"""The ingest configuration: every option of `genforge data ingest`, saved beside the dataset."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from genforge.core.errors import ConfigError

# files an ingest writes beside the canonical dataset
CONFIG_FILE = "ingest.json"  # this config
PROCESS_LOG = "process.json"  # quarantine, dropped duplicates and notes, read by the report

ResizeFilter = Literal["lanczos", "bicubic", "bilinear", "area", "nearest"]
NAMED_BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0)}
_HEX = re.compile(r"#([0-9a-fA-F]{6})")


@dataclass
class IngestConfig:
    size: tuple[int, int] | None = None  # (H, W); None: the source's own, which must agree
    channels: int | None = None  # 1 or 3; None: the source's own, which must agree
    val_fraction: float | None = None  # None: 0.1 when the source has neither val nor test split
    limit: int | None = None  # read at most this many source items
    workers: int | None = None  # decode processes; None: one per core (at most 2); 0: in-process
    resize_filter: ResizeFilter = "lanczos"
    fit: Literal["crop", "pad"] = "crop"
    background: str = "white"  # for alpha compositing and padding: white, black or #rrggbb
    near_dup_distance: int = 6  # max Hamming distance between 64-bit perceptual hashes
    near_dup_similarity: float = 0.985  # min structure similarity (cosine, 0..1) confirming a near pair
    dup_policy: Literal["keep-first", "drop"] = "keep-first"
    seed: int = 0
    outlier_z: float = 4.0  # z-score of the distance to the class mean that flags an outlier
    batch_size: int = 256  # items per worker task

    def __post_init__(self) -> None:
        if self.size is not None:
            self.size = tuple(self.size)  # type: ignore[assignment]
            if len(self.size) != 2 or min(self.size) < 1:
                raise ConfigError(f"size: expected two positive integers (H, W), got {self.size!r}")
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"channels: expected 1 or 3, got {self.channels!r}")
        if self.val_fraction is not None and not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction: expected a number in [0, 1), got {self.val_fraction!r}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit: expected a positive integer, got {self.limit!r}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers: expected 0 or more, got {self.workers!r}")
        if not 0 <= self.near_dup_distance <= 32:
            raise ConfigError(f"near_dup_distance: expected 0..32 bits, got {self.near_dup_distance!r}")
        if not 0.0 <= self.near_dup_similarity <= 1.0:
            raise ConfigError(
                f"near_dup_similarity: expected a number in [0, 1], got {self.near_dup_similarity!r}"
            )
        if self.outlier_z <= 0:
            raise ConfigError(f"outlier_z: expected a positive number, got {self.outlier_z!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: expected a positive integer, got {self.batch_size!r}")
        parse_background(self.background)

    @property
    def background_rgb(self) -> tuple[int, int, int]:
        return parse_background(self.background)


def parse_background(text: str) -> tuple[int, int, int]:
    if text in NAMED_BACKGROUNDS:
        return NAMED_BACKGROUNDS[text]
    m = _HEX.fullmatch(text)
    if not m:
        raise ConfigError(f"background: expected white, black or #rrggbb, got {text!r}")
    v = int(m.group(1), 16)
    return (v >> 16) & 255, (v >> 8) & 255, v & 255


def parse_size(text: str) -> tuple[int, int]:
    """'32' -> (32, 32); '32x48' -> (32, 48) as (H, W)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not m or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
        raise ConfigError(
            f"--size: expected H or HxW with positive integers (e.g. 32 or 64x48), got {text!r}"
        )
    h = int(m.group(1))
    return h, int(m.group(2) or h)
