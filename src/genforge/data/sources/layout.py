"""Naming rules shared by the sources that walk a tree of files (folders and tar archives).

`root/<split>/<class>/.../x.png`, `root/<class>/.../x.png` or `root/x.png`: a top-level folder named
like a split gives the split, the first folder below it gives the class label.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "test": "test",
    "testing": "test",
    "val": "val",
    "valid": "val",
    "validation": "val",
}


def is_image_name(name: str) -> bool:
    """True for a file name with an image extension (any case) that is not hidden: `._x.jpg` files
    are macOS resource forks, not images."""
    dot = name.rfind(".")
    return dot > 0 and not name.startswith(".") and name[dot:].lower() in IMAGE_EXTENSIONS


def split_name(folder: str) -> str | None:
    return SPLIT_ALIASES.get(folder.lower())


def place(folders: Sequence[str]) -> tuple[str | None, str | None]:
    """(split, label) of a file from the folders between the root and the file."""
    split = split_name(folders[0]) if folders else None
    if split is not None:
        folders = folders[1:]
    return split, (folders[0] if folders else None)


def label_names(labels: Iterable[object]) -> list[str]:
    """Sorted class names of a label column: numbers sort by value (so "10" comes after "9"),
    anything else as strings; negative numbers mean "no label" and are left out."""
    values = np.asarray(list(labels) if not isinstance(labels, np.ndarray) else labels)
    if values.size == 0:
        return []
    if values.dtype.kind in "iub":
        uniq = np.unique(values)
        return [str(int(v)) for v in uniq if v >= 0]
    return sorted({str(v) for v in values.tolist()})


def label_of(value: object) -> str | None:
    """A label cell as a class name; negative numbers mean "no label"."""
    if isinstance(value, np.integer | int) and not isinstance(value, bool):
        return None if value < 0 else str(int(value))
    return None if value is None else str(value)
