"""Which source a spec resolves to, and the embedded `digits` source."""

from __future__ import annotations

import gzip
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from genforge.core.errors import DataError
from genforge.data.sources import builtin
from genforge.data.sources.base import SOURCES, resolve_source


def test_registration_order_is_the_matching_order():
    assert SOURCES.names_in_order()[: len(builtin.BUILTIN_SOURCES)] == list(builtin.BUILTIN_SOURCES)


def test_specs_resolve_to_their_source(tmp_path: Path):
    idx_dir = tmp_path / "idx"
    idx_dir.mkdir()
    (idx_dir / "t10k-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(bytes([0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 7]))
    )
    np.save(tmp_path / "a.npy", np.zeros((1, 2, 2), np.uint8))
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz"):
        pass
    (tmp_path / "pics").mkdir()
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "dataset_dict.json").write_text('{"splits": []}')
    want = {
        "digits": "digits",
        "mnist": "mnist",
        "mnist:test": "mnist",
        "hf:someone/something": "hf",
        str(tmp_path / "saved"): "hf",
        str(idx_dir): "idx",
        str(idx_dir / "t10k-images-idx3-ubyte.gz"): "idx",
        str(tmp_path / "a.npy"): "arrays",
        str(tmp_path / "a.tar.gz"): "tar",
        str(tmp_path / "pics"): "folder",
    }
    for spec, name in want.items():
        matching = [n for n in SOURCES.names_in_order() if SOURCES.get(n).matches(spec)]
        assert matching and matching[0] == name, spec
    assert type(resolve_source(str(idx_dir))).name == "idx"


def test_unknown_spec(tmp_path: Path):
    with pytest.raises(DataError, match="'nothing-here' is not a known data source"):
        resolve_source("nothing-here")
    with pytest.raises(DataError, match="is not a known data source"):
        resolve_source(str(tmp_path / "missing.tar.gz"))


def test_digits():
    from sklearn.datasets import load_digits

    source = resolve_source("digits")
    items = list(source)
    assert len(items) == 1797 and source.class_names == [str(d) for d in range(10)]
    images = np.stack([i.array for i in items])
    assert images.dtype == np.uint8 and images.shape == (1797, 8, 8)
    reference = load_digits()
    assert images.max() == 255 and images.min() == 0
    assert np.array_equal(images, np.rint(reference.images * 255 / 16).astype(np.uint8))
    assert [int(i.label) for i in items] == reference.target.tolist()
    assert {i.split for i in items} == {None} and items[5].origin == "digits[5]"
    assert len(list(resolve_source("digits", limit=10))) == 10
    assert source.describe() == {"source": "digits", "count": 1797, "class_names": source.class_names}


def test_hf_without_the_datasets_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DataError, match=r"needs the `datasets` package.*genforge\[hf\]"):
        resolve_source("hf:mnist")
