"""`TrainConfig`: everything about a run that is not the model or the data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from genforge.core.errors import ConfigError


@dataclass
class TrainConfig:
    # budget: training stops at whichever of these comes first (at least one is required);
    # all three count from the start of the run, across resumes
    steps: int | None = None
    images: int | None = None
    max_time: str | None = None  # "90s", "5m", "1h30m" or plain seconds
    batch_size: int = 64  # global batch; each DDP rank takes batch_size / world_size
    seed: int = 0
    split: str = "train"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    channels_last: bool = False
    deterministic: bool = True  # torch.use_deterministic_algorithms: needed for bit-exact resume
    optimizer_impl: Literal["auto", "fused", "foreach", "loop"] = "auto"
    # torch.compile the model's compile_regions() for training steps (train/compile.py); "auto":
    # on CPU with a C++ compiler when the budget is long enough to repay a cold compile
    compile: bool | Literal["auto"] = False
    # CPU: keep freed activation memory in the process between steps (core/host_memory.py)
    retain_host_memory: bool = True
    # EMA of the model's ema_modules; decay ramps up as min(decay, (1 + step) / (10 + step))
    ema: bool = True
    ema_decay: float = 0.999
    ema_warmup: bool = True
    final_weights: Literal["ema", "raw"] = "ema"
    # logging
    log_every: int = 50
    tensorboard: bool = True
    progress: Literal["auto", "bar", "lines", "none"] = "auto"
    sample_every: int = 500  # 0 = only at the end
    sample_count: int = 64
    sample_seed: int = 1234
    # checkpoints
    checkpoint_every: int = 1000  # 0 = only at the end
    keep_last: int = 3
    best_metric: str = "loss"  # a logged metric name; "" disables best tracking
    best_mode: Literal["min", "max"] = "min"
    # divergence guard
    guard: bool = True
    guard_every: int = 0  # steps between loss checks; 0 = every step on CPU, every log step on CUDA
    guard_lr_factor: float = 0.5
    guard_max_retries: int = 3

    def __post_init__(self) -> None:
        positive = {
            "batch_size": self.batch_size,
            "log_every": self.log_every,
            "sample_count": self.sample_count,
            "keep_last": self.keep_last,
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"train.{name}: must be >= 1, got {value}")
        non_negative = {
            "sample_every": self.sample_every,
            "checkpoint_every": self.checkpoint_every,
            "guard_every": self.guard_every,
            "guard_max_retries": self.guard_max_retries,
        }
        for name, value in non_negative.items():
            if value < 0:
                raise ConfigError(f"train.{name}: must be >= 0, got {value}")
        for name in ("steps", "images"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"train.{name}: must be >= 1, got {value}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay: must be in [0, 1), got {self.ema_decay}")
        if not 0.0 < self.guard_lr_factor < 1.0:
            raise ConfigError(f"train.guard_lr_factor: must be in (0, 1), got {self.guard_lr_factor}")
        if self.max_time is not None:
            from genforge.train.budget import parse_duration

            parse_duration(self.max_time, "train.max_time")

    @property
    def has_budget(self) -> bool:
        return any(v is not None for v in (self.steps, self.images, self.max_time))


# fields a resumed run may change: the budget and where it runs, nothing that alters the step sequence
RESUMABLE_CHANGES = ("steps", "images", "max_time", "device", "progress", "tensorboard")
