"""Sample images for `genforge eval` in the forms other tools write them, read into one form:
uint8 (N,H,W,C) with C 1 or 3.

Arrays (`.npz` with `images` and `labels`, or `arr_0` and `arr_1`; `.npy`) may be laid out NHWC, NCHW or
NHW (grayscale), as the `arrays` data source tells them apart, and hold uint8, integers in
[0,255], bool, or floats. Floats are read by `RANGE_RULE`, or by an explicit `value_range`.
Folders of image files (walked like the `folder` source: recursively, sorted, hidden files
skipped) are decoded like ingested files and must share one size, as torch-fidelity and
clean-fid take them. Every error names the file and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.errors import ConfigError, DataError
from genforge.data.sources.arrays import resolve_layout, resolve_scale
from genforge.data.sources.layout import IMAGE_EXTENSIONS

VALUE_RANGES = {"auto": None, "0,1": (0.0, 1.0), "-1,1": (-1.0, 1.0), "0,255": (0.0, 255.0)}
# the darkest value a [-1,1] sample set must reach for `auto` to read it so: a whole set of
# generated images without one pixel darker than a quarter of full scale is not a [-1,1] set
NEGATIVE_FLOOR = -0.5
RANGE_RULE = (
    "float pixels are read as [0,1] when every value lies in [0,1], and as [-1,1] when every value "
    f"lies in [-1,1] and the smallest is {NEGATIVE_FLOOR:g} or less"
)
RANGE_HINT = "pass --samples-range 0,1, -1,1 or 0,255 to say which (values outside it are clipped)"
DECODE_BACKGROUND = (255, 255, 255)  # alpha is composited on white, as `genforge data ingest` does


def parse_value_range(text: str) -> tuple[float, float] | None:
    """None for `auto`, else the (low, high) that maps to 0 and 255."""
    key = text.replace(" ", "")
    if key not in VALUE_RANGES:
        raise ConfigError(f"samples range: expected one of {', '.join(VALUE_RANGES)}, got {text!r}")
    return VALUE_RANGES[key]


def float_range(images: np.ndarray, where: str) -> tuple[float, float]:
    """The range of a float array by `RANGE_RULE`, or a DataError that states the rule."""
    lo, hi = float(images.min()), float(images.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise DataError(f"{where}: sample images contain NaN or infinite values")
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    if -1.0 <= lo <= NEGATIVE_FLOOR and hi <= 1.0:
        return -1.0, 1.0
    if lo >= -1.0 and hi <= 1.0:
        why = "ambiguous: a [0,1] array that dips below 0, or a [-1,1] array without dark pixels"
    else:
        why = "outside both [0,1] and [-1,1]"
    raise DataError(
        f"{where}: float pixel values span [{lo:.4g}, {hi:.4g}], {why}; {RANGE_RULE}; {RANGE_HINT}"
    )


def normalise_samples(
    images: np.ndarray, where: str, value_range: str = "auto", channels: int | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Sample images -> uint8 (N,H,W,C), C 1 or 3 (`channels` when given: grayscale and RGB are
    converted into each other), and how they were read (layout, dtype, value range) for the record."""
    images = np.asarray(images)
    explicit = parse_value_range(value_range)
    layout = resolve_layout(images, "auto", where)
    if layout == "NHW":
        images = images[..., None]
    elif layout == "NCHW":
        images = images.transpose(0, 2, 3, 1)
    if images.shape[-1] not in (1, 3):
        raise DataError(
            f"{where}: sample images have {images.shape[-1]} channels (shape {images.shape} read as "
            f"{layout}); expected 1 (grayscale) or 3 (RGB)"
        )
    if len(images) == 0:
        raise DataError(f"{where}: no sample images (shape {images.shape})")
    kind = images.dtype.kind
    if kind == "b":
        lo, hi = 0.0, 1.0
    elif explicit is not None:
        if kind not in "iuf":
            raise DataError(
                f"{where}: images must be numbers (uint8, int or float), got dtype {images.dtype}"
            )
        lo, hi = explicit
    elif kind == "f":
        lo, hi = float_range(images, where)
    else:
        resolve_scale(images, "0-255", where)  # integers in [0,255] (else a DataError naming `where`)
        lo, hi = 0.0, 255.0
    read: dict[str, Any] = {"layout": layout, "dtype": str(images.dtype), "value_range": [lo, hi]}
    if images.dtype != np.uint8 or (lo, hi) != (0.0, 255.0):
        images = _to_uint8(images, lo, hi)
    if channels is not None and images.shape[-1] != channels:
        read["channels"] = f"{images.shape[-1]}->{channels}"
        images = _convert_channels(images, channels)
    return np.ascontiguousarray(images), read


