"""Sample grids: a batch of uint8 images tiled into one PNG."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from genforge.core.atomic import write_bytes


def make_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2, pad_value: int = 0) -> np.ndarray:
    """uint8 (N,H,W,C) -> uint8 (rows*(H+pad)+pad, cols*(W+pad)+pad, C), row-major."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 (N,H,W,C), got {images.dtype} {images.shape}")
    n, h, w, c = images.shape
    ncols = ncols or max(1, math.ceil(math.sqrt(n)))
    nrows = max(1, math.ceil(n / ncols))
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), pad_value, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def encode_png(image: np.ndarray) -> bytes:
    from PIL import Image

    arr = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_grid(path: str | Path, images: np.ndarray, ncols: int | None = None) -> None:
    write_bytes(path, encode_png(make_grid(images, ncols)))
