"""Train/val splits of text documents.

- `position`: the text is cut at a character position, train before it and val after, exactly
  as nanoGPT's `shakespeare_char/prepare.py` does for one file (`data[:int(n*0.9)]` train, the
  rest val): the usual split of a single long text, whose "documents" do not exist.
  Over several documents, the cut falls in their concatenation and the one document it crosses
  is cut in two.
- `document`: whole documents move to val, chosen by a seeded shuffle (at least one when there
  are two or more), duplicate groups kept together (`data.process.split.carve`).
- `auto`: position for a source of one document, document otherwise.
A source's own val/test documents stay where they are (`data.process.split.val_fraction`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from genforge.core.errors import DataError
from genforge.data.process.split import carve, in_order, val_fraction
from genforge.data.text.canonical import TextDoc


@dataclass
class SplitPlan:
    splits: dict[str, list[TextDoc]]
    method: str  # "position" | "document" | "source"
    notes: list[str] = field(default_factory=list)


def position_cut(docs: list[TextDoc], fraction: float, separator: str) -> tuple[list[TextDoc], list[TextDoc]]:
    """(train, val) cut at int(n * (1 - fraction)) characters of the documents joined by
    `separator` (n their joined length)."""
    n = sum(len(d.text) for d in docs) + len(separator) * max(len(docs) - 1, 0)
    cut = int(n * (1 - fraction))
    train: list[TextDoc] = []
    val: list[TextDoc] = []
    pos = 0
    for doc in docs:
        end = pos + len(doc.text)
        if end <= cut:
            train.append(doc)
        elif pos >= cut:
            val.append(doc)
        else:
            k = cut - pos
            train.append(TextDoc(f"{doc.origin}[:{k}]", doc.text[:k], meta={**doc.meta, "cut": [0, k]}))
            val.append(
                TextDoc(f"{doc.origin}[{k}:]", doc.text[k:], meta={**doc.meta, "cut": [k, len(doc.text)]})
            )
        pos = end + len(separator)
    return train, [d for d in val if d.text]


def document_carve(
    docs: list[TextDoc], fraction: float, seed: int, units: np.ndarray | None = None
) -> np.ndarray:
    """Boolean mask of the documents that move to val."""
    n = len(docs)
    if fraction <= 0 or n < 2:
        return np.zeros(n, bool)
    units = np.arange(n) if units is None else np.asarray(units)
    # at least one document: a 0.1 share of 3 documents rounds to none
    return carve(np.full(n, -1), units, max(fraction, 1.0 / n), seed)


def plan_splits(
    docs: list[TextDoc],
    source_splits: list[str],
    method: str,
    requested_fraction: float | None,
    seed: int,
    separator: str,
    units: np.ndarray | None = None,
) -> SplitPlan:
    """Assign `docs` (with their source split names, train where the source gave none) to splits."""
    present = set(source_splits)
    notes: list[str] = []
    if "train" not in present:
        if len(present) > 1:
            raise DataError(f"the source has {' and '.join(sorted(present))} documents but none for train")
        # a source with one split only (an HF data set's "test") is the data to train on
        only = next(iter(present), "train")
        source_splits = ["train"] * len(source_splits)
        present = {"train"}
        notes.append(f"the source has only a {only!r} split: used as train")
    fraction, note = val_fraction(requested_fraction, present)
    notes += [note] if note else []
    if method == "auto":
        method = "position" if len(docs) == 1 else "document"
    by_split: dict[str, list[int]] = {}
    for i, s in enumerate(source_splits):
        by_split.setdefault(s, []).append(i)
    out: dict[str, list[TextDoc]] = {s: [docs[i] for i in idx] for s, idx in by_split.items() if s != "train"}
    train_idx = by_split.get("train", [])
    train_docs = [docs[i] for i in train_idx]
    if fraction <= 0 or not train_docs:
        out["train"] = train_docs
        used = "source" if len(present) > 1 else method
    elif method == "position":
        out["train"], out["val"] = position_cut(train_docs, fraction, separator)
        notes.append(
            f"val is the last {fraction:g} of the characters (position split, as nanoGPT's prepare.py)"
        )
        used = "position"
    elif len(train_docs) < 2:
        raise DataError(
            f"one train document cannot be split into train and val by document; "
            f"pass --split-by position (val = its last {fraction:g} of characters) or add documents"
        )
    else:
        sub_units = None if units is None else np.asarray(units)[train_idx]
        moved = document_carve(train_docs, fraction, seed, sub_units)
        out["train"] = [d for d, m in zip(train_docs, moved, strict=True) if not m]
        out["val"] = [d for d, m in zip(train_docs, moved, strict=True) if m]
        notes.append(
            f"carved {int(moved.sum())} of {len(train_docs)} train documents as val "
            f"(fraction {fraction:g}, seed {seed}, duplicate groups kept together)"
        )
        used = "document"
    splits = {s: out[s] for s in in_order(out) if out[s]}
    return SplitPlan(splits, used, notes)
