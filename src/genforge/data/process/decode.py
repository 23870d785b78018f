"""Decode and validate one raw item, and normalise its mode to 8-bit L or RGB.

Everything that can go wrong with a file becomes a `Quarantined(kind, reason)`: the caller
records it and carries on, so one bad file never stops an ingest or drops a good one.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class Quarantined(Exception):
    """An item that cannot be used; `kind` is a short category, `reason` says why."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


@contextmanager
def bombs_are_errors() -> Iterator[None]:
    """Pillow only *warns* between MAX_IMAGE_PIXELS and twice that; treat both as bombs."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


# formats whose EXIF only ever arrives in im.info["exif"]: skip exif_transpose when it is absent
_EXIF_IN_INFO = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP"})


def decode_bytes(
    data: bytes, draft: Callable[[int, int], tuple[int, int] | None] | None = None, gray: bool = False
) -> tuple[Image.Image, list[str]]:
    """Decode encoded image bytes fully (so truncation is caught here, not later).

    `draft(w, h)` may return a smaller size for JPEG DCT-domain downscaling; `gray` asks the
    JPEG decoder for luma only. Returns the image (EXIF orientation applied) and notes.
    """
    if not data:
        raise Quarantined("empty", "empty file (0 bytes)")
    notes: list[str] = []
    try:
        im = Image.open(io.BytesIO(data))
        frames = getattr(im, "n_frames", 1)
        if frames > 1:
            notes.append(f"animated {im.format} with {frames} frames: first frame used")
        if im.format == "JPEG" and draft is not None:
            request = draft(*im.size)
            if request is not None or gray:
                im.draft("L" if gray else im.mode, request or im.size)
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Quarantined("bomb", f"decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise Quarantined("not-image", "not an image: no known image format recognised") from None
    except Exception as exc:  # decoders raise OSError, SyntaxError, ValueError, struct.error, ...
        msg = str(exc) or type(exc).__name__
        kind = "truncated" if "truncated" in msg.lower() or isinstance(exc, EOFError) else "corrupt"
        raise Quarantined(kind, f"{kind} image ({type(exc).__name__}: {msg})") from None
    if im.format not in _EXIF_IN_INFO or "exif" in im.info:
        try:
            im = ImageOps.exif_transpose(im)
        except Exception as exc:  # a malformed EXIF block must not cost the image
            notes.append(f"EXIF orientation ignored ({type(exc).__name__}: {exc})")
    return im, notes


def _composite(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    im = im.convert("RGBA")
    canvas = Image.new("RGB", im.size, background)
    canvas.paste(im, mask=im.getchannel("A"))
    return canvas


def _composite_gray(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    im = im.convert("LA")
    canvas = Image.new("L", im.size, luma(np.array(background, np.uint8)).item())
    canvas.paste(im.getchannel("L"), mask=im.getchannel("A"))
    return canvas


def _from_palette(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    if im.mode == "PA" or "transparency" in im.info:
        return _composite(im, background)
    return im.convert("RGB")


def _sixteen_bit(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    # the full 16-bit range maps to 8 bits even for a dark image (no contrast stretch)
    arr = np.asarray(im).astype(np.float32)
    return Image.fromarray(np.rint(arr / 257.0).astype(np.uint8), "L")


def _wide_gray(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    return Image.fromarray(scale_to_uint8(np.asarray(im)), "L")


# every Pillow mode -> how it becomes 8-bit L or RGB
MODE_NORMALISERS: dict[str, Callable[[Image.Image, tuple[int, int, int]], Image.Image]] = {
    "L": lambda im, bg: im,
    "RGB": lambda im, bg: im,
    "1": lambda im, bg: im.convert("L"),
    "P": _from_palette,
    "PA": _from_palette,
    "LA": _composite_gray,
    "La": _composite_gray,
    "RGBA": _composite,
    "RGBa": _composite,
    "I": _wide_gray,
    "I;16": _sixteen_bit,
    "I;16B": _sixteen_bit,
    "I;16L": _sixteen_bit,
    "I;16N": _sixteen_bit,
    "F": _wide_gray,
}


def normalise_mode(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Any Pillow image -> 8-bit L or RGB (alpha composited on `background`)."""
    fn = MODE_NORMALISERS.get(im.mode)
    if fn is not None:
        return fn(im, background)
    try:  # CMYK, YCbCr, LAB, HSV, RGBX ...
        return im.convert("RGB")
    except Exception as exc:
        raise Quarantined("unsupported", f"unsupported image mode {im.mode} ({exc})") from None


def scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Integer or float pixels -> uint8: floats in [0,1] are scaled by 255, 16-bit ranges by 1/257."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.size == 0:
        raise Quarantined("bad-array", "empty array")
    lo, hi = float(arr.min()), float(arr.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise Quarantined("bad-array", "array contains NaN or infinite values")
    if lo < 0:
        raise Quarantined("bad-array", f"negative pixel values (min {lo:g}); expected [0, 1] or [0, 255]")
    if arr.dtype.kind == "f" and hi <= 1.0:
        return np.rint(arr * 255.0).astype(np.uint8)
    if hi <= 255:
        return np.rint(arr).astype(np.uint8) if arr.dtype.kind == "f" else arr.astype(np.uint8)
    if hi <= 65535:
        return np.rint(arr.astype(np.float64) / 257.0).astype(np.uint8)
    return np.rint(arr.astype(np.float64) * (255.0 / hi)).astype(np.uint8)


def luma(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (..., 3) -> L uint8 (...), with Pillow's exact fixed-point ITU-R 601-2 weights."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def normalise_array(arr: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """A decoded array (HxW or HxWxC, C in 1..4) -> uint8 HxWx1 or HxWx3, alpha composited."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or min(arr.shape[:2]) < 1:
        raise Quarantined(
            "bad-array", f"expected an HxW or HxWxC array with C in 1..4, got shape {arr.shape}"
        )
    if arr.dtype.kind not in "biuf":
        raise Quarantined("bad-array", f"expected numeric pixels, got dtype {arr.dtype}")
    arr = scale_to_uint8(arr)
    if arr.shape[2] in (2, 4):
        colour, alpha = arr[..., :-1].astype(np.float32), arr[..., -1:].astype(np.float32) / 255.0
        bg = np.array(background, np.uint8)
        bg = (luma(bg)[None] if arr.shape[2] == 2 else bg).astype(np.float32)
        arr = np.rint(colour * alpha + bg * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(arr)
