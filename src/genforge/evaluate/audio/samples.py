"""Clips to score, read into one form: float32 (N, T) at the reference dataset's sample rate and
clip length, with the labels (and speakers) they were requested with when known.

Sources: a run directory (generated with its pipeline, labels in the training class mix, speakers
balanced and shuffled against the labels), a `.npz` (`audio` float (N, T) or (N, 1, T), or int16;
`sample_rate`; optional `labels`, `speakers`: what `genforge sample --out x.npz` writes), or a
folder of audio files (WAV/FLAC/OGG/MP3, decoded by libsndfile; labels from sub-folder names
when every file sits in a folder named after a class). Other rates are resampled with
`audio.resample` (soxr HQ); other lengths are cropped or zero-padded, centred (as the fixtures'
FSDD clips), and the record says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genforge.audio.resample import RESAMPLER, resample
from genforge.audio.wav import decode_audio
from genforge.core.errors import DataError, GenforgeError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
GENERATE_CHUNK = 250  # clips per generate call: bounded memory; chunk i is drawn with seed + i
OVERSHOOT = 1.5  # float clips beyond +-1 by up to this much are clipped (with a warning); beyond: refused


@dataclass
class AudioSamples:
    audio: np.ndarray  # float32 (N, T) in [-1, 1] at the reference's rate and length
    labels: np.ndarray | None  # requested classes (conditional) or None
    speakers: np.ndarray | None  # requested speaker ids (speaker-conditional) or None
    source: dict[str, Any]  # kind, path, model, step, ema, and how the clips were read
    warnings: list[str]


def fit_length(clip: np.ndarray, length: int) -> np.ndarray:
    """A 1-D clip cropped or zero-padded to `length`, centred."""
    clip = np.asarray(clip, np.float32)
    if len(clip) >= length:
        start = (len(clip) - length) // 2
        return clip[start : start + length]
    out = np.zeros(length, np.float32)
    start = (length - len(clip)) // 2
    out[start : start + len(clip)] = clip
    return out


def conform(
    clips: list[np.ndarray], rate: int, target_rate: int, length: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """1-D clips at `rate` -> float32 (N, length) at `target_rate`, and what was done to them."""
    lengths = [len(c) for c in clips]
    if rate != target_rate:
        clips = [resample(c, rate, target_rate) for c in clips]
    changed = sum(len(c) != length for c in clips)
    out = np.stack([fit_length(c, length) for c in clips]) if clips else np.zeros((0, length), np.float32)
    read = {"sample_rate_read": int(rate), "resampled": rate != target_rate,
            "resampler": RESAMPLER if rate != target_rate else None, "clips_fitted_to_length": changed,
            "length_policy": "centred crop / zero pad", "input_length_min": min(lengths, default=0),
            "input_length_max": max(lengths, default=0)}  # fmt: skip
    return out, read


def checked_float(audio: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
    """float32 samples in [-1, 1]: int16 scaled by 1/32768, floats clipped when slightly over."""
    if audio.dtype == np.int16:
        return audio.astype(np.float32) / 32768.0, []
    if audio.dtype.kind != "f":
        raise DataError(f"{where}: audio must be float in [-1, 1] or int16, got {audio.dtype}")
    audio = audio.astype(np.float32, copy=False)
    if not np.isfinite(audio).all():
        raise DataError(f"{where}: audio holds NaN or infinite samples")
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > OVERSHOOT:
        raise DataError(f"{where}: audio peaks at {peak:.4g}; expected float samples in [-1, 1] (or int16)")
    if peak > 1.0:
        return np.clip(audio, -1.0, 1.0), [f"{where}: samples up to {peak:.4g} clipped to [-1, 1]"]
    return audio, []


def _ids(z: Any, key: str, n: int, where: str) -> np.ndarray | None:
    if key not in z.files:
        return None
    ids = np.asarray(z[key])
    if ids.shape != (n,) or ids.dtype.kind not in "iu":
        raise DataError(f"{where}: '{key}' must be integers, one per clip ({n}), got {ids.dtype} {ids.shape}")
    return ids.astype(np.int64)


def read_npz(path: Path, n: int, sample_rate: int, length: int) -> AudioSamples:
    where = str(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{where}: not a readable .npz ({exc})") from None
    with z:
        if "audio" not in z.files or "sample_rate" not in z.files:
            raise DataError(
                f"{where}: expected arrays 'audio' (N, T) and 'sample_rate', found {sorted(z.files)}"
            )
        audio = np.asarray(z["audio"])
        if audio.ndim == 3 and audio.shape[1] == 1:
            audio = audio[:, 0]
        if audio.ndim != 2 or not len(audio):
            raise DataError(f"{where}: 'audio' must be clips (N, T) or (N, 1, T), got shape {audio.shape}")
        rate = np.asarray(z["sample_rate"])
        if rate.size != 1 or rate.dtype.kind not in "iuf" or float(rate) <= 0:
            raise DataError(f"{where}: 'sample_rate' must be one positive number, got {rate!r}")
        labels, speakers = _ids(z, "labels", len(audio), where), _ids(z, "speakers", len(audio), where)
    audio, warnings = checked_float(audio[:n], where)
    clips, read = conform(list(audio), int(rate), sample_rate, length)
    source = {"kind": "npz", "path": str(path.resolve()), "step": None, "ema": None, **read}
    cut = slice(0, len(clips))
    return AudioSamples(clips, None if labels is None else labels[cut], None if speakers is None else speakers[cut],
                        source, warnings)  # fmt: skip


def read_folder(path: Path, n: int, sample_rate: int, length: int, class_names: list[str]) -> AudioSamples:
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))[:n]  # fmt: skip
    if not files:
        raise DataError(f"{path}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder")
    clips, rates, warnings = [], set(), []
    for f in files:
        audio, rate = decode_audio(f)
        mono, w = checked_float(audio.mean(axis=1), str(f))  # mixdown: the mean of the channels
        warnings += w
        clips.append(resample(mono, rate, sample_rate))
        rates.add(rate)
    out, read = conform(clips, sample_rate, sample_rate, length)
    read.update({"sample_rate_read": sorted(rates), "resampled": rates != {sample_rate},
                 "resampler": RESAMPLER if rates != {sample_rate} else None})  # fmt: skip
    folders = [f.parent.name for f in files]
    labelled = all(f.parent != path for f in files) and set(folders) <= set(class_names)
    labels = np.array([class_names.index(d) for d in folders], np.int64) if labelled else None
    source = {"kind": "folder", "path": str(path.resolve()), "step": None, "ema": None,
              "labels_from": "sub-folder names" if labelled else None, **read}  # fmt: skip
    return AudioSamples(out, labels, None, source, warnings)


def balanced_speakers(n: int, num_speakers: int, seed: int) -> np.ndarray:
    """n speaker ids, each speaker equally often, shuffled with `seed`: cycling them beside the
    interleaved class labels would tie each speaker to a few digits (5 speakers, 10 digits)."""
    return np.random.default_rng(seed).permutation(np.arange(n) % num_speakers).astype(np.int64)


def shared_speakers(pipe: Any, dataset_names: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(model ids, the dataset's ids, names) of the speakers both the model and the reference
    dataset know, matched by name (an adapted model numbers its speakers its own way); every id
    as it is when either side names none."""
    names = pipe.speaker_names
    if not names or not dataset_names:
        ids = np.arange(pipe.num_speakers, dtype=np.int64)
        return ids, ids.copy(), list(names)
    pairs = [(i, dataset_names.index(name), name) for i, name in enumerate(names) if name in dataset_names]
    return (np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64),
            [p[2] for p in pairs])  # fmt: skip


