"""`genforge data ingest`: source -> decoded, validated, deduplicated, split canonical dataset + report.

The dataset directory appears all at once (an atomic rename) with its report, or not at all; a
full disk leaves the previous dataset as it was. One process at a time writes a dataset directory
(core/lock.py).
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.atomic import atomic_dir, write_json
from genforge.core.config import save_json, to_dict
from genforge.core.errors import DataError
from genforge.core.lock import DirLock
from genforge.data.canonical import SplitData, write_dataset
from genforge.data.process.analysis import DatasetAnalysis, ImageAnalysis, duplicates_of
from genforge.data.process.config import CONFIG_FILE, PROCESS_LOG, IngestConfig
from genforge.data.process.duplicates import Duplicates
from genforge.data.process.split import SPLITS, carve, carve_units, split_name, val_fraction
from genforge.data.process.worker import BatchResult, ProcessSpec, run_batches
from genforge.data.sources.base import RawItem

# which copy of a duplicate group `drop` keeps: held-out copies first, so test stays intact
KEEP_RANK = {"test": 0, "val": 1, "train": 2}

Progress = Callable[[int, int], None]  # (items read, items quarantined)


@dataclass
class Collected:
    """What the decode pass produced: one row per good image, in source order."""

    origin: list[str] = field(default_factory=list)
    split: list[str] = field(default_factory=list)
    label: list[str | None] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    batches: list[np.ndarray] = field(default_factory=list)
    analysis: list[ImageAnalysis] = field(default_factory=list)
    quarantine: list[dict[str, str]] = field(default_factory=list)
    notes: list[dict[str, str]] = field(default_factory=list)
    read: int = 0
    source_splits: set[str] = field(default_factory=set)
    shape: tuple[int, ...] | None = None

    def add(self, items: list[RawItem], result: BatchResult) -> None:
        for pos, kind, reason in result.bad:
            self.quarantine.append({"origin": items[pos].origin, "kind": kind, "reason": reason})
        for pos, note in result.notes:
            self.notes.append({"origin": items[pos].origin, "note": note})
        for pos, image in zip(result.good, _rows(result.images), strict=True):
            self._check_shape(image.shape, items[pos].origin)
        if not result.good:
            return
        assert result.analysis is not None  # one shape, checked above
        for pos in result.good:
            item = items[pos]
            self.origin.append(item.origin)
            self.split.append(split_name(item.split, item.origin))
            self.label.append(item.label)
        self.hashes += result.hashes
        self.batches.append(result.images[0])
        self.analysis.append(result.analysis)

    def _check_shape(self, shape: tuple[int, ...], origin: str) -> None:
        if self.shape is None:
            self.shape, self._shape_origin = shape, origin
        elif shape != self.shape:
            raise DataError(
                f"images differ in size or channels: {self._shape_origin} is {_hwc(self.shape)} but {origin} "
                f"is {_hwc(shape)}; pass --size H[xW] and --channels 1|3 to bring them to one shape"
            )


def _rows(images: list[np.ndarray]) -> Iterator[np.ndarray]:
    for block in images:
        yield from block if block.ndim == 4 else [block]


def _hwc(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape[:2]) + f" with {shape[2]} channel(s)"


def _open(source: str | Iterable[RawItem]) -> Iterable[RawItem]:
    if isinstance(source, str):
        from genforge.data.sources.base import resolve_source

        return resolve_source(source)
    return source


def _describe(source: str | Iterable[RawItem], items: Iterable[RawItem]) -> dict[str, Any]:
    """The source's own description, asked after reading (streamed sources learn class names late)."""
    describe = getattr(items, "describe", None)
    described = describe() if callable(describe) else {"kind": "items"}
    return {"spec": source, **described} if isinstance(source, str) else described


def _collect(items: Iterable[RawItem], cfg: IngestConfig, progress: Progress | None) -> Collected:
    got = Collected()
    metas: deque[list[RawItem]] = deque()

    def batches() -> Iterator[list]:
        pending: list[RawItem] = []
        for item in itertools.islice(items, cfg.limit):
            got.read += 1
            got.source_splits.add(split_name(item.split, item.origin))
            if item.error is not None:
                got.quarantine.append({"origin": item.origin, "kind": "unreadable", "reason": item.error})
                continue
            pending.append(item)
            if len(pending) == cfg.batch_size:
                metas.append(pending)
                yield [(i.data, i.array) for i in pending]
                pending = []
        if pending:
            metas.append(pending)
            yield [(i.data, i.array) for i in pending]

    spec = ProcessSpec(cfg.size, cfg.channels, cfg.fit, cfg.resize_filter, cfg.background_rgb)
    for result in run_batches(batches(), spec, cfg.workers):
        got.add(metas.popleft(), result)
        if progress is not None:
            progress(got.read, len(got.quarantine))
    return got


def class_names_for(labels: list[str | None], declared: Any) -> list[str]:
    """The source's declared class order if it gives one, else numeric or alphabetical order."""
    present = {lab for lab in labels if lab is not None}
    if isinstance(declared, list) and declared:
        names = [str(n) for n in declared]
        unknown = sorted(present - set(names))
        if unknown:
            raise DataError(f"labels {unknown[:5]} are not among the source's class_names {names[:20]}")
        return names
    return sorted(present, key=lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)])


