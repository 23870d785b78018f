"""Test sets the image scenarios were not tuned on (issue 14, section 1).

    .venv/bin/python bench/foreign_sets.py --out work/foreign [--sets glyphs10,mnist-inverted] [--seed 0]

Each set is 28x28 grayscale, written as `NAME.npz` (`images` uint8 (N,28,28), `labels` class
names) that `genforge data ingest` / `genforge run --data NAME.npz` read (the `arrays` source),
beside `NAME.json` (what it is, its classes, counts, seed, the fonts or files it came from and
a SHA-256 of its arrays). Items are shuffled with the seed, so a scenario's `limit:` keeps
every class. Every set is deterministic for a seed on one machine (the glyph sets also depend on
the fonts installed: they are listed in the JSON).

    glyphs10        letters A-J rendered from every font on the machine: random font, size,
                    stroke, rotation and placement (1,000 per class)
    glyphs3         three symbols # & ? rendered the same way (1,000 per class)
    glyphs40        A-Z, 2-9 and # & ? @ % + (250 per class): many classes, few images each
    cifar10-gray    the CIFAR-10 test split (../shared/data/cifar10) in luma, 32 -> 28 px
    mnist-inverted  the MNIST test split (../shared/data/mnist-test), dark digits on white

The sets are for measuring, never for tuning: bench/scenario_generalisation.py runs the shipped
scenarios on them as they are.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SIZE = 28
CANVAS = 64  # glyphs are drawn at this size, then reduced to 28 px (anti-aliased edges as in MNIST)
FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))

LETTERS10 = list("ABCDEFGHIJ")
SYMBOLS3 = list("#&?")
# 0/1 are left out: in many fonts they are O/I drawn again
CLASSES40 = [chr(c) for c in range(ord("A"), ord("Z") + 1)] + list("23456789") + list("#&?@%+")


class MissingSource(FileNotFoundError):
    """The data a set is built from is absent (shared data not mounted, no fonts)."""


@dataclass
class ForeignSet:
    name: str
    images: np.ndarray  # uint8 (N, 28, 28)
    labels: np.ndarray  # str (N,) class names
    class_names: list[str]
    meta: dict

    def digest(self) -> str:
        h = hashlib.sha256(self.images.tobytes())
        h.update("\n".join(self.labels.tolist()).encode())
        return h.hexdigest()


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
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _usable_fonts(chars: list[str]) -> list[Path]:
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


def render_glyph(
    char: str, font: Path, size: int, stroke: int, angle: float, shift: tuple[float, float]
) -> np.ndarray:
    """One white-on-black 28x28 glyph: drawn at `size` px with `stroke` px of extra thickness on a
    64 px canvas, rotated by `angle` degrees, moved by `shift` (fractions of the free room on each
    axis, in [-1, 1]), reduced to 28 px."""
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(canvas)
    f = _font(str(font), size)
    left, top, right, bottom = draw.textbbox((0, 0), char, font=f, stroke_width=stroke)
    w, h = right - left, bottom - top
    x = (CANVAS - w) / 2 - left
    y = (CANVAS - h) / 2 - top
    draw.text((x, y), char, fill=255, font=f, stroke_width=stroke, stroke_fill=255)
    canvas = canvas.rotate(angle, resample=Image.Resampling.BILINEAR)
    box = canvas.getbbox()
    if box is None:
        raise ValueError(f"{font.name} draws nothing for {char!r}")
    # crop to the glyph, then place it at a random position in a 4 px-margin box, as MNIST digits
    # sit in a 20 px box of the 28 px frame
    glyph = canvas.crop(box)
    gw, gh = glyph.size
    inner = 20 * CANVAS // SIZE
    scale = min(1.0, inner / max(gw, gh))
    if scale < 1.0:
        glyph = glyph.resize((max(1, round(gw * scale)), max(1, round(gh * scale))), Image.Resampling.LANCZOS)
        gw, gh = glyph.size
    room_x, room_y = CANVAS - gw, CANVAS - gh
    px = round(room_x / 2 * (1 + 0.5 * shift[0]))
    py = round(room_y / 2 * (1 + 0.5 * shift[1]))
    placed = Image.new("L", (CANVAS, CANVAS), 0)
    placed.paste(glyph, (px, py))
    return np.asarray(placed.resize((SIZE, SIZE), Image.Resampling.LANCZOS), dtype=np.uint8)


def glyph_set(name: str, chars: list[str], per_class: int, seed: int) -> ForeignSet:
    fonts = _usable_fonts(chars)
    if len(fonts) < 2:
        raise MissingSource(
            f"{name}: needs at least 2 fonts that draw {''.join(chars)!r}; found {len(fonts)}"
        )
    rng = np.random.default_rng([seed, len(chars), per_class])
    n = len(chars) * per_class
    labels = np.repeat(np.arange(len(chars)), per_class)
    font_idx = rng.integers(0, len(fonts), n)
    sizes = rng.integers(30, 53, n)  # px on the 64 px canvas: 13 to 23 px at 28
    strokes = rng.choice([0, 0, 1, 1, 2], n)  # 2 in 5 drawn as the font is, the rest thickened
    angles = rng.uniform(-15.0, 15.0, n)
    shifts = rng.uniform(-1.0, 1.0, (n, 2))
    images = np.stack([
        render_glyph(chars[labels[i]], fonts[font_idx[i]], int(sizes[i]), int(strokes[i]), float(angles[i]),
                     (float(shifts[i, 0]), float(shifts[i, 1])))
        for i in range(n)
    ])  # fmt: skip
    meta = {
        "source": "glyphs rendered with PIL",
        "fonts": [str(p) for p in fonts],
        "render": "size 30-52 px on a 64 px canvas, stroke 0-2 px, rotation +-15 deg, random placement, -> 28 px",
    }
    return _finish(name, images, np.asarray(chars)[labels], list(chars), seed, meta)


def cifar_gray(seed: int, shared: Path = SHARED) -> ForeignSet:
    archive = shared / "cifar10" / "cifar10-jpg.tar.gz"
    if not archive.is_file():
        raise MissingSource(f"cifar10-gray: {archive} is absent (see shared/data/README.md)")
    images, labels = [], []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] != "test":
                continue
            data = tar.extractfile(member)
            assert data is not None
            with Image.open(data) as img:
                # ITU-R BT.601 luma, as `genforge data ingest --channels 1` converts
                gray = img.convert("L").resize((SIZE, SIZE), Image.Resampling.BILINEAR, reducing_gap=None)
            images.append(np.asarray(gray, dtype=np.uint8))
            labels.append(parts[1])
    if not images:
        raise MissingSource(f"cifar10-gray: no test/<class>/*.jpg in {archive}")
    # the archive's order is the tar's; sort so the set does not depend on how it was packed
    order = np.lexsort((np.arange(len(labels)), np.asarray(labels)))
    labels_arr = np.asarray(labels)[order]
    meta = {
        "source": str(archive),
        "split": "test",
        "conversion": "luma (PIL convert L), bilinear 32 -> 28 px",
    }
    return _finish("cifar10-gray", np.stack(images)[order], labels_arr, sorted(set(labels)), seed, meta)


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def mnist_inverted(seed: int, shared: Path = SHARED) -> ForeignSet:
    folder = shared / "mnist-test"
    files = folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz"
    if not all(p.is_file() for p in files):
        raise MissingSource(f"mnist-inverted: the MNIST test split is absent from {folder}")
    images, labels = read_idx(files[0]), read_idx(files[1])
    meta = {"source": str(folder), "split": "test", "conversion": "255 - pixel (dark digits on white)"}
    names = np.asarray([str(int(v)) for v in labels])
    return _finish("mnist-inverted", 255 - images, names, [str(d) for d in range(10)], seed, meta)


def _finish(name: str, images: np.ndarray, labels: np.ndarray, class_names: list[str], seed: int,
            meta: dict) -> ForeignSet:  # fmt: skip
    order = np.random.default_rng([seed, 7]).permutation(len(images))
    images, labels = np.ascontiguousarray(images[order]), labels[order]
    counts = {c: int((labels == c).sum()) for c in class_names}
    meta = {"name": name, "seed": seed, "count": len(images), "shape": list(images.shape[1:]),
            "num_classes": len(class_names), "class_names": class_names, "class_counts": counts, **meta}  # fmt: skip
    return ForeignSet(name, images, labels, class_names, meta)


BUILDERS: dict[str, Callable[[int], ForeignSet]] = {
    "glyphs10": lambda seed: glyph_set("glyphs10", LETTERS10, 1000, seed),
    "cifar10-gray": cifar_gray,
    "mnist-inverted": mnist_inverted,
    "glyphs3": lambda seed: glyph_set("glyphs3", SYMBOLS3, 1000, seed),
    "glyphs40": lambda seed: glyph_set("glyphs40", CLASSES40, 250, seed),
}


def build(name: str, seed: int = 0) -> ForeignSet:
    if name not in BUILDERS:
        raise KeyError(f"unknown foreign set {name!r}; known: {', '.join(BUILDERS)}")
    return BUILDERS[name](seed)


def write(fs: ForeignSet, out: Path) -> Path:
    """`out/NAME.npz` (+ `NAME.json`), each written to a temporary name and renamed."""
    from genforge.core.atomic import atomic_path, write_json

    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{fs.name}.npz"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, images=fs.images, labels=fs.labels)
    write_json(out / f"{fs.name}.json", {**fs.meta, "sha256": fs.digest()})
    return path


def ensure(name: str, out: Path, seed: int = 0) -> Path:
    """`out/NAME.npz`, built unless it is already there for this seed."""
    path, info = out / f"{name}.npz", out / f"{name}.json"
    if path.is_file() and info.is_file() and json.loads(info.read_text()).get("seed") == seed:
        return path
    return write(build(name, seed), out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for NAME.npz + NAME.json")
    ap.add_argument("--sets", default=",".join(BUILDERS), help=f"comma-separated, of {', '.join(BUILDERS)}")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    status = 0
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        t0 = time.perf_counter()
        try:
            fs = build(name, args.seed)
        except MissingSource as exc:
            print(f"skipped {name}: {exc}", file=sys.stderr)
            status = 1
            continue
        path = write(fs, args.out)
        print(f"{name}: {len(fs.images)} images, {len(fs.class_names)} classes -> {path} "
              f"({time.perf_counter() - t0:.1f}s)")  # fmt: skip
    return status


if __name__ == "__main__":
    raise SystemExit(main())
