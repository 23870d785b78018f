"""`glyphs:CHARS`: characters rendered from the fonts installed on the machine, one class each.

    genforge data ingest glyphs:0123456789 --out public-digits --size 16
    genforge data ingest "glyphs:0123456789?per_class=500&seed=1&layout=centred&slant=0.3" --out ...

A data set that contains no one's data: every image is a font's glyph drawn with a random font,
size, extra stroke, rotation and slant, white on black as MNIST. It serves as public data (a
differentially private run's pretraining costs no epsilon, docs/privacy.md) and as foreign test
sets (bench/foreign_sets.py). Deterministic for a seed on one machine; which fonts it used is in
the manifest (`describe`), since another machine's fonts draw other glyphs.

Layouts: `free` (the default) places the glyph at a random size and position in the central 20 px
box of 28 (the foreign sets); `centred` scales its longer side to that box and centres its centre of
mass, MNIST's published preprocessing (LeCun et al.), so the characters sit where MNIST's digits do.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

import numpy as np
import yaml

from genforge.core.config import from_dict
from genforge.core.errors import ConfigError, DataError
from genforge.data.sources.base import RawItem
from genforge.data.sources.options import SourceOptions, limited

SIZE = 28  # output side, px
CANVAS = 64  # glyphs are drawn at this size, then reduced to 28 px (anti-aliased edges as in MNIST)
BOX = 20  # px of the 28 the glyph fits in, as MNIST's digits
FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
PREFIX = "glyphs:"


def font_files() -> list[Path]:
    """The TrueType/OpenType fonts on the machine, in a fixed (sorted) order; `fc-list` when it
    is there, else the usual font folders."""
    found: set[Path] = set()
    try:
        out = subprocess.run(["fc-list", "--format", "%{file}\n"], capture_output=True, text=True, check=True)
        found = {Path(line) for line in out.stdout.splitlines() if line.strip()}
    except (OSError, subprocess.CalledProcessError):
        pass
    for root in FONT_DIRS:
        if root.is_dir():
            found |= set(root.rglob("*.ttf")) | set(root.rglob("*.otf"))
    return sorted(p for p in found if p.suffix.lower() in (".ttf", ".otf") and p.is_file())


@lru_cache(maxsize=4096)
def _font(path: str, size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.truetype(path, size)


def usable_fonts(chars: list[str]) -> list[Path]:
    """Fonts that draw every one of `chars` as something other than an empty box (a font without
    a glyph draws its .notdef box, the same for every missing character)."""
    usable = []
    for path in font_files():
        font = _font(str(path), 40)
        try:
            notdef = font.getmask("\uffff").getbbox()
        except OSError:
            continue
        boxes = [font.getmask(c).getbbox() for c in chars]
        if all(b and b[2] > b[0] and b[3] > b[1] for b in boxes) and notdef not in boxes:
            usable.append(path)
    return usable


def _drawn(char: str, font: Path, size: int, stroke: int, angle: float, slant: float) -> Any:
    """The glyph drawn white on a black CANVAS, rotated by `angle` degrees and slanted (x shifted
    by `slant` x its height above the centre), cropped to its ink."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(canvas)
    f = _font(str(font), size)
    left, top, right, bottom = draw.textbbox((0, 0), char, font=f, stroke_width=stroke)
    x = (CANVAS - (right - left)) / 2 - left
    y = (CANVAS - (bottom - top)) / 2 - top
    draw.text((x, y), char, fill=255, font=f, stroke_width=stroke, stroke_fill=255)
    if slant:
        c = CANVAS / 2
        canvas = canvas.transform(canvas.size, Image.Transform.AFFINE, (1, slant, -slant * c, 0, 1, 0),
                                  resample=Image.Resampling.BILINEAR)  # fmt: skip
    canvas = canvas.rotate(angle, resample=Image.Resampling.BILINEAR)
    box = canvas.getbbox()
    if box is None:
        raise DataError(f"glyphs: font {font.name} draws nothing for {char!r}")
    return canvas.crop(box)


def render_glyph(char: str, font: Path, size: int, stroke: int, angle: float, shift: tuple[float, float],
                 layout: Literal["free", "centred"] = "free", slant: float = 0.0) -> np.ndarray:  # fmt: skip
    """One white-on-black 28x28 glyph: drawn at `size` px with `stroke` px of extra thickness on a
    64 px canvas, slanted, rotated by `angle` degrees, then placed (`layout`, module docstring;
    `free`: moved by `shift`, fractions of the free room on each axis in [-1, 1]) and reduced to 28 px."""
    from PIL import Image

    glyph = _drawn(char, font, size, stroke, angle, slant)
    gw, gh = glyph.size
    inner = BOX * CANVAS // SIZE
    scale = inner / max(gw, gh) if layout == "centred" else min(1.0, inner / max(gw, gh))
    if scale != 1.0:
        glyph = glyph.resize((max(1, round(gw * scale)), max(1, round(gh * scale))), Image.Resampling.LANCZOS)
        gw, gh = glyph.size
    if layout == "centred":
        ink = np.asarray(glyph, dtype=np.float64)
        rows, cols = np.indices(ink.shape)
        px = round(CANVAS / 2 - (cols * ink).sum() / ink.sum())
        py = round(CANVAS / 2 - (rows * ink).sum() / ink.sum())
    else:
        px = round((CANVAS - gw) / 2 * (1 + 0.5 * shift[0]))
        py = round((CANVAS - gh) / 2 * (1 + 0.5 * shift[1]))
    placed = Image.new("L", (CANVAS, CANVAS), 0)
    placed.paste(glyph, (px, py))
    return np.asarray(placed.resize((SIZE, SIZE), Image.Resampling.LANCZOS), dtype=np.uint8)


