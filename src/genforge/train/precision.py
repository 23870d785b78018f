"""Device and numeric precision: where the model runs and which autocast dtype it uses."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from genforge.core.errors import ConfigError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device: cuda requested but no CUDA device is available")
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
    elif device.type != "cpu":
        raise ConfigError(f"train.device: expected auto, cpu, cuda or cuda:N, got {name!r}")
    return device


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in (" avx512_bf16", " amx_bf16"))


@dataclass
class Precision:
    name: str  # fp32 | bf16 | fp16
    device: torch.device

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @property
    def needs_scaler(self) -> bool:
        # fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range
        return self.name == "fp16"


def auto_precision(device: torch.device) -> str:
    """bf16 on CPUs that compute it natively: there it trained the DCGAN 1.6x and the cVAE 1.4x
    faster than fp32, the cVAE to the same FID at equal steps (BENCHMARKS.md, "fp32 against bf16").
    fp32 elsewhere, CUDA included: no GPU was measured."""
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"


def resolve_precision(name: str, device: torch.device) -> Precision:
    if name == "auto":
        name = auto_precision(device)
    if name == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        raise ConfigError(
            "train.precision: bf16 needs a CPU with AVX512-BF16 or AMX (this one has neither); use fp32"
        )
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.precision: this GPU does not support bf16; use fp16 or fp32")
    if name == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision: fp16 is for CUDA devices; use bf16 or fp32 on CPU")
    if name not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"train.precision: expected auto, fp32, bf16 or fp16, got {name!r}")
    return Precision(name, device)
