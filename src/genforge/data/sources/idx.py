"""`idx`: IDX files (the MNIST format), raw or gzipped, with their labels file when present.

The spec is an images file (`*-images-idx3-ubyte[.gz]`, whose labels sibling
`*-labels-idx1-ubyte[.gz]` is picked up when it exists) or a directory holding one or more such
pairs. The split comes from the file name (`t10k`/`test` -> test, `train` -> train). Headers
and sizes are checked when the source opens, so a wrong file fails at once, naming itself.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.errors import DataError
from genforge.data.sources.base import RawItem
from genforge.data.sources.layout import label_names, label_of, split_name
from genforge.data.sources.options import SourceOptions, limited, parse_options

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

IDX_NAME = re.compile(r"idx\d-ubyte(\.gz)?$", re.IGNORECASE)
IMAGES_NAME = re.compile(
    r"^(?P<stem>.*)images(?P<sep>[-.])idx(?P<ndim>\d)-ubyte(?P<gz>\.gz)?$", re.IGNORECASE
)

_SPLIT_TOKENS = {"t10k": "test"}


def read_idx(path: Path) -> np.ndarray:
    """The array in an IDX file, after checking magic number, type code, dims and payload size."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        # gzip.BadGzipFile is an OSError; a cut-off gzip stream is an EOFError
        raise DataError(f"{path}: cannot read IDX file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"{path}: not an IDX file: the magic number must start with two zero bytes, got {raw[:4].hex()}"
        )
    dtype = IDX_DTYPES.get(raw[2])
    if dtype is None:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(f"{path}: unknown IDX type code 0x{raw[2]:02X}, expected one of {known}")
    ndim = raw[3]
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions, expected at least 1")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"{path}: truncated IDX header: {ndim} dimensions need {header} bytes, file has {len(raw)}"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    itemsize = np.dtype(dtype).itemsize
    expected = int(np.prod(dims, dtype=np.int64)) * itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: IDX payload is {len(raw) - header} bytes, expected {expected} for dims {dims} "
            f"of {np.dtype(dtype).name} (truncated or not an IDX file)"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype[1:], copy=False)


def split_from_name(name: str) -> str | None:
    for token in re.split(r"[-_.]", name.lower()):
        split = _SPLIT_TOKENS.get(token) or split_name(token)
        if split is not None:
            return split
    return None


def labels_sibling(images: Path) -> Path | None:
    m = IMAGES_NAME.match(images.name)
    if m is None:
        return None
    for gz in (m["gz"] or "", ".gz" if not m["gz"] else ""):
        candidate = images.with_name(f"{m['stem']}labels{m['sep']}idx1-ubyte{gz}")
        if candidate.is_file():
            return candidate
    return None


@dataclass
class IdxPart:
    images: Path
    labels: Path | None = None
    split: str | None = None


class IdxSource:
    name = "idx"

    def __init__(self, parts: list[IdxPart], options: SourceOptions, spec: str = ""):
        self.spec = spec
        self.options = options
        self.parts = parts
        self._arrays: list[tuple[np.ndarray, np.ndarray | None]] = []
        for part in parts:
            images = read_idx(part.images)
            if images.ndim not in (3, 4):
                raise DataError(
                    f"{part.images}: expected images of shape (N,H,W) or (N,H,W,C), got {images.shape}"
                )
            labels = None
            if part.labels is not None:
                labels = read_idx(part.labels)
                if labels.shape != (len(images),):
                    raise DataError(
                        f"{part.labels}: expected {len(images)} labels (one per image in {part.images.name}), "
                        f"got shape {labels.shape}"
                    )
            self._arrays.append((images, labels))
        all_labels = [lab for _, lab in self._arrays if lab is not None]
        self.class_names = label_names(np.concatenate(all_labels)) if all_labels else []

    @classmethod
    def from_spec(cls, spec: str, options: SourceOptions) -> IdxSource:
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if IMAGES_NAME.match(p.name) and p.is_file())
            # a pair stored both raw and gzipped is read once (raw: faster)
            chosen: dict[str, Path] = {}
            for p in files:
                chosen.setdefault(re.sub(r"\.gz$", "", p.name, flags=re.IGNORECASE), p)
            if not chosen:
                raise DataError(f"{path}: no IDX images file (*-images-idx3-ubyte[.gz]) in this directory")
            images_files = list(chosen.values())
        elif IMAGES_NAME.match(path.name):
            images_files = [path]
        elif path.is_file() and IDX_NAME.search(path.name):
            raise DataError(
                f"{path}: give the images file (*-images-idx3-ubyte[.gz]) or its directory, not this one"
            )
        else:
            raise DataError(f"{path}: no such IDX images file")
        parts = [IdxPart(p, labels_sibling(p), split_from_name(p.name)) for p in images_files]
        return cls(parts, options, spec)

    def __len__(self) -> int:
        return sum(len(images) for images, _ in self._arrays)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "files": [
                {
                    "images": str(p.images.resolve()),
                    "labels": str(p.labels.resolve()) if p.labels else None,
                    "split": p.split,
                }
                for p in self.parts
            ],
            "count": len(self),
            "class_names": self.class_names,
        }

    def __iter__(self) -> Iterator[RawItem]:
        return limited(self._items(), self.options.limit)

    def _items(self) -> Iterator[RawItem]:
        for part, (images, labels) in zip(self.parts, self._arrays, strict=True):
            origin = str(part.images)
            names = None if labels is None else [label_of(v) for v in labels.tolist()]
            for i in range(len(images)):
                yield RawItem(
                    origin=f"{origin}[{i}]",
                    split=part.split,
                    label=None if names is None else names[i],
                    array=images[i],
                )


class IdxFactory:
    def matches(self, spec: str) -> bool:
        if os.path.isdir(spec):
            try:
                return any(IMAGES_NAME.match(name) for name in os.listdir(spec))
            except OSError:
                return False
        return bool(IDX_NAME.search(spec)) and os.path.isfile(spec)

    def open(self, spec: str, **options: Any) -> IdxSource:
        return IdxSource.from_spec(spec, parse_options(SourceOptions, options, "idx"))


FACTORY = IdxFactory()  # registered as 'idx' by `builtin`, in matching order
