"""The canonical on-disk dataset that every later stage reads.

Layout of DATASET_DIR:
    manifest.json                 summary: source, options, classes, splits, counts, fingerprint
    <split>/images-NNNNN.npy      uint8 (N, H, W, C) shards, memory-mappable with np.load(mmap_mode="r")
    <split>/labels.npy            int64 (N,), -1 where an image has no label
    <split>/index.json            per image: origin (file / archive member / array index) and content hash
Training reads the shards through a memory map and decodes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.atomic import write_json
from genforge.core.errors import DataError
from genforge.core.hashing import hash_array, hash_json
from genforge.core.modality import DEFAULT as DEFAULT_MODALITY
from genforge.core.modality import lookup, modality_registry

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
        np.save(sdir / "labels.npy", labels)
        origins = list(split.origins) or [f"{name}[{i}]" for i in range(n)]
        hashes = list(split.hashes) or [hash_array(img) for img in images]
        write_json(sdir / "index.json", {"origins": origins, "hashes": hashes})
        counts = np.bincount(labels[labels >= 0], minlength=len(class_names or [])).tolist()
        split_meta[name] = {"count": n, "shards": shards, "class_counts": counts}
        fingerprint_parts.append([name, hash_array(images), hash_array(labels)])
    manifest = {
        "format": "genforge-canonical",
        "format_version": FORMAT_VERSION,
        "modality": "image",
        "image_shape": image_shape,
        "class_names": class_names,
        "num_classes": len(class_names or []),
        "splits": split_meta,
        "fingerprint": hash_json(fingerprint_parts)[:16],
        **meta,
    }
    write_json(directory / "manifest.json", manifest)
    return manifest


class Split:
    """One split, read lazily through memory maps."""

    def __init__(self, root: Path, name: str, meta: dict[str, Any]):
        self.root, self.name, self.meta = root, name, meta

    def __len__(self) -> int:
        return int(self.meta["count"])

    @cached_property
    def shards(self) -> list[np.ndarray]:
        out = []
        for shard in self.meta["shards"]:
            path = self.root / self.name / shard["file"]
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise DataError(f"{path}: cannot open image shard ({exc})") from None
            if arr.dtype != np.uint8 or arr.ndim != 4 or len(arr) != shard["count"]:
                raise DataError(
                    f"{path}: expected uint8 (N,H,W,C) with N={shard['count']}, got {arr.dtype} {arr.shape}"
                )
            out.append(arr)
        return out

    @cached_property
    def images(self) -> np.ndarray:
        """All images (N,H,W,C) uint8: a memory map when the split is one shard (the usual case)."""
        shards = self.shards
        return shards[0] if len(shards) == 1 else np.concatenate(shards)

    @cached_property
    def labels(self) -> np.ndarray:
        path = self.root / self.name / "labels.npy"
        try:
            labels = np.load(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read labels ({exc})") from None
        if labels.shape != (len(self),):
            raise DataError(f"{path}: expected {len(self)} labels, got shape {labels.shape}")
        return labels

    @property
    def has_labels(self) -> bool:
        return bool(len(self)) and bool((self.labels >= 0).all())

    @property
    def class_counts(self) -> list[int]:
        """Labelled images per class (the manifest's record, written with the split)."""
        return [int(c) for c in self.meta["class_counts"]]

    @cached_property
    def index(self) -> dict[str, list[str]]:
        return json.loads((self.root / self.name / "index.json").read_text())


def read_manifest(path: str | Path) -> dict[str, Any]:
    """DATASET/manifest.json, checked to be a genforge canonical dataset's."""
    path = Path(path)
    mpath = path / "manifest.json"
    if not mpath.is_file():
        raise DataError(
            f"{path}: not a genforge dataset (no manifest.json); create one with `genforge data ingest`"
        )
    try:
        manifest: dict[str, Any] = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{mpath}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "genforge-canonical":
        raise DataError(f"{mpath}: field 'format' must be 'genforge-canonical'")
    return manifest


class CanonicalDataset:
    """An image dataset: uint8 (N,H,W,C) shards per split."""

    modality = "image"

    def __init__(self, path: str | Path, manifest: dict[str, Any] | None = None):
        self.path = Path(path)
        self.manifest: dict[str, Any] = manifest if manifest is not None else read_manifest(self.path)
        self._splits = {name: Split(self.path, name, meta) for name, meta in self.manifest["splits"].items()}

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
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C)"""
        return tuple(self.manifest["image_shape"])  # type: ignore[return-value]

    @property
    def split_names(self) -> list[str]:
        return list(self._splits)

    def split(self, name: str) -> Split:
        if name not in self._splits:
            raise DataError(f"{self.path}: no split {name!r}; splits: {', '.join(self._splits)}")
        return self._splits[name]

    @property
    def train_split(self) -> Split:
        return self.split("train")

    @property
    def reference_split(self) -> Split:
        """Held-out split for evaluation: validation if present, else test."""
        for name in ("val", "test"):
            if name in self._splits:
                return self._splits[name]
        raise DataError(f"{self.path}: no held-out split (val or test)")

    def model_fields(self) -> dict[str, Any]:
        """The model config fields this data fixes (a family's `default_config` takes them)."""
        h, _w, c = self.image_shape
        return {"image_size": h, "channels": c}

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path.resolve()),
            "modality": self.modality,
            "fingerprint": self.fingerprint,
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "class_names": self.class_names,
        }


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
