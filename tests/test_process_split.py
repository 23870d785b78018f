"""Split names, the val-fraction policy and the stratified, group-aware val carve."""

from __future__ import annotations

import numpy as np
import pytest

from genforge.core.errors import DataError
from genforge.data.process.split import carve, carve_units, split_name, val_fraction


def test_split_names_and_aliases():
    assert split_name(None, "x") == "train"
    assert split_name("Validation", "x") == "val" and split_name("testing", "x") == "test"
    with pytest.raises(DataError, match="holdout.*expected one of train, val, test"):
        split_name("holdout", "a/b.png")


def test_val_fraction_policy():
    assert val_fraction(None, {"train"}) == (0.1, None)
    assert val_fraction(None, {"train", "test"}) == (0.0, None)  # train keeps the source's images
    assert val_fraction(0.2, {"train", "test"}) == (0.2, None)
    fraction, note = val_fraction(0.2, {"train", "val"})
    assert fraction == 0.0 and "val split" in note
    assert val_fraction(None, {"train", "val"}) == (0.0, None)


def test_carve_is_stratified_seeded_and_exact_per_class():
    labels = np.repeat(np.arange(4), [100, 50, 30, 7])
    units = np.arange(len(labels))
    moved = carve(labels, units, 0.2, seed=3)
    per_class = np.bincount(labels[moved], minlength=4)
    assert per_class.tolist() == [20, 10, 6, 1]
    assert np.array_equal(moved, carve(labels, units, 0.2, seed=3))
    assert not np.array_equal(moved, carve(labels, units, 0.2, seed=4))
    assert not carve(labels, units, 0.0, seed=3).any()


def test_carve_moves_duplicate_groups_whole():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 600)
    units = np.arange(600)
    units[1::2] = units[::2]  # pairs of duplicates: (0,1), (2,3), ...
    for seed in range(5):
        moved = carve(labels, units, 0.25, seed=seed)
        assert np.array_equal(moved[::2], moved[1::2])
        assert abs(moved.sum() - 150) <= 6  # whole units overshoot by at most one unit per class
    unlabelled = carve(np.full(40, -1), np.arange(40), 0.5, seed=0)
    assert unlabelled.sum() == 20


def test_chained_near_duplicate_components_do_not_move_whole():
    # 30 images of one class chained into one near-duplicate component: carving half of the
    # class must still be possible, while a small component (2 exact copies) moves whole
    component = np.array([0] * 30 + [1, 1] + list(range(2, 10)))
    hashes = [f"h{i}" for i in range(30)] + ["same", "same"] + [f"x{i}" for i in range(8)]
    units = carve_units(component, hashes)
    assert len(np.unique(units[:30])) == 30  # the big component fell back to exact groups
    assert units[30] == units[31]
    labels = np.array([0] * 30 + [1] * 10)
    moved = carve(labels, units, 0.5, seed=0)
    assert moved[:30].sum() == 15
    assert moved[30] == moved[31]
