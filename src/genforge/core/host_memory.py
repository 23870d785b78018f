"""Keep freed host memory in the process between training or sampling steps (glibc on Linux).

Every CPU training step frees and reallocates the same large activation buffers. glibc hands a
freed block back to the kernel when it was mmap-ed (above the mmap threshold) or when it sits at
the top of the heap above the trim threshold, so the next step's buffers are page-faulted and
zeroed again, page by page. Raising both thresholds keeps those pages for reuse: about 5-10% of
a DCGAN step on this 2-core machine (bench/train_dcgan_throughput.py, flag `+noretain` turns it
off). Sampling is hit harder: `genforge eval` drawing 1,000 ddpm images (DDIM 50) spent 135 s
of its 131 s wall time in system time before the command applied this, 0.5 s after
(bench/results/diffusion.md; two different U-Nets, the page faults are the difference). The `genforge` command applies it at start,
the trainer when `train.retain_host_memory` is on. The cost is that the process keeps its
high-water mark of memory until it exits, which is what a training or serving process does anyway.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt parameter numbers from glibc's malloc.h
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = ((M_MMAP_THRESHOLD, 1 << 30), (M_TRIM_THRESHOLD, (1 << 31) - 1), (M_TOP_PAD, 1 << 28))


def retain_freed_memory() -> bool:
    """Apply SETTINGS through mallopt; True when the C library accepted all of them.

    A no-op returning False off Linux or with a C library without mallopt (musl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library already loaded into this process
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)
