"""`train.compile`: torch.compile (inductor) of the regions a model names, for training steps only.

`GenerativeModel.compile_regions()` names the modules to compile. The gpt names itself, the whole
forward as one graph: its blocks alone (one graph shared by all of them, dynamo lifting each
block's parameters to graph inputs) left a compiled call and its backward per block and the glue
between them eager, and the whole forward stepped 1.2x faster than that at nanoGPT's CPU size
(session 11, bench/results/text.md), for a longer cold compile (~45 s against ~30 s at 4 blocks:
dynamo inlines every block). The RoPE tables, grown on demand on the Python side, are built once
at the training context's length, so the graph does not change between steps.

Only calls with gradients on run compiled: evaluation and sampling (no_grad, inference_mode, a
KV-cache prefill with a different attention per layer) take the eager forward, so they neither
compile graphs of their own nor wait on a recompile. The compiled forward is bound per instance
through the class's function, never the instance's own bound method, so a deep copy (the EMA's)
runs on its own parameters; state-dict keys do not change (no `_orig_mod.` prefix).

Measured on the gpt at nanoGPT's CPU-recipe size (4 layers, 128 wide, context 64, batch 12;
torch 2.13, Xeon with AMX, 1 thread; eager and compiled alternating in one process,
`bench/text_train_speed.py --threads 1 --steps 100 --repeats 2 --precision auto --compile`):
bf16 autocast step 35.4 -> 30.2 ms main-thread CPU time (1.17x; a trainer-like loop gave 1.18-1.26x
in four runs), fp32 1.10x. Run alone on a quiet machine (same command, `--threads 1 2 --steps 150
--repeats 3`, 2026-12-02): 2 threads 31.6 -> 26.2 ms (1.21x), but 1 thread 38.7 -> 41.8 ms (0.93x):
the one-thread gain of the busy-machine runs did not hold there. Those were the blocks compiled
alone; the whole forward (session 11, 2 threads, run alone, same command with `--threads 2
--batch 12`): eager 38.25 -> compiled 25.64 ms (1.49x). Compiling costs the first step ~45 s with
an empty inductor cache (TORCHINDUCTOR_CACHE_DIR; 26-32 s for the blocks alone) and ~4 s when a
previous process left it filled. Cold, it repays after ~3,500 steps (44 s / ~12.6 ms), about 1.5
minutes of training at this size; `auto` turns it on for budgets of at least 5 minutes, which
leaves room for slower compilers.
"""

from __future__ import annotations

import os
import shutil
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from genforge.core.errors import ConfigError

# the shortest budget `auto` compiles for: a cold compile (~30 s) repays after ~3 minutes of
# steps 1.2x faster (module docstring); steps stand in for time when the budget is in steps
AUTO_MIN_SECONDS = 300.0
AUTO_MIN_STEPS = 7_500  # 5 minutes of the measured 40-ms steps


def cpp_compiler() -> str | None:
    """The C++ compiler inductor's CPU backend would build its kernels with, or None."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def compile_wanted(mode: bool | str, device: torch.device, seconds: float | None, steps: int | None) -> bool:
    """Whether a run compiles: `mode` is train.compile (true, false or "auto"), `seconds`/`steps`
    its budget (None: not set). true without a C++ compiler on CPU is a ConfigError; "auto" is on
    for CPU runs (the only device measured) with a compiler and a budget long enough to repay a
    cold compile."""
    if mode is False:
        return False
    missing = device.type == "cpu" and cpp_compiler() is None
    if mode is True:
        if missing:
            raise ConfigError(
                "train.compile: true needs a C++ compiler for inductor's CPU kernels (g++, c++, clang++ or $CXX); "
                "none was found on PATH: install one or set train.compile=false"
            )
        return True
    long_enough = (seconds is not None and seconds >= AUTO_MIN_SECONDS) or (
        seconds is None and steps is not None and steps >= AUTO_MIN_STEPS
    )
    return device.type == "cpu" and not missing and long_enough


def compile_regions(model: Any) -> list[nn.Module]:
    """Compile `model.compile_regions()` in place for gradient-carrying calls; returns them."""
    regions = list(model.compile_regions())
    for region in regions:
        region.forward = types.MethodType(_training_forward(type(region).forward), region)
    return regions


def _training_forward(eager: Callable) -> Callable:
    # dynamic=False: a training step's shapes are fixed (batch x context), and the last partial
    # batch or a resumed run with another batch recompiles once instead of tracing symbolic sizes
    compiled = torch.compile(eager, dynamic=False)

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return (compiled if torch.is_grad_enabled() else eager)(self, *args, **kwargs)

    return forward
