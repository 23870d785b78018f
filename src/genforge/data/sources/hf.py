"""`hf`: a Hugging Face `datasets` data set: `hf:NAME[:SPLIT]` (through `load_dataset`, which may
use the network or the local HF cache) or a directory written by `save_to_disk`.

The image column is the one with the `Image` feature (else a column named `image`, `img`,
`pixel_values`...), the label column the `ClassLabel` one (else `label`, `labels`, `target`...),
unless given as options. Image files are yielded as their encoded bytes, array columns as arrays.
HF split names map to train/val/test (`validation` -> val); other split names give no split.
Needs the optional `datasets` package (`pip install 'genforge[hf]'`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.errors import DataError
from genforge.data.sources.base import RawItem
from genforge.data.sources.layout import label_names, label_of, split_name
from genforge.data.sources.options import SourceOptions, limited, parse_options

IMAGE_COLUMNS = ("image", "img", "images", "pixel_values", "pixels")
LABEL_COLUMNS = ("label", "labels", "target", "targets", "y", "class", "fine_label")


@dataclass
class HfOptions(SourceOptions):
    image_column: str | None = None
    label_column: str | None = None
    split: str | None = None  # one HF split of a multi-split data set (default: all of them)


def import_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError(
            "the hf source needs the `datasets` package, which is not installed: pip install 'genforge[hf]'"
        ) from None
    return datasets


def is_saved_dataset(path: str) -> bool:
    """A directory written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    p = Path(path)
    return p.is_dir() and ((p / "dataset_dict.json").is_file() or (p / "state.json").is_file())


@dataclass
class Columns:
    image: str
    image_is_file: bool  # an `Image` feature (encoded file) rather than an array
    label: str | None
    label_names: list[str] | None  # ClassLabel names: the cell holds an index into them


def pick_column(
    features: Any,
    given: str | None,
    typed: list[str],
    names: tuple[str, ...],
    what: str,
    flag: str,
    where: str,
    required: bool,
) -> str | None:
    """The column holding `what`: the one given, else the only one of the right feature type,
    else the first of `names` present; a clear error naming the columns when none fits."""
    listing = ", ".join(f"{k} ({type(v).__name__})" for k, v in features.items())
    if given is not None:
        if given not in features:
            raise DataError(f"{where}: no column {given!r} for the {what}; columns: {listing}")
        return given
    if len(typed) > 1:
        raise DataError(
            f"{where}: several columns could hold the {what} ({', '.join(typed)}); pick one with {flag}"
        )
    if typed:
        return typed[0]
    named = [k for k in names if k in features]
    if named:
        return named[0]
    if required:
        raise DataError(f"{where}: cannot find the {what} column; columns: {listing}; name it with {flag}")
    return None


def pick_columns(features: Any, options: HfOptions, where: str) -> Columns:
    datasets = import_datasets()

    def pick(given: str | None, kind: type, names: tuple[str, ...], what: str, required: bool) -> str | None:
        typed = [k for k, v in features.items() if isinstance(v, kind)]
        return pick_column(features, given, typed, names, what, f"{what}_column=", where, required)

    image = pick(options.image_column, datasets.Image, IMAGE_COLUMNS, "image", True)
    label = pick(options.label_column, datasets.ClassLabel, LABEL_COLUMNS, "label", False)
    label_feature = features.get(label) if label else None
    names = list(label_feature.names) if isinstance(label_feature, datasets.ClassLabel) else None
    return Columns(image, isinstance(features[image], datasets.Image), label, names)


