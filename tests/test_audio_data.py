"""Audio data: every decoder on real FSDD clips, every broken-file kind quarantined with its
reason, label patterns, and the sources (folder with split/class folders, tar.gz, one file, HF)."""

from __future__ import annotations

import io
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genforge.core.errors import ConfigError, DataError
from genforge.data.audio.config import AudioIngestConfig
from genforge.data.audio.decode import Decoded, Rejected, container, decode
from genforge.data.audio.pattern import LabelPattern
from genforge.data.audio.sources import claims, open_audio_source

SR = 8000


def encode(audio: np.ndarray, fmt: str = "WAV", subtype: str | None = None, rate: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def tone(seconds: float = 0.5, freq: float = 440.0, amp: float = 0.3, rate: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dec(data: bytes, max_seconds: float = 30.0) -> Decoded | Rejected:
    return decode(data, max_seconds, -60.0)


@pytest.fixture(scope="module")
def fsdd_clip(fsdd_dir: Path) -> tuple[bytes, np.ndarray]:
    path = fsdd_dir / "3_theo_7.wav"
    return path.read_bytes(), sf.read(path, dtype="float32")[0]


# ---- decoders on real clips


def test_wav_decodes_exactly_as_soundfile(fsdd_clip) -> None:
    data, ref = fsdd_clip
    got = dec(data)
    assert isinstance(got, Decoded) and got.sample_rate == SR and got.format == "WAV PCM_16"
    assert got.samples.shape == (len(ref), 1) and np.array_equal(got.samples[:, 0], ref)


def test_flac_is_lossless(fsdd_clip) -> None:
    _, ref = fsdd_clip
    got = dec(encode(ref, "FLAC", "PCM_16"))
    assert isinstance(got, Decoded) and got.format == "FLAC PCM_16"
    assert np.array_equal(got.samples[:, 0], ref)


@pytest.mark.parametrize(("fmt", "subtype"), [("OGG", "VORBIS"), ("OGG", "OPUS"), ("MP3", "MPEG_LAYER_III")])
def test_lossy_formats_keep_the_signal(fsdd_clip, fmt: str, subtype: str) -> None:
    _, ref = fsdd_clip
    try:
        data = encode(ref, fmt, subtype)
    except (sf.LibsndfileError, TypeError, ValueError) as exc:
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} cannot write {fmt}/{subtype}: {exc}")
    got = dec(data)
    assert isinstance(got, Decoded) and got.sample_rate == SR and got.format.startswith(fmt)
    x = got.samples[:, 0]
    # lossy codecs add a few ms of encoder delay/padding; the level survives within 1 dB
    assert abs(len(x) - len(ref)) <= 0.1 * SR
    level = 20 * np.log10(np.sqrt(np.mean(x**2)) / np.sqrt(np.mean(ref**2)))
    assert abs(level) < 1.0


def test_float_and_stereo_wav(fsdd_clip) -> None:
    _, ref = fsdd_clip
    stereo = np.stack([ref, -ref], axis=1)
    got = dec(encode(stereo, "WAV", "FLOAT"))
    assert isinstance(got, Decoded) and got.format == "WAV FLOAT" and got.samples.shape == (len(ref), 2)
    assert np.array_equal(got.samples[:, 1], -ref)


# ---- broken files: each kind and its reason


def test_truncated_wav(fsdd_clip) -> None:
    data, ref = fsdd_clip
    got = dec(data[: len(data) // 2])
    assert isinstance(got, Rejected) and got.kind == "truncated"
    assert f"declares {len(data) - 44:,} bytes" in got.reason
    assert got.preview is not None and 0 < len(got.preview) < len(ref)  # what is there stays playable


def test_truncated_header_is_corrupt(fsdd_clip) -> None:
    got = dec(fsdd_clip[0][:30])
    assert isinstance(got, Rejected) and got.kind == "corrupt" and "data" in got.reason


def test_truncated_mp3_or_flac(fsdd_clip) -> None:
    _, ref = fsdd_clip
    flac = encode(ref, "FLAC")
    got = dec(flac[: len(flac) // 2])
    assert isinstance(got, Rejected) and got.kind in ("corrupt", "truncated")


def test_garbage_named_wav_is_not_audio() -> None:
    got = dec(b"this is a text file, not a recording\n" * 20)
    assert isinstance(got, Rejected) and got.kind == "not_audio"
    assert "first bytes 74 68 69 73" in got.reason


def test_zero_length_and_header_only_are_empty() -> None:
    got = dec(b"")
    assert isinstance(got, Rejected) and got.kind == "empty" and "0 bytes" in got.reason
    got = dec(encode(np.zeros(0, np.float32)))
    assert isinstance(got, Rejected) and got.kind == "empty" and "no audio samples" in got.reason


def test_nan_float_wav_is_non_finite() -> None:
    x = tone()
    x[[10, 20, 30]] = [np.nan, np.inf, -np.inf]
    got = dec(encode(x, "WAV", "FLOAT"))
    assert isinstance(got, Rejected) and got.kind == "non_finite" and got.reason.startswith("3 non-finite")
    assert got.preview is not None and np.isfinite(got.preview).all()


def test_all_silent() -> None:
    got = dec(encode(np.zeros(4000, np.float32)))
    assert isinstance(got, Rejected) and got.kind == "silent" and "all zeros" in got.reason
    got = dec(encode(tone(amp=0.0005)))  # peak ~-66 dBFS
    assert (
        isinstance(got, Rejected) and got.kind == "silent" and "peak -65.7 dBFS" in got.reason
    )  # after PCM16 rounding
    assert isinstance(dec(encode(tone(amp=0.002))), Decoded)  # -54 dBFS: quiet, not silent


def test_too_long_is_read_from_the_header() -> None:
    got = dec(encode(tone(seconds=3.0)), max_seconds=2.0)
    assert (
        isinstance(got, Rejected)
        and got.kind == "too_long"
        and "3.0 s long, over the 2 s limit" in got.reason
    )
    assert got.preview is not None and len(got.preview) == 3 * SR  # up to 5 s kept for the report's player


def _wav_with_tag(tag: int) -> bytes:
    fmt = struct.pack("<HHIIHH", tag, 1, SR, 2 * SR, 2, 16)
    data = b"\x00\x01" * 400
    body = (
        b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_unsupported_codecs() -> None:
    got = dec(_wav_with_tag(0x0161))
    assert isinstance(got, Rejected) and got.kind == "unsupported_codec"
    assert "format tag 0x0161 (WMA)" in got.reason
    m4a = b"\x00\x00\x00\x20ftypM4A " + bytes(200)
    got = dec(m4a)
    assert isinstance(got, Rejected) and got.kind == "unsupported_codec" and "MP4/M4A" in got.reason
    assert container(_wav_with_tag(0x0001)) is None  # PCM: libsndfile's own; a failure there is corruption


def test_paths_decode_like_bytes(tmp_path: Path, fsdd_clip) -> None:
    data, ref = fsdd_clip
    cases = {
        "ok.wav": data,
        "cut.wav": data[: len(data) // 2],
        "text.wav": b"hello " * 50,
        "zero.wav": b"",
        "wma.wav": _wav_with_tag(0x0161),
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        by_path, by_bytes = dec(str(tmp_path / name)), dec(content)
        assert type(by_path) is type(by_bytes)
        if isinstance(by_path, Rejected):
            assert (by_path.kind, by_path.reason) == (by_bytes.kind, by_bytes.reason)
        else:
            assert np.array_equal(by_path.samples[:, 0], ref)
    got = dec(str(tmp_path / "absent.wav"))
    assert isinstance(got, Rejected) and got.kind == "unreadable" and "No such file" in got.reason


def test_clipped_clip_decodes() -> None:
    # heavy clipping is flagged by the ingest, not quarantined: the clip decodes
    clipped = np.clip(tone(amp=3.0), -1, 1)
    assert isinstance(dec(encode(clipped)), Decoded)


# ---- label patterns


def test_label_pattern_fields() -> None:
    p = LabelPattern("{label}_{speaker}_{take}")
    assert p.fields == ["label", "speaker", "take"] and p.item_fields == ["speaker", "take"]
    assert p.match("0_george_12.wav") == {"label": "0", "speaker": "george", "take": "12"}
    assert p.match("7_mary_ann_3.WAV") == {"label": "7", "speaker": "mary", "take": "ann_3"}
    assert p.match("0george12.wav") is None
    assert "does not match --label-pattern" in p.mismatch("0george12.wav")
    anon = LabelPattern("{speaker}-{}-{label}")
    assert anon.match("bob-x-yes.flac") == {"speaker": "bob", "label": "yes"}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("plain", "no named field"),
        ("{label}_{label}", "appears twice"),
        ("{la bel}", "not a name"),
        ("{label}_{x", "unbalanced brace"),
    ],
)
def test_label_pattern_errors(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        LabelPattern(text)
    with pytest.raises(ConfigError, match=error):
        AudioIngestConfig(label_pattern=text)


# ---- sources


def _cfg(**kw) -> AudioIngestConfig:
    return AudioIngestConfig(**kw)


def test_folder_source_splits_and_class_folders(tmp_path: Path) -> None:
    for split, cls in (("train", "yes"), ("train", "no"), ("val", "yes")):
        (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
        (tmp_path / split / cls / f"{cls}1.WAV").write_bytes(encode(tone()))
    (tmp_path / "train" / "yes" / "notes.txt").write_text("not audio")
    (tmp_path / "train" / "yes" / ".hidden.wav").write_bytes(b"")
    items = list(open_audio_source(str(tmp_path), _cfg()))
    got = sorted((Path(i.origin).parent.name, i.split, i.label, i.name) for i in items)
    assert got == [
        ("no", "train", "no", "no1.WAV"),
        ("yes", "train", "yes", "yes1.WAV"),
        ("yes", "val", "yes", "yes1.WAV"),
    ]
    # libsndfile opens folder files itself: the items carry their paths, not their bytes
    assert all(i.data is None and i.payload == i.origin and Path(i.path).is_file() for i in items)


def test_tar_source_streams_members(tmp_path: Path) -> None:
    archive = tmp_path / "clips.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("train/dog/a.flac", "train/cat/b.wav", "test/cat/c.ogg", "readme.md"):
            data = encode(
                tone(), {"flac": "FLAC", "wav": "WAV", "ogg": "OGG", "md": "WAV"}[name.rsplit(".", 1)[1]]
            )
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    source = open_audio_source(str(archive), _cfg())
    items = list(source)
    assert [(i.name, i.split, i.label) for i in items] == [
        ("a.flac", "train", "dog"),
        ("b.wav", "train", "cat"),
        ("c.ogg", "test", "cat"),
    ]
    assert items[0].origin == f"{archive}::train/dog/a.flac"
    assert source.describe()["class_names"] == ["cat", "dog"]
    assert claims(str(archive))


def test_file_source_and_missing_source(tmp_path: Path) -> None:
    (tmp_path / "one.wav").write_bytes(encode(tone()))
    items = list(open_audio_source(str(tmp_path / "one.wav"), _cfg()))
    assert len(items) == 1 and items[0].name == "one.wav" and items[0].label is None
    got = decode(items[0].payload, 30.0, -60.0)
    assert isinstance(got, Decoded) and len(got.samples) == SR // 2
    with pytest.raises(DataError, match="not an audio source"):
        open_audio_source(str(tmp_path / "absent.wav"), _cfg())


def test_claims(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    for k in range(3):
        (tmp_path / "audio" / f"{k}.wav").write_bytes(encode(tone()))
    (tmp_path / "audio" / "labels.txt").write_text("0 1 2")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"\x89PNG")
    (tmp_path / "images" / "b.png").write_bytes(b"\x89PNG")
    (tmp_path / "images" / "c.wav").write_bytes(b"")
    assert claims(str(tmp_path / "audio")) and claims(str(tmp_path / "audio" / "0.wav"))
    assert not claims(str(tmp_path / "images")) and not claims(str(tmp_path / "audio" / "labels.txt"))


def test_hf_audio_dataset(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets", reason="the optional `datasets` package is not installed")
    wavs = [encode(tone(freq=f)) for f in (300, 500, 700)]
    raw = datasets.Dataset.from_dict(
        {
            "speech": [{"bytes": w, "path": f"clip{k}.wav"} for k, w in enumerate(wavs)],
            "digit": [0, 1, 1],
            "speaker_id": ["ann", "bob", "ann"],
        }
    )
    # cast, not encode: encoding audio needs torchcodec; the cells are already encoded files
    ds = raw.cast(
        datasets.Features(
            {
                "speech": datasets.Audio(),
                "digit": datasets.ClassLabel(names=["no", "yes"]),
                "speaker_id": datasets.Value("string"),
            }
        )
    )
    datasets.DatasetDict({"train": ds, "validation": ds.select([0])}).save_to_disk(str(tmp_path / "hf"))
    assert claims(str(tmp_path / "hf"))
    source = open_audio_source(str(tmp_path / "hf"), _cfg())
    items = list(source)
    assert [(i.split, i.label, i.fields, i.name) for i in items] == [
        ("train", "no", {"speaker": "ann"}, "clip0.wav"),
        ("train", "yes", {"speaker": "bob"}, "clip1.wav"),
        ("train", "yes", {"speaker": "ann"}, "clip2.wav"),
        ("val", "no", {"speaker": "ann"}, "clip0.wav"),
    ]
    assert items[1].data == wavs[1]
    described = source.describe()
    assert described["audio_column"] == "speech" and described["label_column"] == "digit"
    with pytest.raises(DataError, match="no column 'nope' for the audio"):
        open_audio_source(str(tmp_path / "hf"), _cfg(audio_column="nope"))
