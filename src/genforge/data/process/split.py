"""Splits: the source's train/val/test names, and a validation split carved off train.

The carve is stratified by class and seeded, and it moves whole duplicate groups, so that
carving never itself creates train/val leakage.
"""

from __future__ import annotations

import numpy as np

from genforge.core.errors import DataError

SPLITS = ("train", "val", "test")
ALIASES = {
    None: "train",
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
DEFAULT_VAL_FRACTION = 0.1


def in_order(names) -> list[str]:
    """Split names as train, val, test (then any others by name): the order images are listed in."""
    return sorted(names, key=lambda s: (SPLITS.index(s) if s in SPLITS else len(SPLITS), s))


def split_name(name: str | None, origin: str) -> str:
    try:
        return ALIASES[name.lower() if isinstance(name, str) else name]
    except KeyError:
        raise DataError(f"{origin}: unknown split {name!r}; expected one of {', '.join(SPLITS)}") from None


def val_fraction(requested: float | None, present: set[str]) -> tuple[float, str | None]:
    """The fraction of train to carve as val, and a note when a request is not followed.

    With a source test split and no explicit request nothing is carved: train keeps exactly
    the source's images and test is the held-out split.
    """
    if "val" in present:
        note = "the source has a val split; --val-fraction ignored" if requested else None
        return 0.0, note
    if requested is not None:
        return requested, None
    return (0.0 if "test" in present else DEFAULT_VAL_FRACTION), None


MAX_NEAR_GROUP = 8


def carve_units(component: np.ndarray, content_hashes: list[str], max_near: int = MAX_NEAR_GROUP) -> np.ndarray:
    """The unit each image moves with when val is carved: its duplicate component, except that a
    near-duplicate component larger than `max_near` (near-duplicate links chain, e.g. MNIST's many
    similar 1s) falls back to exact-copy groups, so carving cannot unbalance a class."""
    component = np.asarray(component)
    _, exact = np.unique(np.asarray(content_hashes), return_inverse=True)
    _, inverse, sizes = np.unique(component, return_inverse=True, return_counts=True)
    big = sizes[inverse] > max_near
    # exact ids are offset past the component ids so the two kinds of unit never collide
    return np.where(big, exact + component.max() + 1, component)


def carve(labels: np.ndarray, units: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the train images that move to val.

    labels: class id per train image (-1 unlabelled, its own stratum); units: duplicate
    component per image (a unit moves whole). Per class, shuffled units are taken until the
    class's share reaches round(fraction * class size).
    """
    labels, units = np.asarray(labels), np.asarray(units)
    moved = np.zeros(len(labels), bool)
    if fraction <= 0 or not len(labels):
        return moved
    rng = np.random.default_rng(seed)
    uniq_units, first, inverse, sizes = np.unique(
        units, return_index=True, return_inverse=True, return_counts=True
    )
    unit_class = labels[first]  # a unit counts for the class of its first image
    chosen = np.zeros(len(uniq_units), bool)
    for cls in np.unique(unit_class):
        cand = np.flatnonzero(unit_class == cls)
        target = round(fraction * sizes[cand].sum())
        cand = cand[rng.permutation(len(cand))]
        taken = np.cumsum(sizes[cand])
        # units before the running total first reaches the target
        chosen[cand[: int(np.searchsorted(taken, target)) + 1 if target else 0]] = True
    moved[:] = chosen[inverse]
    return moved
