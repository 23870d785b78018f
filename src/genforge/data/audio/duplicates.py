"""Exact and near duplicate clips.

Exact: the same processed samples (the content hash of each clip as written). Near: log-mel
fingerprints (`genforge.audio.spectrogram`'s log-mel, the representation every stage shares).
Each clip is first shifted so that its energy centroid sits in the middle (two copies trimmed a
few milliseconds apart line up again to the sample), then its log-mel (32 bands, ~32 ms windows
side by side) is pooled to 32 frames, floored FLOOR_DB below its loudest bin (noise and the
padding's digital silence look alike), centred and scaled to unit length. Their cosine ignores
gain and noise 30 dB or more below the speech (on FSDD, 99% of such copies score >= 0.997), yet
tells apart two takes of one word by one speaker (at most 0.987 between FSDD's distinct clips);
the default threshold 0.995 sits between. Pairs are found among one clip per exact-copy group by
blocked matrix products of the fingerprints (N^2 * 1,024 multiply-adds; in bfloat16 where the
CPU has it, every pair near the threshold then confirmed in float32: no pair is missed), and
grouped with the image duplicates' connected components.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from genforge.core.hashing import hash_array
from genforge.data.process.duplicates import Duplicates, components, exact_groups

FINGERPRINT_MELS = 32
FINGERPRINT_FRAMES = 32
FLOOR_DB = 40.0
BATCH = 512  # clips per log-mel batch
BLOCK_ENTRIES = 1 << 23  # similarity entries per block of the pair search (32 MB)
BF16_MARGIN = 0.01  # candidates this far below the threshold in a bfloat16 product are confirmed


def mel_config(sample_rate: int):
    """The fingerprints' log-mel: ~32 ms windows (a power of two) side by side. Overlapping
    windows cost twice the STFT and told FSDD's distinct takes apart less well (0.992 vs 0.986)."""
    from genforge.audio.spectrogram import MelConfig

    n_fft = 1 << max(3, round(math.log2(0.032 * sample_rate)))
    return MelConfig(
        sample_rate=sample_rate, n_fft=n_fft, hop_length=n_fft, n_mels=min(FINGERPRINT_MELS, n_fft // 2 + 1)
    )


def centre_energy(audio: np.ndarray, pad: int = 0) -> np.ndarray:
    """Each clip of `audio` (N, T) shifted (zero-filled) so that its energy centroid is at T // 2,
    written `pad` samples in from the start of an (N, T + 2 * pad) array whose ends stay zero (the
    fingerprints reflect-pad them in place: one copy of the clips less than `np.pad`)."""
    n, t = audio.shape
    # einsum sums the products without writing the N x T squares out (a few times faster here)
    total = np.einsum("nt,nt->n", audio, audio)
    moment = np.einsum("nt,nt,t->n", audio, audio, np.arange(t, dtype=np.float32), optimize=False)
    centroid = np.divide(moment, total, out=np.full(n, t / 2), where=total > 0)
    shift = np.round(t // 2 - centroid).astype(np.int64).tolist()
    out = np.zeros((n, t + 2 * pad), audio.dtype)
    for i, s in enumerate(shift):  # row slices: cheaper than gathering N x T indices
        if s >= 0:
            out[i, pad + s : pad + t] = audio[i, : t - s]
        else:
            out[i, pad : pad + t + s] = audio[i, -s:]
    return out


def reflect_ends(padded: np.ndarray, pad: int) -> np.ndarray:
    """Fill the `pad` samples at each end of `padded` (N, T + 2 * pad) in place, as
    `np.pad(mode="reflect")` pads the T in the middle."""
    t = padded.shape[1] - 2 * pad
    if t <= pad:  # np.pad reflects over and over when the pad is longer than the clip
        padded[:] = np.pad(padded[:, pad : pad + t], ((0, 0), (pad, pad)), mode="reflect")
    elif pad:
        padded[:, :pad] = padded[:, 2 * pad : pad : -1]
        padded[:, pad + t :] = padded[:, pad + t - 2 : t - 2 : -1]
    return padded


def log_mel_frames(audio: np.ndarray, cfg) -> np.ndarray:
    """`genforge.audio.spectrogram.log_mel` of `audio` (N, T), as (N, n_mels, frames), for a
    config whose hop equals its window: the same filterbank, periodic Hann window and centred
    (reflect-padded) frames, but with the frames side by side they are a reshape of the padded
    clips, so scipy's real FFT runs on them in place of the general STFT (FSDD: about half the
    CPU time). A test pins the two equal."""
    n = cfg.n_fft
    return _padded_log_mel(np.pad(audio, ((0, 0), (n // 2, n // 2)), mode="reflect"), audio.shape[1], cfg)


def _padded_log_mel(padded: np.ndarray, length: int, cfg, windowed: np.ndarray | None = None) -> np.ndarray:
    """`log_mel_frames` of clips of `length` samples already reflect-padded by n_fft // 2 on each
    side; `windowed` (N, frames, n_fft) float32, when given, holds the windowed frames (a buffer
    reused across batches)."""
    import scipy.fft

    from genforge.audio.spectrogram import mel_filterbank
    from genforge.core.threads import budget

    assert cfg.hop_length == cfg.n_fft, "frames side by side only"
    n = cfg.n_fft
    frames = padded[:, : cfg.frames(length) * n].reshape(len(padded), -1, n)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)
    windowed = np.multiply(frames, window, out=windowed)
    # a frame of digital silence (the length policy's padding: most of a short clip's frames)
    # has zero power in every bin: only the others go through the FFT
    live = windowed.any(axis=-1)
    spec = scipy.fft.rfft(windowed[live], axis=-1, workers=budget())
    power = np.zeros((*live.shape, n // 2 + 1), np.float32)  # (N, frames, bins)
    power[live] = np.square(spec.real) + np.square(spec.imag)
    mel = power @ mel_filterbank(cfg).numpy().T  # (N, frames, n_mels)
    return np.log(np.maximum(mel, cfg.log_floor)).transpose(0, 2, 1)


def _pooling(frames: int, out: int) -> np.ndarray:
    """(frames, out) averaging matrix: torch's adaptive average pooling of frames into out bins."""
    m = np.zeros((frames, out), np.float32)
    for k in range(out):
        lo, hi = (k * frames) // out, -(-((k + 1) * frames) // out)
        m[lo:hi, k] = 1.0 / (hi - lo)
    return m


def fingerprints(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """float32 (N, D) unit vectors, one per clip of `audio` (N, T)."""
    cfg = mel_config(sample_rate)
    floor = FLOOR_DB / 10.0 * math.log(10.0)  # dB of power in natural-log units
    frames = cfg.frames(audio.shape[1])
    pool = _pooling(frames, min(frames, FINGERPRINT_FRAMES))
    half = cfg.n_fft // 2
    windowed = np.empty((min(BATCH, len(audio)), frames, cfg.n_fft), np.float32)
    out = []
    for start in range(0, len(audio), BATCH):
        padded = reflect_ends(centre_energy(np.asarray(audio[start : start + BATCH], np.float32), half), half)
        lm = _padded_log_mel(padded, audio.shape[1], cfg, windowed[: len(padded)])
        lm = np.maximum(lm, lm.max(axis=(1, 2), keepdims=True) - floor)
        pooled = (lm @ pool).reshape(len(lm), -1)
        pooled -= pooled.mean(axis=1, keepdims=True)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        out.append(pooled.astype(np.float32, copy=False))
    return np.concatenate(out) if out else np.zeros((0, cfg.n_mels * pool.shape[1]), np.float32)


def clip_hashes(audio: np.ndarray) -> list[str]:
    """The content hash (`hash_array`) of each clip of `audio` (N, T), as the index records it."""
    return [hash_array(row) for row in audio]


@dataclass
class ClipDuplicates(Duplicates):
    """`Duplicates` whose near pairs carry the fingerprints' cosine similarity."""

    near_pairs: list[tuple[int, int, float]]  # (i, j, cosine) with i < j


@lru_cache(maxsize=1)
def _bf16_is_fast() -> bool:
    """True where torch multiplies bfloat16 matrices in hardware (oneDNN on AVX512-BF16/AMX)."""
    try:
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # an older torch or another backend: the float32 product
        return False


def _scores(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """(a @ b.T, how far below its true value an entry may be). In bfloat16 where the hardware
    has it (about 5x faster on FSDD's 2,500 fingerprints): rounding unit rows to 8 mantissa bits
    moves their dot product by at most 2 * 2^-9 < 0.004, so entries within BF16_MARGIN of the
    threshold are candidates, confirmed on the float32 rows."""
    if not _bf16_is_fast():
        return a @ b.T, 0.0
    import torch

    ta = torch.from_numpy(np.ascontiguousarray(a)).to(torch.bfloat16)
    tb = torch.from_numpy(np.ascontiguousarray(b)).to(torch.bfloat16)
    return (ta @ tb.T).float().numpy(), BF16_MARGIN


def _pairs(a: np.ndarray, b: np.ndarray, threshold: float, upper: bool) -> tuple[np.ndarray, ...]:
    """(i, j, cosine) with a[i] . b[j] >= threshold (i < j when `upper`, a and b then the same rows),
    in blocks of rows of `a` against the rows of `b` (from the block's first on when `upper`)."""
    block = max(1, BLOCK_ENTRIES // max(len(b), 1))
    found_i, found_j = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for start in range(0, len(a), block):
        rows = a[start : start + block]
        sims, margin = _scores(rows, b[start:] if upper else b)
        i, j = np.nonzero(sims >= threshold - margin)
        if upper:
            keep = j > i  # the block's own rows sit at columns 0..block-1: j > i is the upper triangle
            i, j = i[keep], j[keep] + start
        found_i.append(i + start)
        found_j.append(j)
    i, j = np.concatenate(found_i), np.concatenate(found_j)
    sims = np.einsum("nd,nd->n", a[i], b[j])  # the float32 cosine of every candidate
    keep = sims >= threshold
    return i[keep], j[keep], sims[keep]


def similar_pairs(features: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (i < j, cosine) with features[i] . features[j] >= threshold."""
    return _pairs(features, features, threshold, upper=True)


def cross_pairs(a: np.ndarray, b: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (i, j, cosine) with a[i] . b[j] >= threshold."""
    return _pairs(a, b, threshold, upper=False)


def find_audio_duplicates(hashes: list[str], features: np.ndarray, threshold: float) -> ClipDuplicates:
    """Exact groups by content hash; near pairs by fingerprint cosine >= threshold among one
    clip per exact group."""
    n = len(hashes)
    exact = exact_groups(hashes)
    rep = np.ones(n, bool)
    ea: list[int] = []
    eb: list[int] = []
    for g in exact:
        rep[g[1:]] = False
        ea += [g[0]] * (len(g) - 1)
        eb += g[1:]
    reps = np.flatnonzero(rep)
    i, j, sims = similar_pairs(np.ascontiguousarray(features[reps], np.float32), threshold)
    i, j = reps[i], reps[j]
    component = components(
        n, np.concatenate([np.asarray(ea, np.int64), i]), np.concatenate([np.asarray(eb, np.int64), j])
    )
    near_labels = components(n, i, j)
    near: dict[int, list[int]] = {}
    for node in np.unique(np.concatenate([i, j])):
        near.setdefault(int(near_labels[node]), []).append(int(node))
    pairs = [(int(a), int(b), round(float(c), 4)) for a, b, c in zip(i, j, sims, strict=True)]
    return ClipDuplicates(exact=exact, near=list(near.values()), near_pairs=pairs, component=component)
