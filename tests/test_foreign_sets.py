"""The foreign test sets of bench/foreign_sets.py: shapes, class counts, determinism, and that the
ingest reads what they write."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_bench_module():
    spec = importlib.util.spec_from_file_location("foreign_sets", REPO / "bench" / "foreign_sets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["foreign_sets"] = module
    spec.loader.exec_module(module)
    return module


fs = _load_bench_module()


@pytest.fixture(scope="module")
def fonts():
    if len(fs.font_files()) < 2:
        pytest.skip("fewer than 2 TrueType fonts on this machine (fc-list, /usr/share/fonts)")


def test_glyphs_are_seeded_deterministic_and_balanced(fonts):
    a = fs.glyph_set("t", list("ABC"), 12, seed=3)
    b = fs.glyph_set("t", list("ABC"), 12, seed=3)
    c = fs.glyph_set("t", list("ABC"), 12, seed=4)
    assert a.images.shape == (36, 28, 28) and a.images.dtype == np.uint8
    assert a.digest() == b.digest() and np.array_equal(a.labels, b.labels)
    assert a.digest() != c.digest()
    assert {k: int((a.labels == k).sum()) for k in "ABC"} == {"A": 12, "B": 12, "C": 12}
    # white glyphs on black, as MNIST: ink covers a minority of each image, the border stays dark
    ink = (a.images > 127).mean(axis=(1, 2))
    # (a thin font such as DejaVu Sans ExtraLight inks ~1.5% of the image: every glyph has some ink)
    assert 0.005 < ink.min() and 0.03 < np.median(ink) and ink.max() < 0.6
    assert a.images[:, 0, :].max() < 64 and a.images[:, -1, :].max() < 64
    # several fonts per class: the same letter is drawn differently
    same = a.images[a.labels == "A"].astype(np.int16)
    assert np.abs(same[0] - same[1]).mean() > 5


def test_shipped_glyph_sets_have_their_class_counts(fonts):
    three = fs.build("glyphs3")
    assert three.images.shape == (3000, 28, 28)
    assert three.class_names == ["#", "&", "?"] and set(three.meta["class_counts"].values()) == {1000}
    forty = fs.build("glyphs40")
    assert forty.images.shape == (10000, 28, 28) and len(forty.class_names) == 40
    assert set(np.unique(forty.labels)) == set(forty.class_names)
    assert set(forty.meta["class_counts"].values()) == {250}
    # shuffled, so a scenario's `limit:` keeps every class
    assert len(set(forty.labels[:400].tolist())) == 40


def test_mnist_inverted(mnist_test_dir):
    a = fs.mnist_inverted(0, shared=mnist_test_dir.parent)
    raw = fs.read_idx(mnist_test_dir / "t10k-images-idx3-ubyte.gz")
    assert a.images.shape == (10000, 28, 28) and len(a.class_names) == 10
    assert a.images.mean() > 200 > raw.mean() + 150  # dark digits on a white page
    assert sorted(map(bytes, 255 - a.images)) == sorted(map(bytes, raw))  # the same digits, reordered
    assert a.digest() == fs.mnist_inverted(0, shared=mnist_test_dir.parent).digest()
    assert a.digest() != fs.mnist_inverted(1, shared=mnist_test_dir.parent).digest()  # the seed orders


def test_cifar_gray(cifar_tar):
    a = fs.cifar_gray(0, shared=cifar_tar.parents[1])
    assert a.images.shape == (10000, 28, 28) and a.images.dtype == np.uint8
    assert len(a.class_names) == 10 and set(a.meta["class_counts"].values()) == {1000}
    assert "airplane" in a.class_names and 60 < a.images.mean() < 200  # natural photos, mid grey


def test_missing_shared_data_is_a_clear_error(tmp_path):
    with pytest.raises(fs.MissingSource, match="mnist-test"):
        fs.mnist_inverted(0, shared=tmp_path)
    with pytest.raises(fs.MissingSource, match="cifar10"):
        fs.cifar_gray(0, shared=tmp_path)


def test_written_set_is_ingested_as_a_labelled_dataset(fonts, tmp_path):
    from genforge.data.canonical import open_dataset
    from genforge.data.ingesters import ingest

    small = fs.glyph_set("glyphs-small", list("XYZ"), 40, seed=0)
    path = fs.write(small, tmp_path / "sets")
    assert fs.ensure("glyphs-small", tmp_path / "sets") == path  # present for this seed: not rebuilt
    ingest(str(path), tmp_path / "ds", {"val_fraction": 0.25, "seed": 0}, modality="auto")
    ds = open_dataset(tmp_path / "ds")
    assert ds.num_classes == 3 and tuple(ds.image_shape) == (28, 28, 1)
    assert len(ds.split("train")) + len(ds.split("val")) == 120


def test_dev_sets_share_no_class_with_the_measured_sets(fonts):
    # settings are chosen on the dev sets: none of their glyph classes is one the benchmark measures
    measured = set(fs.LETTERS10) | set(fs.SYMBOLS3) | set(fs.CLASSES40)
    assert not measured & (set(fs.LOWER10) | set(fs.LOWER28) | set(fs.MIXED40))
    assert not set(fs.DEV_BUILDERS) & set(fs.BUILDERS)
    assert len(fs.LOWER28) == 28 and len(set(fs.LOWER28)) == 28
    assert len(fs.MIXED40) == 40 and len(set(fs.MIXED40)) == 40


def test_the_40_class_dev_set_renders_every_class(fonts):
    # its Greek letters need fonts that draw them: every class is present, drawn and distinct
    small = fs.glyph_set("dev-mixed40", fs.MIXED40, 3, seed=100)
    assert sorted(small.meta["class_counts"]) == sorted(fs.MIXED40)
    assert set(small.meta["class_counts"].values()) == {3}
    assert (small.images > 127).mean(axis=(1, 2)).min() > 0.005
    assert len(set(map(bytes, small.images))) == len(small.images)


def test_shapes_are_seeded_balanced_and_distinct():
    a, b, c = fs.shape_set("s", 6, seed=0), fs.shape_set("s", 6, seed=0), fs.shape_set("s", 6, seed=1)
    assert a.images.shape == (48, 28, 28) and a.digest() == b.digest() != c.digest()
    assert set(a.meta["class_counts"].values()) == {6} and a.class_names == fs.SHAPES8
    ink = (a.images > 127).mean(axis=(1, 2))
    assert 0.01 < ink.min() and ink.max() < 0.8
    # the classes differ more from each other than within: mean images of circle and cross apart
    mean = {k: a.images[a.labels == k].astype(np.float32).mean(0) for k in ("circle", "cross")}
    assert np.abs(mean["circle"] - mean["cross"]).mean() > 5


def test_mnist_warp_is_white_on_black_and_not_the_inverted_set(mnist_test_dir):
    w = fs.mnist_warp(0, shared=mnist_test_dir.parent)
    inv = fs.mnist_inverted(0, shared=mnist_test_dir.parent)
    assert w.images.shape == (10000, 28, 28) and w.images.mean() < 80  # dark page, as MNIST
    assert w.meta["class_counts"] == inv.meta["class_counts"]  # the same digits, warped
    # rotated and re-stroked: no warped image is one of MNIST's as it was
    assert not set(map(bytes, w.images)) & set(map(bytes, 255 - inv.images))
