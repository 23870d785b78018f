"""The IDX source: header checks, pair discovery, split inference, and the real MNIST test split."""

from __future__ import annotations

import collections
import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from genforge.core.errors import DataError
from genforge.data.sources.base import resolve_source
from genforge.data.sources.idx import IdxSource, read_idx

# the MNIST t10k label histogram for digits 0..9
T10K_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int16): 0x0B, np.dtype(np.float32): 0x0D}[arr.dtype]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.fixture
def pairs(tmp_path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    made = {}
    for stem, n, gz in (("train", 7, True), ("t10k", 5, False)):
        images = rng.integers(0, 256, (n, 6, 5), dtype=np.uint8)
        labels = rng.integers(0, 12, n, dtype=np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(tmp_path / f"{stem}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(tmp_path / f"{stem}-labels-idx1-ubyte{suffix}", labels, gz)
        made[stem] = (images, labels)
    return made


def test_directory_of_pairs(tmp_path: Path, pairs):
    source = resolve_source(str(tmp_path))
    assert isinstance(source, IdxSource)
    items = list(source)
    assert len(items) == len(source) == 12
    # sorted by file name: t10k (test) before train
    assert [i.split for i in items] == ["test"] * 5 + ["train"] * 7
    for split, (stem, (images, labels)) in (
        ("test", ("t10k", pairs["t10k"])),
        ("train", ("train", pairs["train"])),
    ):
        got = [i for i in items if i.split == split]
        assert np.array_equal(np.stack([i.array for i in got]), images)
        assert [i.label for i in got] == [str(v) for v in labels]
        assert got[0].origin.endswith(f"{stem}-images-idx3-ubyte{'.gz' if stem == 'train' else ''}[0]")
    every = np.concatenate([pairs["t10k"][1], pairs["train"][1]])
    assert source.class_names == [
        str(v) for v in sorted(set(every.tolist()))
    ]  # numeric order: "10" after "9"
    assert [i.origin for i in resolve_source(str(tmp_path), limit=3)] == [i.origin for i in items[:3]]


def test_images_file_finds_labels_sibling(tmp_path: Path, pairs):
    source = resolve_source(str(tmp_path / "train-images-idx3-ubyte.gz"))
    items = list(source)
    assert len(items) == 7 and {i.split for i in items} == {"train"}
    assert [i.label for i in items] == [str(v) for v in pairs["train"][1]]


def test_images_without_labels(tmp_path: Path):
    images = np.arange(2 * 3 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3, 3)
    path = write_idx(tmp_path / "faces-images-idx3-ubyte", images)
    items = list(resolve_source(str(path)))
    assert [i.label for i in items] == [None, None] and items[0].split is None
    assert np.array_equal(items[1].array, images[1])


def test_other_dtypes_are_decoded_big_endian(tmp_path: Path):
    arr = np.array([[[1, -2], [300, -400]]], dtype=np.int16)
    assert np.array_equal(read_idx(write_idx(tmp_path / "x-images-idx3-ubyte", arr)), arr)
    arr = np.array([[[0.5, 0.25]]], dtype=np.float32)
    assert np.array_equal(read_idx(write_idx(tmp_path / "y-images-idx3-ubyte", arr)), arr)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b"\x08\x03" + b[2:], "magic number must start with two zero bytes"),
        (lambda b: b[:2] + b"\x07" + b[3:], "unknown IDX type code 0x07"),
        (lambda b: b[:-10], "payload is 50 bytes, expected 60"),
        (lambda b: b + b"\x00", "payload is 61 bytes, expected 60"),
        (lambda b: b[:9], "truncated IDX header"),
        (lambda b: gzip.compress(b)[:-12], "cannot read IDX file"),
    ],
)
def test_bad_files_name_themselves(tmp_path: Path, mangle, message):
    good = idx_bytes(np.zeros((3, 4, 5), np.uint8))
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(mangle(good))
    with pytest.raises(DataError, match=message) as info:
        resolve_source(str(path))
    assert str(path) in str(info.value)


def test_label_count_mismatch(tmp_path: Path):
    write_idx(tmp_path / "a-images-idx3-ubyte", np.zeros((3, 2, 2), np.uint8))
    write_idx(tmp_path / "a-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="a-labels-idx1-ubyte: expected 3 labels"):
        resolve_source(str(tmp_path))


def test_labels_file_as_spec(tmp_path: Path):
    path = write_idx(tmp_path / "a-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="give the images file"):
        resolve_source(str(path))


def test_real_mnist_test_split(mnist_test_dir: Path):
    source = resolve_source(str(mnist_test_dir))
    assert source.class_names == [str(d) for d in range(10)]
    items = list(source)
    assert len(items) == 10_000
    assert {i.split for i in items} == {"test"}
    assert items[0].array.shape == (28, 28) and items[0].array.dtype == np.uint8
    assert [i.label for i in items[:10]] == list("7210414959")
    counts = collections.Counter(i.label for i in items)
    described = json.loads(json.dumps(source.describe()))
    assert described["count"] == 10_000 and [f["split"] for f in described["files"]] == ["test"]
    assert described["files"][0]["labels"].endswith("t10k-labels-idx1-ubyte.gz")
    assert [counts[str(d)] for d in range(10)] == T10K_COUNTS
