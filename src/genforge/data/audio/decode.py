"""Encoded audio -> float32 samples through libsndfile (`soundfile`), or a quarantine reason.

Every file is decoded the same way whatever its source. What is quarantined, by kind:

| kind | what |
| --- | --- |
| `empty` | a zero-length file, or a valid header with no samples |
| `not_audio` | bytes libsndfile does not recognise as any audio format (a `.wav` that is text, an image...) |
| `unsupported_codec` | an audio container or codec libsndfile cannot decode (AAC/M4A, WMA, a WAV of an unknown format tag...) |
| `corrupt` | a recognised format whose header or data libsndfile rejects |
| `truncated` | fewer samples than the header declares (a file cut short) |
| `too_long` | longer than `max_seconds` (read from the header: the samples are never decoded) |
| `non_finite` | NaN or infinite samples (float files) |
| `silent` | a peak below `silence_dbfs`: nothing to learn from |

To name an undecodable codec, `container` looks at a file's first bytes (magic numbers and the
WAV format tag); it explains an error, it never decodes: samples come from libsndfile only.
"""

from __future__ import annotations

import io
import re
import sys
from dataclasses import dataclass

import numpy as np
import soundfile as sf

DECODER = f"libsndfile {sf.__libsndfile_version__} (soundfile {sf.__version__})"
PREVIEW_SECONDS = 3.0  # audio kept from a playable quarantined file, for the report's player
PREVIEW_RATE = 16000  # at most: previews of high-rate files are resampled (the report embeds them)

# libsndfile reports a WAV data chunk longer than the file as "data : 4768 (should be 2362)"
_SHORT_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_NOT_RECOGNISED = 1  # SF_ERR_UNRECOGNISED_FORMAT

# WAV format tags libsndfile decodes; any other tag in a RIFF/WAVE file is an unsupported codec
_WAV_DECODED = frozenset({0x0001, 0x0002, 0x0003, 0x0006, 0x0007, 0x0011, 0x0031, 0x0040, 0x0055, 0xFFFE})
_WAV_TAGS = {
    0x0050: "MPEG audio",
    0x0092: "Dolby AC-3 (S/PDIF)",
    0x00FF: "AAC",
    0x0160: "WMA v1",
    0x0161: "WMA",
    0x0162: "WMA Pro",
    0x0163: "WMA Lossless",
    0x1610: "HE-AAC",
    0x2000: "Dolby AC-3",
    0x2001: "DTS",
}


def container(head: bytes) -> str | None:
    """The audio container/codec the first bytes announce when libsndfile cannot decode it, else None."""
    if head[4:8] == b"ftyp":
        return "MP4/M4A audio (AAC or ALAC)"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "ASF/WMA"
    if len(head) > 1 and head[0] == 0xFF and (head[1] & 0xF6) == 0xF0:
        return "AAC (ADTS stream)"
    for magic, name in (
        (b"#!AMR", "AMR"),
        (b"MAC ", "Monkey's Audio"),
        (b"wvpk", "WavPack"),
        (b".RMF", "RealAudio"),
        (b"OggS", "an Ogg stream of a codec other than Vorbis, Opus or FLAC"),
    ):
        if head.startswith(magic):
            return name
    if head[:4] in (b"RIFF", b"RF64") and head[8:16] == b"WAVEfmt " and len(head) >= 22:
        tag = int.from_bytes(head[20:22], "little")
        if tag not in _WAV_DECODED:
            return f"WAV with format tag 0x{tag:04X} ({_WAV_TAGS.get(tag, 'unknown codec')})"
    return None


@dataclass
class Decoded:
    samples: np.ndarray  # float32 (T, channels)
    sample_rate: int
    format: str  # "WAV PCM_16", "FLAC PCM_16", ...
    clipped: float = 0.0  # share of samples at |x| >= the clip level


@dataclass
class Rejected:
    kind: str
    reason: str
    preview: np.ndarray | None = None  # mono float32 in [-1, 1], at most PREVIEW_SECONDS, when playable
    sample_rate: int = 0


