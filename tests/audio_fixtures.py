"""Small audio datasets for tests, written straight through `write_audio_dataset` (no ingest):
synthetic spoken-digit stand-ins (a class is a pair of formant-like tones, a speaker shifts
their pitch) and a subset of FSDD decoded with soundfile and padded/cropped to one length."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from genforge.data.audio import AudioSplitData, write_audio_dataset

FSDD_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


def synth_clips(n: int, classes: int, speakers: int, length: int, sample_rate: int, seed: int):
    """float32 (n, length) clips with labels and speaker ids: class k sounds two tones whose
    frequencies depend on k, speaker s scales them, with a random onset and a decaying envelope."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    spk = (np.arange(n) // classes) % max(speakers, 1)
    t = np.arange(length) / sample_rate
    out = np.zeros((n, length), np.float32)
    for i in range(n):
        scale = 1.0 + 0.15 * spk[i]
        f1, f2 = (300 + 150 * labels[i]) * scale, (1200 + 90 * labels[i]) * scale
        onset = rng.integers(0, length // 4)
        dur = length // 2
        env = np.zeros(length)
        env[onset:onset + dur] = np.hanning(dur)[: length - onset]
        tone = np.sin(2 * np.pi * f1 * t) + 0.5 * np.sin(2 * np.pi * f2 * t)
        out[i] = (0.4 * env * tone + 0.005 * rng.standard_normal(length)).astype(np.float32)
    return out, labels.astype(np.int64), spk.astype(np.int64)


def make_synth_dataset(path: Path, *, n_train: int = 60, n_val: int = 30, classes: int = 3, speakers: int = 2,
                       length: int = 4000, sample_rate: int = 8000, seed: int = 0) -> Path:
    splits = {}
    for name, n, s in (("train", n_train, seed), ("val", n_val, seed + 1)):
        audio, labels, spk = synth_clips(n, classes, speakers, length, sample_rate, s)
        splits[name] = AudioSplitData(audio, labels, fields={"speaker": spk} if speakers else {})
    path.mkdir(parents=True, exist_ok=True)
    write_audio_dataset(path, splits, sample_rate=sample_rate, class_names=[str(k) for k in range(classes)],
                        item_fields={"speaker": [f"s{j}" for j in range(speakers)]} if speakers else {},
                        meta={"source": "synthetic"})
    return path


def make_fsdd_subset(recordings: Path, path: Path, *, per_class_speaker: int = 4, length: int = 8000,
                     digits: tuple[int, ...] = tuple(range(10)), val_takes: int = 2) -> Path:
    """FSDD clips {digit}_{speaker}_{take}.wav with take < per_class_speaker, each cropped or
    zero-padded (centred) to `length`; takes below `val_takes` go to val, the rest to train."""
    import soundfile as sf

    files = sorted(p for p in recordings.glob("*.wav") if FSDD_NAME.match(p.name))
    speakers = sorted({FSDD_NAME.match(p.name).group(2) for p in files})
    splits: dict[str, dict[str, list]] = {s: {"audio": [], "labels": [], "spk": []} for s in ("train", "val")}
    for p in files:
        d, spk, take = FSDD_NAME.match(p.name).groups()
        if int(d) not in digits or int(take) >= per_class_speaker:
            continue
        x, _sr = sf.read(p, dtype="float32")
        x = x[:length]
        clip = np.zeros(length, np.float32)
        start = (length - len(x)) // 2
        clip[start:start + len(x)] = x
        target = splits["val" if int(take) < val_takes else "train"]
        target["audio"].append(clip)
        target["labels"].append(digits.index(int(d)))
        target["spk"].append(speakers.index(spk))
    data = {name: AudioSplitData(np.stack(v["audio"]), np.array(v["labels"]), fields={"speaker": np.array(v["spk"])})
            for name, v in splits.items()}
    path.mkdir(parents=True, exist_ok=True)
    write_audio_dataset(path, data, sample_rate=8000, class_names=[str(d) for d in digits],
                        item_fields={"speaker": speakers}, meta={"source": str(recordings)})
    return path
