"""Audio processing: the resampler keeps a sine's frequency and level, mono mixdown, trim, the
loudness targets (RMS, LUFS, the short-clip fallback, the peak limit), the length policy,
exact/near duplicates on real FSDD clips, stratified and speaker-disjoint splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genforge.core.errors import ConfigError, DataError
from genforge.data.audio.config import AudioIngestConfig
from genforge.data.audio.duplicates import find_audio_duplicates, fingerprints
from genforge.data.audio.process import prepare, process_clips, to_mono
from genforge.data.audio.split import plan_splits

SR = 8000


def tone(seconds: float, freq: float = 440.0, amp: float = 0.3, rate: int = SR) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64))))


# ---- mixdown and resampling


def test_resampler_keeps_frequency_and_level() -> None:
    x = tone(2.0, 1000.0, 0.5, rate=16000)
    y = prepare(x[:, None], 16000, SR)
    assert len(y) == 2 * SR and y.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / SR)
    k = int(spectrum.argmax())
    # parabolic interpolation of the peak: the frequency to a fraction of the 0.5 Hz bin
    a, b, c = np.log(spectrum[k - 1 : k + 2])
    peak = freqs[k] + 0.5 * (a - c) / (a - 2 * b + c) * (freqs[1] - freqs[0])
    assert abs(peak - 1000.0) < 1.0
    middle = slice(SR // 4, -SR // 4)  # away from the filter's edge transients
    assert abs(rms_db(y[middle]) - rms_db(x[2 * SR // 4 : -2 * SR // 4])) < 0.1


def test_resampler_removes_content_above_the_new_nyquist() -> None:
    x = tone(1.0, 5000.0, 0.5, rate=16000)  # above 4 kHz: must not alias down to 3 kHz
    y = prepare(x[:, None], 16000, SR)
    assert rms_db(y[SR // 4 : -SR // 4]) < rms_db(x) - 60


def test_mono_mixdown_is_the_channel_mean() -> None:
    left, right = tone(0.5, 300), tone(0.5, 700, 0.1)
    both = np.stack([left, right], axis=1)
    assert np.allclose(to_mono(both), (left + right) / 2)
    assert to_mono(left[:, None]) is not None and np.array_equal(to_mono(left[:, None]), left)
    assert np.array_equal(prepare(both, SR, SR), to_mono(both))  # same rate: no resampling


# ---- trim


def _framed(lead: float, body: float, tail: float, floor_amp: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    n = int((lead + body + tail) * SR)
    x = floor_amp * rng.standard_normal(n).astype(np.float32)
    start = int(lead * SR)
    x[start : start + int(body * SR)] += tone(body, 440, 0.5)
    return x


def test_trim_removes_leading_and_trailing_silence_with_a_margin() -> None:
    cfg = AudioIngestConfig(loudness="none", trim_margin_ms=20, clip_seconds=2.0)
    x = _framed(0.3, 0.4, 0.5, floor_amp=0.0005)  # noise ~-60 dB under the tone's frames
    p = process_clips([x], SR, cfg)
    # 0.4 s of tone, extended to whole 10 ms frames, plus 20 ms on each side
    assert abs(p.trimmed[0] - int(0.44 * SR)) <= 80
    out = p.audio[0]
    real = np.flatnonzero(np.abs(out) > 0.1)
    assert abs((real[-1] - real[0]) - int(0.4 * SR)) <= 2  # the tone itself is intact
    assert np.array_equal(
        process_clips([x], SR, AudioIngestConfig(loudness="none", trim=False, clip_seconds=2.0)).trimmed,
        [len(x)],
    )


def test_trim_threshold_is_relative_to_the_loudest_frame() -> None:
    quiet = tone(0.3, 440, 0.5 * 10 ** (-30 / 20))  # 30 dB down: speech, kept at trim_db 40
    x = np.concatenate([quiet, tone(0.3, 440, 0.5), np.zeros(SR // 2, np.float32)])
    kept = process_clips([x], SR, AudioIngestConfig(loudness="none", trim_margin_ms=0)).trimmed[0]
    assert kept == int(0.6 * SR)
    cut = process_clips([x], SR, AudioIngestConfig(loudness="none", trim_margin_ms=0, trim_db=20)).trimmed[0]
    assert cut == int(0.3 * SR)


# ---- loudness


@pytest.mark.parametrize("amp", [0.01, 0.1, 0.5])
def test_rms_target_met_within_half_a_db(amp: float) -> None:
    cfg = AudioIngestConfig(loudness_target=-23.0, trim=False, clip_seconds=1.0)
    p = process_clips([tone(0.5, 300, amp), tone(0.8, 900, amp)], SR, cfg)
    for out, n in zip(p.audio, p.lengths, strict=True):
        assert abs(10 * np.log10(np.sum(np.square(out, dtype=np.float64)) / n) - (-23.0)) < 0.5
    assert not p.peak_limited.any()


def test_lufs_target_and_short_clip_fallback() -> None:
    import pyloudnorm

    cfg = AudioIngestConfig(loudness="lufs", loudness_target=-26.0, trim=False, clip_seconds=1.5)
    rng = np.random.default_rng(1)
    long_clip = (0.05 * rng.standard_normal(SR)).astype(np.float32)  # 1 s of noise: measurable
    short_clip = tone(0.2, 500, 0.2)  # under pyloudnorm's 0.4 s block: RMS instead
    p = process_clips([long_clip, short_clip], SR, cfg)
    assert p.lufs_fallback.tolist() == [False, True]
    out_long = p.audio[0, SR // 4 : SR // 4 + SR].astype(np.float64)  # centred in 1.5 s
    assert abs(pyloudnorm.Meter(SR).integrated_loudness(out_long) - (-26.0)) < 0.5
    assert abs(10 * np.log10(np.sum(p.audio[1].astype(np.float64) ** 2) / p.lengths[1]) - (-26.0)) < 0.5


def test_peak_limit_lowers_the_gain() -> None:
    x = np.zeros(SR // 2, np.float32)
    x[::400] = 0.5  # sparse clicks: a -20 dBFS RMS would lift them far above full scale
    p = process_clips([x], SR, AudioIngestConfig(trim=False))
    assert p.peak_limited.tolist() == [True]
    assert np.isclose(np.abs(p.audio).max(), 0.99, atol=1e-6)


# ---- length policy


def _placed(n: int, **kw) -> tuple[np.ndarray, np.ndarray]:
    ramp = np.arange(1, n + 1, dtype=np.float32) / (2 * n)  # every sample tells where it came from
    cfg = AudioIngestConfig(trim=False, loudness="none", clip_seconds=0.125, **kw)  # 1000 samples
    p = process_clips([ramp], SR, cfg)
    return p.audio[0], ramp


@pytest.mark.parametrize(("pad", "at"), [("centre", 200), ("end", 0)])
def test_pad_places_short_clips(pad: str, at: int) -> None:
    out, ramp = _placed(600, pad=pad)
    assert out.shape == (1000,)
    assert np.array_equal(out[at : at + 600], ramp)
    assert not out[:at].any() and not out[at + 600 :].any()


@pytest.mark.parametrize(("crop", "start"), [("centre", 250), ("start", 0)])
def test_crop_keeps_the_chosen_part(crop: str, start: int) -> None:
    out, ramp = _placed(1500, crop=crop)
    assert np.array_equal(out, ramp[start : start + 1000])


def test_lengths_record_real_audio() -> None:
    cfg = AudioIngestConfig(trim=False, loudness="none", clip_seconds=0.125)
    p = process_clips([tone(0.05), tone(0.2)], SR, cfg)
    assert (
        p.audio.shape == (2, 1000) and p.lengths.tolist() == [400, 1000] and p.trimmed.tolist() == [400, 1600]
    )


def test_batches_agree_with_one_batch(monkeypatch) -> None:
    import genforge.data.audio.process as process

    clips = [tone(0.1 + 0.05 * k, 200 + 50 * k, 0.05 * (k + 1)) for k in range(9)]
    whole = process_clips(clips, SR, AudioIngestConfig())
    monkeypatch.setattr(process, "CHUNK_SAMPLES", 2000)  # several small batches
    parts = process_clips(clips, SR, AudioIngestConfig())
    assert np.array_equal(whole.audio, parts.audio) and np.array_equal(whole.gain_db, parts.gain_db)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="clip_seconds"):
        AudioIngestConfig(clip_seconds=40.0)
    with pytest.raises(ConfigError, match="loudness_target"):
        AudioIngestConfig(loudness_target=3.0)
    with pytest.raises(ConfigError, match="group_by"):
        AudioIngestConfig(group_by="speaker id")


# ---- duplicates on real clips


@pytest.mark.parametrize("rate", [8000, 16000])
def test_fingerprint_log_mel_is_the_shared_log_mel(rate: int) -> None:
    import torch

    from genforge.audio.spectrogram import log_mel
    from genforge.data.audio.duplicates import log_mel_frames, mel_config

    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((3, rate))).astype(np.float32)
    cfg = mel_config(rate)
    ref = log_mel(torch.from_numpy(audio), cfg).numpy()
    got = log_mel_frames(audio, cfg)
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-3


@pytest.fixture(scope="module")
def fsdd_processed(fsdd_dir: Path):
    names = [f"{d}_{s}_{t}.wav" for d in (3, 7) for s in ("george", "lucas") for t in range(6)]
    raw = [sf.read(fsdd_dir / n, dtype="float32")[0] for n in names]
    return names, raw


def test_exact_and_near_duplicates(fsdd_processed) -> None:
    names, raw = fsdd_processed
    rng = np.random.default_rng(0)
    base = raw[0]
    noisy = base + (np.sqrt(np.mean(base**2)) * 10 ** (-40 / 20) * rng.standard_normal(len(base))).astype(
        np.float32
    )
    quieter = base * 10 ** (-6 / 20)  # a gain change: normalised away, but float rounding differs
    clips = [*raw, base.copy(), noisy, quieter]
    cfg = AudioIngestConfig()
    p = process_clips(clips, SR, cfg)
    from genforge.core.hashing import hash_array

    hashes = [hash_array(a) for a in p.audio]
    dups = find_audio_duplicates(hashes, fingerprints(p.audio, SR), cfg.near_dup_threshold)
    n = len(raw)
    assert dups.exact == [[0, n]]  # the byte-identical copy
    near = {(i, j) for i, j, _ in dups.near_pairs}
    assert {(0, n + 1), (0, n + 2)} <= near  # noise 40 dB down, gain -6 dB: near copies of clip 0
    assert all(c >= 0.995 for _, _, c in dups.near_pairs)
    # distinct takes of one digit by one speaker are not duplicates
    assert len({int(dups.component[i]) for i in range(n)}) == n
    assert len({int(dups.component[i]) for i in (0, n, n + 1, n + 2)}) == 1


@pytest.mark.parametrize("bf16", [False, True])
def test_pair_search_finds_exactly_the_pairs_over_the_threshold(monkeypatch, bf16: bool) -> None:
    import genforge.data.audio.duplicates as duplicates

    if bf16 and not duplicates._bf16_is_fast():
        pytest.skip("this CPU has no fast bfloat16 matrix product (oneDNN)")
    monkeypatch.setattr(duplicates, "_bf16_is_fast", lambda: bf16)
    monkeypatch.setattr(duplicates, "BLOCK_ENTRIES", 40 * 300)  # several blocks of rows
    rng = np.random.default_rng(0)
    base = rng.standard_normal((260, 64)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    near = []
    for k, c in enumerate([0.994, 0.9949, 0.9951, 0.996, 0.999] * 8):  # around the threshold 0.995
        noise = rng.standard_normal(64).astype(np.float32)
        noise -= (noise @ base[k]) * base[k]
        near.append(c * base[k] + np.sqrt(1 - c * c) * noise / np.linalg.norm(noise))
    features = np.vstack([base, np.array(near, np.float32)])
    exact = features.astype(np.float64) @ features.T.astype(np.float64)
    want = {(i, j) for i, j in zip(*np.nonzero(np.triu(exact >= 0.995, 1)), strict=True)}
    i, j, c = duplicates.similar_pairs(features, 0.995)
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == want and len(want) >= 24
    assert np.allclose(c, exact[i, j], atol=1e-5)
    a, b, _ = duplicates.cross_pairs(features[:260], features[260:], 0.995)
    assert set(zip(a.tolist(), (b + 260).tolist(), strict=True)) == {p for p in want if p[0] < 260 <= p[1]}


# ---- splits


def test_stratified_carve_keeps_duplicates_together() -> None:
    labels = np.repeat(np.arange(4), 25)
    component = np.arange(100)
    component[[1, 2, 3]] = 0  # one group of four copies
    hashes = [str(i) for i in range(100)]
    plan = plan_splits(["train"] * 100, labels, component, hashes, seed=3, requested=0.2)
    split = np.array(plan.splits)
    assert plan.method == "stratified" and (split == "val").sum() in range(18, 24)
    for k in range(4):
        assert (split[labels == k] == "val").sum() in (4, 5, 6, 7, 8)
    assert len(set(split[[0, 1, 2, 3]])) == 1
    again = plan_splits(["train"] * 100, labels, component, hashes, seed=3, requested=0.2)
    assert again.splits == plan.splits  # seeded


def test_grouped_split_is_speaker_disjoint() -> None:
    speakers = np.repeat(np.arange(5), 20)
    labels = np.tile(np.arange(10), 10)
    component = np.arange(100)
    component[5] = component[25] = 5  # a copy shared by speakers 0 and 1: they move together
    names = ["ann", "bob", "cy", "dee", "eve"]
    plan = plan_splits(
        ["train"] * 100, labels, component, [str(i) for i in range(100)], 0, 0.1, "speaker", speakers, names
    )
    split = np.array(plan.splits)
    assert plan.method == "grouped"
    val = set(speakers[split == "val"].tolist())
    assert val and not val & set(speakers[split == "train"].tolist())
    assert (0 in val) == (1 in val)
    assert plan.groups == {
        "train": sorted(names[s] for s in set(range(5)) - val),
        "val": sorted(names[s] for s in val),
    }
    with pytest.raises(DataError, match="at least 2"):
        plan_splits(
            ["train"] * 10,
            labels[:10],
            np.arange(10),
            [str(i) for i in range(10)],
            0,
            0.1,
            "speaker",
            np.zeros(10, np.int64),
            ["ann"],
        )
    with pytest.raises(ConfigError, match="no per-item field 'speaker'"):
        plan_splits(
            ["train"] * 10, labels[:10], np.arange(10), [str(i) for i in range(10)], 0, 0.1, "speaker"
        )


def test_source_splits_are_kept() -> None:
    splits = ["train"] * 8 + ["test"] * 2
    plan = plan_splits(splits, np.zeros(10, np.int64), np.arange(10), [str(i) for i in range(10)], 0, None)
    assert plan.splits == splits and plan.method == "source" and plan.fraction == 0.0
    only = plan_splits(
        ["test"] * 10, np.zeros(10, np.int64), np.arange(10), [str(i) for i in range(10)], 0, None
    )
    assert "used as train" in only.notes[0] and set(only.splits) == {"train", "val"}
