"""Audio sources: each yields `RawAudio` items (origin, file name, the encoded bytes or the
file's path, split, label, per-item fields, or the error that kept the file from being read) and
describes itself for the manifest. Files on disk (folder and file sources) travel as paths:
libsndfile opens them itself, which costs less than feeding it their bytes through Python.

| source | spec | one item is |
| --- | --- | --- |
| `hf` | `hf:NAME[:SPLIT]` or a `save_to_disk` directory | a row's Audio cell (its encoded bytes, else its file) |
| `tar` | `.tar`, `.tar.gz`/`.tgz`, `.tar.bz2`, `.tar.xz`, streamed | an audio member |
| `folder` | a directory, walked recursively | an audio file (any case); `train/` `val/` `test/` top folders give splits, the next folder the label |
| `file` | one audio file | that file |

Audio files are those with the extensions in `AUDIO_EXTENSIONS`, whatever they hold: deciding
whether bytes are audio belongs to `decode`, so a `.wav` that is not audio reaches quarantine with
a reason instead of vanishing. The folder and tar sources walk with the image sources' readers
(symlink loops, unreadable files, corrupt or truncated archives are handled there); the HF source
loads through `data.sources.hf.load_parts` and reads Audio cells undecoded (`datasets` decodes
audio through torchcodec; genforge decodes every source the same way, with libsndfile).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from genforge.core.errors import DataError
from genforge.core.registry import Registry
from genforge.data.audio.config import AudioIngestConfig
from genforge.data.ingesters import leading_modalities
from genforge.data.sources.base import RawItem
from genforge.data.sources.folder import FolderOptions, FolderSource
from genforge.data.sources.hf import (
    LABEL_COLUMNS,
    import_datasets,
    is_hf_spec,
    load_parts,
    pick_column,
    spec_features,
)
from genforge.data.sources.layout import label_of, split_name
from genforge.data.sources.listing import SpecFactory, folder_names, open_spec, tar_names
from genforge.data.sources.options import SourceOptions
from genforge.data.sources.tar import TAR_SUFFIXES, TarSource

AUDIO_EXTENSIONS = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff"})
AUDIO_COLUMNS = ("audio", "speech", "sound", "wav")
SPEAKER_COLUMNS = ("speaker", "speaker_id")


def is_audio_name(name: str) -> bool:
    """A file name with an audio extension (any case), not hidden (`._x.wav` is a macOS resource fork)."""
    dot = name.rfind(".")
    return dot > 0 and not name.startswith(".") and name[dot:].lower() in AUDIO_EXTENSIONS


def base_name(origin: str) -> str:
    """The file name of an origin: a path, or an archive member after "::"."""
    tail = origin.rsplit("::", 1)[-1]
    return tail.replace("\\", "/").rsplit("/", 1)[-1]


@dataclass
class RawAudio:
    origin: str  # file path, "archive.tar.gz::member", "hf:name[train][3]"
    data: bytes | None = None  # the encoded file, decoded by the process stage
    split: str | None = None  # "train" / "val" / "test" when the source says so
    label: str | None = None  # class name when the source says so (a sub-folder, an HF label)
    fields: dict[str, str] = field(default_factory=dict)  # per-item values the source gives (HF columns)
    name: str = ""  # the file name a label pattern reads; "" when there is none
    error: str | None = None  # the source could not read this item: why
    path: str | None = None  # a file on disk that decode opens itself (instead of `data`)

    @property
    def payload(self) -> bytes | str | None:
        """What decode reads: the bytes, else the file's path; None for an item in error."""
        if self.error is not None:
            return None
        return self.data if self.data is not None else (self.path or b"")


def _from_item(item: RawItem) -> RawAudio:
    return RawAudio(
        item.origin, item.data, item.split, item.label, name=base_name(item.origin), error=item.error
    )


class AudioSource(Protocol):
    name: str

    def __iter__(self) -> Iterator[RawAudio]: ...

    def describe(self) -> dict[str, Any]: ...


class _AudioFolder(FolderSource):
    wanted = staticmethod(is_audio_name)

    @staticmethod
    def _read(path: Path, split: str | None, label: str | None) -> RawItem:
        # no bytes: libsndfile opens the file itself (a read error becomes a quarantine reason then)
        return RawItem(origin=str(path), split=split, label=label)


class FolderAudio:
    name = "folder"

    def __init__(self, spec: str):
        self.walker = _AudioFolder(spec, FolderOptions())

    def __iter__(self) -> Iterator[RawAudio]:
        for item in self.walker:
            raw = _from_item(item)
            raw.path = item.origin if item.error is None else None
            yield raw

    def describe(self) -> dict[str, Any]:
        return {**self.walker.describe(), "extensions": sorted(AUDIO_EXTENSIONS)}


class _AudioTar(TarSource):
    wanted = staticmethod(is_audio_name)


class TarAudio:
    name = "tar"

    def __init__(self, spec: str):
        self.reader = _AudioTar(spec, SourceOptions())

    def __iter__(self) -> Iterator[RawAudio]:
        return map(_from_item, self.reader)

    def describe(self) -> dict[str, Any]:
        # class names are known after the pass over the archive (streamed sources learn late)
        return {**self.reader.describe(), "extensions": sorted(AUDIO_EXTENSIONS)}


class FileAudio:
    name = "file"

    def __init__(self, spec: str):
        self.path = Path(spec)

    def __iter__(self) -> Iterator[RawAudio]:
        yield RawAudio(str(self.path), name=self.path.name, path=str(self.path))

    def describe(self) -> dict[str, Any]:
        return {"source": self.name, "path": str(self.path.resolve())}


