"""The data report of an audio dataset: `report.json` and a self-contained `report.html`.

Built from the written dataset (manifest, process log, per-clip stats, the clips themselves), so
`genforge data report` on an existing dataset reproduces what ingest wrote: counts per class,
per speaker and per split, duration and loudness histograms, quarantined files (with a player
where the file was playable), clips flagged for clipping, duplicates found and dropped, train/val
leakage (duplicates across the splits as written), the processing steps and, for a few clips per
class, a log-mel spectrogram and an `<audio>` player (WAV as data: URIs; PNGs likewise).
"""

from __future__ import annotations

import base64
import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.atomic import write_json, write_text
from genforge.core.errors import DataError
from genforge.data.audio.canonical import AudioDataset
from genforge.data.canonical import open_dataset
from genforge.data.process.quality import class_balance
from genforge.data.process.split import in_order
from genforge.data.report import REPORT_HTML, REPORT_JSON, read_process_log

STATS_FILE = "clip_stats.npz"  # written by ingest beside the splits
MAX_SAMPLES = 40  # clips with a player and a spectrogram in the Samples section
MAX_CHART_VALUES = 30  # per-item fields with more values get no chart (their counts are in report.json)
LOUDNESS_BIN_DB = 3.0
SPECTROGRAM_RANGE_DB = 80.0


@dataclass
class ReportFacts:
    """What ingest already computed for the clips as written (splits in order, rows in order),
    so the report does not compute it again."""

    features: np.ndarray  # duplicate fingerprints
    hashes: list[str]


def _stats(dataset: AudioDataset, split: str) -> dict[str, np.ndarray]:
    """Per-clip stats ingest saved, else what the clips themselves tell (durations after
    processing, the RMS level of their real samples)."""
    path = dataset.path / STATS_FILE
    if path.is_file():
        with np.load(path) as z:
            got = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(f"{split}/")}
        if got:
            return got
    s = dataset.split(split)
    lengths = np.maximum(s.lengths, 1)
    mean_square = np.einsum("nt,nt->n", s.audio, s.audio, dtype=np.float64) / lengths
    level = 10 * np.log10(np.maximum(mean_square, 1e-20))
    seconds = (lengths / dataset.sample_rate).astype(np.float32)
    return {
        "source_seconds": seconds,
        "trimmed_seconds": seconds,
        "input_db": level.astype(np.float32),
        "gain_db": np.zeros(len(s), np.float32),
    }


def histogram(values: dict[str, np.ndarray], width: float, lo: float | None = None) -> dict[str, Any]:
    """Counts per split over bins of `width` (edges shared by the splits)."""
    every = np.concatenate([v for v in values.values() if len(v)] or [np.zeros(1)])
    start = np.floor((every.min() if lo is None else lo) / width) * width
    stop = max(np.ceil(every.max() / width) * width, start + width)
    edges = np.arange(start, stop + width / 2, width)
    if len(edges) < 2:
        edges = np.array([start, start + width])
    return {
        "edges": [round(float(e), 3) for e in edges],
        "counts": {s: np.histogram(v, bins=edges)[0].tolist() for s, v in values.items()},
    }


