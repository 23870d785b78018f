"""Clip processing, in order: mono mixdown -> resampling -> trim -> loudness -> fixed length.

Mixdown and resampling run per clip (libsoxr works on one signal at a time). Trim, loudness and
the length policy run on a whole batch of clips at once: the clips are laid end to end in one
array and every per-frame and per-clip quantity is a `ufunc.reduceat` over it, so the cost is a
few passes over the samples whatever the number of clips, not a Python loop of small numpy calls
per clip.

- trim: a frame (`trim_frame_ms`) is silence when its RMS level is more than `trim_db` below the
  clip's loudest frame (the rule of librosa's `effects.trim`); the leading and trailing silent
  frames go, less `trim_margin_ms` kept on each side.
- loudness: the trimmed clip's RMS level (dBFS) or integrated loudness (LUFS, ITU-R BS.1770 via
  pyloudnorm) is brought to the target by one gain; pyloudnorm gates over 0.4 s blocks and cannot
  measure shorter clips, which get the RMS gain instead (counted, `lufs_fallback`). A gain that
  would lift the peak over `peak_limit` is lowered to meet it (counted, `peak_limited`).
- length: clips shorter than the target are zero-padded (audio centred, or first), longer ones
  cropped (centre, or start); `lengths` records the samples of real audio in each clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genforge.audio.resample import RESAMPLER, resample
from genforge.data.audio.config import AudioIngestConfig

LUFS_BLOCK_SECONDS = 0.4  # pyloudnorm's gating block: shorter clips have no integrated loudness
CHUNK_SAMPLES = 1 << 23  # samples laid end to end per batch: bounds the temporaries (~100 MB)
_SILENT_DB = -200.0


def to_mono(samples: np.ndarray) -> np.ndarray:
    """float32 (T, channels) -> (T,): the mean of the channels (an equal-power mix would clip)."""
    return samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1, dtype=np.float32)


def prepare(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Mono mixdown and resampling of one decoded clip: float32 (T',) at `target_rate`."""
    return resample(to_mono(samples), rate, target_rate)


def clip_samples(cfg: AudioIngestConfig, rate: int) -> int:
    return max(1, round(cfg.clip_seconds * rate))


def dbfs(mean_square: np.ndarray) -> np.ndarray:
    """RMS level in dBFS of mean squares (a full-scale sine is -3 dBFS); silence is -200."""
    ms = np.asarray(mean_square, np.float64)
    return np.where(ms > 0, 10.0 * np.log10(np.maximum(ms, 1e-30)), _SILENT_DB)


@dataclass
class Processed:
    audio: np.ndarray  # float32 (N, L)
    lengths: np.ndarray  # int64 (N,): samples of real audio in each clip (<= L)
    trimmed: np.ndarray  # int64 (N,): samples left after trimming, before padding or cropping
    input_db: np.ndarray  # float32 (N,): loudness of the trimmed clip before the gain (dBFS or LUFS)
    gain_db: np.ndarray  # float32 (N,)
    peak_limited: np.ndarray  # bool (N,)
    lufs_fallback: np.ndarray  # bool (N,): LUFS asked, RMS used (clip shorter than the gating block)


