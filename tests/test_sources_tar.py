"""The streaming tar source: layout, member bytes, broken archives, and the real CIFAR-10 archive."""

from __future__ import annotations

import collections
import io
import itertools
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


# --- the fast reader (tarstream) against tarfile: same members, names, bytes and endings ---

from genforge.data.sources import tar as tar_module  # noqa: E402
from genforge.data.sources.tarstream import TarStream, Unsupported, open_stream  # noqa: E402


def walk(entries) -> tuple[list, bool]:
    """(entries, ended with an error) of one reader."""
    got = []
    try:
        for entry in entries:
            got.append(entry)
    except Exception:  # noqa: BLE001 - any error ends the walk; which one is compared by the source
        return got, True
    return got, False


def feature_archive(path: Path, fmt: int, mode: str = "w:gz", **kw) -> Path:
    """Long names, pax and GNU headers, a deep prefix path, dirs, links, fifo, non-image files
    (the long and non-ASCII names only where the format holds them)."""
    long = fmt != tarfile.USTAR_FORMAT
    with tarfile.open(path, mode, format=fmt, **kw) as tar:
        for folder in ("train", "train/cats/"):
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        names = [
            "train/cats/a.png",
            "train/cats/" + ("n" * 150 if long else "n") + ".png",  # GNU longname / pax path
            "/".join(["deep" * 10] * 3) + "/x.jpg",  # ustar prefix field
            "train/dogs/ünï.jpg" if long else "train/dogs/u.jpg",  # non-ASCII: pax path record
            "train/cats/readme.txt",
        ]
        for k, name in enumerate(names):
            info = tarfile.TarInfo(name)
            data = bytes(range(256)) * k + b"%d" % k
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for kind, name in ((tarfile.SYMTYPE, "train/cats/s.png"), (tarfile.LNKTYPE, "train/cats/h.png")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "train/cats/" + "l" * (120 if long else 5) + ".png"
            tar.addfile(info)
        info = tarfile.TarInfo("train/cats/f.png")
        info.type = tarfile.FIFOTYPE
        tar.addfile(info)
    return path


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_fast_reader_matches_tarfile(tmp_path: Path, fmt: int, mode: str):
    # ustar holds no long names or link targets beyond its 255-byte prefix + name fields
    extra = {} if fmt == tarfile.USTAR_FORMAT else {"pax_headers": {"comment": "global"}}
    path = feature_archive(tmp_path / "a.tar", fmt, mode, **extra)
    with open_stream(path) as stream:
        fast = list(TarStream(stream).members(tar_module._wanted))  # no fallback: raises if unsupported
    slow = list(tar_module._tarfile_entries(str(path)))
    assert fast == slow
    assert len(fast) >= 5
    assert {kind for _, kind, _, _ in fast} >= {"file", "link"}


def test_fast_reader_falls_back_to_tarfile(tmp_path: Path):
    # a binary pax charset is left to tarfile: the source gives the same items either way
    path = feature_archive(tmp_path / "a.tar", tarfile.PAX_FORMAT, pax_headers={"hdrcharset": "BINARY"})
    with open_stream(path) as stream, pytest.raises(Unsupported):
        list(TarStream(stream).members(tar_module._wanted))
    assert list(tar_module.entries(str(path))) == list(tar_module._tarfile_entries(str(path)))


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_fast_reader_cut_anywhere_matches_tarfile(tmp_path: Path, fmt: int):
    whole = feature_archive(tmp_path / "whole.tar", fmt, "w").read_bytes()
    cut = tmp_path / "cut.tar"
    ended = set()
    for at in list(range(0, len(whole), 97)) + [len(whole) - 1024, len(whole) - 512, len(whole)]:
        cut.write_bytes(whole[:at])
        slow = walk(tar_module._tarfile_entries(str(cut)))
        assert walk(tar_module.entries(str(cut))) == slow, at
        ended.add(slow[1])
    assert ended == {True, False}  # both cut archives and whole ones were compared


def test_fast_reader_bad_checksum(tmp_path: Path):
    whole = bytearray(build(tmp_path / "whole.tar", "w", link=False).read_bytes())
    whole[2560 + 10] ^= 0x55  # inside the header name of B.JPG, the second image
    cut = tmp_path / "bad.tar"
    cut.write_bytes(bytes(whole))
    items = list(resolve_source(str(cut)))
    assert [i.error is None for i in items] == [True, False]
    assert "bad checksum" in items[-1].error
    assert walk(tar_module.entries(str(cut)))[0] == walk(tar_module._tarfile_entries(str(cut)))[0]


def test_cifar_fast_reader_matches_tarfile(cifar_tar: Path):
    import hashlib

    def digest(entries) -> list[tuple[str, str, int, str]]:
        return [(n, k, s, hashlib.sha256(d).hexdigest()) for n, k, s, d in itertools.islice(entries, 3000)]

    with open_stream(cifar_tar) as stream:
        fast = digest(TarStream(stream).members(tar_module._wanted))
    assert fast == digest(tar_module._tarfile_entries(str(cifar_tar)))
    assert len(fast) == 3000


def test_header_byte_sum_is_exact():
    import random

    from genforge.data.sources.tarstream import _byte_sum

    rng = random.Random(0)
    blocks = [bytes(512), b"\xff" * 512, bytes(256) + b"\xff" * 256]
    blocks += [bytes(rng.randrange(256) for _ in range(512)) for _ in range(200)]
    assert [_byte_sum(b) for b in blocks] == [sum(b) for b in blocks]
