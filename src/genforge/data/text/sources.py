"""Text sources: each yields `RawText` documents (origin, encoded bytes or text, split, or the
error that kept it from being read) and describes itself for the manifest.

| source | spec | one document is |
| --- | --- | --- |
| `hf` | `hf:NAME[:SPLIT]` or a `save_to_disk` directory | a row's text column (`field`, default `text`, else the only string column) |
| `tar` | `.tar`, `.tar.gz`/`.tgz`, `.tar.bz2`, `.tar.xz`, streamed | a `.txt`/`.md` member |
| `jsonl` | `.jsonl`/`.ndjson` (optionally `.gz`), streamed line by line | a line's `field` (default `text`) |
| `csv` | `.csv`/`.tsv` | a row's `column` (default `text`) |
| `folder` | a directory, walked recursively | a `.txt`/`.md` file (any case); `train/` `val/` `test/` top folders give splits |
| `file` | any other file | the whole file |

The folder and tar sources walk with the image sources' readers (symlink loops, unreadable
files, corrupt or truncated archives are handled there); the HF source loads through
`data.sources.hf.load_parts`. Decoding bytes into text belongs to `decode`, so every source gets
the same encoding detection and binary checks.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from genforge.core.errors import DataError
from genforge.core.registry import Registry
from genforge.data.ingesters import leading_modalities
from genforge.data.sources.base import RawItem
from genforge.data.sources.folder import FolderOptions, FolderSource
from genforge.data.sources.hf import holds_media, is_hf_spec, load_parts, spec_features
from genforge.data.sources.layout import split_name
from genforge.data.sources.listing import SpecFactory, folder_names, open_spec, tar_names
from genforge.data.sources.options import SourceOptions
from genforge.data.sources.tar import TAR_SUFFIXES, TarSource
from genforge.data.text.config import TextIngestConfig
from genforge.data.text.decode import decode_bytes

TEXT_EXTENSIONS = frozenset({".txt", ".md", ".markdown", ".text"})
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
CSV_SUFFIXES = (".csv", ".tsv")
DEFAULT_FIELD = "text"


def is_text_name(name: str) -> bool:
    """A file name with a text extension (any case), not hidden."""
    dot = name.rfind(".")
    return dot > 0 and not name.startswith(".") and name[dot:].lower() in TEXT_EXTENSIONS


@dataclass
class RawText:
    origin: str  # file path, "archive.tar.gz::member", "rows.jsonl:12", "hf:name[train][3]"
    data: bytes | None = None  # encoded bytes, decoded by the process stage
    text: str | None = None  # already text (JSON, CSV and HF cells)
    split: str | None = None  # "train" / "val" / "test" when the source says so
    error: str | None = None  # the source could not read this document: why
    meta: dict[str, Any] = field(default_factory=dict)


class TextSource(Protocol):
    name: str

    def __iter__(self) -> Iterator[RawText]: ...

    def describe(self) -> dict[str, Any]: ...


class TextSourceFactory(Protocol):
    def matches(self, spec: str) -> bool: ...

    def open(self, spec: str, cfg: TextIngestConfig) -> TextSource: ...


TEXT_SOURCES: Registry[TextSourceFactory] = Registry("text source")


def _from_item(item: RawItem) -> RawText:
    return RawText(item.origin, data=item.data, split=item.split, error=item.error)


def _suffix_is(spec: str, suffixes: tuple[str, ...]) -> bool:
    return spec.lower().endswith(suffixes) and os.path.isfile(spec)


class _TextFolder(FolderSource):
    wanted = staticmethod(is_text_name)


class FolderText:
    name = "folder"

    def __init__(self, spec: str):
        self.walker = _TextFolder(spec, FolderOptions())

    def __iter__(self) -> Iterator[RawText]:
        for item in self.walker:
            yield _from_item(item)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "path": str(self.walker.root.resolve()),
            "extensions": sorted(TEXT_EXTENSIONS),
        }


class _TextTar(TarSource):
    wanted = staticmethod(is_text_name)


class TarText:
    name = "tar"

    def __init__(self, spec: str):
        self.reader = _TextTar(spec, SourceOptions())

    def __iter__(self) -> Iterator[RawText]:
        for item in self.reader:
            yield _from_item(item)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "path": str(self.reader.path.resolve()),
            "extensions": sorted(TEXT_EXTENSIONS),
        }


class FileText:
    name = "file"

    def __init__(self, spec: str):
        self.path = Path(spec)

    def __iter__(self) -> Iterator[RawText]:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            yield RawText(str(self.path), error=f"cannot read file: {exc.strerror or exc}")
            return
        yield RawText(str(self.path), data=data)

    def describe(self) -> dict[str, Any]:
        return {"source": self.name, "path": str(self.path.resolve())}


def _missing(where: str, what: str, name: str, have: list[str], flag: str) -> DataError:
    return DataError(
        f"{where}: no {what} {name!r}; {what}s: {', '.join(have) or 'none'}; pick one with {flag}"
    )


class JsonlText:
    """One document per line: the line's JSON object's `field`. A line that is not JSON, not an
    object, or whose field is missing or not a string is an error item, except that a field
    missing from the first object is a clear error (the wrong --field, not a bad row)."""

    name = "jsonl"

    def __init__(self, spec: str, field_name: str):
        self.path, self.field = Path(spec), field_name

    def _lines(self) -> Iterator[bytes]:
        opener = gzip.open if self.path.name.lower().endswith(".gz") else open
        try:
            with opener(self.path, "rb") as fh:
                yield from fh
        except (OSError, EOFError) as exc:
            raise DataError(f"{self.path}: cannot read ({exc})") from None

    def __iter__(self) -> Iterator[RawText]:
        first = True
        for number, line in enumerate(self._lines(), 1):
            origin = f"{self.path}:{number}"
            if not line.strip():
                continue
            decoded = decode_bytes(line)  # JSON is UTF-8 by its RFC; anything else is detected
            if decoded.text is None:
                yield RawText(origin, error=f"line is not text: {decoded.reason}")
                continue
            try:
                obj = json.loads(decoded.text)
            except json.JSONDecodeError as exc:
                yield RawText(origin, error=f"not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(obj, dict):
                yield RawText(origin, error=f"expected a JSON object, got {type(obj).__name__}")
                continue
            if self.field not in obj:
                if first:
                    raise DataError(
                        f"{origin}: no field {self.field!r} in the first JSON object; fields: "
                        f"{', '.join(obj) or 'none'}; name the text field with --field"
                    )
                yield RawText(origin, error=f"no field {self.field!r}")
                continue
            first = False
            value = obj[self.field]
            if not isinstance(value, str):
                yield RawText(origin, error=f"field {self.field!r} is {type(value).__name__}, not a string")
                continue
            yield RawText(origin, text=value, split=split_name(str(obj.get("split", ""))))

    def describe(self) -> dict[str, Any]:
        return {"source": self.name, "path": str(self.path.resolve()), "field": self.field}


class CsvText:
    """One document per row: its `column` (a header row names the columns). The file is decoded
    as a whole, with the same detection as any text file."""

    name = "csv"

    def __init__(self, spec: str, column: str):
        self.path, self.column = Path(spec), column
        self.encoding: str | None = None

    def __iter__(self) -> Iterator[RawText]:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise DataError(f"{self.path}: cannot read ({exc.strerror or exc})") from None
        decoded = decode_bytes(data)
        if decoded.text is None:
            raise DataError(f"{self.path}: not a text file ({decoded.reason})")
        self.encoding = decoded.encoding
        delimiter = "\t" if self.path.suffix.lower() == ".tsv" else ","
        csv.field_size_limit(1 << 30)  # a document per cell: cells are long
        reader = csv.reader(io.StringIO(decoded.text, newline=""), delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise DataError(
                f"{self.path}: empty CSV file (expected a header row naming a {self.column!r} column)"
            )
        if self.column not in header:
            raise _missing(str(self.path), "column", self.column, header, "--column")
        col = header.index(self.column)
        split_col = header.index("split") if "split" in header else None
        for row in reader:
            origin = f"{self.path}:{reader.line_num}"
            if not row:
                continue
            if col >= len(row):
                yield RawText(origin, error=f"row has {len(row)} cells, no {self.column!r} column")
                continue
            split = split_name(row[split_col]) if split_col is not None and split_col < len(row) else None
            yield RawText(origin, text=row[col], split=split)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "path": str(self.path.resolve()),
            "column": self.column,
            "encoding": self.encoding,
        }


def string_columns(features: Any) -> list[str]:
    return [k for k, v in features.items() if getattr(v, "dtype", None) in ("string", "large_string")]


class HfText:
    """Rows of a Hugging Face data set: the text column is `field`; not given, the column "text"
    or else the data set's only string column."""

    name = "hf"

    def __init__(self, spec: str, field_name: str | None):
        self.spec = spec
        self.parts = load_parts(spec)
        features = next(iter(self.parts.values())).features
        strings = string_columns(features)
        if field_name is None and DEFAULT_FIELD not in features and len(strings) == 1:
            self.column = strings[0]
        elif (field_name or DEFAULT_FIELD) in features:
            self.column = field_name or DEFAULT_FIELD
        else:
            raise _missing(spec, "column", field_name or DEFAULT_FIELD, list(features), "--field")
        if self.column not in strings:
            raise DataError(f"{spec}: column {self.column!r} holds {features[self.column]}, not strings")

    def __iter__(self) -> Iterator[RawText]:
        for hf_split, ds in self.parts.items():
            split = split_name(hf_split) if hf_split else None
            prefix = f"{self.spec}[{hf_split}]" if hf_split else self.spec
            for i, row in enumerate(ds.select_columns([self.column])):
                value = row[self.column]
                if not isinstance(value, str):
                    yield RawText(
                        f"{prefix}[{i}]", split=split, error=f"column {self.column!r} is empty (None)"
                    )
                    continue
                yield RawText(f"{prefix}[{i}]", text=value, split=split)

    def describe(self) -> dict[str, Any]:
        spec = self.spec if self.spec.startswith("hf:") else str(Path(self.spec).resolve())
        return {
            "source": self.name,
            "spec": spec,
            "column": self.column,
            "splits": [{"name": name or None, "count": len(ds)} for name, ds in self.parts.items()],
        }