@dataclass
class Layout:
    """Clips laid end to end: clip i is flat[offsets[i]:offsets[i + 1]] (every clip non-empty)."""

    flat: np.ndarray  # float32, one trailing zero so that reduceat may index its end
    offsets: np.ndarray  # int64 (N + 1,)

    @classmethod
    def of(cls, clips: list[np.ndarray]) -> Layout:
        lengths = np.fromiter((len(c) for c in clips), np.int64, len(clips))
        offsets = np.zeros(len(clips) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.empty(offsets[-1] + 1, np.float32)
        if clips:
            np.concatenate(clips, out=flat[:-1])
        flat[-1] = 0.0
        return cls(flat, offsets)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def segment_sums(self, values: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Sum of `values` (laid out as flat) over flat[start:end] per clip (absolute positions, end > start)."""
        return np.add.reduceat(values, self._bounds(start, end), dtype=np.float64)[0::2]

    def segment_max(self, values: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Max of `values` over flat[start:end] per clip (end > start)."""
        return np.maximum.reduceat(values, self._bounds(start, end))[0::2]

    @staticmethod
    def _bounds(start: np.ndarray, end: np.ndarray) -> np.ndarray:
        # reduceat over [s0, e0, s1, e1, ...]: the even results are the segments; the trailing
        # zero of `flat` makes the last end a valid index
        bounds = np.empty(2 * len(start), np.int64)
        bounds[0::2], bounds[1::2] = start, end
        return bounds


def trim_bounds(
    layout: Layout, rate: int, cfg: AudioIngestConfig, squares: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of each clip's audio after trimming, relative to the clip."""
    n = layout.lengths
    if not cfg.trim:
        return np.zeros_like(n), n.copy()
    frame = max(1, round(cfg.trim_frame_ms * rate / 1000))
    frames = -(-n // frame)
    first_frame = np.cumsum(frames) - frames  # index of each clip's first frame
    clip_of = np.repeat(np.arange(len(n)), frames)
    k = np.arange(int(frames.sum())) - first_frame[clip_of]  # frame index within its clip
    starts = layout.offsets[clip_of] + k * frame
    width = np.minimum(frame, n[clip_of] - k * frame)
    level = dbfs(np.add.reduceat(squares, starts, dtype=np.float64) / width)
    loudest = np.maximum.reduceat(level, first_frame)
    active = level >= (loudest - cfg.trim_db)[clip_of]
    first = np.minimum.reduceat(np.where(active, k, np.iinfo(np.int64).max), first_frame)
    last = np.maximum.reduceat(np.where(active, k, -1), first_frame)
    margin = round(cfg.trim_margin_ms * rate / 1000)
    return np.maximum(first * frame - margin, 0), np.minimum((last + 1) * frame + margin, n)


def _lufs(layout: Layout, start: np.ndarray, end: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Integrated loudness (LUFS) of each clip's segment, NaN where it cannot be measured."""
    import pyloudnorm

    meter = pyloudnorm.Meter(rate)
    out = np.full(len(start), np.nan)
    measurable = (end - start) >= LUFS_BLOCK_SECONDS * rate
    for i in np.flatnonzero(measurable):
        seg = layout.flat[start[i] : end[i]].astype(np.float64)
        value = meter.integrated_loudness(seg)
        out[i] = value if np.isfinite(value) else np.nan
    return out, np.isnan(out)


def process_batch(clips: list[np.ndarray], rate: int, cfg: AudioIngestConfig, out: np.ndarray) -> Processed:
    """Trim, normalise and fix the length of mono clips (float32 (T_i,) at `rate`, each non-empty)
    into `out` (float32 (N, L), zeros)."""
    layout = Layout.of(clips)
    squares = np.square(layout.flat)
    rel_start, rel_end = trim_bounds(layout, rate, cfg, squares)
    base = layout.offsets[:-1]
    start, end = base + rel_start, base + rel_end
    size = end - start
    rms_db = dbfs(layout.segment_sums(squares, start, end) / size)
    peak = np.sqrt(layout.segment_max(squares, start, end))
    fallback = np.zeros(len(clips), bool)
    measured, gain_db = rms_db, np.zeros(len(clips))
    if cfg.loudness == "lufs":
        lufs, fallback = _lufs(layout, start, end, rate)
        measured = np.where(fallback, rms_db, lufs)
    if cfg.loudness != "none":
        gain_db = cfg.loudness_target - measured
    ceiling = cfg.peak_limit if cfg.loudness != "none" else 1.0
    gain = 10.0 ** (gain_db / 20.0)
    limited = peak * gain > ceiling
    gain = np.where(limited, ceiling / np.maximum(peak, 1e-30), gain)
    length = out.shape[1]
    count = np.minimum(size, length)
    src = start + (np.maximum(size - length, 0) // 2 if cfg.crop == "centre" else 0)
    dst = np.where(size < length, (length - size) // 2 if cfg.pad == "centre" else 0, 0)
    flat = layout.flat
    for i, (s, d, c, g) in enumerate(
        zip(src.tolist(), dst.tolist(), count.tolist(), gain.tolist(), strict=True)
    ):
        np.multiply(flat[s : s + c], np.float32(g), out=out[i, d : d + c])
    if limited.any():  # float rounding of a gain set to meet the ceiling exactly
        out[limited] = np.clip(out[limited], -ceiling, ceiling)
    return Processed(
        audio=out,
        lengths=count.astype(np.int64),
        trimmed=size.astype(np.int64),
        input_db=measured.astype(np.float32),
        gain_db=(20.0 * np.log10(gain)).astype(np.float32),
        peak_limited=limited,
        lufs_fallback=fallback,
    )


def process_clips(clips: list[np.ndarray], rate: int, cfg: AudioIngestConfig) -> Processed:
    """`process_batch` over batches of at most CHUNK_SAMPLES samples, written into one array."""
    audio = np.zeros((len(clips), clip_samples(cfg, rate)), np.float32)
    parts: list[Processed] = []
    i = 0
    while i < len(clips):
        j, total = i, 0
        while j < len(clips) and (j == i or total + len(clips[j]) <= CHUNK_SAMPLES):
            total += len(clips[j])
            j += 1
        parts.append(process_batch(clips[i:j], rate, cfg, audio[i:j]))
        i = j
    stats = {
        f: np.concatenate([getattr(p, f) for p in parts]) if parts else np.zeros(0)
        for f in Processed.__dataclass_fields__
        if f != "audio"
    }
    return Processed(audio=audio, **stats)


def steps(cfg: AudioIngestConfig, rate: int, counts: dict[str, int]) -> list[dict]:
    """The processing steps and their parameters, as the manifest's `process.steps` records them."""
    out: list[dict] = [
        {"step": "mixdown", "method": "mean of the channels", "clips": counts.get("multichannel", 0)},
        {
            "step": "resample",
            "resampler": RESAMPLER,
            "sample_rate": rate,
            "clips": counts.get("resampled", 0),
        },
    ]
    if cfg.trim:
        out.append(
            {
                "step": "trim",
                "threshold_db": -cfg.trim_db,
                "relative_to": "the clip's loudest frame",
                "frame_ms": cfg.trim_frame_ms,
                "margin_ms": cfg.trim_margin_ms,
                "samples_removed": counts.get("trimmed_samples", 0),
            }
        )
    if cfg.loudness != "none":
        out.append(
            {
                "step": "loudness",
                "method": cfg.loudness,
                "target": f"{cfg.loudness_target:g} {'LUFS' if cfg.loudness == 'lufs' else 'dBFS'}",
                "peak_limit": cfg.peak_limit,
                "peak_limited": counts.get("peak_limited", 0),
                **(
                    {
                        "lufs_fallback_rms": counts.get("lufs_fallback", 0),
                        "lufs_min_seconds": LUFS_BLOCK_SECONDS,
                    }
                    if cfg.loudness == "lufs"
                    else {}
                ),
            }
        )
    out.append(
        {
            "step": "length",
            "clip_seconds": cfg.clip_seconds,
            "samples": clip_samples(cfg, rate),
            "pad": cfg.pad,
            "crop": cfg.crop,
            "padded": counts.get("padded", 0),
            "cropped": counts.get("cropped", 0),
        }
    )
    return out
