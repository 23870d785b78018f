"""The Hugging Face source, on tiny data sets saved with `save_to_disk` (no network)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genforge.core.errors import DataError
from genforge.data.sources.base import resolve_source
from genforge.data.sources.hf import HfSource

datasets = pytest.importorskip(
    "datasets", reason="the optional `datasets` package is not installed (genforge[hf])"
)


def png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def image_dataset(values: list[int], labels: list[int]):
    features = datasets.Features(
        {"picture": datasets.Image(), "kind": datasets.ClassLabel(names=["cat", "dog"])}
    )
    rows = {"picture": [{"bytes": png(v), "path": None} for v in values], "kind": labels, "extra": values}
    features["extra"] = datasets.Value("int64")
    return datasets.Dataset.from_dict(rows, features=features)


def test_saved_dataset_dict_with_image_and_class_label(tmp_path: Path):
    dd = datasets.DatasetDict(
        {"train": image_dataset([1, 2, 3], [0, 1, 1]), "validation": image_dataset([9], [1])}
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    source = resolve_source(str(tmp_path / "dd"))
    assert isinstance(source, HfSource)
    assert source.class_names == ["cat", "dog"]
    items = list(source)
    assert [(i.split, i.label, i.data) for i in items] == [
        ("train", "cat", png(1)),
        ("train", "dog", png(2)),
        ("train", "dog", png(3)),
        ("val", "dog", png(9)),
    ]
    described = json.loads(json.dumps(source.describe()))
    assert described["image_column"] == "picture" and described["label_column"] == "kind"
    assert described["splits"] == [{"name": "train", "count": 3}, {"name": "validation", "count": 1}]
    assert [i.split for i in resolve_source(str(tmp_path / "dd"), split="validation")] == ["val"]
    assert len(list(resolve_source(str(tmp_path / "dd"), limit=2))) == 2


def test_saved_dataset_with_array_column_and_plain_labels(tmp_path: Path):
    pixels = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2)
    ds = datasets.Dataset.from_dict({"pixels": pixels.tolist(), "label": [5, 12, 5]})
    ds.save_to_disk(str(tmp_path / "ds"))
    source = resolve_source(str(tmp_path / "ds"))
    assert source.class_names == ["5", "12"]
    items = list(source)
    assert np.array_equal(np.stack([i.array for i in items]), pixels)
    assert [(i.split, i.label) for i in items] == [(None, "5"), (None, "12"), (None, "5")]


def test_column_errors(tmp_path: Path):
    ds = datasets.Dataset.from_dict({"a": [1, 2], "b": [3, 4]})
    ds.save_to_disk(str(tmp_path / "nocol"))
    with pytest.raises(DataError, match=r"cannot find the image column; columns: a \(Value\), b \(Value\)"):
        resolve_source(str(tmp_path / "nocol"))
    with pytest.raises(DataError, match="no column 'zzz' for the label"):
        resolve_source(str(tmp_path / "nocol"), image_column="a", label_column="zzz")
    dd = datasets.DatasetDict({"train": image_dataset([1], [0])})
    dd.save_to_disk(str(tmp_path / "one"))
    with pytest.raises(DataError, match="no split 'test'; splits: train"):
        resolve_source(str(tmp_path / "one"), split="test")
