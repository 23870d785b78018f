"""The canonical audio dataset (docs/modalities.md), written by `genforge data ingest` on audio.

Layout of DATASET_DIR (beside the manifest, report and ingest files every modality has):
    <split>/audio.npy        float32 (N, T) clips in [-1, 1], all of one length T (the ingest's
                             length policy), memory-mapped when read
    <split>/labels.npy       int64 (N,), -1 where a clip has no label
    <split>/lengths.npy      int64 (N,): samples of real audio in each clip before padding
    <split>/field-NAME.npy   int64 (N,) per item field (e.g. `speaker`): an index into
                             manifest `item_fields[NAME]`, -1 when unknown
    <split>/index.json       per clip: origin (file / archive member) and content hash
The manifest records `modality: audio`, `sample_rate`, `clip_length` (T) and `item_fields`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.errors import DataError
from genforge.core.hashing import hash_array
from genforge.data.canonical import DATASETS
from genforge.data.dataset_base import DatasetReader, ItemSplit, write_item_files, write_manifest

FORMAT_VERSION = 1
AUDIO_FILE, LENGTHS_FILE = "audio.npy", "lengths.npy"


def field_file(name: str) -> str:
    return f"field-{name}.npy"


@dataclass
class AudioSplitData:
    audio: np.ndarray  # float32 (N, T) in [-1, 1]
    labels: np.ndarray | None = None  # int64 (N,), -1 = unlabelled
    lengths: np.ndarray | None = None  # int64 (N,) samples before padding; None = T for every clip
    fields: dict[str, np.ndarray] = field(default_factory=dict)  # name -> int64 (N,) index, -1 unknown
    origins: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)


def write_audio_dataset(
    directory: str | Path,
    splits: dict[str, AudioSplitData],
    *,
    sample_rate: int,
    class_names: list[str] | None,
    item_fields: dict[str, list[str]] | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `splits` into `directory` (already created, usually an atomic_dir) and return the
    manifest. `item_fields` names the values of each per-item field (e.g. speaker names)."""
    directory = Path(directory)
    item_fields = {k: list(v) for k, v in (item_fields or {}).items()}
    lengths_seen = {s.audio.shape[1] for s in splits.values() if len(s.audio)}
    if len(lengths_seen) > 1:
        raise DataError(f"all splits must share one clip length, got {sorted(lengths_seen)}")
    clip_length = int(next(iter(lengths_seen))) if lengths_seen else 0
    fingerprint: list[Any] = [FORMAT_VERSION, "audio", int(sample_rate), class_names or [], item_fields]
    split_meta: dict[str, Any] = {}
    for name, split in splits.items():
        audio = np.ascontiguousarray(split.audio, dtype=np.float32)
        if audio.ndim != 2:
            raise DataError(f"split {name!r}: audio must be float32 (N, T), got {audio.shape}")
        if len(audio) and not np.isfinite(audio).all():
            raise DataError(f"split {name!r}: audio holds non-finite samples")
        n = len(audio)
        labels = np.full(n, -1, np.int64) if split.labels is None else np.asarray(split.labels, np.int64)
        lengths = (np.full(n, audio.shape[1], np.int64) if split.lengths is None
                   else np.asarray(split.lengths, np.int64))
        if labels.shape != (n,) or lengths.shape != (n,):
            raise DataError(f"split {name!r}: {len(labels)} labels and {len(lengths)} lengths for {n} clips")
        unknown = sorted(set(split.fields) - set(item_fields))
        if unknown:
            raise DataError(f"split {name!r}: fields {unknown} are not named in item_fields")
        sdir = directory / name
        sdir.mkdir(parents=True, exist_ok=True)
        np.save(sdir / AUDIO_FILE, audio)
        np.save(sdir / LENGTHS_FILE, lengths)
        for fname, values in item_fields.items():
            ids = np.asarray(split.fields.get(fname, np.full(n, -1)), np.int64)
            if ids.shape != (n,) or (len(ids) and (ids.max() >= len(values) or ids.min() < -1)):
                raise DataError(f"split {name!r}: field {fname!r} needs (N,) ids in -1..{len(values) - 1}")
            np.save(sdir / field_file(fname), ids)
            fingerprint.append([name, fname, hash_array(ids)])
        counts = write_item_files(sdir, audio, labels, split.origins, split.hashes, len(class_names or []))
        split_meta[name] = {"count": n, "class_counts": counts,
                            "seconds": round(float(lengths.sum()) / sample_rate, 3)}
        fingerprint.append([name, hash_array(audio), hash_array(labels)])
    fields = {
        "sample_rate": int(sample_rate),
        "clip_length": clip_length,
        "audio_dtype": "float32",
        "class_names": class_names,
        "num_classes": len(class_names or []),
        "item_fields": item_fields,
        "splits": split_meta,
    }
    return write_manifest(directory, "audio", FORMAT_VERSION, fields, fingerprint, meta or {})


