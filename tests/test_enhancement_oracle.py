"""bench/enhancement_oracle.py: oracle masks scored by the evaluation's own code stay in step with
its strings, and rank as they must (the complex oracle above the magnitude ones, all above nothing)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import enhancement_oracle as eo  # noqa: E402
from genforge.audio.spectrogram import MelConfig  # noqa: E402
from genforge.evaluate.audio.enhancement import EnhanceEvalConfig, enhancement_metrics  # noqa: E402


def _clips(n: int = 12) -> list[np.ndarray]:
    """Voiced-like tones with a few harmonics and an envelope: 0.4 s each at 8 kHz."""
    rng = np.random.default_rng(0)
    t = np.arange(3200) / eo.RATE
    out = []
    for _ in range(n):
        f0 = rng.uniform(100, 220)
        wave = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
        out.append((0.3 * np.hanning(len(t)) * wave).astype(np.float32))
    return out


def test_oracle_masks_follow_the_evaluation_strings_and_rank_as_they_must() -> None:
    clips, speakers = _clips(), np.zeros(12, np.int64)
    cfg = EnhanceEvalConfig(strings=3, min_seconds=1.0, kinds=["white", "babble"], snr_db=[5.0], noisereduce=False)
    mel = MelConfig(sample_rate=eo.RATE, n_fft=256, hop_length=64)
    gains = {}
    for mask in eo.MASKS:
        values, _ = enhancement_metrics(eo.oracle_restore(mask, clips, speakers, cfg, mel), clips, eo.RATE, cfg, speakers)
        gains[mask] = values["si_sdr_gain"]
    # the complex ratio mask, clipped only where |S / Y| > 1, undoes most of the noise
    assert gains["crm-bounded"] > 15
    assert gains["crm-bounded"] > max(gains["irm"], gains["wiener"]) > 3
