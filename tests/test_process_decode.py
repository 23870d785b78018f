"""Decode, validation and mode normalisation of single items (genforge.data.process)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from genforge.data.process.decode import (
    Quarantined,
    bombs_are_errors,
    decode_bytes,
    normalise_array,
    normalise_mode,
)
from genforge.data.process.resize import draft_request, fit_image
from genforge.data.process.worker import ProcessSpec, process_batch, process_item

WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def gradient(w: int = 48, h: int = 40) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    arr = np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height (the pixel data is never reached)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def spec(**kw) -> ProcessSpec:
    base = {"size": None, "channels": None, "fit": "crop", "resize_filter": "lanczos", "background": WHITE}
    return ProcessSpec(**(base | kw))


def quarantine_kind(data: bytes) -> str:
    with bombs_are_errors(), pytest.raises(Quarantined) as info:
        decode_bytes(data)
    assert info.value.reason  # every quarantine says why
    return info.value.kind


def test_broken_files_are_quarantined_with_their_kind():
    jpeg = encode(gradient(), "JPEG", quality=90)
    png = encode(gradient(), "PNG")
    corrupt_png = bytearray(png)
    idat = png.index(b"IDAT")
    corrupt_png[idat + 8 : idat + 40] = b"\xff" * 32  # garbage in the compressed stream
    assert quarantine_kind(jpeg[: len(jpeg) // 2]) == "truncated"
    assert quarantine_kind(png[: len(png) - 30]) in {"truncated", "corrupt"}
    assert quarantine_kind(bytes(corrupt_png)) == "corrupt"
    assert quarantine_kind(b"") == "empty"
    assert quarantine_kind(b"this is a text file, not a PNG\n") == "not-image"


def test_decompression_bombs_are_quarantined_both_above_the_limit_and_in_the_warning_band():
    limit = Image.MAX_IMAGE_PIXELS
    side_error = int((2.5 * limit) ** 0.5)  # over twice the limit: Pillow raises
    side_warn = int((1.5 * limit) ** 0.5)  # between 1x and 2x: Pillow only warns
    assert quarantine_kind(png_header_only(side_error, side_error)) == "bomb"
    assert quarantine_kind(png_header_only(side_warn, side_warn)) == "bomb"


def test_good_files_survive_next_to_bad_ones_in_a_batch():
    good = encode(gradient(), "PNG")
    payloads = [
        (good, None),
        (b"", None),
        (good[:50], None),
        (b"nope", None),
        (encode(gradient(), "JPEG"), None),
    ]
    out = process_batch(payloads, spec())
    assert out.good == [0, 4]
    assert [b[0] for b in out.bad] == [1, 2, 3]
    assert [b[1] for b in out.bad] == ["empty", "truncated", "not-image"]
    assert out.images[0].shape == (2, 40, 48, 3)  # stacked: one shape
    assert out.analysis is not None and len(out.analysis) == 2
    assert np.array_equal(out.images[0][0], np.asarray(gradient()))  # PNG is lossless


def test_palette_with_transparency_is_composited_on_the_background():
    im = Image.new("P", (4, 2))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.putdata([0, 0, 1, 1, 0, 0, 1, 1])
    data = encode(im, "PNG", transparency=1)  # palette index 1 (blue) is transparent
    decoded, _ = decode_bytes(data)
    for bg in (WHITE, (10, 20, 30)):
        arr = np.asarray(normalise_mode(decoded, bg))
        assert arr.shape == (2, 4, 3)
        assert tuple(arr[0, 0]) == (255, 0, 0) and tuple(arr[0, 2]) == bg
    opaque, _ = decode_bytes(encode(im, "PNG"))
    assert tuple(np.asarray(normalise_mode(opaque, WHITE))[0, 2]) == (0, 0, 255)


def test_alpha_modes_composite_on_white_black_or_hex():
    rgba = Image.new("RGBA", (2, 1))
    rgba.putdata([(200, 100, 50, 255), (200, 100, 50, 0)])
    la = Image.new("LA", (2, 1))
    la.putdata([(90, 255), (90, 0)])
    for bg in (WHITE, BLACK, (0x12, 0x34, 0x56)):
        out = np.asarray(normalise_mode(decode_bytes(encode(rgba, "PNG"))[0], bg))
        assert tuple(out[0, 0]) == (200, 100, 50) and tuple(out[0, 1]) == bg
        grey = np.asarray(normalise_mode(decode_bytes(encode(la, "PNG"))[0], bg))
        assert grey.ndim == 2 and grey[0, 0] == 90
        assert grey[0, 1] == Image.new("RGB", (1, 1), bg).convert("L").getpixel((0, 0))
    half = Image.new("RGBA", (1, 1), (255, 255, 255, 128))
    assert abs(int(np.asarray(normalise_mode(half, BLACK))[0, 0, 0]) - 128) <= 1


def test_cmyk_16bit_and_1bit_become_8bit_l_or_rgb():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    out = normalise_mode(decode_bytes(encode(cmyk, "JPEG", quality=95))[0], WHITE)
    assert out.mode == "RGB"
    r, g, b = np.asarray(out).reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60
    wide = np.array([[0, 257, 32896, 65535]], np.uint16)
    i16 = Image.fromarray(wide)
    assert i16.mode == "I;16"
    out16 = normalise_mode(decode_bytes(encode(i16, "PNG"))[0], WHITE)
    assert out16.mode == "L" and np.asarray(out16).tolist() == [[0, 1, 128, 255]]
    out_i = normalise_mode(Image.fromarray(wide.astype(np.int32), "I"), WHITE)
    assert np.asarray(out_i).tolist() == [[0, 1, 128, 255]]
    bits = Image.new("1", (3, 1))
    bits.putdata([0, 1, 0])
    out1 = normalise_mode(decode_bytes(encode(bits, "PNG"))[0], WHITE)
    assert out1.mode == "L" and np.asarray(out1).tolist() == [[0, 255, 0]]


def test_exif_orientation_is_applied():
    stored = Image.new("RGB", (40, 20))
    stored.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    stored.paste((0, 0, 255), (20, 0, 40, 20))  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the stored left edge becomes the top
    im, _ = decode_bytes(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    arr = np.asarray(normalise_mode(im, WHITE)).astype(int)
    assert arr.shape == (40, 20, 3)
    assert arr[5, 10, 0] > 200 and arr[5, 10, 2] < 60  # top is red
    assert arr[35, 10, 2] > 200 and arr[35, 10, 0] < 60  # bottom is blue
    plain, _ = decode_bytes(encode(stored, "JPEG", quality=95))
    assert plain.size == (40, 20)


def test_animated_gif_gives_its_first_frame_and_a_note():
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50)
    arr, notes = process_item((buf.getvalue(), None), spec())
    assert arr.shape == (6, 6, 3) and tuple(arr[0, 0]) == (255, 0, 0)
    assert len(notes) == 1 and "3 frames" in notes[0] and "first frame" in notes[0]


def test_arrays_are_scaled_and_validated():
    assert normalise_array(np.array([[0.0, 0.5, 1.0]]), WHITE)[..., 0].tolist() == [[0, 128, 255]]
    assert normalise_array(np.array([[0, 65535]], np.uint16), WHITE)[..., 0].tolist() == [[0, 255]]
    assert normalise_array(np.array([[0, 16, 255]], np.int64), WHITE)[..., 0].tolist() == [[0, 16, 255]]
    la = np.array([[[100, 255], [100, 0]]], np.uint8)
    assert normalise_array(la, BLACK)[..., 0].tolist() == [[100, 0]]
    for bad, words in [
        (np.array([[np.nan, 1.0]]), "NaN"),
        (np.array([[-3.0, 1.0]]), "negative"),
        (np.zeros((2, 2, 5), np.uint8), "shape"),
        (np.array([["a"]]), "dtype"),
    ]:
        with pytest.raises(Quarantined, match=words):
            normalise_array(bad, WHITE)


def test_resize_crop_and_pad_keep_the_aspect_ratio():
    wide = Image.new("RGB", (80, 40), (200, 10, 10))
    cropped = fit_image(wide, (32, 32), "crop", "lanczos", WHITE)
    assert cropped.size == (32, 32) and np.asarray(cropped)[:, :, 0].min() > 190  # all image, no border
    padded = np.asarray(fit_image(wide, (32, 32), "pad", "bicubic", (0, 255, 0)))
    assert padded.shape == (32, 32, 3)
    assert tuple(padded[0, 16]) == (0, 255, 0) and tuple(padded[31, 16]) == (
        0,
        255,
        0,
    )  # bands top and bottom
    assert padded[16, 16, 0] > 190  # the image in the middle
    # a tall 2:1 target takes the centre of a square image
    square = gradient(64, 64)
    tall = np.asarray(fit_image(square, (32, 16), "crop", "area", WHITE)).astype(int)
    ref = np.asarray(square.crop((16, 0, 48, 64)).resize((16, 32), Image.Resampling.BOX)).astype(int)
    assert tall.shape == (32, 16, 3) and np.abs(tall - ref).max() <= 1


def test_filters_differ_and_are_antialiased():
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), "L")
    outs = {
        f: np.asarray(fit_image(noise, (8, 8), "crop", f, WHITE)).astype(float)
        for f in ("lanczos", "area", "nearest")
    }
    # averaging filters shrink random noise towards its mean; nearest keeps single pixels
    assert outs["area"].std() < 0.3 * outs["nearest"].std()
    assert outs["lanczos"].std() < 0.5 * outs["nearest"].std()
    assert not np.array_equal(outs["lanczos"], outs["area"])


def test_jpeg_draft_decoding_matches_full_decoding():
    big = gradient(800, 600).resize((800, 600))
    data = encode(big, "JPEG", quality=92)
    assert draft_request((32, 32), "crop", 800, 600) is not None
    fast, _ = process_item((data, None), spec(size=(32, 32)))
    full = np.asarray(
        fit_image(Image.open(io.BytesIO(data)).convert("RGB"), (32, 32), "crop", "lanczos", WHITE)
    )
    assert fast.shape == (32, 32, 3)
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 3.0
    assert draft_request((32, 32), "crop", 40, 40) is None  # nothing to gain


def test_channels_conversion_for_bytes_and_arrays():
    rgb = encode(gradient(), "PNG")
    grey, _ = process_item((rgb, None), spec(channels=1))
    assert grey.shape == (40, 48, 1)
    expected = np.asarray(gradient().convert("L"))
    assert np.array_equal(grey[..., 0], expected)
    from_array, _ = process_item((None, np.asarray(gradient())), spec(channels=1))
    assert np.array_equal(from_array[..., 0], expected)  # same weights as Pillow
    three, _ = process_item((None, np.full((5, 5), 7, np.uint8)), spec(channels=3, size=(4, 4)))
    assert three.shape == (4, 4, 3) and (three == 7).all()