def load_parts(spec: str, split: str | None = None) -> dict[str, Any]:
    """{HF split name ('' for an unsplit data set): Dataset} of `hf:NAME[:SPLIT]` or a directory
    written by `save_to_disk`; `split` (or the spec's `:SPLIT`) keeps one split. The text sources
    load through this too."""
    datasets = import_datasets()
    try:
        if spec.startswith("hf:"):
            name, _, spec_split = spec[3:].partition(":")
            split = split or spec_split or None
            loaded = datasets.load_dataset(name, split=spec_split or None)
        else:
            loaded = datasets.load_from_disk(spec)
    except Exception as exc:  # datasets raises many unrelated types (network, FileNotFound, ValueError)
        raise DataError(
            f"{spec}: cannot load the Hugging Face data set ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if split is not None:
            if split not in loaded:
                raise DataError(f"{spec}: no split {split!r}; splits: {', '.join(loaded)}")
            return {split: loaded[split]}
        return dict(loaded)
    return {split or "": loaded}


def is_hf_spec(spec: str) -> bool:
    """`hf:NAME[:SPLIT]` or a directory written by `save_to_disk`."""
    return spec.startswith("hf:") or is_saved_dataset(spec)


# `--modality auto` asks every modality about an HF spec: a named data set is fetched once
_NAMED_FEATURES: dict[str, Any] = {}


def spec_features(spec: str) -> Any | None:
    """The features of the HF data set `spec` (its first split); None when it does not load (the
    ingest that reads it says why)."""
    if spec in _NAMED_FEATURES:
        return _NAMED_FEATURES[spec]
    try:
        features = next(iter(load_parts(spec).values())).features
    except (DataError, StopIteration):
        return None
    if spec.startswith("hf:"):
        _NAMED_FEATURES[spec] = features
    return features


MEDIA_FEATURES = ("Audio", "Image", "Video", "Pdf")  # feature types holding a file, not text


def holds_images(features: Any) -> bool:
    """What `pick_columns` takes for images: an Image column, or an array column under an image
    name (`pixels`...)."""
    datasets = import_datasets()
    scalar = (datasets.Value, datasets.ClassLabel)
    return any(isinstance(v, datasets.Image) for v in features.values()) or any(
        not isinstance(features[k], scalar) for k in IMAGE_COLUMNS if k in features
    )


def holds_media(features: Any) -> bool:
    """Audio, images, video or documents: beside one, a string column (a caption, a transcript,
    a speaker) describes the data rather than being it."""
    return any(type(v).__name__ in MEDIA_FEATURES for v in features.values()) or holds_images(features)


def is_image_dataset(spec: str) -> bool:
    """An HF data set whose features hold images (the other image sources are what no other
    modality claims)."""
    features = spec_features(spec) if is_hf_spec(spec) else None
    return features is not None and holds_images(features)


class HfSource:
    name = "hf"

    def __init__(self, spec: str, options: HfOptions):
        self.spec = spec
        self.options = options
        self.parts = load_parts(spec, options.split)
        first = next(iter(self.parts.values()))
        self.columns = pick_columns(first.features, options, spec)
        if self.columns.label_names is not None:
            self.class_names = self.columns.label_names
        elif self.columns.label is not None:
            values = [v for ds in self.parts.values() for v in ds.unique(self.columns.label)]
            self.class_names = label_names(values)
        else:
            self.class_names = []

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "spec": self.spec if self.spec.startswith("hf:") else str(Path(self.spec).resolve()),
            "splits": [{"name": name or None, "count": len(ds)} for name, ds in self.parts.items()],
            "image_column": self.columns.image,
            "label_column": self.columns.label,
            "class_names": self.class_names,
        }

    def __iter__(self) -> Iterator[RawItem]:
        return limited(self._items(), self.options.limit)

    def _items(self) -> Iterator[RawItem]:
        datasets = import_datasets()
        cols = self.columns
        keep = [cols.image] + ([cols.label] if cols.label else [])
        for hf_split, ds in self.parts.items():
            split = split_name(hf_split) if hf_split else None
            ds = ds.select_columns(keep)
            if cols.image_is_file:
                ds = ds.cast_column(cols.image, datasets.Image(decode=False))
            else:
                ds = ds.with_format("numpy")
            prefix = f"{self.spec}[{hf_split}]" if hf_split else self.spec
            for i, row in enumerate(ds):
                label = row[cols.label] if cols.label else None
                if cols.label_names is not None and label is not None and label >= 0:
                    label = cols.label_names[int(label)]
                yield self._item(f"{prefix}[{i}]", split, label_of(label), row[cols.image])

    def _item(self, origin: str, split: str | None, label: str | None, cell: Any) -> RawItem:
        if not self.columns.image_is_file:
            return RawItem(origin, split, label, array=np.asarray(cell))
        if cell.get("bytes") is not None:
            return RawItem(origin, split, label, data=cell["bytes"])
        path = cell.get("path")
        try:
            with open(path, "rb") as fh:
                return RawItem(f"{origin}:{path}", split, label, data=fh.read())
        except (OSError, TypeError) as exc:
            return RawItem(
                origin, split, label, error=f"image has no bytes and its path {path!r} is unreadable ({exc})"
            )


class HfFactory:
    def matches(self, spec: str) -> bool:
        return is_hf_spec(spec)

    def open(self, spec: str, **options: Any) -> HfSource:
        return HfSource(spec, parse_options(HfOptions, options, "hf"))


FACTORY = HfFactory()  # registered as 'hf' by `builtin`, in matching order
