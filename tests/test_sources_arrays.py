"""The .npy/.npz source: layouts, value ranges, key detection and its error messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genforge.core.errors import ConfigError, DataError
from genforge.data.sources.arrays import ArraysSource
from genforge.data.sources.base import resolve_source

RNG = np.random.default_rng(1)
NHWC = RNG.integers(0, 256, (5, 4, 6, 3), dtype=np.uint8)
LABELS = np.array([0, 2, 1, 2, 10])


def stack(path: Path, **options) -> tuple[np.ndarray, list]:
    items = list(resolve_source(str(path), **options))
    return np.stack([i.array for i in items]), items


def test_npy_nhwc_uint8_and_nhw(tmp_path: Path):
    np.save(tmp_path / "a.npy", NHWC)
    got, items = stack(tmp_path / "a.npy")
    assert got.dtype == np.uint8 and np.array_equal(got, NHWC)
    assert items[3].origin == f"{tmp_path / 'a.npy'}[3]" and items[0].label is None and items[0].split is None
    np.save(tmp_path / "g.npy", NHWC[..., 0])
    assert np.array_equal(stack(tmp_path / "g.npy")[0], NHWC[..., 0])


def test_nchw_float_unit_range_with_labels(tmp_path: Path):
    floats = NHWC.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    np.savez(tmp_path / "b.npz", x=floats, y=LABELS)
    source = resolve_source(str(tmp_path / "b.npz"))
    assert isinstance(source, ArraysSource)
    got, items = stack(tmp_path / "b.npz")
    assert np.array_equal(got, NHWC)  # back to NHWC, x255 and rounded
    assert [i.label for i in items] == ["0", "2", "1", "2", "10"]
    assert source.class_names == ["0", "1", "2", "10"]


def test_float_0_255_range_is_decided_for_the_whole_array(tmp_path: Path):
    dark = np.zeros((2, 2, 2), np.float64)
    dark[1] = 200.0
    dark[0, 0, 0] = 0.6  # a dark first image must not be read as [0,1]
    np.save(tmp_path / "d.npy", dark)
    got, _ = stack(tmp_path / "d.npy")
    assert got[0, 0, 0] == 1 and got[1, 0, 0] == 200
    got, _ = stack(tmp_path / "d.npy", value_range="0-255")
    assert got[0, 0, 0] == 1
    with pytest.raises(DataError, match=r"pixel values span \[0.0, 200.0\], expected \[0,1\] or \[0,255\]"):
        resolve_source(str(tmp_path / "d.npy"), value_range="0-1")


def test_keras_style_splits(tmp_path: Path):
    np.savez(
        tmp_path / "mnist.npz",
        x_train=NHWC[:3, ..., 0],
        y_train=LABELS[:3],
        x_test=NHWC[3:, ..., 0],
        y_test=LABELS[3:],
    )
    _, items = stack(tmp_path / "mnist.npz")
    assert [(i.split, i.label) for i in items] == [
        ("test", "2"),
        ("test", "10"),
        ("train", "0"),
        ("train", "2"),
        ("train", "1"),
    ]
    assert items[0].origin.endswith("mnist.npz::x_test[0]")
    described = json.loads(json.dumps(resolve_source(str(tmp_path / "mnist.npz")).describe()))
    assert [(a["images"], a["labels"], a["split"], a["count"], a["layout"]) for a in described["arrays"]] == [
        ("x_test", "y_test", "test", 2, "NHW"),
        ("x_train", "y_train", "train", 3, "NHW"),
    ]


def test_positional_savez_and_one_hot(tmp_path: Path):
    np.savez(tmp_path / "p.npz", NHWC, LABELS)
    assert [i.label for i in resolve_source(str(tmp_path / "p.npz"))] == ["0", "2", "1", "2", "10"]
    np.savez(tmp_path / "q.npz", NHWC, NHWC)  # a second positional array that is not a label column
    assert [i.label for i in resolve_source(str(tmp_path / "q.npz"))] == [None] * 5
    np.savez(tmp_path / "h.npz", images=NHWC, labels=np.eye(11, dtype=np.uint8)[LABELS])
    assert [i.label for i in resolve_source(str(tmp_path / "h.npz"))] == ["0", "2", "1", "2", "10"]


def test_explicit_keys_and_string_labels(tmp_path: Path):
    np.savez(
        tmp_path / "e.npz",
        pics=NHWC,
        masks=NHWC[..., 0],
        kinds=np.array([b"cat", b"dog", b"cat", b"emu", b"dog"]),
        other=np.ones(3),
    )
    with pytest.raises(
        DataError, match=r"cannot tell which array holds the images; arrays found: pics \(5, 4, 6, 3\)"
    ):
        resolve_source(str(tmp_path / "e.npz"))
    source = resolve_source(str(tmp_path / "e.npz"), images_key="pics", labels_key="kinds")
    assert [i.label for i in source] == ["cat", "dog", "cat", "emu", "dog"]
    assert source.class_names == ["cat", "dog", "emu"]
    with pytest.raises(DataError, match="no array 'nope'"):
        resolve_source(str(tmp_path / "e.npz"), images_key="nope")


def test_ambiguous_keys_list_what_was_found(tmp_path: Path):
    np.savez(tmp_path / "amb.npz", images=NHWC, x=NHWC)
    with pytest.raises(
        DataError, match=r"ambiguous arrays images, x .*arrays found: images \(5, 4, 6, 3\), x \(5, 4, 6, 3\)"
    ):
        resolve_source(str(tmp_path / "amb.npz"))


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((2, 5, 5, 5), np.uint8), None, "cannot tell the layout"),
        (np.full((2, 3, 3), -1.0), None, r"pixel values span \[-1.0, -1.0\]"),
        (np.full((2, 3, 3), 300, np.int32), None, "expected \\[0,255\\]"),
        (np.full((2, 3, 3), np.nan), None, "NaN"),
        (np.zeros((2, 3, 3), np.uint8), np.zeros(3), "expected 2 labels"),
        (np.zeros((2, 3, 3), np.uint8), np.array([0.5, 1.0]), "whole numbers"),
    ],
)
def test_bad_arrays(tmp_path: Path, images, labels, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **({"images": images} | ({"labels": labels} if labels is not None else {})))
    with pytest.raises(DataError, match=message) as info:
        resolve_source(str(path))
    assert str(path) in str(info.value)


def test_unreadable_and_option_errors(tmp_path: Path):
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="junk.npz: not a readable .npy/.npz file"):
        resolve_source(str(tmp_path / "junk.npz"))
    with pytest.raises(DataError, match="no such file"):
        resolve_source(str(tmp_path / "missing.npy"))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="obj.npy"):
        resolve_source(str(tmp_path / "obj.npy"))
    np.save(tmp_path / "ok.npy", NHWC)
    with pytest.raises(ConfigError, match="layout"):
        resolve_source(str(tmp_path / "ok.npy"), layout="HWC")
    got, _ = stack(tmp_path / "ok.npy", layout="NCHW")  # forced: (5,4,6,3) read as C=4, H=6, W=3
    assert got.shape == (5, 6, 3, 4) and np.array_equal(got, NHWC.transpose(0, 2, 3, 1))