def render_glyphs(chars: list[str], per_class: int, seed: int, layout: Literal["free", "centred"] = "free",
                  slant: float = 0.0) -> tuple[np.ndarray, np.ndarray, list[Path]]:  # fmt: skip
    """`per_class` renderings of each of `chars`, class by class: (images uint8 (N, 28, 28), class
    indices (N,), the fonts drawn from). Slants are drawn uniformly in [-slant, slant]."""
    fonts = usable_fonts(chars)
    if len(fonts) < 2:
        raise DataError(
            f"glyphs:{''.join(chars)}: needs at least 2 fonts that draw every character; found {len(fonts)}"
        )
    rng = np.random.default_rng([seed, len(chars), per_class])
    n = len(chars) * per_class
    labels = np.repeat(np.arange(len(chars)), per_class)
    font_idx = rng.integers(0, len(fonts), n)
    sizes = rng.integers(30, 53, n)  # px on the 64 px canvas: 13 to 23 px at 28
    strokes = rng.choice([0, 0, 1, 1, 2], n)  # 2 in 5 drawn as the font is, the rest thickened
    angles = rng.uniform(-15.0, 15.0, n)
    shifts = rng.uniform(-1.0, 1.0, (n, 2))
    # drawn after the others, so the layout and slant leave the free layout's draws as they were
    slants = rng.uniform(-slant, slant, n) if slant else np.zeros(n)
    images = np.stack([
        render_glyph(chars[labels[i]], fonts[font_idx[i]], int(sizes[i]), int(strokes[i]), float(angles[i]),
                     (float(shifts[i, 0]), float(shifts[i, 1])), layout, float(slants[i]))
        for i in range(n)
    ])  # fmt: skip
    return images, labels, fonts


@dataclass
class GlyphsOptions(SourceOptions):
    per_class: int = 1000
    seed: int = 0
    layout: Literal["free", "centred"] = "free"  # the foreign sets' rendering (bench/foreign_sets.py)
    slant: float = 0.0  # at most this much x per unit of height, either way (handwriting leans)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.per_class < 1 or not 0.0 <= self.slant < 1.0:
            raise ValueError(
                f"per_class >= 1 and slant in [0, 1) expected, got {self.per_class}, {self.slant}"
            )


class GlyphsSource:
    name = "glyphs"

    def __init__(self, chars: str, options: GlyphsOptions):
        if not chars or len(set(chars)) != len(chars):
            raise DataError(f"{PREFIX}{chars}: one or more distinct characters expected after '{PREFIX}'")
        self.chars, self.options = list(chars), options
        o = options
        self.images, labels, self.fonts = render_glyphs(self.chars, o.per_class, o.seed, o.layout, o.slant)
        # shuffled, so `--limit` keeps every class
        self.order = np.random.default_rng([o.seed, 7]).permutation(len(labels))
        self.labels = labels[self.order]

    def describe(self) -> dict[str, Any]:
        o = self.options
        return {"source": self.name, "count": len(self.labels), "class_names": self.chars,
                "per_class": o.per_class, "seed": o.seed, "layout": o.layout, "slant": o.slant,
                "fonts": [str(p) for p in self.fonts]}  # fmt: skip

    def __iter__(self) -> Iterator[RawItem]:
        return limited(self._items(), self.options.limit)

    def _items(self) -> Iterator[RawItem]:
        for i, label in zip(self.order.tolist(), self.labels.tolist(), strict=True):
            yield RawItem(origin=f"glyphs[{i}]", label=self.chars[label], array=self.images[i])


class GlyphsFactory:
    def matches(self, spec: str) -> bool:
        return spec.startswith(PREFIX)

    def open(self, spec: str, **options: Any) -> GlyphsSource:
        chars, _, query = spec[len(PREFIX) :].partition("?")
        try:
            # values read as YAML scalars: per_class=500 is a number, layout=free a name
            given = {k: yaml.safe_load(v) for k, v in parse_qsl(query, strict_parsing=bool(query))}
            parsed = from_dict(GlyphsOptions, {**given, **options}, where=f"{spec}: glyphs source options")
        except (ConfigError, ValueError, yaml.YAMLError) as exc:
            raise DataError(
                f"{spec}: {exc} (expected glyphs:CHARS[?per_class=N&seed=S&layout=free|centred&slant=X])"
            ) from None
        return GlyphsSource(chars, parsed)


FACTORY = GlyphsFactory()  # registered as 'glyphs' by `builtin`, in matching order
