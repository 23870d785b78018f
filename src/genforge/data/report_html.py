"""HTML rendering of the data quality report: one self-contained page (images as data URIs)."""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

import numpy as np
from PIL import Image

from genforge.data.canonical import CanonicalDataset
from genforge.data.report import ordered_splits

SHOWN = 40  # rows / pairs / thumbnails per section; the rest are in report.json
SAMPLES_PER_CLASS = 12
THUMB_MAX = 96  # px: larger images are shrunk before embedding
SPLIT_COLOURS = {"train": "#4c78a8", "val": "#f58518", "test": "#54a24b"}
CHANNEL_COLOURS = {1: ["#555"], 3: ["#d62728", "#2ca02c", "#1f77b4"]}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header .sub{opacity:.75;font-size:13px;margin-top:4px}
main{max-width:1180px;margin:0 auto;padding:18px 24px 40px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:16px 20px;margin:16px 0}
h2{font-size:17px;margin:0 0 12px}h3{font-size:14px;margin:14px 0 6px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:10px 16px;min-width:120px}
.card b{display:block;font-size:22px}.card span{color:#667;font-size:12px}.card.warn b{color:#c0392b}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e6e8ec;vertical-align:top}
th{background:#fafbfc;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,.origin{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
img.px{image-rendering:pixelated}
.grid-row{display:flex;align-items:center;gap:10px;margin:4px 0}.grid-row .name{width:110px;font-weight:600}
.pairs{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:10px}
.pair{border:1px solid #e6e8ec;border-radius:6px;padding:8px;font-size:12px}
.pair .imgs{display:flex;gap:6px;margin-bottom:4px}
.thumbs{display:flex;flex-wrap:wrap;gap:8px}.thumb{font-size:11px;width:110px}
.muted{color:#778}.tag{display:inline-block;padding:0 6px;border-radius:8px;color:#fff;font-size:11px}
"""


def _png_uri(image: np.ndarray) -> str:
    arr = np.asarray(image)
    im = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    if max(im.size) > THUMB_MAX:
        im.thumbnail((THUMB_MAX, THUMB_MAX), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(uri: str, size: int = 64, title: str = "") -> str:
    return f'<img class="px" src="{uri}" width="{size}" height="{size}" title="{html.escape(title)}" alt="">'


class _Images:
    def __init__(self, dataset: CanonicalDataset):
        self.dataset = dataset

    def get(self, m: dict[str, Any]) -> np.ndarray:
        return np.asarray(self.dataset.split(m["split"]).images[m["index"]])

    def tag(self, m: dict[str, Any], size: int = 64) -> str:
        return _img(_png_uri(self.get(m)), size, m["origin"])


def escape(text: Any) -> str:
    return html.escape(str(text))


def origin(origin: str) -> str:
    """The tail that tells images apart (archive member, last folders); the full origin on hover."""
    tail = origin.rsplit("::", 1)[-1]
    tail = "/".join(tail.replace("\\", "/").split("/")[-3:])
    return f'<span class="origin" title="{escape(origin)}">{escape(tail)}</span>'


def split_tag(split: str) -> str:
    return f'<span class="tag" style="background:{SPLIT_COLOURS.get(split, "#888")}">{escape(split)}</span>'


def _more(total: int) -> str:
    return f'<p class="muted">… and {total - SHOWN} more in report.json</p>' if total > SHOWN else ""


def _cards(s: dict[str, Any]) -> str:
    items = [
        ("images", s["images"], False),
        ("classes", s["classes"], False),
        *((f"{k} split", v, False) for k, v in s["splits"].items()),
        ("quarantined", s["quarantined"], s["quarantined"] > 0),
        ("exact duplicate groups", s["exact_duplicate_groups"], s["exact_duplicate_groups"] > 0),
        ("near duplicate groups", s["near_duplicate_groups"], s["near_duplicate_groups"] > 0),
        ("leakage pairs", s["leakage_pairs"], s["leakage_pairs"] > 0),
        ("imbalance max/min", s["imbalance_ratio"] if s["imbalance_ratio"] is not None else "–", False),
    ]
    return cards_html(items)


def cards_html(items: list[tuple[str, Any, bool]]) -> str:
    """Summary cards: (label, value, warn) each; a warning card is highlighted."""
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card{" warn" if warn else ""}"><b>{escape(v)}</b><span>{escape(k)}</span></div>'
            for k, v, warn in items
        )
        + "</div>"
    )


def class_chart(report: dict[str, Any]) -> str:
    """Horizontal stacked bars: images per class, coloured by split (inline SVG)."""
    names = report["dataset"]["class_names"] or []
    splits = report["counts"]["splits"]
    rows = [(n, [(s, splits[s]["per_class"].get(n, 0)) for s in splits]) for n in names]
    if not rows:
        return '<p class="muted">The dataset has no class labels.</p>'
    biggest = max(sum(c for _, c in parts) for _, parts in rows) or 1
    bar_w, row_h, label_w = 760, 22, 130
    out = [f'<svg width="{label_w + bar_w + 80}" height="{row_h * len(rows) + 30}" role="img">']
    for r, (name, parts) in enumerate(rows):
        y, x = r * row_h, label_w
        out.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" font-size="12">{escape(name)}</text>')
        for split, count in parts:
            w = bar_w * count / biggest
            out.append(
                f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
                f'fill="{SPLIT_COLOURS.get(split, "#888")}"><title>{escape(split)}: {count}</title></rect>'
            )
            x += w
        out.append(
            f'<text x="{x + 6:.1f}" y="{y + 15}" font-size="11" fill="#555">{sum(c for _, c in parts)}</text>'
        )
    legend_y = row_h * len(rows) + 20
    for k, split in enumerate(splits):
        lx = label_w + k * 90
        out.append(
            f'<rect x="{lx}" y="{legend_y - 10}" width="12" height="12" fill="{SPLIT_COLOURS.get(split, "#888")}"/>'
            f'<text x="{lx + 16}" y="{legend_y}" font-size="12">{escape(split)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _sample_grid(dataset: CanonicalDataset) -> str:
    names = dataset.class_names
    rows = []
    for split_name in ordered_splits(dataset):
        split = dataset.split(split_name)
        if not len(split):
            continue
        labels = np.asarray(split.labels)
        groups = [(n, np.flatnonzero(labels == k)) for k, n in enumerate(names)] or [
            ("all", np.arange(len(split)))
        ]
        for name, idx in groups:
            pick = (
                idx[np.linspace(0, len(idx) - 1, min(SAMPLES_PER_CLASS, len(idx))).astype(int)]
                if len(idx)
                else idx
            )
            imgs = "".join(
                _img(_png_uri(np.asarray(split.images[i])), 56, f"{split_name}[{i}]") for i in pick
            )
            rows.append(f'<div class="grid-row"><div class="name">{escape(name)}</div>{imgs}</div>')
        return f"<h3>{escape(split_name)} split</h3>" + "".join(rows)  # one split shows every class
    return '<p class="muted">No images.</p>'


def _pairs(pairs: list[tuple[dict, dict, str]], images: _Images) -> str:
    cells = []
    for a, b, caption in pairs[:SHOWN]:
        cells.append(
            f'<div class="pair"><div class="imgs">{images.tag(a, 96)}{images.tag(b, 96)}</div>'
            f"<div>{split_tag(a['split'])} {origin(a['origin'])}</div>"
            f"<div>{split_tag(b['split'])} {origin(b['origin'])}</div>"
            f'<div class="muted">{escape(caption)}</div></div>'
        )
    return (
        ('<div class="pairs">' + "".join(cells) + "</div>" + _more(len(pairs)))
        if cells
        else '<p class="muted">None found.</p>'
    )


def table(headers: list[str], rows: list[list[str]], total: int | None = None) -> str:
    if not rows:
        return '<p class="muted">None.</p>'
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows[:SHOWN])
    return f"<table><tr>{head}</tr>{body}</table>" + _more(total if total is not None else len(rows))


def _thumbs(entries: list[dict[str, Any]], images: _Images, caption) -> str:
    if not entries:
        return '<p class="muted">None.</p>'
    cells = "".join(
        f'<div class="thumb">{images.tag(m, 80)}<div>{origin(m["origin"])}</div>'
        f'<div class="muted">{escape(caption(m))}</div></div>'
        for m in entries[:SHOWN]
    )
    return f'<div class="thumbs">{cells}</div>' + _more(len(entries))


def _histogram_chart(hist: list[list[int]]) -> str:
    h = np.asarray(hist, np.float64)
    if not h.size or h.max() <= 0:
        return ""
    w, ht = 512, 160
    colours = CHANNEL_COLOURS.get(len(h), ["#555"] * len(h))
    scale = np.sqrt(h) / np.sqrt(h.max())  # sqrt keeps the tails visible next to a big background peak
    lines = []
    for c, row in enumerate(scale):
        pts = " ".join(f"{x * 2:.0f},{ht - v * (ht - 10):.1f}" for x, v in enumerate(row))
        lines.append(
            f'<polyline points="{pts}" fill="none" stroke="{colours[c]}" stroke-width="1.4" opacity=".85"/>'
        )
    axis = (
        f'<line x1="0" y1="{ht}" x2="{w}" y2="{ht}" stroke="#999"/>'
        f'<text x="0" y="{ht + 14}" font-size="11">0</text><text x="{w - 20}" y="{ht + 14}" font-size="11">255</text>'
    )
    return (
        f'<svg width="{w}" height="{ht + 18}" role="img">{"".join(lines)}{axis}</svg>'
        '<p class="muted">Pixel value histogram per channel (square-root scale).</p>'
    )


def render(report: dict[str, Any], dataset: CanonicalDataset) -> str:
    images = _Images(dataset)
    names = report["dataset"]["class_names"] or []
    dup = report["duplicates"]
    exact_pairs = [
        (g["members"][0], g["members"][1], f"identical pixels ({len(g['members'])} copies)")
        for g in dup["exact"]
    ]
    near_pairs = [(p["a"], p["b"], f"pHash distance {p['distance']}") for p in dup["near_pairs"]]
    leak_pairs = [
        (p["a"], p["b"], f"{p['kind']} duplicate, distance {p['distance']}") for p in report["leakage"]
    ]
    q_rows = [
        [f'<span class="origin">{escape(q["origin"])}</span>', escape(q["kind"]), escape(q["reason"])]
        for q in report["quarantine"]
    ]
    by_kind = ", ".join(f"{k}: {v}" for k, v in report["quarantine_by_kind"].items())
    out = report["outliers"]
    channel_names = ["grey"] if len(report["pixel_stats"]["channels"]) == 1 else ["red", "green", "blue"]
    stat_rows = [
        [n, f"{c['mean']:.2f}", f"{c['std']:.2f}"]
        for n, c in zip(channel_names, report["pixel_stats"]["channels"], strict=True)
    ]
    dropped_rows = [
        [
            f'<span class="origin">{escape(d["origin"])}</span>',
            split_tag(d["split"]),
            escape(d["kind"]),
            f'<span class="origin">{escape(d["duplicate_of"])}</span>',
        ]
        for d in dup["dropped"]
    ]
    note_rows = [[f'<span class="origin">{escape(n["origin"])}</span>', escape(n["note"])] for n in report["notes"]]
    config_rows = [
        [escape(k), f"<code>{escape(json.dumps(v))}</code>"]
        for k, v in sorted(report["processing"]["config"].items())
    ]
    shape = "x".join(str(s) for s in report["dataset"]["image_shape"])
    body = f"""
<header><h1>Data quality report</h1>
<div class="sub">fingerprint <code>{escape(report["dataset"]["fingerprint"])}</code> · images {shape} ·
source <code>{escape(json.dumps(report["dataset"]["source"], sort_keys=True)[:300])}</code></div></header>
<main>
{_cards(report["summary"])}
<section><h2>Class balance</h2>{class_chart(report)}</section>
<section><h2>Samples per class</h2>{_sample_grid(dataset)}</section>
<section><h2>Leakage across splits ({len(leak_pairs)})</h2>
<p class="muted">Exact or near duplicates whose copies sit in different splits: evaluation on them measures memory, not generalisation.</p>
{_pairs(leak_pairs, images)}</section>
<section><h2>Exact duplicates ({len(exact_pairs)} groups)</h2>{_pairs(exact_pairs, images)}</section>
<section><h2>Near duplicates ({len(dup["near"])} groups, {len(near_pairs)} pairs within distance {dup["near_dup_distance"]})</h2>
{_pairs(near_pairs, images)}</section>
<section><h2>Dropped duplicates ({len(dropped_rows)})</h2>
{table(["origin", "split", "kind", "copy of (kept)"], dropped_rows)}</section>
<section><h2>Quarantined files ({len(q_rows)})</h2><p class="muted">{escape(by_kind)}</p>
{table(["origin", "kind", "reason"], q_rows)}</section>
<section><h2>Outliers (reported, not removed)</h2>
<h3>Blank or near-constant ({len(out["blank"])})</h3>{_thumbs(out["blank"], images, lambda m: f"std {m['std']}")}
<h3>Saturated ({len(out["saturated"])})</h3>{_thumbs(out["saturated"], images, lambda m: f"{m['clipped']:.0%} clipped")}
<h3>Far from their class mean, z &gt; {out["z_threshold"]} ({len(out["far_from_class"])})</h3>
{_thumbs(out["far_from_class"], images, lambda m: f"{names[m['label']] if 0 <= m['label'] < len(names) else 'unlabelled'}, z {m['z']}")}
</section>
<section><h2>Pixel statistics</h2>{table(["channel", "mean", "std"], stat_rows)}
{_histogram_chart(report["pixel_stats"]["histogram"])}</section>
<section><h2>Notes ({len(note_rows)})</h2>{table(["origin", "note"], note_rows)}</section>
<section><h2>Processing</h2>{table(["option", "value"], config_rows)}</section>
</main>"""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>genforge data report</title>'
        f"<style>{CSS}</style></head><body>{body}</body></html>\n"
    )
