"""Audio as a modality of the data stage: sources, decoding, processing (mono, resampling, trim,
loudness, fixed length), duplicates, splits, the report, and the canonical audio dataset
(`AudioDataset`, registered under "audio"); the "audio" ingester is registered here."""

from __future__ import annotations

from typing import Any

from genforge.data.audio.canonical import AudioDataset, AudioSplit, AudioSplitData, write_audio_dataset
from genforge.data.ingesters import INGESTERS, Ingester, lazy, lazy_value

__all__ = ["AudioDataset", "AudioSplit", "AudioSplitData", "write_audio_dataset"]


def _summary(result: Any) -> list[str]:
    m, s = result.manifest, result.report["summary"]
    c = m["counts"]
    splits = ", ".join(f"{name} {n:,}" for name, n in s["splits"].items())
    kinds = ", ".join(f"{k} {v}" for k, v in result.report["quarantine_by_kind"].items()) or "none"
    split = m["split"]
    groups = split.get("groups") or {}
    grouped = (
        "; " + "; ".join(f"{k}: {', '.join(v)}" for k, v in groups.items()) if split.get("group_by") else ""
    )
    return [
        f"read {c['read']:,} files: {c['clips']:,} clips ({splits}), {c['quarantined']:,} quarantined ({kinds}), "
        f"{c['duplicates_dropped']:,} duplicates dropped, {c['flagged_clipping']:,} flagged for clipping",
        f"audio: {m['sample_rate']:,} Hz, {m['clip_length']:,} samples per clip, {s['seconds'] / 60:.1f} min; "
        f"{c['resampled']:,} resampled, {c['padded']:,} padded, {c['cropped']:,} cropped, "
        f"{c['peak_limited']:,} peak-limited",
        f"split: {split['method']}{grouped}; duplicates: {s['exact_duplicate_groups']:,} exact / "
        f"{s['near_duplicate_groups']:,} near groups, {s['leakage_pairs']:,} leakage pairs across splits",
    ]


def _report_summary(report: dict[str, Any]) -> str:
    s = report["summary"]
    return (
        f"{s['clips']:,} clips ({s['seconds'] / 60:.1f} min at {s['sample_rate']:,} Hz), {s['classes']} classes, "
        f"{s['speakers']} speakers, {s['quarantined']:,} quarantined, {s['flagged_clipping']:,} flagged for clipping, "
        f"{s['duplicates_dropped']:,} duplicates dropped, {s['leakage_pairs']:,} leakage pairs"
    )


INGESTERS.register(
    "audio",
    Ingester(
        claims=lazy("genforge.data.audio.sources", "claims"),
        config=lazy_value("genforge.data.audio.config", "AudioIngestConfig"),
        run=lazy("genforge.data.audio.ingest", "ingest"),
        report=lazy("genforge.data.audio.report", "write_audio_report"),
        summary=_summary,
        report_summary=_report_summary,
        owns_name=lazy("genforge.data.audio.sources", "is_audio_name"),
    ),
)
