"""The data quality report: `DATASET_DIR/report.json` and a self-contained `report.html`.

Built from the written dataset (its manifest, the ingest's process log) and the per-image
analysis, so `genforge data report` on an existing dataset reproduces what ingest wrote.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.atomic import write_json, write_text
from genforge.core.errors import DataError
from genforge.data.canonical import CanonicalDataset, open_dataset
from genforge.data.process.analysis import CHUNK, DatasetAnalysis, analyse_dataset, duplicates_of
from genforge.data.process.config import PROCESS_LOG, IngestConfig
from genforge.data.process.duplicates import Duplicates, hamming, structure_similarity
from genforge.data.process.quality import (
    BLANK_STD,
    blank_images,
    channel_histogram,
    class_balance,
    far_from_class,
    pixel_statistics,
    saturated_images,
)
from genforge.data.process.split import SPLITS, in_order

REPORT_JSON, REPORT_HTML = "report.json", "report.html"
HISTOGRAM_IMAGES = 8192


def ordered_splits(dataset: CanonicalDataset) -> list[str]:
    return in_order(dataset.split_names)


def read_process_log(path: Path) -> dict[str, Any]:
    """The dataset's process log (quarantine, dropped duplicates, notes; each modality's ingest
    writes its own keys) as a dict; {} when absent or not a mapping."""
    log_path = path / PROCESS_LOG
    if not log_path.is_file():  # a dataset written by other means: nothing was quarantined by us
        return {}
    try:
        log = json.loads(log_path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{log_path}: not valid JSON ({exc})") from None
    return log if isinstance(log, dict) else {}


def _process_log(path: Path) -> dict[str, list]:
    log = read_process_log(path)
    return {k: list(log.get(k, [])) for k in ("quarantine", "dropped", "notes")}


class _Members:
    def __init__(self, facts: DatasetAnalysis):
        self.facts = facts

    def __call__(self, i: int, **extra: Any) -> dict[str, Any]:
        f = self.facts
        return {"origin": f.origin[i], "split": f.split[i], "index": int(f.index[i]), **extra}


def _histogram(dataset: CanonicalDataset) -> tuple[np.ndarray, int]:
    """Per-channel value histogram over an even sample of at most HISTOGRAM_IMAGES images
    (the exact per-channel mean/std come from every image's moments instead)."""
    total = sum(len(dataset.split(s)) for s in dataset.split_names)
    stride = max(1, -(-total // HISTOGRAM_IMAGES))
    hist = np.zeros((dataset.image_shape[-1], 256), np.int64)
    sampled = 0
    for name in dataset.split_names:
        images = dataset.split(name).images
        for start in range(0, len(images), CHUNK * stride):
            part = np.asarray(images[start : start + CHUNK * stride : stride])
            hist += channel_histogram(part)
            sampled += len(part)
    return hist, sampled


def _similarity(features: np.ndarray, i: int, j: int) -> float:
    return round(float(structure_similarity(features[[i]], features[[j]])[0]), 4)


def _leakage(dups: Duplicates, facts: DatasetAnalysis, member: _Members) -> list[dict[str, Any]]:
    """Per duplicate group spanning splits: its first image (train first) paired with each
    image of the group in another split."""
    out = []
    for group in dups.groups():
        if len({facts.split[i] for i in group}) < 2:
            continue
        anchor = min(group.tolist(), key=lambda i: (SPLITS.index(facts.split[i]), i))
        for i in group.tolist():
            if facts.split[i] == facts.split[anchor]:
                continue
            exact = facts.content_hash[i] == facts.content_hash[anchor]
            dist = int(hamming(facts.images.phash[[anchor]], facts.images.phash[[i]])[0])
            out.append(
                {"a": member(anchor), "b": member(i), "kind": "exact" if exact else "near", "distance": dist}
            )
    return out


def build_report(dataset: CanonicalDataset, facts: DatasetAnalysis | None = None) -> dict[str, Any]:
    facts = facts if facts is not None else analyse_dataset(dataset)
    manifest = dataset.manifest
    defaults = IngestConfig()
    process = dict(manifest.get("process") or {})
    max_distance = int(process.get("near_dup_distance", defaults.near_dup_distance))
    min_similarity = float(process.get("near_dup_similarity", defaults.near_dup_similarity))
    z_threshold = float(process.get("outlier_z", defaults.outlier_z))
    log = _process_log(dataset.path)
    member = _Members(facts)
    img = facts.images
    class_names = dataset.class_names
    dups = facts.duplicates or duplicates_of(facts.content_hash, img, max_distance, min_similarity)
    split_arr = np.array(facts.split)
    per_split = {
        s: class_balance(facts.label[split_arr == s], class_names) | {"total": int((split_arr == s).sum())}
        for s in ordered_splits(dataset)
    }
    far_idx, far_z = far_from_class(img.features, facts.label, z_threshold)
    leakage = _leakage(dups, facts, member)
    outliers = {
        "blank": [member(int(i), std=round(float(img.std[i]), 3)) for i in blank_images(img.std)],
        "saturated": [
            member(int(i), clipped=round(float(img.clip[i]), 4)) for i in saturated_images(img.clip)
        ],
        "far_from_class": [
            member(int(i), label=int(facts.label[i]), z=round(float(z), 3))
            for i, z in zip(far_idx, far_z, strict=True)
        ],
    }
    overall = class_balance(facts.label, class_names)
    hist, sampled = _histogram(dataset)
    return {
        "dataset": {
            "fingerprint": dataset.fingerprint,
            "image_shape": list(dataset.image_shape),
            "class_names": class_names,
            "source": manifest.get("source"),
            "counts": manifest.get("counts"),
        },
        "summary": {
            "images": len(facts.origin),
            "classes": len(class_names),
            "splits": {s: v["total"] for s, v in per_split.items()},
            "quarantined": len(log["quarantine"]),
            "duplicates_dropped": len(log["dropped"]),
            "exact_duplicate_groups": len(dups.exact),
            "near_duplicate_groups": len(dups.near),
            "leakage_pairs": len(leakage),
            "outliers": {k: len(v) for k, v in outliers.items()},
            "imbalance_ratio": overall["imbalance_ratio"],
        },
        "counts": {"overall": overall, "splits": per_split},
        "quarantine": log["quarantine"],
        "quarantine_by_kind": dict(sorted(Counter(q["kind"] for q in log["quarantine"]).items())),
        "duplicates": {
            "near_dup_distance": max_distance,
            "near_dup_similarity": min_similarity,
            "exact": [{"members": [member(i) for i in g]} for g in dups.exact],
            "near": [{"members": [member(i) for i in g]} for g in dups.near],
            "near_pairs": [
                {"a": member(i), "b": member(j), "distance": d, "similarity": _similarity(img.features, i, j)}
                for i, j, d in dups.near_pairs
            ],
            "dropped": log["dropped"],
        },
        "leakage": leakage,
        "outliers": {"z_threshold": z_threshold, "blank_std": BLANK_STD, **outliers},
        "pixel_stats": {
            "channels": pixel_statistics(img.channel_mean, img.channel_meansq),
            "histogram": hist.tolist(),
            "histogram_images": sampled,
        },
        "notes": log["notes"],
        "processing": {
            "config": process,
            "resize_filter": manifest.get("resize_filter"),
            "dup_policy": manifest.get("dup_policy"),
        },
    }


def write_report(path: str | Path, facts: DatasetAnalysis | None = None) -> dict[str, Any]:
    """(Re)write report.json and report.html of the dataset at `path`; returns the report."""
    from genforge.data.report_html import render

    dataset = open_dataset(path)
    report = build_report(dataset, facts)
    write_json(dataset.path / REPORT_JSON, report)
    write_text(dataset.path / REPORT_HTML, render(report, dataset))
    return report