def _drop_copies(dups: Duplicates, got: Collected) -> tuple[np.ndarray, list[dict]]:
    """keep-mask and records for policy `drop`: one image per duplicate group survives."""
    keep = np.ones(len(got.split), bool)
    dropped = []
    for group in dups.groups():
        first, *rest = sorted(group.tolist(), key=lambda i: (KEEP_RANK[got.split[i]], i))
        for i in rest:
            keep[i] = False
            dropped.append(
                {
                    "origin": got.origin[i],
                    "split": got.split[i],
                    "kind": "exact" if got.hashes[i] == got.hashes[first] else "near",
                    "duplicate_of": got.origin[first],
                    "duplicate_of_split": got.split[first],
                }
            )
    return keep, dropped


def _rows_at(images: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """images[idx], as a view (no copy of a large array) when idx is one contiguous run."""
    if len(idx) and idx[-1] - idx[0] == len(idx) - 1:
        return images[idx[0] : idx[-1] + 1]
    return images[idx]


@dataclass
class IngestResult:
    path: Path
    manifest: dict[str, Any]
    report: dict[str, Any]


def ingest(
    source: str | Iterable[RawItem],
    out: str | Path,
    config: IngestConfig | None = None,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> IngestResult:
    """Decode, validate, dedupe and split `source` into the canonical dataset `out`, with its report."""
    from genforge.data.report import write_report  # the report module imports this package

    cfg = config or IngestConfig()
    items = _open(source)
    with DirLock(out), atomic_dir(out, overwrite=overwrite) as tmp:
        got = _collect(items, cfg, progress)
        description = _describe(source, items)
        if not got.origin:
            kinds = sorted({q["kind"] for q in got.quarantine})
            raise DataError(
                f"no usable images in {description.get('spec', 'the source')}: read {got.read} item(s), "
                f"quarantined {len(got.quarantine)} ({', '.join(kinds) or 'none'})"
            )
        images = np.concatenate(got.batches)
        analysis = ImageAnalysis.concat(got.analysis)
        class_names = class_names_for(got.label, description.get("class_names"))
        class_id = {name: i for i, name in enumerate(class_names)}
        labels = np.array([-1 if lab is None else class_id[lab] for lab in got.label], np.int64)
        splits = list(got.split)
        dups = duplicates_of(got.hashes, analysis, cfg.near_dup_distance, cfg.near_dup_similarity)
        keep = np.ones(len(splits), bool)
        dropped: list[dict] = []
        if cfg.dup_policy == "drop":
            keep, dropped = _drop_copies(dups, got)
        notes = list(got.notes)
        if len(got.source_splits) == 1 and "train" not in got.source_splits:
            # a source with one split only (e.g. MNIST's t10k files) is the data to train on
            only = next(iter(got.source_splits))
            splits = ["train" if s == only else s for s in splits]
            got.source_splits = {"train"}
            notes.append({"origin": "", "note": f"the source has only a {only!r} split: used as train"})
        fraction, note = val_fraction(cfg.val_fraction, got.source_splits)
        if note:
            notes.append({"origin": "", "note": note})
        train = np.flatnonzero(keep & (np.array(splits) == "train"))
        units = carve_units(dups.component[train], [got.hashes[i] for i in train])
        moved = train[carve(labels[train], units, fraction, cfg.seed)]
        for i in moved:
            splits[i] = "val"
        if len(moved):
            notes.append(
                {
                    "origin": "",
                    "note": f"carved {len(moved)} val images from train "
                    f"(fraction {fraction:g}, seed {cfg.seed}, stratified by class, duplicate groups kept together)",
                }
            )
        split_arr = np.array(splits)
        order = {s: np.flatnonzero(keep & (split_arr == s)) for s in SPLITS}
        order = {s: idx for s, idx in order.items() if len(idx)}
        data = {
            s: SplitData(
                _rows_at(images, idx), labels[idx], [got.origin[i] for i in idx], [got.hashes[i] for i in idx]
            )
            for s, idx in order.items()
        }
        counts = {
            "read": got.read,
            "quarantined": len(got.quarantine),
            "duplicates_dropped": len(dropped),
            "images": int(keep.sum()),
            "val_carved": len(moved),
            **{f"split_{s}": len(idx) for s, idx in order.items()},
        }
        meta = {
            "source": description,
            "process": to_dict(cfg),
            "resize_filter": cfg.resize_filter,
            "dup_policy": cfg.dup_policy,
            "counts": counts,
            "quarantined": len(got.quarantine),
        }
        manifest = write_dataset(tmp, data, class_names=class_names or None, meta=meta)
        save_json(cfg, tmp / CONFIG_FILE)
        write_json(tmp / PROCESS_LOG, {"quarantine": got.quarantine, "dropped": dropped, "notes": notes})
        final = np.concatenate(list(order.values()))
        facts = DatasetAnalysis(
            split=[s for s, idx in order.items() for _ in idx],
            index=np.concatenate([np.arange(len(idx)) for idx in order.values()]),
            origin=[got.origin[i] for i in final],
            label=labels[final],
            content_hash=[got.hashes[i] for i in final],
            images=analysis.take(final),
            # nothing dropped: the duplicates found above, renumbered; else the report searches again
            duplicates=dups.reordered(final) if keep.all() else None,
        )
        report = write_report(tmp, facts)
    return IngestResult(Path(out), manifest, report)
