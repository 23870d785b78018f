"""The audio ingest's fast paths give what the plain ones give: files read through libsndfile's
binding without a SoundFile object, the fingerprints' in-place reflect padding, and the clips'
content hashes (computed beside the fingerprints on a thread)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import genforge.data.audio.decode as decode_module
from genforge.core.hashing import hash_array
from genforge.data.audio.decode import Decoded, Rejected, decode
from genforge.data.audio.duplicates import (
    FINGERPRINT_FRAMES,
    FLOOR_DB,
    _pooling,
    centre_energy,
    clip_hashes,
    fingerprints,
    log_mel_frames,
    mel_config,
    reflect_ends,
)

SR = 8000


def _wav(x: np.ndarray, subtype: str = "PCM_16", fmt: str = "WAV", rate: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def _files(tmp_path: Path) -> dict[str, bytes]:
    t = np.arange(SR // 2) / SR
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    loud = np.clip(4 * tone, -1, 1)
    nan = tone.copy()
    nan[[5, 9]] = [np.nan, np.inf]
    ok = _wav(tone)
    return {
        "ok.wav": ok,
        "stereo.flac": _wav(np.stack([tone, -tone], 1), fmt="FLAC"),
        "float.wav": _wav(tone, "FLOAT"),
        "clipped.wav": _wav(loud),
        "nan.wav": _wav(nan, "FLOAT"),
        "silent.wav": _wav(np.zeros(SR, np.float32)),
        "long.wav": _wav(np.tile(tone, 8)),  # 4 s: over max_seconds 3
        "cut.wav": ok[: len(ok) // 2],
        "header.wav": ok[:30],
        "text.wav": b"no audio here " * 20,
        "zero.wav": b"",
    }


def test_files_read_without_soundfile_objects_decode_as_through_soundfile(
    tmp_path: Path, monkeypatch
) -> None:
    files = _files(tmp_path)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    fast = {n: decode(str(tmp_path / n), 3.0, -60.0, 0.999) for n in files}
    monkeypatch.setattr(decode_module, "_SND", None)  # every file through SoundFile
    plain = {n: decode(str(tmp_path / n), 3.0, -60.0, 0.999) for n in files}
    kinds = {}
    for name in files:
        a, b = fast[name], plain[name]
        assert type(a) is type(b), name
        if isinstance(a, Decoded):
            assert isinstance(b, Decoded)
            assert (a.sample_rate, a.format, a.clipped) == (b.sample_rate, b.format, b.clipped), name
            assert a.samples.dtype == np.float32 and np.array_equal(a.samples, b.samples), name
            kinds[name] = "ok"
        else:
            assert isinstance(a, Rejected) and isinstance(b, Rejected)
            assert (a.kind, a.reason, a.sample_rate) == (b.kind, b.reason, b.sample_rate), name
            assert (a.preview is None) == (b.preview is None) and (
                a.preview is None or np.array_equal(a.preview, b.preview)
            ), name
            kinds[name] = a.kind
    assert kinds == {
        "ok.wav": "ok",
        "stereo.flac": "ok",
        "float.wav": "ok",
        "clipped.wav": "ok",
        "nan.wav": "non_finite",
        "silent.wav": "silent",
        "long.wav": "too_long",
        "cut.wav": "truncated",
        "header.wav": "corrupt",
        "text.wav": "not_audio",
        "zero.wav": "empty",
    }
    assert fast["stereo.flac"].samples.shape == (SR // 2, 2)  # type: ignore[union-attr]
    assert fast["stereo.flac"].format == "FLAC PCM_16"  # type: ignore[union-attr]
    # a 1.2 amplitude sine clipped at full scale: |sin| >= 0.999 / 1.2 for 1 - 2 asin(0.8325) / pi of it
    share = 1 - 2 * np.arcsin(0.999 / 1.2) / np.pi
    assert abs(fast["clipped.wav"].clipped - share) < 0.01 and fast["ok.wav"].clipped == 0.0  # type: ignore[union-attr]


@pytest.mark.parametrize("length", [5, 100, 128, 129, 130, 1000, 8000])
def test_reflect_ends_pads_as_numpy_reflect(length: int) -> None:
    rng = np.random.default_rng(length)
    x = rng.standard_normal((3, length)).astype(np.float32)
    pad = 128
    padded = np.zeros((3, length + 2 * pad), np.float32)
    padded[:, pad : pad + length] = x
    assert np.array_equal(reflect_ends(padded, pad), np.pad(x, ((0, 0), (pad, pad)), mode="reflect"))


@pytest.mark.parametrize(("rate", "length"), [(8000, 8000), (8000, 6001), (8000, 100), (16000, 12000)])
def test_fingerprints_log_mel_equals_the_padded_copy(rate: int, length: int) -> None:
    rng = np.random.default_rng(rate + length)
    audio = (0.2 * rng.standard_normal((5, length))).astype(np.float32)
    audio[:, : length // 2] *= 0.01  # energy off centre: every clip shifts
    cfg = mel_config(rate)
    half = cfg.n_fft // 2
    centred = centre_energy(audio)
    inset = centre_energy(audio, half)
    assert inset.shape == (5, length + 2 * half) and np.array_equal(inset[:, half : half + length], centred)
    assert not inset[:, :half].any() and not inset[:, half + length :].any()
    # the fingerprints reflect-pad in place what log_mel_frames pads with np.pad: the same numbers
    features = fingerprints(audio, rate)
    lm = log_mel_frames(centred, cfg)
    lm = np.maximum(lm, lm.max(axis=(1, 2), keepdims=True) - FLOOR_DB / 10.0 * math.log(10.0))
    pooled = (lm @ _pooling(lm.shape[2], min(lm.shape[2], FINGERPRINT_FRAMES))).reshape(5, -1)
    pooled -= pooled.mean(axis=1, keepdims=True)
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    assert features.dtype == np.float32 and np.array_equal(features, pooled)
    assert np.allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    # clips are fingerprinted one by one: batch order does not matter
    assert np.array_equal(fingerprints(np.ascontiguousarray(audio[::-1]), rate), features[::-1])


def test_clip_hashes_are_the_index_hashes() -> None:
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((4, 300)).astype(np.float32)
    audio[2] = audio[0]
    got = clip_hashes(audio)
    assert got == [hash_array(row) for row in audio]
    assert got[0] == got[2] and len(set(got)) == 3 and all(len(h) == 64 for h in got)


def test_silent_frames_skip_the_fft_with_the_same_result() -> None:
    import scipy.fft

    from genforge.audio.spectrogram import mel_filterbank

    rng = np.random.default_rng(3)
    audio = np.zeros((4, SR), np.float32)  # short sounds in silence, as the length policy pads them
    for i, (a, b) in enumerate([(3000, 4200), (0, 500), (7000, 8000), (2000, 2001)]):
        audio[i, a:b] = 0.3 * rng.standard_normal(b - a)
    cfg = mel_config(SR)
    n = cfg.n_fft
    padded = np.pad(audio, ((0, 0), (n // 2, n // 2)), mode="reflect")
    frames = padded[:, : cfg.frames(SR) * n].reshape(4, -1, n)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)
    spec = scipy.fft.rfft(frames * window, axis=-1)  # every frame through the FFT
    power = np.square(spec.real) + np.square(spec.imag)
    want = np.log(np.maximum(power @ mel_filterbank(cfg).numpy().T, cfg.log_floor)).transpose(0, 2, 1)
    got = log_mel_frames(audio, cfg)
    silent = ~frames.any(axis=-1)
    assert silent.sum() > silent.size // 2  # most frames are silence
    assert np.array_equal(got, want)
    assert (got.transpose(0, 2, 1)[silent] == np.float32(np.log(cfg.log_floor))).all()
