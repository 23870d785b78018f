"""`genforge data ingest` on audio, end to end: an FSDD subset mixed with broken files (every good
file arrives, every bad one is quarantined with its reason), duplicates dropped, speaker-disjoint
splits, mixed sample rates, the report (players, spectrograms, reproduced by `data report`),
atomic writes, the CLI, auto-detection and option checks."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cli_runner import run_cli
from genforge.core.errors import ConfigError, DataError, GenforgeError
from genforge.data import ingesters
from genforge.data.audio import AudioDataset
from genforge.data.audio.config import AudioIngestConfig
from genforge.data.audio.ingest import ingest
from genforge.data.canonical import open_dataset

SR = 8000
PATTERN = "{label}_{speaker}_{take}"
GOOD = [
    f"{d}_{s}_{t}.wav" for d in (0, 1, 2, 3) for s in ("george", "jackson", "lucas", "theo") for t in (0, 1)
]


def _wav(x: np.ndarray, rate: int = SR, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


@pytest.fixture
def corpus(fsdd_dir: Path, tmp_path: Path) -> Path:
    """32 real FSDD clips (4 digits x 4 speakers x 2 takes), a copy and a noisy copy of one, and
    one file of each broken kind, all named like FSDD files."""
    d = tmp_path / "corpus"
    d.mkdir()
    for name in GOOD:
        shutil.copy(fsdd_dir / name, d / name)
    real = (d / "0_george_0.wav").read_bytes()
    x, _ = sf.read(d / "0_george_0.wav", dtype="float32")
    rng = np.random.default_rng(0)
    (d / "0_george_90.wav").write_bytes(real)  # an exact copy
    noise = np.sqrt(np.mean(x**2)) * 10 ** (-40 / 20) * rng.standard_normal(len(x))
    (d / "0_george_91.wav").write_bytes(_wav((x + noise).astype(np.float32)))  # a near copy
    clipped = np.clip(np.sin(np.arange(SR) * 2 * np.pi * 300 / SR) * 4, -1, 1).astype(np.float32)
    (d / "4_george_0.wav").write_bytes(_wav(clipped))  # heavily clipped: kept and flagged
    broken = {
        "5_george_0.wav": real[: len(real) // 2],  # truncated
        "5_george_1.wav": b"RIFF and then some text that is no audio at all" * 10,  # not audio
        "5_george_2.wav": b"",  # zero-length
        "5_george_3.wav": _wav(np.full(2000, np.nan, np.float32), subtype="FLOAT"),  # NaN
        "5_george_4.wav": _wav(np.zeros(SR, np.float32)),  # all silent
        "5_george_5.wav": _wav(np.tile(x, 40)),  # too long for max_seconds 10
        "5_george_6.wav": real[:30],  # truncated header
        "stray.wav": real,  # does not match the pattern
    }
    for name, data in broken.items():
        (d / name).write_bytes(data)
    return d


EXPECTED_KINDS = {
    "5_george_0.wav": "truncated",
    "5_george_1.wav": "not_audio",
    "5_george_2.wav": "empty",
    "5_george_3.wav": "non_finite",
    "5_george_4.wav": "silent",
    "5_george_5.wav": "too_long",
    "5_george_6.wav": "corrupt",
    "stray.wav": "name_mismatch",
}


def test_fsdd_subset_with_broken_files(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    cfg = AudioIngestConfig(label_pattern=PATTERN, group_by="speaker", max_seconds=10.0)
    result = ingest(str(corpus), out, cfg)
    m = result.manifest
    ds = open_dataset(out)
    assert isinstance(ds, AudioDataset) and ds.sample_rate == SR and ds.clip_length == SR
    # every good file arrives (one copy of the duplicated clip), every bad one is quarantined
    origins = {Path(o).name for s in ds.split_names for o in ds.split(s).index["origins"]}
    assert origins == {*GOOD, "4_george_0.wav"}
    log = json.loads((out / "process.json").read_text())
    kinds = {Path(q["origin"]).name: q["kind"] for q in log["quarantine"]}
    assert kinds == EXPECTED_KINDS
    reasons = {Path(q["origin"]).name: q["reason"] for q in log["quarantine"]}
    assert (
        "does not match --label-pattern" in reasons["stray.wav"]
        and "over the 10 s limit" in reasons["5_george_5.wav"]
    )
    dropped = {Path(x["origin"]).name: (x["kind"], Path(x["duplicate_of"]).name) for x in log["dropped"]}
    assert dropped == {
        "0_george_90.wav": ("exact", "0_george_0.wav"),
        "0_george_91.wav": ("near", "0_george_0.wav"),
    }
    assert [Path(f["origin"]).name for f in log["flagged"]] == ["4_george_0.wav"]
    c = m["counts"]
    assert (c["read"], c["clips"], c["quarantined"], c["duplicates_dropped"], c["flagged_clipping"]) == (
        43,
        33,
        8,
        2,
        1,
    )
    # labels and speakers from the file names; speaker-disjoint splits, recorded
    assert ds.class_names == ["0", "1", "2", "3", "4"] and ds.speaker_names == [
        "george",
        "jackson",
        "lucas",
        "theo",
    ]
    assert ds.item_fields["take"] == ["0", "1"]  # the dropped copies' takes 90 and 91 are gone with them
    train, val = ds.train_split, ds.reference_split
    assert set(train.speakers.tolist()).isdisjoint(val.speakers.tolist()) and len(val)
    assert m["split"]["method"] == "grouped" and m["split"]["groups"]["val"] == sorted(
        {ds.speaker_names[s] for s in val.speakers}
    )
    for split in (train, val):
        names = [Path(o).name for o in split.index["origins"]]
        assert [ds.class_names[k] for k in split.labels] == [n.split("_")[0] for n in names]
        assert [ds.speaker_names[k] for k in split.speakers] == [n.split("_")[1] for n in names]
        assert split.audio.dtype == np.float32 and np.abs(split.audio).max() <= 0.99 + 1e-6
        assert (split.lengths > 0).all() and (split.lengths <= SR).all()
    # each processing step is recorded with its parameters
    steps = {s["step"]: s for s in m["process"]["steps"]}
    assert list(steps) == ["mixdown", "resample", "trim", "loudness", "length"]
    assert steps["resample"]["resampler"] == "soxr-HQ" and steps["loudness"]["target"] == "-20 dBFS"
    assert steps["length"]["samples"] == SR and steps["length"]["pad"] == "centre"
    assert json.loads((out / "ingest.json").read_text())["label_pattern"] == PATTERN
    # the report: counts, histograms, players and spectrograms, quarantine previews
    report = result.report
    assert report["summary"]["quarantined"] == 8 and report["summary"]["speakers"] == 4
    assert report["counts"]["fields"]["speaker"]["train"]
    assert sum(sum(v) for v in report["durations"]["source_seconds"]["counts"].values()) == 33
    html = (out / "report.html").read_text()
    players = re.findall(
        r'<audio controls preload="none" src="data:audio/wav;base64,([A-Za-z0-9+/=]+)"', html
    )
    assert len(players) >= 2 * 5 + 1  # two per class, the flagged clip, playable quarantined files
    clip, rate = sf.read(io.BytesIO(base64.b64decode(players[0])))
    assert rate == SR and len(clip) == SR
    assert html.count("data:image/png;base64,") >= 10
    previews = [q for q in log["quarantine"] if q.get("preview")]
    assert {Path(q["origin"]).name for q in previews} >= {"5_george_0.wav", "5_george_4.wav", "stray.wav"}
    assert all((out / q["preview"]).is_file() for q in previews)
    # `genforge data report` reproduces the report from the dataset alone
    first = json.loads((out / "report.json").read_text())
    (out / "report.json").unlink()
    modality, again = ingesters.write_report(out)
    assert modality == "audio" and json.loads((out / "report.json").read_text()) == first


def test_mixed_rates_channels_and_formats(tmp_path: Path) -> None:
    d = tmp_path / "src" / "train"
    for cls in ("low", "high"):
        (d / cls).mkdir(parents=True)
    t = np.arange(16000) / 16000
    for k in range(3):
        stereo = (
            np.stack([np.sin(2 * np.pi * 300 * (k + 1) * t), np.sin(2 * np.pi * 310 * (k + 1) * t)], 1) * 0.3
        )
        sf.write(d / "low" / f"{k}.flac", stereo.astype(np.float32), 16000)
    for k in range(2):
        sf.write(
            d / "high" / f"{k}.wav",
            (0.2 * np.sin(2 * np.pi * 900 * (k + 1) * t[:8000] * 2)).astype(np.float32),
            8000,
        )
    result = ingest(str(tmp_path / "src"), tmp_path / "ds", AudioIngestConfig(val_fraction=0.0))
    m = result.manifest
    assert m["sample_rate"] == 16000  # the most common source rate
    assert m["counts"]["resampled"] == 2 and m["counts"]["multichannel"] == 3
    assert m["process"]["formats"] == {"FLAC PCM_16": 3, "WAV PCM_16": 2}
    assert open_dataset(tmp_path / "ds").class_names == ["high", "low"]
    forced = ingest(
        str(tmp_path / "src"), tmp_path / "ds8", AudioIngestConfig(sample_rate=8000, val_fraction=0.0)
    )
    assert forced.manifest["sample_rate"] == 8000 and forced.manifest["counts"]["resampled"] == 3
    assert open_dataset(tmp_path / "ds8").clip_length == 8000


def test_atomic_and_overwrite(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "bad.wav").write_bytes(b"not audio" * 10)
    with pytest.raises(DataError, match=r"no usable audio.*quarantined 1 \(not_audio 1\)"):
        ingest(str(src), tmp_path / "ds")
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob(".tmp-*"))
    (src / "a.wav").write_bytes(_wav((0.3 * np.sin(np.arange(4000) / 5)).astype(np.float32)))
    ingest(str(src), tmp_path / "ds")
    with pytest.raises(GenforgeError, match="already exists"):
        ingest(str(src), tmp_path / "ds")
    ingest(str(src), tmp_path / "ds", overwrite=True)
    with pytest.raises(
        DataError, match=r"1 file name\(s\) do not match --label-pattern '\{label\}-\{speaker\}'"
    ):
        ingest(str(src), tmp_path / "ds2", AudioIngestConfig(label_pattern="{label}-{speaker}"))


def test_cli_ingest_and_report(corpus: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "cli"
    code, stdout, stderr = run_cli(
        monkeypatch,
        capsys,
        "data",
        "ingest",
        corpus,
        "--out",
        out,
        "--label-pattern",
        PATTERN,
        "--group-by",
        "speaker",
        "--max-seconds",
        "10",
        "--clip-seconds",
        "0.75",
        "--pad",
        "end",
    )
    assert code == 0, stderr
    assert re.search(r"read 43 files: 33 clips \(train \d+, val \d+\), 8 quarantined", stdout)
    assert "split: grouped; train: " in stdout and "6,000 samples per clip" in stdout
    ds = open_dataset(out)
    assert ds.clip_length == 6000 and ds.manifest["config"]["pad"] == "end"
    code, stdout, _ = run_cli(monkeypatch, capsys, "data", "report", out)
    assert code == 0 and "33 clips" in stdout and "4 speakers" in stdout
    code, _, stderr = run_cli(
        monkeypatch, capsys, "data", "ingest", corpus, "--out", tmp_path / "x", "--size", "8"
    )
    assert code != 0 and "--size: not an option for audio data" in stderr


def test_auto_detection_and_foreign_options(corpus: Path) -> None:
    assert ingesters.detect(str(corpus)) == "audio"
    assert ingesters.detect(str(corpus / "0_george_0.wav")) == "audio"
    with pytest.raises(ConfigError, match="--label-pattern: not an option for text data"):
        ingesters.build_config("text", {"label_pattern": PATTERN})
    cfg = ingesters.build_config(
        "audio", {"label_pattern": PATTERN, "val_fraction": 0.2, "seed": 1, "limit": None}
    )
    assert isinstance(cfg, AudioIngestConfig) and cfg.val_fraction == 0.2


def _tones(folder: Path, n: int = 12) -> None:
    """n distinct tone clips in two class folders, named {label}_{speaker}_{take}.wav."""
    t = np.arange(SR // 2) / SR
    for k in range(n):
        label, speaker = ("up", "down")[k % 2], ("ann", "bob", "cy")[k % 3]
        (folder / label).mkdir(parents=True, exist_ok=True)
        x = 0.3 * np.sin(2 * np.pi * (200 + 97 * k) * t) * np.hanning(len(t))
        sf.write(folder / label / f"{label}_{speaker}_{k}.wav", x.astype(np.float32), SR)


def test_worker_processes_give_the_same_dataset(tmp_path: Path, monkeypatch) -> None:
    import genforge.data.audio.ingest as audio_ingest

    _tones(tmp_path / "src")
    (tmp_path / "src" / "up" / "broken.wav").write_bytes(b"garbage" * 9)
    monkeypatch.setattr(audio_ingest, "BATCH", 3)  # several batches, so the pool has work to share
    here = ingest(str(tmp_path / "src"), tmp_path / "a", AudioIngestConfig(workers=0))
    pooled = ingest(str(tmp_path / "src"), tmp_path / "b", AudioIngestConfig(workers=2))
    assert here.manifest["fingerprint"] == pooled.manifest["fingerprint"]
    assert (
        here.manifest["counts"] == pooled.manifest["counts"] and here.manifest["counts"]["quarantined"] == 1
    )
    assert open_dataset(tmp_path / "a").class_names == ["down", "up"]  # from the class folders


def test_group_by_must_be_a_pattern_field(tmp_path: Path) -> None:
    _tones(tmp_path / "src")
    with pytest.raises(ConfigError, match="--group-by speaker: not a field of --label-pattern"):
        ingest(
            str(tmp_path / "src"),
            tmp_path / "ds",
            AudioIngestConfig(label_pattern="{label}_{}_{take}", group_by="speaker"),
        )
    with pytest.raises(ConfigError, match="no per-item field 'speaker'"):
        ingest(str(tmp_path / "src"), tmp_path / "ds", AudioIngestConfig(group_by="speaker"))
    result = ingest(
        str(tmp_path / "src"),
        tmp_path / "ds",
        AudioIngestConfig(
            label_pattern="{}_{speaker}_{take}", group_by="speaker", val_fraction=0.3, loudness="lufs"
        ),
    )
    ds = open_dataset(tmp_path / "ds")
    assert ds.class_names == ["down", "up"] and ds.speaker_names == [
        "ann",
        "bob",
        "cy",
    ]  # label from the folder
    assert result.manifest["counts"]["lufs_fallback"] == 0  # 0.5 s clips: measurable (>= 0.4 s)
    steps = {s["step"]: s for s in result.manifest["process"]["steps"]}
    assert steps["loudness"]["target"] == "-20 LUFS" and steps["loudness"]["lufs_fallback_rms"] == 0


def test_hf_dataset_ingest(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets", reason="the optional `datasets` package is not installed")
    t = np.arange(SR // 2) / SR
    wavs = [_wav((0.3 * np.sin(2 * np.pi * (250 + 120 * k) * t)).astype(np.float32)) for k in range(6)]
    raw = datasets.Dataset.from_dict(
        {
            "audio": [{"bytes": w, "path": None} for w in wavs],
            "label": [0, 1] * 3,
            "speaker_id": ["a", "a", "b", "b", "c", "c"],
        }
    )
    ds = raw.cast(
        datasets.Features(
            {
                "audio": datasets.Audio(),
                "label": datasets.ClassLabel(names=["no", "yes"]),
                "speaker_id": datasets.Value("string"),
            }
        )
    )
    ds.save_to_disk(str(tmp_path / "hf"))
    assert ingesters.detect(str(tmp_path / "hf")) == "audio"
    _, result = ingesters.ingest(str(tmp_path / "hf"), tmp_path / "ds", {"group_by": "speaker"})
    out = open_dataset(tmp_path / "ds")
    assert out.class_names == ["no", "yes"] and out.speaker_names == ["a", "b", "c"]
    assert (
        result.manifest["split"]["method"] == "grouped"
        and len(result.manifest["split"]["groups"]["val"]) == 1
    )


def test_report_of_a_dataset_written_without_ingest(tmp_path: Path) -> None:
    from audio_fixtures import make_synth_dataset

    path = make_synth_dataset(tmp_path / "synth", n_train=24, n_val=12, classes=3, speakers=2)
    modality, report = ingesters.write_report(path)
    s = report["summary"]
    assert modality == "audio"
    assert (s["clips"], s["classes"], s["speakers"], s["quarantined"]) == (36, 3, 2, 0)
    # no per-clip stats from an ingest: durations and levels come from the clips themselves
    assert sum(sum(c) for c in report["durations"]["source_seconds"]["counts"].values()) == 36
    assert report["counts"]["fields"]["speaker"]["train"] == {"s0": 12, "s1": 12}
    # the synthetic "digits" are one tone pair per class and speaker with a random onset: aligned
    # on their energy, val clips are near copies of train clips, which the leakage section shows
    leaks = report["leakage"]
    assert leaks and all(p["a"]["split"] == "train" and p["b"]["split"] == "val" for p in leaks)
    ds = open_dataset(path)
    for p in leaks:
        a, b = ds.split("train"), ds.split("val")
        assert a.labels[p["a"]["index"]] == b.labels[p["b"]["index"]]
        assert a.speakers[p["a"]["index"]] == b.speakers[p["b"]["index"]]
    html = (path / "report.html").read_text()
    assert html.count("<audio controls") == 6 + 2 * min(len(leaks), 20) and "Per speaker" in html
