"""`arrays`: images stored as numpy arrays in a `.npy` or `.npz` file.

Accepted: uint8, integers in [0,255], bool, or floats in [0,1] or [0,255] (decided once for the
whole array, so a dark image keeps its scale), laid out NHWC, NCHW or NHW. In an `.npz` the
image and label arrays are found by name (`images`/`x`/`data`/`arr_0`, `labels`/`y`/`targets`/
`arr_1`, ...), and names with a split (`x_train`, `test_images`, ...) give that split, so the
Keras `mnist.npz` layout works as it is. Items are yielded as uint8 HxW or HxWxC arrays.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from genforge.core.errors import DataError
from genforge.data.sources.base import RawItem
from genforge.data.sources.layout import label_names, label_of, split_name
from genforge.data.sources.options import SourceOptions, limited, parse_options

IMAGE_NAMES = frozenset({"images", "image", "imgs", "x", "data", "inputs", "features", "arr_0"})
LABEL_NAMES = frozenset({"labels", "label", "y", "targets", "target", "classes", "arr_1"})
_SPLIT = r"train|training|test|testing|val|valid|validation"
_KEY = re.compile(rf"^(?:(?P<pre>{_SPLIT})[_-])?(?P<base>.+?)(?:[_-](?P<post>{_SPLIT}))?$", re.IGNORECASE)
CHANNELS = (1, 3, 4)

Layout = Literal["auto", "NHWC", "NCHW", "NHW"]
ValueRange = Literal["auto", "0-1", "0-255"]


@dataclass
class ArraysOptions(SourceOptions):
    images_key: str | None = None  # npz: the images array (default: found by name)
    labels_key: str | None = None  # npz: the labels array (default: found by name)
    layout: Layout = "auto"  # auto: 3-D is NHW; 4-D is NHWC when the last axis has 1/3/4 channels
    value_range: ValueRange = "auto"  # floats: auto = [0,1] when the maximum is <= 1, else [0,255]


def split_of_key(key: str) -> tuple[str, str | None]:
    """(base name, split) of an npz key: `x_train` -> ("x", "train"), `images` -> ("images", None)."""
    m = _KEY.match(key)
    assert m is not None  # the pattern matches any non-empty key
    token = m["pre"] or m["post"]
    return m["base"].lower(), split_name(token) if token else None


@dataclass
class ArrayGroup:
    """One images array (and its labels) as yielded: the split, layout and scale are fixed here."""

    key: str
    images: np.ndarray
    labels: np.ndarray | None
    split: str | None
    labels_key: str | None = None
    layout: str = "NHWC"
    scale: float = 1.0

    def item(self, i: int) -> np.ndarray:
        img = self.images[i]
        if self.layout == "NCHW":
            img = img.transpose(1, 2, 0)
        if img.dtype == np.bool_:
            return img.astype(np.uint8) * 255
        if img.dtype.kind == "f" or self.scale != 1.0:
            return np.rint(img * self.scale).astype(np.uint8)
        return img.astype(np.uint8, copy=False)


def resolve_layout(images: np.ndarray, layout: str, where: str) -> str:
    if layout == "auto":
        if images.ndim == 3:
            return "NHW"
        if images.ndim == 4 and images.shape[3] in CHANNELS:
            return "NHWC"
        if images.ndim == 4 and images.shape[1] in CHANNELS:
            return "NCHW"
        raise DataError(
            f"{where}: cannot tell the layout of an array of shape {images.shape}: expected (N,H,W), "
            f"(N,H,W,C) or (N,C,H,W) with C in {CHANNELS}; give layout= if the channels are elsewhere"
        )
    want = 3 if layout == "NHW" else 4
    if images.ndim != want:
        raise DataError(f"{where}: layout {layout} needs a {want}-D array, got shape {images.shape}")
    return layout


def resolve_scale(images: np.ndarray, value_range: str, where: str) -> float:
    """Factor that brings the array's values to [0,255], checked over the whole array."""
    kind = images.dtype.kind
    if images.dtype == np.uint8 or kind == "b" or images.size == 0:
        return 1.0
    if kind not in "iuf":
        raise DataError(f"{where}: images must be numbers (uint8, int or float), got dtype {images.dtype}")
    lo, hi = images.min(), images.max()
    if kind == "f" and not (np.isfinite(lo) and np.isfinite(hi)):
        raise DataError(f"{where}: images contain NaN or infinite values")
    unit = value_range == "0-1" or (value_range == "auto" and kind == "f" and hi <= 1.0)
    top = 1.0 if unit else 255.0
    if lo < 0 or hi > top:
        ranges = "[0,1] or [0,255]" if kind == "f" else "[0,255]"
        raise DataError(f"{where}: pixel values span [{lo}, {hi}], expected {ranges}")
    return 255.0 if unit else 1.0


def normalise_labels(labels: np.ndarray, count: int, where: str) -> np.ndarray:
    """Labels as a (count,) column of ints or strings: (N,1) columns, one-hot rows, whole-number
    floats and byte strings are accepted."""
    if labels.dtype.kind == "S":
        labels = labels.astype(str)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    elif (
        labels.ndim == 2
        and labels.shape[0] == count
        and np.isin(labels, (0, 1)).all()
        and (labels.sum(1) == 1).all()
    ):
        labels = labels.argmax(1)  # one-hot rows
    if labels.shape != (count,):
        raise DataError(f"{where}: expected {count} labels (one per image), got shape {labels.shape}")
    if labels.dtype.kind == "f":
        if not (np.isfinite(labels).all() and (labels == np.round(labels)).all()):
            raise DataError(f"{where}: float labels must be whole numbers (class indices)")
        labels = labels.astype(np.int64)
    return labels


