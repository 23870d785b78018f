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
scenarios on them as they are. Recipe settings are chosen on the development sets instead
(`--sets dev` builds them all), which share none of the measured sets' classes or images:

    dev-lower10     lowercase a b d e f g h k m n, rendered as the glyph sets (1,000 per class, seed + 100)
    dev-lower28     lowercase a-z without l o, and $ = < > (250 per class): many classes, few each
    dev-mixed40     lowercase a-z without l o, and 16 Greek lowercase letters unlike Latin ones
                    (250 per class): the 40-class development set
    dev-shapes8     outlined or filled shapes drawn with PIL: circle, square, triangle, cross,
                    star, ring, diamond, arrow; random size, position, rotation, stroke (1,000 per class)
    dev-mnist-warp  the MNIST test split rotated +-35 deg with strokes thinned or thickened
                    (3x3 min/max filter), white on black as MNIST: other handwriting variety
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from genforge.core.errors import DataError
from genforge.data.sources.glyphs import font_files, render_glyphs  # noqa: F401  (font_files: the tests' check)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SIZE = 28
CANVAS = 64  # shapes are drawn at this size, then reduced to 28 px (anti-aliased edges as in MNIST)

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


def glyph_set(name: str, chars: list[str], per_class: int, seed: int) -> ForeignSet:
    try:
        images, labels, fonts = render_glyphs(chars, per_class, seed)
    except DataError as exc:
        raise MissingSource(f"{name}: {exc}") from None
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


SHAPES8 = ["circle", "square", "triangle", "cross", "star", "ring", "diamond", "arrow"]


def _shape_points(kind: str, rng: np.random.Generator) -> list[tuple[float, float]]:
    """The outline of a unit-size `kind` around the origin (a polygon's corners)."""
    if kind in ("circle", "ring"):
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        squash = rng.uniform(0.8, 1.0)
        return list(zip(np.cos(t), squash * np.sin(t), strict=True))
    if kind == "star":
        t = np.linspace(0, 2 * np.pi, 10, endpoint=False)
        r = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.35, 0.55))
        return list(zip(r * np.sin(t), -r * np.cos(t), strict=True))
    w = rng.uniform(0.25, 0.4)  # arm width of the cross and the arrow
    polygons = {
        "square": [(-1, -1), (1, -1), (1, 1), (-1, 1)],
        "triangle": [(0, -1), (1, 0.8), (-1, 0.8)],
        "diamond": [(0, -1), (0.7, 0), (0, 1), (-0.7, 0)],
        "cross": [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w),
                  (-1, -w), (-w, -w)],
        "arrow": [(-1, -w), (0.1, -w), (0.1, -0.8), (1, 0), (0.1, 0.8), (0.1, w), (-1, w)],
    }  # fmt: skip
    return [(float(x), float(y)) for x, y in polygons[kind]]


def shape_set(name: str, per_class: int, seed: int) -> ForeignSet:
    rng = np.random.default_rng([seed, 200, per_class])
    labels = np.repeat(np.arange(len(SHAPES8)), per_class)
    images = []
    for k in labels:
        kind = SHAPES8[k]
        pts = np.asarray(_shape_points(kind, rng))
        angle = rng.uniform(-np.pi, np.pi) if kind in ("arrow", "star") else rng.uniform(-0.3, 0.3)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        scale = rng.uniform(12, 24)  # half-size in px of the 64 px canvas
        centre = CANVAS / 2 + rng.uniform(-1, 1, 2) * (CANVAS / 2 - scale - 4)
        xy = [tuple(p) for p in (pts * scale) @ rot.T + centre]
        canvas = Image.new("L", (CANVAS, CANVAS), 0)
        draw = ImageDraw.Draw(canvas)
        filled = kind != "ring" and rng.random() < 0.5
        draw.polygon(xy, fill=255 if filled else None, outline=255, width=int(rng.integers(3, 8)))
        images.append(np.asarray(canvas.resize((SIZE, SIZE), Image.Resampling.LANCZOS), dtype=np.uint8))
    meta = {"source": "shapes drawn with PIL", "render": "half-size 12-24 px on a 64 px canvas, outline 3-7 px "
            "or filled, random placement and rotation, -> 28 px"}  # fmt: skip
    return _finish(name, np.stack(images), np.asarray(SHAPES8)[labels], list(SHAPES8), seed, meta)


def mnist_warp(seed: int, shared: Path = SHARED) -> ForeignSet:
    from PIL import ImageFilter

    fs = mnist_inverted(seed, shared)  # the same split and checks; undone below
    rng = np.random.default_rng([seed, 300])
    filters = [None, ImageFilter.MinFilter(3), ImageFilter.MaxFilter(3)]
    out = []
    for img in 255 - fs.images:
        pil = Image.fromarray(img).resize((CANVAS, CANVAS), Image.Resampling.BILINEAR)
        f = filters[int(rng.integers(0, 3))]
        pil = pil.filter(f) if f is not None else pil
        pil = pil.rotate(float(rng.uniform(-35, 35)), resample=Image.Resampling.BILINEAR)
        out.append(np.asarray(pil.resize((SIZE, SIZE), Image.Resampling.LANCZOS), dtype=np.uint8))
    meta = {**{k: fs.meta[k] for k in ("source", "split")},
            "conversion": "rotated +-35 deg, 3x3 min/max filter (thinner/thicker) at 64 px, -> 28 px"}  # fmt: skip
    return _finish("dev-mnist-warp", np.stack(out), fs.labels, fs.class_names, seed, meta)


LOWER10 = list("abdefghkmn")
LOWER28 = list("abcdefghijkmnpqrstuvwxyz$=<>")
# Greek letters whose lowercase shapes no Latin letter shares (no omicron, nu, iota, kappa, rho, ...)
MIXED40 = [c for c in LOWER28 if c.isalpha()] + list("αβγδζηθλμξπσφχψω")

# development sets: recipe settings are chosen on these, never on BUILDERS'
DEV_BUILDERS: dict[str, Callable[[int], ForeignSet]] = {
    "dev-lower10": lambda seed: glyph_set("dev-lower10", LOWER10, 1000, seed + 100),
    "dev-lower28": lambda seed: glyph_set("dev-lower28", LOWER28, 250, seed + 100),
    "dev-mixed40": lambda seed: glyph_set("dev-mixed40", MIXED40, 250, seed + 100),
    "dev-shapes8": lambda seed: shape_set("dev-shapes8", 1000, seed),
    "dev-mnist-warp": mnist_warp,
}

BUILDERS: dict[str, Callable[[int], ForeignSet]] = {
    "glyphs10": lambda seed: glyph_set("glyphs10", LETTERS10, 1000, seed),
    "cifar10-gray": cifar_gray,
    "mnist-inverted": mnist_inverted,
    "glyphs3": lambda seed: glyph_set("glyphs3", SYMBOLS3, 1000, seed),
    "glyphs40": lambda seed: glyph_set("glyphs40", CLASSES40, 250, seed),
}


def build(name: str, seed: int = 0) -> ForeignSet:
    builders = {**BUILDERS, **DEV_BUILDERS}
    if name not in builders:
        raise KeyError(f"unknown foreign set {name!r}; known: {', '.join(builders)}")
    return builders[name](seed)


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
    ap.add_argument("--sets", default=",".join(BUILDERS),
                    help=f"comma-separated, of {', '.join([*BUILDERS, *DEV_BUILDERS])}; dev: every dev- set")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    status = 0
    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    for name in [n for s in names for n in (DEV_BUILDERS if s == "dev" else [s])]:
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
