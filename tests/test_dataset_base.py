"""The dataset reader every modality shares (`data.dataset_base`): split lookup, the held-out split,
manifest checks and per-item arrays give the same answers and the same errors for images, text
and audio."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from genforge.core.errors import DataError
from genforge.data.audio.canonical import AudioDataset, AudioSplitData, write_audio_dataset
from genforge.data.canonical import CanonicalDataset, SplitData, open_dataset, write_dataset
from genforge.data.text.canonical import TextDataset, TextDoc, write_text_dataset
from genforge.data.text.tokenizer import CharTokenizer


def _image(path: Path, names: tuple[str, ...]) -> None:
    rng = np.random.default_rng(0)
    splits = {
        name: SplitData(rng.integers(0, 256, (4, 6, 6, 1), dtype=np.uint8), np.array([0, 1, 1, 0]))
        for name in names
    }
    write_dataset(path, splits, class_names=["a", "b"], meta={"source": "test"})


def _text(path: Path, names: tuple[str, ...]) -> None:
    docs = {name: [TextDoc(f"{name}.txt", f"the {name} text\nof two lines")] for name in names}
    tokenizer = CharTokenizer.train([d.text for split in docs.values() for d in split] + ["\n\n"])
    write_text_dataset(path, docs, tokenizer, {"source": {"kind": "test"}})


def _audio(path: Path, names: tuple[str, ...]) -> None:
    rng = np.random.default_rng(0)
    splits = {
        name: AudioSplitData((0.1 * rng.standard_normal((4, 80))).astype(np.float32), np.array([0, 1, 1, 0]))
        for name in names
    }
    write_audio_dataset(path, splits, sample_rate=8000, class_names=["a", "b"], meta={"source": "test"})


WRITERS: dict[str, tuple[Callable[[Path, tuple[str, ...]], None], type]] = {
    "image": (_image, CanonicalDataset),
    "text": (_text, TextDataset),
    "audio": (_audio, AudioDataset),
}


def _write(tmp_path: Path, modality: str, names: tuple[str, ...]) -> Path:
    path = tmp_path / modality
    path.mkdir()
    WRITERS[modality][0](path, names)
    return path


@pytest.mark.parametrize("modality", list(WRITERS))
def test_split_lookup_and_held_out_fallback(tmp_path: Path, modality: str) -> None:
    path = _write(tmp_path, modality, ("train", "test"))
    ds = open_dataset(path)
    assert type(ds) is WRITERS[modality][1] and ds.modality == modality
    assert ds.split_names == ["test", "train"]  # manifest.json keys are written sorted
    assert ds.train_split is ds.split("train") and ds.train_split.name == "train"
    assert ds.reference_split is ds.split("test")  # no val: the test split is the held-out one
    with pytest.raises(DataError) as err:
        ds.split("val")
    # one message for every modality: the dataset, the split asked for, the splits there are
    assert str(err.value) == f"{path}: no split 'val'; splits: test, train"
    described = ds.describe()
    assert list(described)[:3] == ["path", "modality", "fingerprint"]
    assert described["fingerprint"] == json.loads((path / "manifest.json").read_text())["fingerprint"]
    assert described["num_classes"] == ds.num_classes == len(ds.class_names)
    assert described["path"] == str(path.resolve()) and described["modality"] == modality


@pytest.mark.parametrize("modality", list(WRITERS))
def test_no_held_out_split(tmp_path: Path, modality: str) -> None:
    ds = open_dataset(_write(tmp_path, modality, ("train",)))
    with pytest.raises(DataError, match=r"no held-out split \(val or test\)"):
        _ = ds.reference_split


@pytest.mark.parametrize("modality", list(WRITERS))
@pytest.mark.parametrize("splits", [{}, [], None])
def test_manifest_without_splits(tmp_path: Path, modality: str, splits: object) -> None:
    path = _write(tmp_path, modality, ("train", "val"))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["splits"] = splits
    (path / "manifest.json").write_text(json.dumps(manifest))
    where = re.escape(str(path / "manifest.json"))
    with pytest.raises(DataError, match=f"^{where}: field 'splits' must map split names to their counts$"):
        open_dataset(path)


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_labels_checked_alike(tmp_path: Path, modality: str) -> None:
    path = _write(tmp_path, modality, ("train", "val"))
    ds = open_dataset(path)
    val = ds.split("val")
    assert val.labels.dtype == np.int64 and val.labels.tolist() == [0, 1, 1, 0]
    assert val.has_labels and val.class_counts == [2, 2] and len(val.index["origins"]) == len(val) == 4
    np.save(path / "train" / "labels.npy", np.zeros(3, np.int64))  # one label short of the 4 items
    with pytest.raises(DataError, match=r"train/labels\.npy: expected 4 labels, got shape \(3,\)$"):
        _ = ds.split("train").labels
    (path / "val" / "labels.npy").write_bytes(b"not an array")
    with pytest.raises(DataError, match=r"val/labels\.npy: cannot read labels \("):
        _ = open_dataset(path).split("val").labels