# in matching order: the first that matches a spec reads it; `file` takes any other file
TEXT_SOURCES.register("hf", SpecFactory(is_hf_spec, lambda s, c: HfText(s, c.field)))
TEXT_SOURCES.register("tar", SpecFactory(lambda s: _suffix_is(s, TAR_SUFFIXES), lambda s, c: TarText(s)))
TEXT_SOURCES.register(
    "jsonl",
    SpecFactory(lambda s: _suffix_is(s, JSONL_SUFFIXES), lambda s, c: JsonlText(s, c.field or DEFAULT_FIELD)),
)
TEXT_SOURCES.register(
    "csv", SpecFactory(lambda s: _suffix_is(s, CSV_SUFFIXES), lambda s, c: CsvText(s, c.column))
)
TEXT_SOURCES.register("folder", SpecFactory(os.path.isdir, lambda s, c: FolderText(s)))
TEXT_SOURCES.register("file", SpecFactory(os.path.isfile, lambda s, c: FileText(s)))


def open_text_source(spec: str, cfg: TextIngestConfig) -> TextSource:
    return open_spec(
        TEXT_SOURCES, spec, cfg,
        "a text source: expected a .txt/.md file, a folder of them, a .jsonl or .csv file, a tar(.gz) "
        "archive of text files, or hf:NAME",
    )  # fmt: skip


# ---- auto-detection: does a source hold text? (`genforge data ingest --modality auto`)


def _hf_has_text(spec: str) -> bool:
    features = spec_features(spec)
    return features is not None and bool(string_columns(features)) and not holds_media(features)


def claims(spec: str) -> bool:
    """True when `spec` is text: a text, JSONL or CSV file, a folder or archive whose first file
    names are text files at least as often as any other modality's, or an HF data set with a
    string column and no audio, image or other media column."""
    if is_hf_spec(spec):
        return _hf_has_text(spec)
    if os.path.isdir(spec):
        return "text" in leading_modalities(folder_names(spec))
    if _suffix_is(spec, TAR_SUFFIXES):
        return "text" in leading_modalities(tar_names(spec))
    return os.path.isfile(spec) and (
        is_text_name(os.path.basename(spec)) or _suffix_is(spec, JSONL_SUFFIXES + CSV_SUFFIXES)
    )
