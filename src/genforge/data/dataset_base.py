"""What every modality's canonical dataset shares (docs/modalities.md): the manifest (its
envelope when written, its checks when read), the labels and index of a split of items, and the
reader: split lookup and its errors, the fingerprint and class names. Each modality's module
(`data.canonical`, `data.text.canonical`, `data.audio.canonical`) subclasses `DatasetReader` and
says only how its manifest fields are checked and how one split's arrays are opened.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from genforge.core.atomic import write_json
from genforge.core.errors import DataError
from genforge.core.hashing import hash_array, hash_json

FORMAT = "genforge-canonical"
MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.json"
LABELS_FILE = "labels.npy"
HELD_OUT = ("val", "test")  # the reference split is the first of these a dataset has


def write_manifest(
    directory: Path,
    modality: str,
    version: int,
    fields: dict[str, Any],
    fingerprint_parts: list[Any],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Write DIRECTORY/manifest.json: the format envelope around the modality's `fields`, the
    fingerprint of `fingerprint_parts`, then `meta` (source, options, counts); return it."""
    manifest = {
        "format": FORMAT,
        "format_version": version,
        "modality": modality,
        **fields,
        "fingerprint": hash_json(fingerprint_parts)[:16],
        **meta,
    }
    write_json(directory / MANIFEST_FILE, manifest)
    return manifest


def write_item_files(
    sdir: Path,
    items: np.ndarray,
    labels: np.ndarray,
    origins: Sequence[str],
    hashes: Sequence[str],
    num_classes: int,
) -> list[int]:
    """Write a split's labels.npy and index.json (per item origin and content hash; by default
    `split[i]` and the hash of the item) and return its labelled items per class."""
    n = len(items)
    np.save(sdir / LABELS_FILE, labels)
    origins = list(origins) or [f"{sdir.name}[{i}]" for i in range(n)]
    hashes = list(hashes) or [hash_array(item) for item in items]
    write_json(sdir / INDEX_FILE, {"origins": origins, "hashes": hashes})
    return np.bincount(labels[labels >= 0], minlength=num_classes).tolist()


def read_manifest(path: str | Path) -> dict[str, Any]:
    """DATASET/manifest.json, checked to be a genforge canonical dataset's."""
    path = Path(path)
    mpath = path / MANIFEST_FILE
    if not mpath.is_file():
        raise DataError(
            f"{path}: not a genforge dataset (no manifest.json); create one with `genforge data ingest`"
        )
    try:
        manifest: dict[str, Any] = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{mpath}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{mpath}: field 'format' must be 'genforge-canonical'")
    return manifest


class SplitReader:
    """One split of a dataset: the files under `root/name` and the manifest's record `meta` of it."""

    def __init__(self, root: Path, name: str, meta: dict[str, Any]):
        self.root, self.name, self.meta = root, name, meta

    def _file(self, fname: str) -> Path:
        return self.root / self.name / fname

    def _load(self, fname: str, what: str, mmap: bool = False) -> np.ndarray:
        """np.load of the split's `fname` (read-only memory map when `mmap`); unreadable: "cannot `what`"."""
        path = self._file(fname)
        try:
            return np.load(path, mmap_mode="r" if mmap else None)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot {what} ({exc})") from None


class ItemSplit(SplitReader):
    """A split of `count` items (images, clips) with int64 labels (-1 = unlabelled) and, per item,
    the origin and content hash in index.json."""

    def __len__(self) -> int:
        return int(self.meta["count"])

    def _per_item(self, fname: str, what: str) -> np.ndarray:
        """int64 (N,) values, one per item (labels, lengths, field ids), from the split's `fname`."""
        arr = self._load(fname, f"read {what}")
        if arr.shape != (len(self),):
            raise DataError(f"{self._file(fname)}: expected {len(self)} {what}, got shape {arr.shape}")
        return arr.astype(np.int64, copy=False)

    @cached_property
    def labels(self) -> np.ndarray:
        return self._per_item(LABELS_FILE, "labels")

    @property
    def has_labels(self) -> bool:
        return bool(len(self)) and bool((self.labels >= 0).all())

    @property
    def class_counts(self) -> list[int]:
        """Labelled items per class (the manifest's record, written with the split)."""
        return [int(c) for c in self.meta["class_counts"]]

    @cached_property
    def index(self) -> dict[str, list[str]]:
        return json.loads(self._file(INDEX_FILE).read_text())


S = TypeVar("S", bound=SplitReader)


class DatasetReader(ABC, Generic[S]):
    """A canonical dataset read from `path` (its manifest given, or read from there). A subclass
    sets `modality`, checks its manifest fields in `_check_manifest` and opens a split in
    `_open_split`."""

    modality: str

    def __init__(self, path: str | Path, manifest: dict[str, Any] | None = None):
        self.path = Path(path)
        self.manifest: dict[str, Any] = manifest if manifest is not None else read_manifest(self.path)
        self._check_manifest()
        splits = self.manifest.get("splits")
        if not isinstance(splits, dict) or not splits:
            raise self._field_error("splits", "must map split names to their counts")
        self._splits: dict[str, S] = {name: self._open_split(name, meta) for name, meta in splits.items()}

    def _field_error(self, name: str, problem: str) -> DataError:
        return DataError(f"{self.path / MANIFEST_FILE}: field {name!r} {problem}")

    def _check_manifest(self) -> None:
        """Check the modality's own manifest fields (before any split opens) and keep what splits need."""

    @abstractmethod
    def _open_split(self, name: str, meta: dict[str, Any]) -> S: ...

    @abstractmethod
    def model_fields(self) -> dict[str, Any]:
        """The model config fields this data fixes (a family's `default_config` takes them)."""

    @abstractmethod
    def _describe_data(self) -> dict[str, Any]:
        """The modality's shape of the data, for `describe` (image shape, tokenizer, sample rate...)."""

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.get("class_names") or [])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def split_names(self) -> list[str]:
        return list(self._splits)

    def split(self, name: str) -> S:
        if name not in self._splits:
            raise DataError(f"{self.path}: no split {name!r}; splits: {', '.join(self._splits)}")
        return self._splits[name]

    @property
    def train_split(self) -> S:
        return self.split("train")

    @property
    def reference_split(self) -> S:
        """Held-out split for evaluation: validation if present, else test."""
        for name in HELD_OUT:
            if name in self._splits:
                return self._splits[name]
        raise DataError(f"{self.path}: no held-out split (val or test)")

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path.resolve()),
            "modality": self.modality,
            "fingerprint": self.fingerprint,
            **self._describe_data(),
            "num_classes": self.num_classes,
            "class_names": self.class_names,
        }
