"""RNNoise, the learned denoiser practitioners deploy (Valin 2018; in OBS, Jitsi, PipeWire's filter chain), on
`bench/enhancement.py`'s digit strings: the same split, seed, strings and noise, so its gains sit beside a trained
run's and noisereduce's (issue 11).

    .venv/bin/python bench/enhancement_rnnoise.py --data DATASET [--seed 8] [--strings 24] [--out /tmp/rn.md]

DATASET is an audio dataset (`bench/enhancement.py --keep DIR` leaves it in DIR/dataset); its reference split is
scored as `bench/enhancement.py --run RUN --data DATASET --seed S` scores it. RNNoise comes from `pyrnnoise` (the
`bench` extra: the C library with its trained weights built in). It runs at 48 kHz on 10 ms frames: each string
is resampled up (soxr), denoised frame by frame in a fresh state, shifted back by the library's delay (measured
here by cross-correlation on the split's clean clips) and resampled down. FSDD's 8 kHz speech has nothing above
4 kHz, which RNNoise's training audio had, so this is RNNoise as a user with 8 kHz recordings would run it.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import numpy as np

from common import emit, markdown_table
from enhancement import KINDS, SNRS, machine, reference_clips

RATE = 48000  # RNNoise's only rate


class RNNoise:
    """float32 (n, T) waves at `sample_rate` -> RNNoise's output, aligned with the input."""

    def __init__(self, sample_rate: int):
        import ctypes

        from pyrnnoise import rnnoise

        from genforge.audio.resample import resample

        self.resample = resample
        self.lib, self.frame, self.sample_rate, self.delay = rnnoise.lib, rnnoise.FRAME_SIZE, sample_rate, 0
        self.ptr = lambda a: a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))

    def _run(self, wave48: np.ndarray) -> np.ndarray:
        """One 48 kHz wave through a fresh state: (T + delay,) output, the delay not yet removed."""
        n = -(-(len(wave48) + self.delay) // self.frame) * self.frame
        x = np.zeros(n, np.float32)
        x[: len(wave48)] = wave48 * 32768.0  # the library works on 16-bit sample values
        out = np.zeros(n, np.float32)
        state = self.lib.rnnoise_create(None)
        try:
            for i in range(0, n, self.frame):
                frame = np.ascontiguousarray(x[i : i + self.frame])
                result = np.zeros(self.frame, np.float32)
                self.lib.rnnoise_process_frame(state, self.ptr(result), self.ptr(frame))
                out[i : i + self.frame] = result
        finally:
            self.lib.rnnoise_destroy(state)
        return out / 32768.0

    def calibrate(self, clean: np.ndarray) -> int:
        """The library's delay in 48 kHz samples: the lag of the cross-correlation peak on clean speech."""
        self.delay = 0
        wave = self.resample(clean, self.sample_rate, RATE)
        out = self._run(wave)[: len(wave)]
        corr = np.correlate(out, wave[: len(wave) - 4 * self.frame], "valid")
        self.delay = int(np.argmax(corr))
        return self.delay

    def __call__(self, noisy: np.ndarray) -> np.ndarray:
        rows = []
        for row in np.atleast_2d(noisy):
            out = self._run(self.resample(row, self.sample_rate, RATE))
            wave48 = out[self.delay : self.delay + round(len(row) * RATE / self.sample_rate)]
            rows.append(np.pad(self.resample(wave48, RATE, self.sample_rate), (0, len(row)))[: len(row)])
        return np.stack(rows).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="an audio dataset (its reference split is scored)")
    ap.add_argument("--strings", type=int, default=24, help="digit strings per noise type and SNR")
    ap.add_argument("--seed", type=int, default=0, help="bench/enhancement.py's --seed: the same strings and noise")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from genforge.core.threads import set_wait_policy

    set_wait_policy()
    import torch

    from genforge.evaluate.audio.enhancement import condition_key, enhancement_metrics

    torch.set_num_threads(args.threads)
    dataset, split, cfg, clips, speakers = reference_clips(args.data, args.strings, args.seed)
    rnnoise = RNNoise(dataset.sample_rate)
    delay = rnnoise.calibrate(np.concatenate(clips[:8]))
    values, details = enhancement_metrics(rnnoise, clips, dataset.sample_rate, cfg, speakers)
    lines = [
        f"# RNNoise on the enhancement bench's strings ({datetime.date.today()})",
        "",
        f"Machine: {machine(args.threads)}",
        f"Dataset {args.data}, split {split.name!r}, seed {args.seed}: {details['strings']} digit strings per "
        f"condition, babble: {details['babble_talkers']}. RNNoise's delay: {delay} samples at 48 kHz.",
        "",
    ]
    rows = []
    for kind in KINDS:
        for snr in SNRS:
            key = condition_key(kind, snr)
            cells = [
                f"{values[f'{key}_{m}_gain']:+.{places}f} / {values[f'{key}_noisereduce_{m}_gain']:+.{places}f}"
                for m, places in (("pesq", 2), ("stoi", 3), ("si_sdr", 1))
            ]
            rows.append([kind, f"{snr:g}", *cells])
    header = ["noise", "SNR (dB)", "PESQ gain: RNNoise / noisereduce", "STOI gain", "SI-SDR gain (dB)"]
    lines += markdown_table(header, rows)
    lines += ["", f"Real-time factor (one string at a time): RNNoise {values['rtf']:.0f}, noisereduce "
              f"{values['noisereduce_rtf']:.0f}."]  # fmt: skip
    emit(lines, args.out)


if __name__ == "__main__":
    main()
