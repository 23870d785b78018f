"""Train/val splits of audio clips.

A source's own `train/` `val/` `test/` split stays as it is (`data.process.split.val_fraction`
decides whether val is carved from train). Carving is seeded and moves whole duplicate groups
(exact and near copies never straddle train and val because of the carve itself):

- `stratified` (default): per class, as the image ingest carves (`data.process.split.carve`).
- `grouped` (`group_by: speaker`): whole values of a per-item field move, so no speaker is in
  both train and val and val measures generalisation to unseen voices; values are drawn in a
  seeded order until val holds the requested share of clips (at least one value). A value linked
  to another by a duplicate pair moves with it. Which values went where is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from genforge.core.errors import ConfigError, DataError
from genforge.data.process.duplicates import components
from genforge.data.process.split import carve, carve_units, in_order, val_fraction


@dataclass
class SplitPlan:
    splits: list[str]  # the split of each clip
    method: str  # "source" | "stratified" | "grouped"
    fraction: float  # the share of train carved as val
    notes: list[str] = field(default_factory=list)
    groups: dict[str, list[str]] | None = None  # grouped: split -> the field values in it


def _grouped_units(values: np.ndarray, component: np.ndarray) -> np.ndarray:
    """Unit of each clip: clips sharing a known value, or a duplicate component, are one unit."""
    n = len(values)
    a: list[np.ndarray] = []
    b: list[np.ndarray] = []
    for key in (np.where(values >= 0, values, -1 - np.arange(n)), component):
        order = np.argsort(key, kind="stable")
        same = key[order][1:] == key[order][:-1]
        a.append(order[1:][same])
        b.append(order[:-1][same])
    return components(n, np.concatenate(a), np.concatenate(b))


def plan_splits(
    source_splits: list[str],
    labels: np.ndarray,
    component: np.ndarray,
    hashes: list[str],
    seed: int,
    requested: float | None,
    group_by: str | None = None,
    group_ids: np.ndarray | None = None,
    group_names: list[str] | None = None,
) -> SplitPlan:
    """The split of each clip (in source order) and how it was decided."""
    splits = list(source_splits)
    present = set(splits)
    notes: list[str] = []
    if "train" not in present:
        if len(present) > 1:
            raise DataError(f"the source has {' and '.join(sorted(present))} clips but none for train")
        only = next(iter(present))
        splits = ["train"] * len(splits)
        present = {"train"}
        notes.append(f"the source has only a {only!r} split: used as train")
    fraction, note = val_fraction(requested, present)
    notes += [note] if note else []
    train = np.flatnonzero(np.array(splits) == "train")
    method = "source" if len(present) > 1 else "stratified"
    groups = None
    if group_by is not None:
        if group_ids is None or group_names is None:
            raise ConfigError(
                f"group_by {group_by!r}: the clips have no per-item field {group_by!r}; "
                f"name it in --label-pattern, e.g. '{{label}}_{{{group_by}}}_{{take}}'"
            )
        known = np.unique(group_ids[train][group_ids[train] >= 0])
        if fraction > 0 and len(known) < 2:
            raise DataError(
                f"--group-by {group_by}: train holds {len(known)} {group_by} value(s); "
                f"holding some out needs at least 2"
            )
        units = _grouped_units(group_ids[train], component[train])
        moved = carve(np.full(len(train), -1), units, fraction, seed)
        if fraction > 0 and moved.all():
            raise DataError(
                f"--group-by {group_by}: val fraction {fraction:g} would take every {group_by} "
                "out of train; lower --val-fraction"
            )
        method = "grouped" if fraction > 0 else method
    else:
        units = carve_units(component[train], [hashes[i] for i in train])
        moved = carve(labels[train], units, fraction, seed)
        method = "stratified" if fraction > 0 else method
    for i in train[moved]:
        splits[i] = "val"
    if moved.any():
        how = f"whole {group_by} values" if group_by else "stratified by class"
        notes.append(
            f"carved {int(moved.sum())} val clips from train (fraction {fraction:g}, seed {seed}, {how}, "
            "duplicate groups kept together)"
        )
    if group_by is not None:
        assert group_ids is not None and group_names is not None
        split_arr = np.array(splits)
        groups = {
            s: sorted({group_names[g] for g in group_ids[split_arr == s] if g >= 0})
            for s in in_order(set(splits))
        }
        names = list(groups)
        shared = sorted({v for a in names for b in names if a < b for v in set(groups[a]) & set(groups[b])})
        if shared:
            notes.append(
                f"{group_by} values in more than one split (the source's own splits): {', '.join(shared)}"
            )
    return SplitPlan(splits, method, fraction, notes, groups)