def generate_from_run(pipe: Any, n: int, seed: int, sample_rate: int, length: int,
                      dataset_speakers: list[str] | None = None, speaker: str | None = None) -> AudioSamples:  # fmt: skip
    """n clips of the run: labels in the training class mix; speakers balanced and shuffled over
    those the dataset also knows, or all of `speaker` (a name); `speakers` are the dataset's ids."""
    labels = pipe.class_labels(n) if pipe.conditional else None
    speakers = requested = None
    if pipe.speaker_conditional:
        model_ids, data_ids, names = shared_speakers(pipe, list(dataset_speakers or []))
        if speaker is not None:
            if speaker not in names:
                raise GenforgeError(f"speaker {speaker!r} is not a speaker of both the model and the reference dataset "
                                    f"(both know: {', '.join(names) or 'none'})")  # fmt: skip
            pick = np.full(n, names.index(speaker), np.int64)
        else:
            pick = balanced_speakers(n, len(model_ids), seed) if len(model_ids) else None
        if pick is not None:
            requested, speakers = model_ids[pick], data_ids[pick]
    chunks = []
    for i, start in enumerate(range(0, n, GENERATE_CHUNK)):
        stop = min(n, start + GENERATE_CHUNK)
        clips, _ = pipe.generate(stop - start, seed=seed + i, labels=None if labels is None else labels[start:stop],
                                 speakers=None if requested is None else requested[start:stop])  # fmt: skip
        chunks.append(clips)
    audio, read = conform(list(np.concatenate(chunks)), pipe.sample_rate, sample_rate, length)
    info = pipe.info
    source = {"kind": "run", "path": str(Path(pipe.path).resolve()), "model": info.get("model"),
              "family": info.get("family"), "step": info.get("step"), "ema": info.get("ema"),
              "conditional": pipe.conditional, "speaker_conditional": pipe.speaker_conditional,
              "privacy": info.get("privacy"), **read}  # fmt: skip
    return AudioSamples(audio, labels, speakers, source, [])


def load_audio_samples(target: Path, n: int, seed: int, dataset: Any, pipe: Any = None) -> AudioSamples:
    """The clips of `target` (a run, whose loaded pipeline `pipe` is given; an .npz; a folder)."""
    rate, length = dataset.sample_rate, dataset.clip_length
    if pipe is not None:
        return generate_from_run(pipe, n, seed, rate, length, dataset.speaker_names)
    if target.is_file() and target.suffix.lower() == ".npz":
        return read_npz(target, n, rate, length)
    if target.is_dir() and not (target / "model.json").is_file():
        return read_folder(target, n, rate, length, dataset.class_names)
    raise GenforgeError(f"{target}: expected an audio run directory (with model.json), a samples .npz (audio, "
                        "sample_rate) or a folder of audio files")  # fmt: skip