def preview(samples: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """The first PREVIEW_SECONDS of `samples` (T, channels), mono, finite, in [-1, 1], at most PREVIEW_RATE."""
    from genforge.audio.resample import resample

    mono = samples[: int(PREVIEW_SECONDS * rate)].mean(axis=1)
    mono = np.clip(np.nan_to_num(mono, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0).astype(np.float32)
    if rate > PREVIEW_RATE:
        return np.clip(resample(mono, rate, PREVIEW_RATE), -1.0, 1.0), PREVIEW_RATE
    return mono, rate


def _rejected(kind: str, reason: str, samples: np.ndarray, rate: int) -> Rejected:
    """A quarantine reason with a playable preview of what did decode."""
    if not len(samples):
        return Rejected(kind, reason)
    audio, preview_rate = preview(samples, rate)
    return Rejected(kind, reason, audio, preview_rate)


def _head(data: bytes | str) -> bytes:
    if isinstance(data, bytes):
        return data[:64]
    with open(data, "rb") as fh:
        return fh.read(64)


def _open_error(exc: Exception, data: bytes | str) -> Rejected:
    try:
        head = _head(data)
    except OSError as err:
        return Rejected("unreadable", f"cannot read file: {err.strerror or err}")
    if not head:
        return Rejected("empty", "zero-length file (0 bytes)")
    codec = container(head)
    if codec is not None:
        return Rejected("unsupported_codec", f"{codec}: not a codec libsndfile decodes")
    message = getattr(exc, "error_string", None) or str(exc)
    if getattr(exc, "code", None) == _NOT_RECOGNISED:
        shown = head[:8].hex(" ")
        return Rejected(
            "not_audio", f"not an audio file: libsndfile recognises no audio format (first bytes {shown})"
        )
    return Rejected("corrupt", f"corrupt audio: {message}")


# soundfile's own cffi binding of libsndfile (`soundfile._snd`, in every release): `_read_file`
# calls it without a SoundFile object, whose Python layer costs about what libsndfile's decoding
# of a short WAV does. None where a soundfile lacks it: every file then goes through SoundFile.
_SND, _FFI = getattr(sf, "_snd", None), getattr(sf, "_ffi", None)
_FORMAT_NAMES: dict[int, str] = {}  # libsndfile format code -> "WAV PCM_16"


def _format_name(code: int) -> str:
    if code not in _FORMAT_NAMES:
        major, sub = code & _SND.SF_FORMAT_TYPEMASK, code & _SND.SF_FORMAT_SUBMASK
        _FORMAT_NAMES[code] = f"{sf._format_str(major)} {sf._format_str(sub)}"
    return _FORMAT_NAMES[code]


def _read_file(path: str, max_seconds: float) -> tuple[np.ndarray, int, int, str, str] | None:
    """(samples float32 (T, channels), the frames the header declares, rate, format, libsndfile's
    log of a WAV) of the file at `path`, read as `SoundFile.read` reads it; None when it does not
    open, is empty, too long or fails to decode: `decode` then reads it through SoundFile, which
    says why."""
    try:
        name = path.encode(sys.getfilesystemencoding())  # as SoundFile encodes it
    except UnicodeEncodeError:
        return None
    info = _FFI.new("SF_INFO*")
    handle = _SND.sf_open(name, _SND.SFM_READ, info)
    if handle == _FFI.NULL:
        return None
    try:
        rate, frames = int(info.samplerate), int(info.frames)
        if rate <= 0 or frames <= 0 or frames > max_seconds * rate:
            return None
        _SND.sf_command(handle, _SND.SFC_SET_CLIPPING, _FFI.NULL, _SND.SF_TRUE)  # as SoundFile opens
        samples = np.empty((frames, info.channels), np.float32)
        got = _SND.sf_readf_float(handle, _FFI.from_buffer("float[]", samples), frames)
        if _SND.sf_error(handle):
            return None
        fmt = _format_name(info.format)
        log = ""
        if fmt.startswith("WAV"):
            buffer = _FFI.new("char[]", 1 << 14)
            _SND.sf_command(handle, _SND.SFC_GET_LOG_INFO, buffer, _FFI.sizeof(buffer))
            log = _FFI.string(buffer).decode("utf-8", "replace")
        return samples[:got], frames, rate, fmt, log
    finally:
        _SND.sf_close(handle)


def decode(
    data: bytes | str, max_seconds: float, silence_dbfs: float, clip_level: float = 1.0
) -> Decoded | Rejected:
    """`data` (an encoded file's bytes, or its path: libsndfile then reads it itself, which costs
    less than feeding it bytes through Python) -> its samples, or why it is quarantined."""
    got = read(data, max_seconds)
    return check(got, silence_dbfs, clip_level) if isinstance(got, Decoded) else got


def read(data: bytes | str, max_seconds: float) -> Decoded | Rejected:
    """`decode` up to `check`: the samples of `data` (not yet checked), or why it is quarantined."""
    if isinstance(data, bytes) and not data:
        return Rejected("empty", "zero-length file (0 bytes)")
    fast = _read_file(data, max_seconds) if isinstance(data, str) and _SND is not None else None
    if fast is not None:
        return _complete(*fast)
    try:
        f = sf.SoundFile(io.BytesIO(data) if isinstance(data, bytes) else data)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        return _open_error(exc, data)
    with f:
        rate, frames = int(f.samplerate), int(f.frames)
        fmt = f"{f.format} {f.subtype}"
        if frames <= 0:
            return Rejected("empty", f"{fmt} header with no audio samples")
        if rate <= 0:
            return Rejected("corrupt", f"corrupt audio: sample rate {rate} Hz in the header")
        if frames > max_seconds * rate:
            head = f.read(int(PREVIEW_SECONDS * rate), dtype="float32", always_2d=True)
            return _rejected(
                "too_long",
                f"{frames / rate:.1f} s long, over the {max_seconds:g} s limit (max_seconds)",
                head,
                rate,
            )
        try:
            samples = f.read(dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            return Rejected("corrupt", f"corrupt audio data: {getattr(exc, 'error_string', None) or exc}")
        log = f.extra_info if fmt.startswith("WAV") else ""
    return _complete(samples, frames, rate, fmt, log)


def _complete(samples: np.ndarray, frames: int, rate: int, fmt: str, log: str) -> Decoded | Rejected:
    """A file that decoded, unless truncated (by libsndfile's `log` of a WAV, or fewer samples than
    the header's `frames`)."""
    short = _SHORT_DATA.search(log)
    if short is not None and int(short.group(2)) < int(short.group(1)):
        return _rejected(
            "truncated",
            f"truncated: the data chunk declares {int(short.group(1)):,} bytes, "
            f"the file holds {int(short.group(2)):,}",
            samples,
            rate,
        )
    if len(samples) < frames:
        return _rejected(
            "truncated",
            f"truncated: decoded {len(samples):,} of the {frames:,} samples the header declares",
            samples,
            rate,
        )
    return Decoded(samples, rate, fmt)


def check(decoded: Decoded, silence_dbfs: float, clip_level: float) -> Decoded | Rejected:
    """A file that decoded: quarantined when non-finite or all-silent, else given its clipped share.
    One file at a time: laying a batch's clips end to end for one pass cost more than it saved
    (FSDD: 30 ms against 18)."""
    samples, rate = decoded.samples, decoded.sample_rate
    magnitude = np.abs(samples)
    peak = float(magnitude.max()) if samples.size else 0.0
    if not np.isfinite(peak):  # NaN propagates through max, and inf is its own maximum
        bad = int(samples.size - np.count_nonzero(np.isfinite(samples)))
        return _rejected("non_finite", f"{bad:,} non-finite sample(s) (NaN or infinity)", samples, rate)
    if peak <= 10.0 ** (silence_dbfs / 20.0):
        level = f"{20 * np.log10(peak):.1f} dBFS" if peak > 0 else "digital silence (all zeros)"
        return _rejected(
            "silent", f"all-silent: peak {level}, at or below silence_dbfs {silence_dbfs:g}", samples, rate
        )
    decoded.clipped = np.count_nonzero(magnitude >= clip_level) / samples.size
    return decoded