class AudioSplit(ItemSplit):
    """One split, read lazily: `audio` (a read-only memory map), `labels`, `lengths`, `field(name)`."""

    def __init__(self, root: Path, name: str, meta: dict[str, Any], clip_length: int,
                 item_fields: dict[str, list[str]]):
        super().__init__(root, name, meta)
        self.clip_length, self.item_fields = clip_length, item_fields

    @cached_property
    def audio(self) -> np.ndarray:
        arr = self._load(AUDIO_FILE, "read", mmap=True)
        if arr.dtype != np.float32 or arr.ndim != 2 or arr.shape != (len(self), self.clip_length):
            raise DataError(
                f"{self._file(AUDIO_FILE)}: expected float32 ({len(self)}, {self.clip_length}) "
                f"(manifest.json splits.{self.name}.count, clip_length), got {arr.dtype} {arr.shape}"
            )
        return arr

    # image-shaped code reads `images`; for audio it is the clips (N, T)
    @property
    def images(self) -> np.ndarray:
        return self.audio

    @cached_property
    def lengths(self) -> np.ndarray:
        return self._per_item(LENGTHS_FILE, "lengths")

    def field(self, name: str) -> np.ndarray:
        """int64 (N,) ids of per-item field `name` (e.g. "speaker"), -1 where unknown."""
        if name not in self.item_fields:
            raise DataError(f"{self.root}: no per-item field {name!r}; fields: {', '.join(self.item_fields) or 'none'}")
        return self._per_item(field_file(name), f"{name} ids")

    @property
    def speakers(self) -> np.ndarray | None:
        return self.field("speaker") if "speaker" in self.item_fields else None


class AudioDataset(DatasetReader[AudioSplit]):
    """An audio dataset: float32 (N, T) clips per split at one sample rate, labels, item fields."""

    modality = "audio"

    def _check_manifest(self) -> None:
        for key in ("sample_rate", "clip_length"):
            if not isinstance(self.manifest.get(key), int) or self.manifest[key] < 1:
                raise self._field_error(key, "must be a positive integer")
        if not isinstance(self.manifest.get("item_fields") or {}, dict):
            raise self._field_error("item_fields", "must map field names to value names")

    def _open_split(self, name: str, meta: dict[str, Any]) -> AudioSplit:
        return AudioSplit(self.path, name, meta, self.clip_length, self.manifest.get("item_fields") or {})

    @property
    def sample_rate(self) -> int:
        return int(self.manifest["sample_rate"])

    @property
    def clip_length(self) -> int:
        return int(self.manifest["clip_length"])

    @property
    def item_fields(self) -> dict[str, list[str]]:
        return dict(self.manifest.get("item_fields") or {})

    @property
    def speaker_names(self) -> list[str]:
        return list(self.item_fields.get("speaker", []))

    @property
    def num_speakers(self) -> int:
        return len(self.speaker_names)

    def model_fields(self) -> dict[str, Any]:
        """The model config fields this data fixes (an audio family's `default_config` takes them)."""
        return {"sample_rate": self.sample_rate, "length": self.clip_length, "num_speakers": self.num_speakers,
                "speaker_names": self.speaker_names}

    def _describe_data(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "clip_length": self.clip_length}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "speaker_names": self.speaker_names}


DATASETS.register("audio", AudioDataset)