def _to_uint8(images: np.ndarray, lo: float, hi: float, chunk: int = 1024) -> np.ndarray:
    """(x - lo) / (hi - lo) * 255, clipped and rounded, a chunk at a time (floats of a whole
    sample set would take four times its uint8 size)."""
    out = np.empty(images.shape, np.uint8)
    scale = np.float32(255.0 / (hi - lo))
    for start in range(0, len(images), chunk):
        part = np.clip(images[start : start + chunk].astype(np.float32), lo, hi)
        out[start : start + chunk] = np.rint((part - np.float32(lo)) * scale)
    return out


def _convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    from genforge.data.process.decode import luma

    if channels == 3:
        return np.repeat(images, 3, axis=-1)
    return luma(images)[..., None]


def read_array_file(path: Path, n: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(images, labels or None) from a `.npz` (arrays `images` and optional `labels`, or `arr_0` and
    optional `arr_1`) or a `.npy`, at most `n` images; not yet normalised."""
    try:
        if path.suffix.lower() == ".npy":
            images, labels = np.load(path, mmap_mode="r", allow_pickle=False), None
        else:
            with np.load(path, allow_pickle=False) as z:
                names = list(z.files)
                # `arr_0`/`arr_1`: what np.savez(path, images, labels) writes (guided-diffusion's samples)
                key = next((k for k in ("images", "arr_0") if k in names), None)
                if key is None:
                    found = ", ".join(f"{k} {z[k].shape}" for k in names) or "none"
                    raise DataError(
                        f"{path}: no 'images' array (expected images as (N,H,W,C), (N,C,H,W) or (N,H,W), "
                        f"optional 'labels'); arrays found: {found}"
                    )
                images = z[key]
                label_key = "labels" if key == "images" else "arr_1"
                labels = z[label_key] if label_key in names else None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read samples ({exc})") from None
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(
                f"{path}: 'labels' must be integers of shape ({len(images)},), got {labels.dtype} {labels.shape}"
            )
    if n is not None:
        images, labels = images[:n], None if labels is None else labels[:n]
    return np.asarray(images), labels


def read_folder(path: Path, n: int | None = None, channels: int | None = None) -> np.ndarray:
    """The image files in `path` and below (sorted, at most `n`), decoded as `genforge data ingest`
    decodes them, as uint8 (N,H,W,C): C = `channels`, or the first image's (1 gray, else 3)."""
    from genforge.data.process.decode import Quarantined, bombs_are_errors, decode_bytes, normalise_mode
    from genforge.data.sources.folder import FolderOptions, FolderSource

    images: list[np.ndarray] = []
    first: tuple[str, tuple[int, ...]] | None = None
    mode = None if channels is None else ("L" if channels == 1 else "RGB")
    with bombs_are_errors():
        for item in FolderSource(path, FolderOptions()):
            if n is not None and len(images) >= n:
                break
            if item.error is not None:
                raise DataError(f"{item.origin}: {item.error}")
            try:
                image = normalise_mode(decode_bytes(item.data or b"")[0], DECODE_BACKGROUND)
            except Quarantined as exc:
                raise DataError(f"{item.origin}: {exc.reason}; expected a readable image file") from None
            mode = mode or image.mode
            array = np.asarray(image.convert(mode))
            array = array[..., None] if array.ndim == 2 else array
            if first is None:
                first = (item.origin, array.shape)
            elif array.shape != first[1]:
                (h, w), (fh, fw) = array.shape[:2], first[1][:2]
                raise DataError(
                    f"{item.origin}: a {w}x{h} image, but {first[0]} is {fw}x{fh}: the sample images "
                    "of a folder must share one size"
                )
            images.append(array)
    if not images:
        extensions = " ".join(sorted(IMAGE_EXTENSIONS))
        raise DataError(
            f"{path}: no model.json and no image files ({extensions}) in the folder or below: expected "
            "a run directory, a folder of sample images, or a samples .npz/.npy file"
        )
    return np.stack(images)
