"""The `glyphs:CHARS` source: characters rendered from the machine's fonts (public data)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genforge.core.errors import DataError
from genforge.data.sources.base import resolve_source
from genforge.data.sources.glyphs import font_files


@pytest.fixture(scope="module")
def fonts():
    if len(font_files()) < 2:
        pytest.skip("fewer than 2 TrueType fonts on this machine (fc-list, /usr/share/fonts)")


def _arrays(spec: str) -> tuple[np.ndarray, list[str]]:
    items = list(resolve_source(spec))
    return np.stack([i.array for i in items]), [i.label for i in items]


def test_glyphs_are_deterministic_per_seed_and_balanced(fonts):
    a, la = _arrays("glyphs:012?per_class=6&seed=1")
    b, lb = _arrays("glyphs:012?per_class=6&seed=1")
    c, _ = _arrays("glyphs:012?per_class=6&seed=2")
    assert a.shape == (18, 28, 28) and a.dtype == np.uint8
    assert np.array_equal(a, b) and la == lb
    assert not np.array_equal(a, c)
    assert {k: la.count(k) for k in "012"} == {"0": 6, "1": 6, "2": 6}
    assert len(set(la[:6])) > 1  # shuffled: a --limit keeps several classes


def test_centred_layout_places_glyphs_as_mnist(fonts):
    images, _ = _arrays("glyphs:0123456789?per_class=3&layout=centred&slant=0.3")
    ink = images.astype(np.float64)
    rows, cols = np.indices((28, 28))
    mass = ink.sum(axis=(1, 2))
    cy = (ink * rows).sum(axis=(1, 2)) / mass
    cx = (ink * cols).sum(axis=(1, 2)) / mass
    # centre of mass at the frame's centre (13.5) to within a pixel of resampling
    assert np.abs(cy - 13.5).max() < 1.0 and np.abs(cx - 13.5).max() < 1.0
    # the longer side fills the 20 px box (anti-aliased edges: +-2 px)
    on = images > 32
    extent = [max(np.ptp(np.nonzero(m)[0]), np.ptp(np.nonzero(m)[1])) + 1 for m in on]
    assert 18 <= min(extent) and max(extent) <= 22
    assert images[:, :2, :].max() < 64 and images[:, -2:, :].max() < 64  # a dark border, as MNIST


def test_ingest_reads_glyphs_with_their_class_names(fonts, tmp_path):
    from genforge.data.ingesters import ingest

    ingest(
        "glyphs:0123456789?per_class=4", tmp_path / "ds", {"size": [16, 16], "val_fraction": 0.25, "seed": 0}
    )
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["class_names"] == [str(d) for d in range(10)]
    assert manifest["image_shape"] == [16, 16, 1]
    assert manifest["source"]["source"] == "glyphs" and len(manifest["source"]["fonts"]) >= 2


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("glyphs:", "distinct characters"),
        ("glyphs:00", "distinct characters"),
        ("glyphs:01?per_class=many", "per_class"),
        ("glyphs:01?layout=diagonal", "layout"),
        ("glyphs:01?colour=red", "colour"),
    ],
)
def test_bad_specs_are_clear_errors(fonts, spec, says):
    with pytest.raises(DataError, match=says):
        resolve_source(spec)
