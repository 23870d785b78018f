"""The streaming tar source: layout, member bytes, broken archives, and the real CIFAR-10 archive."""

from __future__ import annotations

import collections
import io
import json
import tarfile
from pathlib import Path

import pytest

from genforge.core.errors import DataError
from genforge.data.sources.base import resolve_source
from genforge.data.sources.tar import TarSource

LONG = "train/cats/" + "n" * 120 + ".png"  # longer than the 100-byte ustar name field
FILES = {
    "train/cats/a.png": b"A" * 700,  # more than one 512-byte block, not a multiple of it
    "train/cats/B.JPG": b"B" * 512,
    LONG: b"L" * 3,
    "train/dogs/c.jpeg": b"",
    "test/dogs/d.webp": b"D" * 1025,
    "validation/birds/e.bmp": b"E" * 10,
    "top.gif": b"T",
    "train/cats/readme.txt": b"skip me",
    "train/cats/._a.png": b"resource fork",
}


def build(path: Path, mode: str = "w:gz", fmt: int = tarfile.GNU_FORMAT, link: bool = True) -> Path:
    with tarfile.open(path, mode, format=fmt) as tar:
        for folder in ("train", "train/cats"):
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in FILES.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo("train/dogs/link.png")
            info.type = tarfile.SYMTYPE
            info.linkname = "c.jpeg"
            tar.addfile(info)
    return path


@pytest.mark.parametrize(
    ("name", "mode", "fmt"),
    [
        ("a.tar.gz", "w:gz", tarfile.GNU_FORMAT),
        ("a.tgz", "w:gz", tarfile.PAX_FORMAT),
        ("a.tar", "w", tarfile.GNU_FORMAT),
        ("a.tar.xz", "w:xz", tarfile.PAX_FORMAT),
    ],
)
def test_members_layout_and_bytes(tmp_path: Path, name: str, mode: str, fmt: int):
    path = build(tmp_path / name, mode, fmt)
    source = resolve_source(str(path))
    assert isinstance(source, TarSource)
    assert source.class_names is None  # unknown before a full pass
    items = list(source)
    got = [(i.origin.split("::", 1)[1], i.split, i.label) for i in items]
    assert got == [
        ("train/cats/a.png", "train", "cats"),
        ("train/cats/B.JPG", "train", "cats"),
        (LONG, "train", "cats"),
        ("train/dogs/c.jpeg", "train", "dogs"),
        ("test/dogs/d.webp", "test", "dogs"),
        ("validation/birds/e.bmp", "val", "birds"),
        ("top.gif", None, None),
        ("train/dogs/link.png", "train", "dogs"),
    ]
    for item in items[:-1]:
        assert item.error is None
        assert item.data == FILES[item.origin.split("::", 1)[1]]
    assert items[-1].data is None and "link" in items[-1].error
    assert all(i.origin.startswith(f"{path}::") for i in items)
    assert source.class_names == ["birds", "cats", "dogs"]
    assert json.loads(json.dumps(source.describe()))["class_names"] == ["birds", "cats", "dogs"]
    assert [i.origin for i in resolve_source(str(path), limit=2)] == [i.origin for i in items[:2]]


@pytest.mark.parametrize(
    ("cut_at", "good", "reason"),
    [
        (2600, 1, "bad header"),  # inside the header of B.JPG (bytes 2560..3072)
        (3100, 1, "truncated member"),  # inside the payload of B.JPG (3072..3584)
        (3584, 2, "bad header"),  # on a block boundary: no end-of-archive block follows
    ],
)
def test_truncated_archive_yields_error_and_stops(tmp_path: Path, cut_at: int, good: int, reason: str):
    whole = build(tmp_path / "whole.tar", "w", link=False).read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole[:cut_at])
    items = list(resolve_source(str(cut)))
    assert [i.error is None for i in items] == [True] * good + [False]
    assert reason in items[-1].error
    assert items[-1].origin.startswith(f"{cut}::")


def test_truncated_gzip_stream(tmp_path: Path):
    gz = build(tmp_path / "whole.tar.gz", link=False).read_bytes()
    cut_gz = tmp_path / "cut.tar.gz"
    cut_gz.write_bytes(gz[: len(gz) // 2])
    items = list(resolve_source(str(cut_gz)))
    assert items and items[-1].error is not None and "corrupt or truncated" in items[-1].error
    assert all(i.error is None for i in items[:-1])


def test_not_an_archive(tmp_path: Path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"definitely not gzip")
    with pytest.raises(DataError, match="bad.tar.gz: not a readable tar archive"):
        list(resolve_source(str(bad)))


def test_cifar_limit(cifar_tar: Path):
    items = list(resolve_source(str(cifar_tar), limit=250))
    assert len(items) == 250
    assert all(i.error is None and i.data[:2] == b"\xff\xd8" for i in items)  # JPEG start-of-image
    assert {(i.split, i.label) for i in items} == {("test", "airplane")}


def test_cifar_full_archive(cifar_tar: Path):
    source = resolve_source(str(cifar_tar))
    counts = collections.Counter((i.split, i.label) for i in source if i.error is None and i.data)
    assert sum(counts.values()) == 60_000
    assert sum(n for (split, _), n in counts.items() if split == "train") == 50_000
    assert sum(n for (split, _), n in counts.items() if split == "test") == 10_000
    assert source.class_names == sorted(
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    )
    assert set(counts.values()) == {5_000, 1_000}  # balanced: per class 5,000 train and 1,000 test