class ArraysSource:
    name = "arrays"

    def __init__(self, path: str | Path, options: ArraysOptions):
        self.path = Path(path)
        self.options = options
        self.groups = [self._finish(g) for g in self._load()]
        labels = [g.labels for g in self.groups if g.labels is not None]
        self.class_names = label_names(np.concatenate(labels)) if labels else []

    def _load(self) -> list[ArrayGroup]:
        try:
            loaded = np.load(self.path, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"{self.path}: no such file") from None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise DataError(f"{self.path}: not a readable .npy/.npz file ({exc})") from None
        if isinstance(loaded, np.ndarray):
            if self.options.images_key or self.options.labels_key:
                raise DataError(
                    f"{self.path}: a .npy file holds one array; images_key/labels_key apply to .npz files"
                )
            return [ArrayGroup(key="", images=loaded, labels=None, split=None)]
        with loaded:
            return self._groups(loaded)

    def _groups(self, npz: Any) -> list[ArrayGroup]:
        keys = list(npz.files)
        listing = ", ".join(f"{k} {npz[k].shape}" for k in keys) or "none"

        def get(key: str) -> np.ndarray:
            try:
                return npz[key]
            except KeyError:
                raise DataError(f"{self.path}: no array {key!r}; arrays found: {listing}") from None
            except ValueError as exc:
                raise DataError(f"{self.path}: array {key!r} cannot be loaded ({exc})") from None

        opts = self.options
        if opts.images_key:
            labels_key = opts.labels_key
            split = split_of_key(opts.images_key)[1]
            if labels_key is None:
                labels_key = self._pick(keys, LABEL_NAMES, split, listing)
            return [
                ArrayGroup(
                    opts.images_key,
                    get(opts.images_key),
                    get(labels_key) if labels_key else None,
                    split,
                    labels_key,
                )
            ]
        splits = {split_of_key(k)[1] for k in keys if split_of_key(k)[0] in IMAGE_NAMES}
        if not splits:
            big = [k for k in keys if get(k).ndim >= 3]
            if len(big) != 1:
                raise DataError(
                    f"{self.path}: cannot tell which array holds the images; arrays found: {listing}; "
                    "give images_key= (and labels_key=)"
                )
            only = split_of_key(big[0])[1]
            splits, image_keys = {only}, {only: big[0]}
        else:
            image_keys = {s: self._pick(keys, IMAGE_NAMES, s, listing) for s in splits}
        if opts.labels_key and len(splits) > 1:
            raise DataError(
                f"{self.path}: labels_key= needs images_key= when the file holds several splits ({listing})"
            )
        groups = []
        for split in sorted(splits, key=str):
            labels_key = opts.labels_key or self._pick(keys, LABEL_NAMES, split, listing)
            labels = get(labels_key) if labels_key else None
            if labels_key and labels_key.lower() == "arr_1" and labels is not None and labels.ndim != 1:
                labels, labels_key = None, None  # a second positional array that is not a label column
            groups.append(ArrayGroup(image_keys[split], get(image_keys[split]), labels, split, labels_key))
        return groups

    def _pick(self, keys: list[str], names: frozenset[str], split: str | None, listing: str) -> str | None:
        found = [k for k in keys if split_of_key(k) in {(n, split) for n in names}]
        if len(found) > 1:
            raise DataError(
                f"{self.path}: ambiguous arrays {', '.join(found)} for split {split or '(none)'}; arrays found: "
                f"{listing}; give images_key= / labels_key="
            )
        return found[0] if found else None

    def _finish(self, group: ArrayGroup) -> ArrayGroup:
        where = f"{self.path}::{group.key}" if group.key else str(self.path)
        group.layout = resolve_layout(group.images, self.options.layout, where)
        group.scale = resolve_scale(group.images, self.options.value_range, where)
        if group.labels is not None:
            group.labels = normalise_labels(
                group.labels, len(group.images), f"{self.path}::{group.labels_key}"
            )
        return group

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "path": str(self.path.resolve()),
            "arrays": [
                {
                    "images": g.key or None,
                    "labels": g.labels_key,
                    "split": g.split,
                    "count": len(g.images),
                    "shape": list(g.images.shape),
                    "dtype": str(g.images.dtype),
                    "layout": g.layout,
                    "scale": g.scale,
                }
                for g in self.groups
            ],
            "class_names": self.class_names,
        }

    def __iter__(self) -> Iterator[RawItem]:
        return limited(self._items(), self.options.limit)

    def _items(self) -> Iterator[RawItem]:
        for g in self.groups:
            prefix = f"{self.path}::{g.key}" if g.key else str(self.path)
            names = None if g.labels is None else [label_of(v) for v in g.labels.tolist()]
            for i in range(len(g.images)):
                label = None if names is None else names[i]
                yield RawItem(origin=f"{prefix}[{i}]", split=g.split, label=label, array=g.item(i))


class ArraysFactory:
    def matches(self, spec: str) -> bool:
        return spec.lower().endswith((".npy", ".npz"))

    def open(self, spec: str, **options: Any) -> ArraysSource:
        return ArraysSource(spec, parse_options(ArraysOptions, options, "arrays"))


FACTORY = ArraysFactory()  # registered as 'arrays' by `builtin`, in matching order
