"""The canonical on-disk dataset that every later stage reads.

Layout of DATASET_DIR:
    manifest.json                 summary: source, options, classes, splits, counts, fingerprint
    <split>/images-NNNNN.npy      uint8 (N, H, W, C) shards, memory-mappable with np.load(mmap_mode="r")
    <split>/labels.npy            int64 (N,), -1 where an image has no label
    <split>/index.json            per image: origin (file / archive member / array index) and content hash
Training reads the shards through a memory map and decodes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.errors import DataError
from genforge.core.hashing import hash_array
from genforge.core.modality import DEFAULT as DEFAULT_MODALITY
from genforge.core.modality import lookup, modality_registry
from genforge.data.dataset_base import (
    DatasetReader,
    ItemSplit,
    read_manifest,
    write_item_files,
    write_manifest,
)

FORMAT_VERSION = 1
SHARD_MAX_BYTES = 1 << 30


@dataclass
class SplitData:
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray | None = None  # int64 (N,), -1 = unlabelled
    origins: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)


def write_dataset(
    directory: str | Path,
    splits: dict[str, SplitData],
    *,
    class_names: list[str] | None,
    meta: dict[str, Any],
    shard_max_bytes: int = SHARD_MAX_BYTES,
) -> dict[str, Any]:
    """Write `splits` into `directory` (already created, usually an atomic_dir) and return the manifest."""
    directory = Path(directory)
    shapes = {s.images.shape[1:] for s in splits.values() if len(s.images)}
    if len(shapes) > 1:
        raise DataError(f"all splits must share one image shape, got {sorted(shapes)}")
    image_shape = list(next(iter(shapes))) if shapes else []
    split_meta: dict[str, Any] = {}
    fingerprint_parts = [FORMAT_VERSION, class_names or []]
    for name, split in splits.items():
        images = np.ascontiguousarray(split.images)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise DataError(
                f"split {name!r}: images must be uint8 (N,H,W,C), got {images.dtype} {images.shape}"
            )
        n = len(images)
        labels = np.full(n, -1, np.int64) if split.labels is None else np.asarray(split.labels, np.int64)
        if labels.shape != (n,):
            raise DataError(f"split {name!r}: {labels.shape[0]} labels for {n} images")
        sdir = directory / name
        sdir.mkdir(parents=True, exist_ok=True)
        per_image = max(1, int(np.prod(images.shape[1:])))
        rows = max(1, shard_max_bytes // per_image)
        shards = []
        for i, start in enumerate(range(0, max(n, 1), rows)):
            fname = f"images-{i:05d}.npy"
            np.save(sdir / fname, images[start : start + rows])
            shards.append({"file": fname, "count": int(min(rows, n - start))})
        counts = write_item_files(sdir, images, labels, split.origins, split.hashes, len(class_names or []))
        split_meta[name] = {"count": n, "shards": shards, "class_counts": counts}
        fingerprint_parts.append([name, hash_array(images), hash_array(labels)])
    fields = {
        "image_shape": image_shape,
        "class_names": class_names,
        "num_classes": len(class_names or []),
        "splits": split_meta,
    }
    return write_manifest(directory, "image", FORMAT_VERSION, fields, fingerprint_parts, meta)


class Split(ItemSplit):
    """One split, read lazily through memory maps."""

    @cached_property
    def shards(self) -> list[np.ndarray]:
        out = []
        for shard in self.meta["shards"]:
            arr = self._load(shard["file"], "open image shard", mmap=True)
            if arr.dtype != np.uint8 or arr.ndim != 4 or len(arr) != shard["count"]:
                raise DataError(
                    f"{self._file(shard['file'])}: expected uint8 (N,H,W,C) with N={shard['count']}, "
                    f"got {arr.dtype} {arr.shape}"
                )
            out.append(arr)
        return out

    @cached_property
    def images(self) -> np.ndarray:
        """All images (N,H,W,C) uint8: a memory map when the split is one shard (the usual case)."""
        shards = self.shards
        return shards[0] if len(shards) == 1 else np.concatenate(shards)


class CanonicalDataset(DatasetReader[Split]):
    """An image dataset: uint8 (N,H,W,C) shards per split."""

    modality = "image"

    def _open_split(self, name: str, meta: dict[str, Any]) -> Split:
        return Split(self.path, name, meta)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C)"""
        return tuple(self.manifest["image_shape"])  # type: ignore[return-value]

    def model_fields(self) -> dict[str, Any]:
        h, _w, c = self.image_shape
        return {"image_size": h, "channels": c}

    def _describe_data(self) -> dict[str, Any]:
        return {"image_shape": list(self.image_shape)}


# modality -> dataset reader class, constructed as cls(path, manifest)
DATASETS = modality_registry("dataset reader")
DATASETS.register("image", CanonicalDataset)


def open_dataset(path: str | Path) -> Any:
    """The canonical dataset at `path`, read by its modality's reader (`manifest.modality`)."""
    manifest = read_manifest(path)
    modality = manifest.get("modality", DEFAULT_MODALITY)
    try:
        reader = lookup(DATASETS, modality, "genforge.data.modalities")
    except ValueError as exc:
        raise DataError(f"{Path(path) / 'manifest.json'}: field 'modality': {exc}") from None
    return reader(path, manifest)