def _field_counts(dataset: AudioDataset, names: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for field, values in dataset.item_fields.items():
        out[field] = {s: class_balance(dataset.split(s).field(field), values)["per_class"] for s in names}
    return out


def _leakage(
    dataset: AudioDataset, names: list[str], facts: ReportFacts | None, threshold: float
) -> list[dict]:
    """Pairs of clips in different splits that are exact copies (same samples) or near copies
    (fingerprint cosine >= threshold): evaluation on them measures memory, not generalisation."""
    from genforge.data.audio.duplicates import cross_pairs, fingerprints

    sizes = [len(dataset.split(s)) for s in names]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    if facts is None:
        audio = np.concatenate([np.asarray(dataset.split(s).audio) for s in names])
        hashes = [h for s in names for h in dataset.split(s).index["hashes"]]
        facts = ReportFacts(fingerprints(audio, dataset.sample_rate), hashes)
    origins = {s: dataset.split(s).index["origins"] for s in names}
    out = []
    for x, sa in enumerate(names):
        for y in range(x + 1, len(names)):
            sb = names[y]
            ha, hb = facts.hashes[starts[x] : starts[x + 1]], facts.hashes[starts[y] : starts[y + 1]]
            fa, fb = facts.features[starts[x] : starts[x + 1]], facts.features[starts[y] : starts[y + 1]]
            i, j, sims = cross_pairs(fa, fb, threshold)
            for a, b, c in sorted(zip(i.tolist(), j.tolist(), sims.tolist(), strict=True)):
                exact = ha[a] == hb[b]
                out.append(
                    {
                        "a": {"split": sa, "index": a, "origin": origins[sa][a]},
                        "b": {"split": sb, "index": b, "origin": origins[sb][b]},
                        "kind": "exact" if exact else "near",
                        "cosine": round(float(c), 4),
                    }
                )
    return out


def _samples(dataset: AudioDataset, per_class: int) -> list[dict[str, Any]]:
    """A few clips per class (evenly spaced in the first split), for players and spectrograms."""
    if per_class <= 0:
        return []
    name = in_order(dataset.split_names)[0]
    split = dataset.split(name)
    labels = np.asarray(split.labels)
    groups = [(n, np.flatnonzero(labels == k)) for k, n in enumerate(dataset.class_names)] or [
        ("all", np.arange(len(split)))
    ]
    out = []
    for cls, idx in groups:
        for i in idx[np.linspace(0, len(idx) - 1, min(per_class, len(idx))).astype(int)] if len(idx) else []:
            out.append(
                {"split": name, "index": int(i), "class": cls, "origin": split.index["origins"][int(i)]}
            )
    return out[:MAX_SAMPLES]


def _by_origin(dataset: AudioDataset, names: list[str], origins: list[str]) -> dict[str, dict[str, Any]]:
    wanted = set(origins)
    found = {}
    for s in names:
        for i, o in enumerate(dataset.split(s).index["origins"]):
            if o in wanted:
                found[o] = {"split": s, "index": i}
    return found


def build_audio_report(dataset: AudioDataset, facts: ReportFacts | None = None) -> dict[str, Any]:
    manifest = dataset.manifest
    log = read_process_log(dataset.path)
    config = dict(manifest.get("config") or {})
    names = in_order(dataset.split_names)
    stats = {s: _stats(dataset, s) for s in names}
    per_split = {}
    for s in names:
        split = dataset.split(s)
        balance = class_balance(np.asarray(split.labels), dataset.class_names)
        per_split[s] = {
            "total": len(split),
            "seconds": round(float(np.asarray(split.lengths).sum()) / dataset.sample_rate, 2),
            **balance,
        }
    overall = class_balance(
        np.concatenate([np.asarray(dataset.split(s).labels) for s in names]), dataset.class_names
    )
    dup_meta = dict(manifest.get("duplicates") or {})
    threshold = float(dup_meta.get("near_dup_threshold", config.get("near_dup_threshold", 0.995)))
    leakage = _leakage(dataset, names, facts, threshold)
    quarantine = list(log.get("quarantine", []))
    flagged = list(log.get("flagged", []))
    flagged_at = _by_origin(dataset, names, [f["origin"] for f in flagged])
    flagged = [{**f, **flagged_at.get(f["origin"], {})} for f in flagged]
    loudness = config.get("loudness", "rms")
    unit = "LUFS" if loudness == "lufs" else "dBFS"
    output_db = {s: stats[s]["input_db"] + stats[s]["gain_db"] for s in names}
    groups = (manifest.get("split") or {}).get("groups")
    return {
        "dataset": {
            "fingerprint": dataset.fingerprint,
            "modality": "audio",
            "sample_rate": dataset.sample_rate,
            "clip_length": dataset.clip_length,
            "clip_seconds": round(dataset.clip_length / dataset.sample_rate, 4),
            "class_names": dataset.class_names,
            "item_fields": dataset.item_fields,
            "source": manifest.get("source"),
            "counts": manifest.get("counts"),
        },
        "summary": {
            "clips": sum(v["total"] for v in per_split.values()),
            "seconds": round(sum(v["seconds"] for v in per_split.values()), 2),
            "classes": dataset.num_classes,
            "speakers": dataset.num_speakers,
            "sample_rate": dataset.sample_rate,
            "splits": {s: v["total"] for s, v in per_split.items()},
            "quarantined": len(quarantine),
            "flagged_clipping": len(flagged),
            "duplicates_dropped": len(log.get("dropped", [])),
            "exact_duplicate_groups": int(dup_meta.get("exact_groups", 0)),
            "near_duplicate_groups": int(dup_meta.get("near_groups", 0)),
            "leakage_pairs": len(leakage),
            "peak_limited": int(sum(int(np.sum(stats[s].get("peak_limited", 0))) for s in names)),
            "imbalance_ratio": overall["imbalance_ratio"],
        },
        "counts": {"overall": overall, "splits": per_split, "fields": _field_counts(dataset, names)},
        "durations": {
            "source_seconds": histogram({s: stats[s]["source_seconds"] for s in names}, 0.25, 0.0),
            "trimmed_seconds": histogram({s: stats[s]["trimmed_seconds"] for s in names}, 0.125, 0.0),
        },
        "loudness": {
            "method": loudness,
            "unit": unit,
            "target": config.get("loudness_target"),
            "input": histogram({s: stats[s]["input_db"] for s in names}, LOUDNESS_BIN_DB),
            "output": histogram({s: output_db[s] for s in names}, LOUDNESS_BIN_DB),
        },
        "quarantine": quarantine,
        "quarantine_by_kind": dict(sorted(Counter(q["kind"] for q in quarantine).items())),
        "flagged": flagged,
        "duplicates": {**dup_meta, "dropped": log.get("dropped", []), **(log.get("duplicates") or {})},
        "leakage": leakage,
        "split": {**(manifest.get("split") or {}), "groups": groups},
        "process": manifest.get("process"),
        "samples": _samples(dataset, int(config.get("report_samples", 2))),
        "notes": log.get("notes", []),
        "processing": {"config": config},
    }


# ---- HTML


def _uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


_ANCHORS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float64)
COLOURMAP = np.stack(
    [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_ANCHORS)), _ANCHORS[:, c]) for c in range(3)],
    axis=1,
).astype(np.uint8)  # viridis-like, dark = quiet


