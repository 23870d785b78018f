"""`genforge sample` on an audio run: clips into a folder of WAV files or an .npz, and the
pictures and listening files the training samples are made of (log-mel grids, joined clips)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.atomic import atomic_dir, atomic_path
from genforge.core.errors import GenforgeError
from genforge.train.sampling import SAMPLE_WRITERS, SampleWriter

DEFAULT_N = 10
GAP_SECONDS = 0.25  # silence between joined clips
# log mel power shown from black to white: about -100 dB to +20 dB, fixed so that pictures of
# different runs and steps compare
SHOWN_LOG_POWER = (math.log(1e-5), math.log(1e2))


def spectrogram_images(clips: np.ndarray, sample_rate: int) -> np.ndarray:
    """float (N, T) clips -> uint8 (N, mels, frames, 1) log-mel pictures, low frequencies at the
    bottom (32 ms Hann windows, half overlapping; 64 mel bands or fewer at low rates)."""
    import torch

    from genforge.audio.spectrogram import MelConfig, log_mel

    n_fft = 2 ** max(3, round(math.log2(0.032 * sample_rate)))
    cfg = MelConfig(sample_rate, n_fft, n_fft // 2, min(64, n_fft // 2 + 1))
    lm = log_mel(torch.as_tensor(np.asarray(clips, np.float32)), cfg).numpy()
    low, high = SHOWN_LOG_POWER
    pixels = np.clip((lm - low) / (high - low) * 255.0, 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(pixels[:, ::-1, :, None])


def concatenate_clips(clips: np.ndarray, sample_rate: int, gap: float = GAP_SECONDS) -> np.ndarray:
    """float (N, T) -> one float32 (N*T + (N-1)*gap,) clip with `gap` seconds of silence between clips."""
    silence = np.zeros(int(round(gap * sample_rate)), np.float32)
    parts: list[np.ndarray] = []
    for i, clip in enumerate(np.asarray(clips, np.float32)):
        parts.extend([silence, clip] if i else [clip])
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def clip_name(i: int, label: int | None, speaker: int | None) -> str:
    return (
        f"{i:05d}"
        + (f"_class{label}" if label is not None else "")
        + (f"_speaker{speaker}" if speaker is not None else "")
        + ".wav"
    )


def write_audio(out: str | Path, audio: np.ndarray, sample_rate: int, labels: np.ndarray | None,
                speakers: np.ndarray | None, overwrite: bool = False) -> None:  # fmt: skip
    """An .npz (`audio` float32 (N, T), `sample_rate`, `labels` / `speakers` when given) or a
    directory of NNNNN[_classK][_speakerS].wav files (16-bit PCM), written atomically."""
    from genforge.audio.wav import encode_wav

    out = Path(out)
    if out.suffix == ".npz":
        if out.exists() and not overwrite:
            raise GenforgeError(f"{out} already exists; pass --overwrite")
        arrays: dict[str, np.ndarray] = {
            "audio": audio.astype(np.float32),
            "sample_rate": np.int64(sample_rate),
        }
        if labels is not None:
            arrays["labels"] = labels.astype(np.int64)
        if speakers is not None:
            arrays["speakers"] = speakers.astype(np.int64)
        with atomic_path(out) as tmp:
            np.savez(tmp, **arrays)
        return
    if out.suffix:
        raise GenforgeError(f"--out {out}: expected FILE.npz or a directory name without an extension")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for i, clip in enumerate(audio):
            label = int(labels[i]) if labels is not None else None
            speaker = int(speakers[i]) if speakers is not None else None
            (tmp / clip_name(i, label, speaker)).write_bytes(encode_wav(clip, sample_rate))


def write_audio_samples(run_dir: Path, opts: dict[str, Any]) -> str:
    from genforge.models.pipeline import load_pipeline

    if "out" not in opts:
        raise GenforgeError("--out is required for an audio run: FILE.npz or a directory for WAV files")
    n = int(opts.get("n", DEFAULT_N))
    if n < 1:
        raise GenforgeError(f"-n must be >= 1, got {n}")
    pipe = load_pipeline(run_dir, device=opts.get("device", "cpu"))
    options = {"steps": opts["steps"]} if opts.get("steps") is not None else {}
    audio, labels, speakers = pipe.generate_clips(n, seed=int(opts.get("seed", 0)), class_label=opts.get("class_"),
                                                  speaker=opts.get("speaker"), **options)  # fmt: skip
    write_audio(opts["out"], audio, pipe.sample_rate, labels, speakers, overwrite=bool(opts.get("overwrite", False)))
    seconds = audio.shape[0] * audio.shape[1] / pipe.sample_rate
    return f"wrote {len(audio)} clips ({seconds:.1f} s at {pipe.sample_rate} Hz) to {opts['out']}"


SAMPLE_WRITERS.register("audio", SampleWriter(frozenset({"class_", "speaker", "steps"}), write_audio_samples))
