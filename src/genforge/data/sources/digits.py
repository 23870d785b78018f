"""`digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images, labels "0".."9").

It ships inside scikit-learn, so it is the data set that always works offline. The values
0..16 are scaled to uint8 0..255. It has no splits of its own: the process stage makes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from genforge.data.sources.base import RawItem
from genforge.data.sources.options import SourceOptions, limited, parse_options

DIGITS_MAX = 16  # sklearn's digits count set pixels in 4x4 blocks: 0..16


def load_digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (1797, 8, 8), labels int (1797,))."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / DIGITS_MAX)).astype(np.uint8)
    return images, bunch.target.astype(np.int64)


class DigitsSource:
    name = "digits"

    def __init__(self, options: SourceOptions):
        self.options = options
        self.images, self.labels = load_digits_uint8()
        self.class_names = [str(i) for i in range(10)]

    def describe(self) -> dict[str, Any]:
        return {"source": self.name, "count": len(self.images), "class_names": self.class_names}

    def __iter__(self) -> Iterator[RawItem]:
        return limited(self._items(), self.options.limit)

    def _items(self) -> Iterator[RawItem]:
        for i, (image, label) in enumerate(zip(self.images, self.labels.tolist(), strict=True)):
            yield RawItem(origin=f"digits[{i}]", label=str(label), array=image)


class DigitsFactory:
    def matches(self, spec: str) -> bool:
        return spec == "digits"

    def open(self, spec: str, **options: Any) -> DigitsSource:
        return DigitsSource(parse_options(SourceOptions, options, "digits"))


FACTORY = DigitsFactory()  # registered as 'digits' by `builtin`, in matching order
