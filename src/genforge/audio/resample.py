"""Sample-rate conversion with a named high-quality resampler: soxr (libsoxr, "HQ" quality)."""

from __future__ import annotations

import numpy as np

RESAMPLER = "soxr-HQ"


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """float32 (T,) or (T, channels) at `from_rate` -> the same at `to_rate`."""
    audio = np.asarray(audio, dtype=np.float32)
    if int(from_rate) == int(to_rate):
        return audio
    import soxr

    return soxr.resample(audio, int(from_rate), int(to_rate), quality="HQ").astype(np.float32, copy=False)
