"""`genforge restore` for audio runs (task "restore", e.g. the `denoiser`): a WAV file -> a WAV
file, a folder of audio files -> a folder of WAVs with the same stems.

Inputs are any format libsndfile reads (WAV, FLAC, OGG, MP3). A file at another sample rate is
resampled to the model's rate (`audio.resample`, soxr HQ) before restoring, and the output is
written at the MODEL's rate: an 8 kHz model restores the band below 4 kHz only, so resampling its
output back up would add no content. Every channel is restored on its own and written back in
place. Outputs are 16-bit PCM WAV, written atomically: a folder appears complete or not at all, an
unreadable input file fails before anything is written, and nothing is written outside `--out`.

`corrupt` (demonstrations on clean recordings) adds noise of those kinds (audio/noise.py) at `snr`
dB (default 5) before restoring, seeded; babble is made of the inputs themselves. The noisy input
is written too: `OUT.noisy.wav` beside a file, `OUT/noisy/` in a folder.

`atten_limit` (`--atten-limit DB|none`) replaces a denoiser run's `atten_limit_db` for the call:
how much of the input is mixed back in, so that no part of it is cut by more than DB.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genforge.audio.noise import AUDIO_SUFFIXES, NoiseRecipe, apply_recipe
from genforge.audio.resample import RESAMPLER, resample
from genforge.audio.wav import decode_audio, encode_wav
from genforge.core.atomic import atomic_dir, atomic_files
from genforge.core.config import from_dict
from genforge.core.errors import ConfigError, DataError, GenforgeError
from genforge.models.audio.pipeline import AudioPipeline
from genforge.models.pipeline import load_pipeline
from genforge.models.restoration import RESTORERS

DEFAULT_SNR_DB = 5.0


@dataclass
class RestoredAudio:
    kind: str  # "file" | "folder"
    out: Path
    names: list[str]  # output stems
    sample_rate: int  # of the outputs: the model's
    resampled: list[str]  # inputs that were resampled ("name: 16000 Hz")
    seconds: float  # audio restored


def _read(path: Path, sample_rate: int) -> tuple[np.ndarray, int]:
    """(channels, T) float32 at the model's rate, and the file's own rate."""
    audio, rate = decode_audio(path)
    if audio.shape[0] == 0:
        raise DataError(f"{path}: the file holds no samples")
    return np.ascontiguousarray(resample(audio, rate, sample_rate).T), rate


def _corruption(kinds: list[str] | None, snr: float | None) -> NoiseRecipe | None:
    if not kinds:
        if snr is not None:
            raise GenforgeError("--snr sets the level of --corrupt noise; pass --corrupt KINDS with it")
        return None
    level = DEFAULT_SNR_DB if snr is None else float(snr)
    return from_dict(
        NoiseRecipe, {"kinds": {k: 1.0 for k in kinds}, "snr_db": [level, level]}, where="--corrupt"
    )


def _set_atten_limit(pipe: AudioPipeline, run_dir: str | Path, value: str) -> None:
    """--atten-limit DB|none: the most any part of the input is cut (denoiser runs)."""
    config = pipe.model.config
    if not hasattr(config, "atten_limit_db"):
        raise GenforgeError(f"--atten-limit applies to denoiser runs; {run_dir} holds a {pipe.name!r} model")
    text = str(value).strip().lower()
    try:  # the config's own check judges the value
        limit = None if text in ("none", "off") else float(text)
        pipe.model.config = dataclasses.replace(config, atten_limit_db=limit)
    except (ValueError, ConfigError) as e:
        raise GenforgeError(f"--atten-limit: expected a limit in dB > 0, or 'none', got {value!r}") from e


def restore_audio(
    run_dir: str | Path,
    input: str | Path,
    out: str | Path,
    corrupt: list[str] | None = None,
    *,
    seed: int = 0,
    snr: float | None = None,
    overwrite: bool = False,
    device: str = "cpu",
    atten_limit: str | None = None,
) -> RestoredAudio:
    """Restore `input` (an audio file or a folder of them) with the audio run in `run_dir` into
    `out` (a .wav file, or a folder); see the module doc. `atten_limit` ("DB" or "none") replaces
    the run's `atten_limit_db` for this call."""
    recipe = _corruption(corrupt, snr)
    pipe = load_pipeline(run_dir, device=device)
    pipe.require_restoration()
    if not isinstance(pipe, AudioPipeline):
        raise GenforgeError(f"{run_dir}: model {pipe.name!r} restores {pipe.modality} data, not audio")
    if atten_limit is not None:
        _set_atten_limit(pipe, run_dir, atten_limit)
    src, out = Path(input), Path(out)
    if not src.exists():
        raise DataError(f"{src}: no such file or folder")
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise DataError(f"{src}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in this folder")
        stems = [p.stem for p in files]
        if len(set(stems)) < len(stems):
            raise DataError(f"{src}: several files share a name stem; their outputs would collide")
    elif src.suffix.lower() in AUDIO_SUFFIXES:
        if out.suffix.lower() != ".wav":
            raise GenforgeError(f"{out}: the output of one file is a WAV file; name it *.wav")
        if out.exists() and not overwrite:
            raise GenforgeError(f"{out} already exists; remove it or pass --overwrite")
        files = [src]
    else:
        raise DataError(f"{src}: expected an audio file ({', '.join(AUDIO_SUFFIXES)}) or a folder of them")

    rate = pipe.sample_rate
    inputs, resampled = [], []
    for path in files:  # every file is read (and checked) before anything is written
        audio, file_rate = _read(path, rate)
        inputs.append(audio)
        if file_rate != rate:
            resampled.append(f"{path.name}: {file_rate} Hz")
    noisy = inputs
    if recipe is not None:
        gen = torch.Generator().manual_seed(int(seed))
        pool = torch.from_numpy(np.concatenate([a[:, : min(len(a[0]) for a in inputs)] for a in inputs]))
        noisy = [
            apply_recipe(torch.from_numpy(a), recipe, rate, gen, pool=pool).noisy.numpy() for a in inputs
        ]
    restored = [pipe.restore(a) for a in noisy]

    def encode(audio: np.ndarray) -> bytes:
        return encode_wav(audio.T, rate)

    if src.is_dir():
        with atomic_dir(out, overwrite=overwrite) as tmp:
            for path, clean, dirty in zip(files, restored, noisy, strict=True):
                (tmp / f"{path.stem}.wav").write_bytes(encode(clean))
                if recipe is not None:
                    (tmp / "noisy").mkdir(exist_ok=True)
                    (tmp / "noisy" / f"{path.stem}.wav").write_bytes(encode(dirty))
        kind = "folder"
    else:
        with atomic_files(out.parent, out.name) as stage:
            (stage / out.name).write_bytes(encode(restored[0]))
            if recipe is not None:
                (stage / f"{out.stem}.noisy.wav").write_bytes(encode(noisy[0]))
        kind = "file"
    seconds = sum(a.shape[1] for a in inputs) / rate
    return RestoredAudio(kind, out, [p.stem for p in files], rate, resampled, seconds)


def describe(result: RestoredAudio) -> str:
    """The CLI's summary line(s) of a restore."""
    lines = [
        f"restored {len(result.names)} file(s), {result.seconds:.1f} s of audio -> {result.out} "
        f"({result.sample_rate} Hz WAV)"
    ]
    if result.resampled:
        lines.append(f"resampled to {result.sample_rate} Hz with {RESAMPLER}: " + ", ".join(result.resampled))
    return "\n".join(lines)


@RESTORERS.register("audio")
def _restore_command(
    run_dir: str | Path, input: str | Path, out: str | Path, corrupt: list[str] | None, **options
) -> str:
    return describe(restore_audio(run_dir, input, out, corrupt, **options))