def spectrogram_pngs(clips: np.ndarray, sample_rate: int, height: int = 64, width: int = 160) -> list[bytes]:
    """Log-mel spectrograms of `clips` (K, T) as PNG bytes, in one batch (one clip at a time,
    torch's per-call overhead costs more than the arithmetic): low frequencies at the bottom, the
    top SPECTROGRAM_RANGE_DB dB of each clip mapped onto the colour map."""
    import torch
    from PIL import Image

    from genforge.audio.spectrogram import MelConfig, log_mel
    from genforge.data.audio.duplicates import mel_config

    if not len(clips):
        return []
    base = mel_config(sample_rate)
    cfg = MelConfig(
        sample_rate=sample_rate,
        n_fft=base.n_fft,
        hop_length=max(1, base.n_fft // 4),
        n_mels=min(height, base.n_fft // 2 + 1),
    )
    with torch.no_grad():
        db = log_mel(torch.from_numpy(np.array(clips, np.float32)), cfg).numpy() * (10.0 / np.log(10.0))
    top = db.max(axis=(1, 2), keepdims=True)
    scaled = np.clip((db - (top - SPECTROGRAM_RANGE_DB)) / SPECTROGRAM_RANGE_DB, 0.0, 1.0)
    out = []
    for image in COLOURMAP[(scaled[:, ::-1] * 255).astype(np.uint8)]:
        buf = io.BytesIO()
        Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR).save(
            buf, "PNG", compress_level=1
        )
        out.append(buf.getvalue())
    return out


class _Clips:
    """The clips the page shows (a player and a spectrogram each), read and drawn at once."""

    def __init__(self, dataset: AudioDataset, refs: list[dict[str, Any]]):
        keys = list(dict.fromkeys((m["split"], m["index"]) for m in refs))
        self.audio = {k: np.asarray(dataset.split(k[0]).audio[k[1]]) for k in keys}
        self.png = dict(
            zip(keys, spectrogram_pngs(np.array(list(self.audio.values())), dataset.sample_rate), strict=True)
        )
        self.rate = dataset.sample_rate

    def cell(self, m: dict[str, Any], caption: str) -> str:
        from genforge.audio.wav import encode_wav
        from genforge.data.report_html import escape, origin

        key = (m["split"], m["index"])
        wav = _uri("audio/wav", encode_wav(self.audio[key], self.rate))
        return (
            f'<div class="clip"><img src="{_uri("image/png", self.png[key])}" width="160" height="64" '
            f'alt="log-mel spectrogram"><audio controls preload="none" src="{wav}"></audio>'
            f'<div>{origin(m["origin"])}</div><div class="muted">{escape(caption)}</div></div>'
        )


def _histogram_svg(hist: dict[str, Any], unit: str, what: str) -> str:
    """Bars per bin stacked by split (inline SVG)."""
    from genforge.data.report_html import SPLIT_COLOURS, escape

    edges, counts = hist["edges"], hist["counts"]
    bins = len(edges) - 1
    if bins < 1 or not counts:
        return ""
    totals = np.sum([c for c in counts.values()], axis=0)
    top = max(int(totals.max()), 1)
    bar_w = max(12, min(40, 720 // bins))
    ht = 120
    out = [f'<svg width="{60 + bins * bar_w}" height="{ht + 34}" role="img">']
    base = np.zeros(bins)
    for split, c in counts.items():
        colour = SPLIT_COLOURS.get(split, "#888")
        for k, n in enumerate(c):
            if not n:
                continue
            h = (ht - 10) * n / top
            y = ht - (ht - 10) * base[k] / top - h
            out.append(
                f'<rect x="{40 + k * bar_w}" y="{y:.1f}" width="{bar_w - 2}" height="{h:.1f}" fill="{colour}">'
                f"<title>{escape(split)}: {n:,} clips, {edges[k]:g}–{edges[k + 1]:g} {escape(unit)}</title></rect>"
            )
        base += np.asarray(c)
    for k in range(0, bins + 1, -(-44 // bar_w)):  # a label every 44 px or more
        out.append(f'<text x="{40 + k * bar_w}" y="{ht + 14}" font-size="10" fill="#667">{edges[k]:g}</text>')
    out.append(f'<text x="40" y="{ht + 30}" font-size="11">{escape(unit)}</text></svg>')
    return "".join(out) + f'<p class="muted">{escape(what)} (stacked by split; hover a bar for its count).</p>'


def _counts_chart(names: list[str], per_split: dict[str, dict[str, int]]) -> str:
    from genforge.data.report_html import class_chart

    # the image report's chart reads class names and per-split counts from a report-shaped dict
    shaped = {
        "dataset": {"class_names": names},
        "counts": {"splits": {s: {"per_class": c} for s, c in per_split.items()}},
    }
    return class_chart(shaped)


AUDIO_CSS = ".clips{display:flex;flex-wrap:wrap;gap:10px}.clip{width:200px;font-size:11px}.clip audio{width:196px;height:32px}"


def render_audio(report: dict[str, Any], dataset: AudioDataset) -> str:
    from genforge.data.report_html import CSS, cards_html, escape, origin, split_tag, table

    d, s = report["dataset"], report["summary"]
    cards = cards_html(
        [
            ("clips", f"{s['clips']:,}", False),
            ("minutes of audio", f"{s['seconds'] / 60:.1f}", False),
            ("classes", s["classes"], False),
            ("speakers", s["speakers"], False),
            ("sample rate", f"{s['sample_rate']:,} Hz", False),
            *((f"{k} split", f"{v:,}", False) for k, v in s["splits"].items()),
            ("quarantined", s["quarantined"], s["quarantined"] > 0),
            ("flagged: clipping", s["flagged_clipping"], s["flagged_clipping"] > 0),
            ("duplicates dropped", s["duplicates_dropped"], s["duplicates_dropped"] > 0),
            ("leakage pairs", s["leakage_pairs"], s["leakage_pairs"] > 0),
            ("peak-limited", s["peak_limited"], False),
            ("imbalance max/min", s["imbalance_ratio"] if s["imbalance_ratio"] is not None else "–", False),
        ]
    )
    split_rows = [
        [split_tag(n), f"{v['total']:,}", f"{v['seconds']:,.1f}", f"{v['unlabelled']:,}"]
        for n, v in report["counts"]["splits"].items()
    ]
    field_charts = "".join(
        f"<h3>Per {escape(field)}</h3>"
        + (
            _counts_chart(d["item_fields"][field], per)
            if len(d["item_fields"][field]) <= MAX_CHART_VALUES
            else f'<p class="muted">{len(d["item_fields"][field]):,} values: counts in report.json.</p>'
        )
        for field, per in report["counts"]["fields"].items()
    )
    groups = report["split"].get("groups") or {}
    group_rows = [[split_tag(k), escape(", ".join(v))] for k, v in groups.items()]
    shown_flagged = [f for f in report["flagged"][:40] if "split" in f]
    shown_leaks = report["leakage"][:20]
    clips = _Clips(
        dataset, [*report["samples"], *shown_flagged, *(m for p in shown_leaks for m in (p["a"], p["b"]))]
    )
    samples = "".join(clips.cell(m, f"class {m['class']}") for m in report["samples"])
    q_rows = []
    for q in report["quarantine"]:
        player = ""
        if q.get("preview") and (dataset.path / q["preview"]).is_file():
            data = (dataset.path / q["preview"]).read_bytes()
            player = f'<audio controls preload="none" src="{_uri("audio/wav", data)}"></audio>'
        q_rows.append([origin(q["origin"]), escape(q["kind"]), escape(q["reason"]), player])
    by_kind = ", ".join(f"{k}: {v}" for k, v in report["quarantine_by_kind"].items())
    flagged = "".join(clips.cell(f, f["reason"]) for f in shown_flagged)
    dup = report["duplicates"]
    dropped_rows = [
        [
            origin(x["origin"]),
            split_tag(x["split"]),
            escape(x["kind"]),
            origin(x["duplicate_of"]),
            escape(x.get("cosine", "") or ""),
        ]
        for x in dup.get("dropped", [])
    ]
    near_rows = [
        [origin(p["a"]["origin"]), origin(p["b"]["origin"]), escape(p["cosine"])]
        for p in dup.get("near_pairs", [])
    ]
    leak = "".join(
        clips.cell(p["a"], p["a"]["split"])
        + clips.cell(p["b"], f"{p['b']['split']}: {p['kind']} copy, cosine {p['cosine']}")
        for p in shown_leaks
    )
    steps = (report.get("process") or {}).get("steps", [])
    step_rows = [
        [escape(st["step"]), f"<code>{escape(json.dumps({k: v for k, v in st.items() if k != 'step'}))}</code>"]
        for st in steps
    ]
    loud = report["loudness"]
    config_rows = [
        [escape(k), f"<code>{escape(json.dumps(v))}</code>"]
        for k, v in sorted(report["processing"]["config"].items())
    ]
    note_rows = [[escape(n.get("note", ""))] for n in report["notes"]]
    process = report.get("process") or {}
    body = f"""
<header><h1>Audio data report</h1>
<div class="sub">fingerprint <code>{escape(d["fingerprint"])}</code> · {d["sample_rate"]:,} Hz, {
        d["clip_seconds"]:g} s clips
({d["clip_length"]:,} samples) · decoder {escape(process.get("decoder", "?"))} ·
source <code>{escape(json.dumps(d["source"], sort_keys=True)[:300])}</code></div></header>
<main>
{cards}
<section><h2>Splits</h2><p class="muted">{escape(report["split"].get("method", ""))} split{
        f", grouped by {escape(report['split'].get('group_by'))}" if report["split"].get("group_by") else ""
    }</p>
{table(["split", "clips", "seconds of audio", "unlabelled"], split_rows)}
{
        f"<h3>{escape(report['split'].get('group_by'))} per split</h3>" + table(["split", "values"], group_rows)
        if group_rows
        else ""
    }</section>
<section><h2>Per class</h2>{
        _counts_chart(d["class_names"], {k: v["per_class"] for k, v in report["counts"]["splits"].items()})
    }
{field_charts}</section>
<section><h2>Samples</h2><div class="clips">{samples or '<p class="muted">None.</p>'}</div></section>
<section><h2>Durations</h2>{
        _histogram_svg(report["durations"]["source_seconds"], "seconds", "Source file durations")
    }
{
        _histogram_svg(
            report["durations"]["trimmed_seconds"],
            "seconds",
            "Durations after trimming (before padding or cropping)",
        )
    }</section>
<section><h2>Loudness ({escape(loud["method"])}, target {escape(loud["target"])} {escape(loud["unit"])})</h2>
{_histogram_svg(loud["input"], loud["unit"], "Loudness of the trimmed clips before normalisation")}
{
        _histogram_svg(
            loud["output"], loud["unit"], "Loudness after normalisation (peak-limited clips fall short)"
        )
    }</section>
<section><h2>Quarantined files ({len(q_rows)})</h2><p class="muted">{escape(by_kind)}</p>
{table(["origin", "kind", "reason", "listen"], q_rows)}</section>
<section><h2>Flagged: clipping ({len(report["flagged"])}, kept)</h2><div class="clips">{
        flagged or '<p class="muted">None.</p>'
    }</div></section>
<section><h2>Train/val leakage ({len(report["leakage"])})</h2>
<p class="muted">Exact or near copies (cosine ≥ {
        escape(dup.get("near_dup_threshold"))
    }) in different splits, as written.</p>
<div class="clips">{leak or '<p class="muted">None.</p>'}</div></section>
<section><h2>Duplicates</h2><p>{escape(dup.get("exact_groups", 0))} exact groups, {
        escape(dup.get("near_groups", 0))
    } near groups
({escape(dup.get("near_pair_count", 0))} pairs, {escape(dup.get("fingerprint", ""))} ≥ {
        escape(dup.get("near_dup_threshold"))
    }); policy {escape(dup.get("policy"))}.</p>
<h3>Dropped ({len(dropped_rows)})</h3>{
        table(["clip", "split", "kind", "copy of (kept)", "cosine"], dropped_rows)
    }
<h3>Near pairs ({len(near_rows)} listed)</h3>{table(["a", "b", "cosine"], near_rows)}</section>
<section><h2>Processing steps</h2>{table(["step", "parameters"], step_rows)}</section>
<section><h2>Notes ({len(note_rows)})</h2>{table(["note"], note_rows)}</section>
<section><h2>Options</h2>{table(["option", "value"], config_rows)}</section>
</main>"""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>genforge audio data report</title>'
        f"<style>{CSS}{AUDIO_CSS}</style></head><body>{body}</body></html>\n"
    )


def write_audio_report(path: str | Path, facts: ReportFacts | None = None) -> dict[str, Any]:
    """(Re)write report.json and report.html of the audio dataset at `path`; returns the report."""
    dataset = open_dataset(path)
    if not isinstance(dataset, AudioDataset):
        raise DataError(
            f"{Path(path) / 'manifest.json'}: field 'modality' is {dataset.modality!r}, not 'audio'"
        )
    report = build_audio_report(dataset, facts)
    write_json(dataset.path / REPORT_JSON, report)
    write_text(dataset.path / REPORT_HTML, render_audio(report, dataset))
    return report
