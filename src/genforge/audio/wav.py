"""WAV (and other libsndfile formats) to and from float32 arrays, through `soundfile`.

Every audio array in genforge is float32 in [-1, 1]: (T,) mono or (N, T) clips. Files are
written as 16-bit PCM WAV by default (what browsers and every player read), atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from genforge.core.atomic import atomic_path
from genforge.core.errors import DataError


def encode_wav(audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> bytes:
    """float (T,) or (T, channels) in [-1, 1] -> the bytes of a WAV file."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(audio, np.float32), -1.0, 1.0), int(sample_rate), subtype=subtype,
             format="WAV")
    return buf.getvalue()


def decode_audio(data: bytes | str | Path, where: str = "") -> tuple[np.ndarray, int]:
    """A file's (or its bytes') samples as float32 (T, channels) and its sample rate; a clear
    DataError naming `where` when libsndfile cannot read it."""
    import soundfile as sf

    src = io.BytesIO(data) if isinstance(data, bytes | bytearray) else str(data)
    name = where or (str(data) if not isinstance(data, bytes | bytearray) else "upload")
    try:
        audio, rate = sf.read(src, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise DataError(f"{name}: not a readable audio file ({exc})") from None
    return audio, int(rate)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """`encode_wav` into `path`, atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(encode_wav(audio, sample_rate))