class HfAudio:
    """Rows of a Hugging Face data set with an Audio column: its cells are read undecoded (the
    encoded file's bytes, else the file at its path) and decoded like any other audio file."""

    name = "hf"

    def __init__(self, spec: str, cfg: AudioIngestConfig):
        datasets = import_datasets()
        self.spec = spec
        self.parts = load_parts(spec)
        features = next(iter(self.parts.values())).features
        audio_typed = [k for k, v in features.items() if isinstance(v, datasets.Audio)]
        label_typed = [k for k, v in features.items() if isinstance(v, datasets.ClassLabel)]
        self.audio = pick_column(
            features, cfg.audio_column, audio_typed, AUDIO_COLUMNS, "audio", "audio_column", spec, True
        )
        if not isinstance(features[self.audio], datasets.Audio):
            raise DataError(
                f"{spec}: column {self.audio!r} holds {features[self.audio]}, not an Audio feature"
            )
        self.label = pick_column(
            features, cfg.label_column, label_typed, LABEL_COLUMNS, "label", "label_column", spec, False
        )
        label_feature = features.get(self.label) if self.label else None
        self.label_names = (
            list(label_feature.names) if isinstance(label_feature, datasets.ClassLabel) else None
        )
        if cfg.field_columns is None:
            found = [c for c in SPEAKER_COLUMNS if c in features][:1]
            self.fields = {"speaker": found[0]} if found else {}
        else:
            missing = [c for c in cfg.field_columns if c not in features]
            if missing:
                raise DataError(
                    f"{spec}: no column {missing[0]!r} for field_columns; columns: {', '.join(features)}"
                )
            self.fields = {c: c for c in cfg.field_columns}

    def __iter__(self) -> Iterator[RawAudio]:
        datasets = import_datasets()
        keep = [self.audio, *([self.label] if self.label else []), *self.fields.values()]
        for hf_split, ds in self.parts.items():
            split = split_name(hf_split) if hf_split else None
            ds = ds.select_columns(list(dict.fromkeys(keep))).cast_column(
                self.audio, datasets.Audio(decode=False)
            )
            prefix = f"{self.spec}[{hf_split}]" if hf_split else self.spec
            for i, row in enumerate(ds):
                label = row[self.label] if self.label else None
                if self.label_names is not None and label is not None and label >= 0:
                    label = self.label_names[int(label)]
                fields = {k: str(row[c]) for k, c in self.fields.items() if row[c] is not None}
                yield self._item(f"{prefix}[{i}]", split, label_of(label), fields, row[self.audio])

    @staticmethod
    def _item(
        origin: str, split: str | None, label: str | None, fields: dict[str, str], cell: Any
    ) -> RawAudio:
        path = (cell or {}).get("path")
        name = base_name(path) if isinstance(path, str) else ""
        if cell and cell.get("bytes") is not None:
            return RawAudio(origin, cell["bytes"], split, label, fields, name)
        try:
            with open(path, "rb") as fh:
                return RawAudio(f"{origin}:{path}", fh.read(), split, label, fields, name)
        except (OSError, TypeError) as exc:
            return RawAudio(
                origin,
                None,
                split,
                label,
                fields,
                name,
                error=f"audio cell has no bytes and its path {path!r} is unreadable ({exc})",
            )

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "spec": self.spec if self.spec.startswith("hf:") else str(Path(self.spec).resolve()),
            "splits": [{"name": name or None, "count": len(ds)} for name, ds in self.parts.items()],
            "audio_column": self.audio,
            "label_column": self.label,
            "field_columns": self.fields,
            "class_names": self.label_names,
        }


class AudioSourceFactory(Protocol):
    def matches(self, spec: str) -> bool: ...

    def open(self, spec: str, cfg: AudioIngestConfig) -> AudioSource: ...


def _is_tar(spec: str) -> bool:
    return spec.lower().endswith(TAR_SUFFIXES) and os.path.isfile(spec)


AUDIO_SOURCES: Registry[AudioSourceFactory] = Registry("audio source")
AUDIO_SOURCES.register("hf", SpecFactory(is_hf_spec, HfAudio))
AUDIO_SOURCES.register("tar", SpecFactory(_is_tar, lambda s, c: TarAudio(s)))
AUDIO_SOURCES.register("folder", SpecFactory(os.path.isdir, lambda s, c: FolderAudio(s)))
AUDIO_SOURCES.register("file", SpecFactory(os.path.isfile, lambda s, c: FileAudio(s)))


def open_audio_source(spec: str, cfg: AudioIngestConfig) -> AudioSource:
    return open_spec(
        AUDIO_SOURCES, spec, cfg,
        f"an audio source: expected an audio file ({', '.join(sorted(AUDIO_EXTENSIONS))}), "
        "a folder of them, a tar(.gz) archive of them, or hf:NAME",
    )  # fmt: skip


# ---- auto-detection: does a source hold audio? (`genforge data ingest --modality auto`)


def _hf_has_audio(spec: str) -> bool:
    features = spec_features(spec)
    return features is not None and any(isinstance(v, import_datasets().Audio) for v in features.values())


def claims(spec: str) -> bool:
    """True when `spec` is audio: an audio file, a folder or archive whose first file names are
    audio files at least as often as any other modality's, or an HF data set with an Audio column."""
    if is_hf_spec(spec):
        return _hf_has_audio(spec)
    if os.path.isdir(spec):
        return "audio" in leading_modalities(folder_names(spec))
    if _is_tar(spec):
        return "audio" in leading_modalities(tar_names(spec))
    return os.path.isfile(spec) and is_audio_name(os.path.basename(spec))
