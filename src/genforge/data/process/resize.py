"""Resize to the target size with an antialiased filter: centre-crop or pad to fit."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from genforge.data.process.decode import luma

FILTERS: dict[str, Image.Resampling] = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "nearest": Image.Resampling.NEAREST,
}
# shrink by integer factors first when the image is over 3x the target: much faster, same look
REDUCING_GAP = 3.0


def draft_request(size: tuple[int, int], fit: str, w: int, h: int) -> tuple[int, int] | None:
    """The smallest size a JPEG may be DCT-downscaled to before `fit_image`, or None.

    The raw JPEG may still be rotated by its EXIF tag, so the scale covers both orientations.
    """
    th, tw = size
    pick = max if fit == "crop" else min
    scale = max(pick(tw / w, th / h), pick(tw / h, th / w))
    if scale >= 0.5:  # draft only ever halves; nothing to gain
        return None
    return math.ceil(w * scale), math.ceil(h * scale)


def fit_image(im: Image.Image, size: tuple[int, int], fit: str, resample: str, background) -> Image.Image:
    """L or RGB image -> exactly (H, W) = `size`, keeping the aspect ratio."""
    th, tw = size
    w, h = im.size
    if (h, w) == (th, tw):
        return im
    flt = FILTERS[resample]
    if fit == "crop":
        scale = max(tw / w, th / h)
        bw, bh = tw / scale, th / scale
        box = ((w - bw) / 2, (h - bh) / 2, (w + bw) / 2, (h + bh) / 2)
        return im.resize((tw, th), flt, box=box, reducing_gap=REDUCING_GAP)
    scale = min(tw / w, th / h)
    nw, nh = max(1, min(tw, round(w * scale))), max(1, min(th, round(h * scale)))
    fill = background if im.mode == "RGB" else int(luma(np.array(background, np.uint8)))
    canvas = Image.new(im.mode, (tw, th), fill)
    canvas.paste(im.resize((nw, nh), flt, reducing_gap=REDUCING_GAP), ((tw - nw) // 2, (th - nh) // 2))
    return canvas


def array_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    """uint8 HxWx1 or HxWx3 -> HxWx`channels` (RGB to L with Pillow's weights)."""
    if arr.shape[2] == channels:
        return arr
    if channels == 1:
        return luma(arr)[:, :, None]
    return np.repeat(arr, 3, axis=2)
