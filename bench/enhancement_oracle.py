"""How far can a time-frequency mask go? Oracle masks on the enhancement evaluation (issue 11).

    PYTHONPATH=src .venv/bin/python bench/enhancement_oracle.py [--voice lucas] [--n-fft 512 --hop 128]
        [--out /tmp/oracle.md]

The `speech-enhancement` scenario's denoiser predicts a complex ratio mask, its magnitude bounded
near 1, on a 64 ms STFT (n_fft 512, hop 128 at 8 kHz). Its SI-SDR gain at 5 dB falls short of the
goal's 8 dB on pink noise and far short on babble. Is the representation the limit, or the
learning? This scores masks computed from the clean speech itself, on digit strings and noises
built by `genforge eval`'s own code (evaluate/audio/enhancement.py's `enhancement_metrics`, seed 0)
from one FSDD voice's clips, read straight from the WAV files:

    crm-bounded   S / Y with its magnitude clipped to 1: the best any mask of the model's form can do
    irm           |S| / |Y| clipped to 1 on the noisy phase (a magnitude mask's best)
    wiener        |S|^2 / (|S|^2 + |N|^2) on the noisy phase (the classic oracle)

S, N, Y: the clean, noise and noisy STFTs. No training; a few minutes on one core.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from genforge.audio.spectrogram import MelConfig, istft, stft
from genforge.evaluate.audio.enhancement import (
    EnhanceEvalConfig,
    condition_key,
    digit_strings,
    enhancement_metrics,
    trim_silence,
)

REPO = Path(__file__).resolve().parents[1]
FSDD = REPO.parent / "shared" / "data" / "fsdd" / "recordings"
RATE = 8000

MASKS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "crm-bounded": lambda s, y: _clip_magnitude(s / _nonzero(y)),
    "irm": lambda s, y: (s.abs() / _nonzero(y).abs()).clamp(max=1.0).to(y.dtype),
    "wiener": lambda s, y: (s.abs() ** 2 / (s.abs() ** 2 + (y - s).abs() ** 2).clamp_min(1e-12)).to(y.dtype),
}


def _nonzero(y: torch.Tensor) -> torch.Tensor:
    return torch.where(y.abs() < 1e-9, torch.full_like(y, 1e-9), y)


def _clip_magnitude(m: torch.Tensor) -> torch.Tensor:
    mag = m.abs()
    return torch.where(mag > 1, m / mag.clamp_min(1e-12), m)


def voice_clips(voice: str, trim_db: float) -> tuple[list[np.ndarray], np.ndarray]:
    """Every clip of `voice` in FSDD's recordings, trimmed as the evaluation trims them."""
    pattern = re.compile(rf"^\d_{re.escape(voice)}_\d+\.wav$")
    files = sorted(p for p in FSDD.iterdir() if pattern.match(p.name))
    if not files:
        sys.exit(f"no clips of voice {voice!r} in {FSDD}")
    clips = []
    for p in files:
        audio, rate = sf.read(p, dtype="float32", always_2d=True)
        if rate != RATE:
            sys.exit(f"{p}: {rate} Hz, expected FSDD's {RATE}")
        clip = trim_silence(audio.mean(1), RATE, trim_db)
        if len(clip):
            clips.append(clip)
    return clips, np.zeros(len(clips), np.int64)


def oracle_restore(mask: str, clips: list[np.ndarray], speakers: np.ndarray, cfg: EnhanceEvalConfig,
                   mel: MelConfig) -> Callable[[np.ndarray], np.ndarray]:  # fmt: skip
    """A `restore` for `enhancement_metrics` that knows each call's clean string: it is called once
    per (kind, SNR, string), in that order, on the strings its own rng draws first, so the same
    seed gives the same strings here."""
    strings = digit_strings(clips, cfg.strings, RATE, cfg.min_seconds, tuple(cfg.gap_seconds),
                            np.random.default_rng(cfg.seed), speakers)  # fmt: skip
    calls = itertools.count()

    def restore(noisy: np.ndarray) -> np.ndarray:
        clean = strings[next(calls) % len(strings)].clean
        if len(clean) != noisy.shape[1]:
            raise RuntimeError("the oracle lost step with the evaluation's strings")
        y = stft(torch.from_numpy(noisy), mel)
        s = stft(torch.from_numpy(clean)[None], mel)
        return istft(MASKS[mask](s, y) * y, mel, noisy.shape[1]).numpy()

    return restore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--voice", default="lucas", help="an FSDD speaker (the bench's held-out voices: lucas, theo)")
    ap.add_argument("--n-fft", type=int, default=512)
    ap.add_argument("--hop", type=int, default=128)
    ap.add_argument("--out", default="/tmp/enhancement_oracle.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = EnhanceEvalConfig(noisereduce=False)
    mel = MelConfig(sample_rate=RATE, n_fft=args.n_fft, hop_length=args.hop)
    clips, speakers = voice_clips(args.voice, cfg.trim_db)
    lines = [f"Voice {args.voice} ({len(clips)} clips), {cfg.strings} digit strings per condition, STFT n_fft "
             f"{args.n_fft} hop {args.hop} at {RATE} Hz; SI-SDR gain dB / PESQ gain / STOI gain",
             "", "| mask | SNR dB | white | pink | babble |", "| --- | ---: | --- | --- | --- |"]  # fmt: skip
    for mask in MASKS:
        t0 = time.perf_counter()
        values, _ = enhancement_metrics(oracle_restore(mask, clips, speakers, cfg, mel), clips, RATE, cfg, speakers)
        for snr in cfg.snr_db:
            cells = []
            for k in cfg.kinds:
                key = condition_key(k, snr)
                gains = [values[f"{key}_{s}_gain"] for s in ("si_sdr", "pesq", "stoi")]
                cells.append(f"{gains[0]:+.1f} / {gains[1]:+.2f} / {gains[2]:+.3f}")
            lines.append(f"| {mask} | {snr:g} | " + " | ".join(cells) + " |")
        print(f"{mask}: {time.perf_counter() - t0:.0f}s", flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
