"""The data report of a text dataset: `report.json` and a self-contained `report.html`.

Built from the written dataset (manifest, process log, split texts and tokens), so
`genforge data report` on an existing dataset reproduces what ingest wrote: size (documents,
characters, tokens), vocabulary (size, most frequent tokens, characters unseen in train), length
histograms (documents and paragraphs), duplicate, PII and quarantine counts, train/val leakage,
cleaning and encodings, and sample passages (HTML-escaped).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.atomic import write_json, write_text
from genforge.core.errors import DataError
from genforge.data.canonical import open_dataset
from genforge.data.process.split import in_order
from genforge.data.report import REPORT_HTML, REPORT_JSON, read_process_log
from genforge.data.report_html import CSS, SPLIT_COLOURS, cards_html, escape, table
from genforge.data.text.canonical import TextDataset
from genforge.data.text.config import TextIngestConfig
from genforge.data.text.overlap import leakage
from genforge.data.text.process import paragraph_spans

TOP_TOKENS = 40
SAMPLES_PER_SPLIT = 4
SAMPLE_CHARS = 400


def length_histogram(lengths: list[int]) -> dict[str, list[int]]:
    """Counts over powers-of-two bins of lengths: edges [1, 2, 4, ...] (bin k: edges[k] <= n < edges[k+1])."""
    if not lengths:
        return {"edges": [], "counts": []}
    top = max(1, int(np.ceil(np.log2(max(lengths) + 1))))
    edges = [0] + [1 << k for k in range(top + 1)]
    counts, _ = np.histogram(np.asarray(lengths), bins=edges)
    return {"edges": edges, "counts": counts.tolist()}


def _samples(text: str, origin: str) -> list[dict[str, Any]]:
    """Evenly spaced passages, each starting at a line start."""
    if not text:
        return []
    out = []
    for k in range(SAMPLES_PER_SPLIT):
        start = int(len(text) * k / SAMPLES_PER_SPLIT)
        if start:
            nl = text.find("\n", start)
            start = nl + 1 if 0 <= nl < start + SAMPLE_CHARS else start
        out.append({"offset": start, "origin": origin, "text": text[start : start + SAMPLE_CHARS]})
    return out


def _token_label(tokenizer: Any, i: int) -> str:
    return repr(tokenizer.decode([i]))  # quoted and escaped: a space or a newline stays visible


def _vocabulary(dataset: TextDataset) -> dict[str, Any]:
    tok = dataset.tokenizer
    train = np.asarray(dataset.train_split.tokens)
    counts = (
        np.bincount(train, minlength=tok.vocab_size) if len(train) else np.zeros(tok.vocab_size, np.int64)
    )
    top = np.argsort(-counts, kind="stable")[:TOP_TOKENS]
    out: dict[str, Any] = {
        "kind": tok.kind,
        "size": tok.vocab_size,
        "used_in_train": int((counts > 0).sum()),
        "top": [
            {"id": int(i), "token": _token_label(tok, int(i)), "count": int(counts[i])}
            for i in top
            if counts[i] > 0
        ],
    }
    unk = getattr(tok, "unk_id", None)  # tokenizers with an unknown token: how often held-out text needs it
    if unk is not None:
        out["unknown"] = {
            name: int((np.asarray(dataset.split(name).tokens) == unk).sum()) for name in dataset.split_names
        }
    return out


def build_text_report(dataset: TextDataset) -> dict[str, Any]:
    manifest = dataset.manifest
    log = read_process_log(dataset.path)
    process = dict(manifest.get("process") or {})
    defaults = TextIngestConfig()
    names = in_order(dataset.split_names)
    splits: dict[str, Any] = {}
    lengths: dict[str, Any] = {}
    samples: dict[str, Any] = {}
    texts = {name: dataset.split(name).text for name in names}
    for name in names:
        split = dataset.split(name)
        docs = split.docs
        doc_chars = [d["chars"][1] - d["chars"][0] for d in docs]
        splits[name] = {
            "documents": split.documents,
            "chars": split.chars,
            "tokens": len(split),
            "tokens_per_char": round(len(split) / split.chars, 4) if split.chars else None,
        }
        lengths[name] = {
            "document_chars": length_histogram(doc_chars),
            "paragraph_chars": length_histogram([e - s for s, e in paragraph_spans(texts[name])]),
        }
        samples[name] = _samples(texts[name], docs[0]["origin"] if len(docs) == 1 else f"{name} split")
    leaks = manifest.get("leakage")
    if not isinstance(leaks, dict) and "train" in texts:
        window = int(process.get("leakage_window", defaults.leakage_window))
        ngram = int(process.get("leakage_ngram", defaults.leakage_ngram))
        leaks = {n: leakage(texts["train"], t, window, ngram) for n, t in texts.items() if n != "train"}
    leaks = leaks or {}
    quarantine = list(log.get("quarantine", []))
    dups = manifest.get("duplicates") or {}
    pii = manifest.get("pii") or {"enabled": False, "counts": {}}
    return {
        "dataset": {
            "fingerprint": dataset.fingerprint,
            "modality": "text",
            "tokenizer": manifest.get("tokenizer"),
            "token_dtype": manifest.get("token_dtype"),
            "source": manifest.get("source"),
            "counts": manifest.get("counts"),
        },
        "summary": {
            "documents": sum(s["documents"] for s in splits.values()),
            "chars": sum(s["chars"] for s in splits.values()),
            "tokens": sum(s["tokens"] for s in splits.values()),
            "splits": splits,
            "vocab_size": dataset.vocab_size,
            "quarantined": len(quarantine),
            "duplicates_dropped": len(log.get("dropped", [])),
            "document_duplicate_groups": (dups.get("documents") or {}).get("groups", 0),
            "paragraph_duplicate_groups": (dups.get("paragraphs") or {}).get("groups", 0),
            "pii": dict(pii.get("counts") or {}),
            "leakage_window_share": {n: v["window_share"] for n, v in leaks.items()},
        },
        "vocabulary": _vocabulary(dataset),
        "lengths": lengths,
        "quarantine": quarantine,
        "quarantine_by_kind": dict(sorted(Counter(q["kind"] for q in quarantine).items())),
        "duplicates": {
            **dups,
            "dropped": log.get("dropped", []),
            "near_pairs": log.get("near_pairs", []),
            "paragraph_examples": log.get("paragraph_duplicates", []),
        },
        "pii": pii,
        "leakage": leaks,
        "cleaning": manifest.get("cleaning"),
        "encodings": manifest.get("encodings"),
        "split": manifest.get("split"),
        "samples": samples,
        "notes": log.get("notes", []),
        "processing": {"config": process},
    }


# ---- HTML


def _cards(report: dict[str, Any]) -> str:
    s = report["summary"]
    pii_total = sum(s["pii"].values())
    worst_leak = max(s["leakage_window_share"].values(), default=0.0)
    items = [
        ("documents", f"{s['documents']:,}", False),
        ("characters", f"{s['chars']:,}", False),
        ("tokens", f"{s['tokens']:,}", False),
        ("vocabulary", f"{s['vocab_size']:,}", False),
        *((f"{k} tokens", f"{v['tokens']:,}", False) for k, v in s["splits"].items()),
        ("quarantined", s["quarantined"], s["quarantined"] > 0),
        ("duplicates dropped", s["duplicates_dropped"], s["duplicates_dropped"] > 0),
        ("paragraph dup groups", s["paragraph_duplicate_groups"], s["paragraph_duplicate_groups"] > 0),
        ("PII replaced", pii_total, pii_total > 0),
        ("val windows in train", f"{worst_leak:.2%}", worst_leak > 0.05),
    ]
    return cards_html(items)


def _length_chart(lengths: dict[str, Any], key: str, what: str) -> str:
    """Bars per power-of-two length bin, one row of bars per split (inline SVG)."""
    rows = [(name, h[key]) for name, h in lengths.items() if h[key]["counts"]]
    if not rows:
        return ""
    bins = max(len(h["counts"]) for _, h in rows)
    bar_w, ht, gap = 26, 90, 34
    width = 60 + bins * bar_w
    out = [f'<svg width="{width}" height="{(ht + gap) * len(rows)}" role="img">']
    for r, (name, h) in enumerate(rows):
        top = max(h["counts"]) or 1
        y0 = r * (ht + gap)
        colour = SPLIT_COLOURS.get(name, "#888")
        out.append(f'<text x="0" y="{y0 + 12}" font-size="12">{escape(name)}</text>')
        for k, c in enumerate(h["counts"]):
            bh = (ht - 20) * np.sqrt(c / top)  # square root: one huge bin must not hide the rest
            x = 60 + k * bar_w
            lo, hi = h["edges"][k], h["edges"][k + 1]
            out.append(
                f'<rect x="{x}" y="{y0 + ht - bh:.1f}" width="{bar_w - 3}" height="{bh:.1f}" fill="{colour}">'
                f"<title>{lo:,}–{hi - 1:,} chars: {c:,} {what}</title></rect>"
            )
            if k % 2 == 0:
                out.append(
                    f'<text x="{x}" y="{y0 + ht + 12}" font-size="9" fill="#667">{escape(_short(lo))}</text>'
                )
    out.append("</svg>")
    return (
        "".join(out)
        + f'<p class="muted">{escape(what.capitalize())} per length in characters (bins double; square-root scale).</p>'
    )


def _short(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 else str(n)


def _pre(text: str) -> str:
    return f'<pre style="white-space:pre-wrap;background:#fafbfc;padding:8px;border-radius:6px;font-size:12px">{escape(text)}</pre>'


def render_text(report: dict[str, Any]) -> str:
    d = report["dataset"]
    s = report["summary"]
    split_rows = [
        [escape(n), f"{v['documents']:,}", f"{v['chars']:,}", f"{v['tokens']:,}", escape(v["tokens_per_char"])]
        for n, v in s["splits"].items()
    ]
    vocab = report["vocabulary"]
    top_rows = [[escape(t["id"]), f"<code>{escape(t['token'])}</code>", f"{t['count']:,}"] for t in vocab["top"]]
    unknown = vocab.get("unknown")
    unknown_line = (
        f'<p class="muted">Tokens that are &lt;unk&gt; (characters unseen in train): '
        f"{escape(', '.join(f'{k}: {v:,}' for k, v in unknown.items()))}</p>"
        if unknown
        else ""
    )
    pii = report["pii"]
    pii_rows = [
        [escape(k), f"{v:,}", f"<code>{escape((pii.get('replacements') or {}).get(k, ''))}</code>"]
        for k, v in (pii.get("counts") or {}).items()
    ]
    dup = report["duplicates"]
    doc_counts = dup.get("documents") or {}
    par = dup.get("paragraphs") or {}
    dropped_rows = [
        [
            f'<span class="origin">{escape(x["origin"])}</span>',
            escape(x["kind"]),
            f'<span class="origin">{escape(x["duplicate_of"])}</span>',
        ]
        for x in dup["dropped"]
    ]
    near_rows = [
        [
            f'<span class="origin">{escape(p["a"])}</span>',
            f'<span class="origin">{escape(p["b"])}</span>',
            escape(p["jaccard"]),
        ]
        for p in dup["near_pairs"]
    ]
    par_rows = [
        [escape(x["kind"]), escape(x["copies"]), _pre(x["text"]), escape(", ".join(x["origins"]))]
        for x in dup["paragraph_examples"]
    ]
    leak_rows = [
        [escape(n), f"{v['window_share']:.3%} of {v['windows']:,}", f"{v['ngram_share']:.3%} of {v['ngrams']:,}"]
        for n, v in report["leakage"].items()
    ]
    leak_head = ["split", "windows found in train", "word n-grams found in train"]
    if report["leakage"]:
        any_leak = next(iter(report["leakage"].values()))
        leak_head[1] = f"{any_leak['window_chars']}-char windows found in train"
        leak_head[2] = f"{any_leak['ngram_words']}-word n-grams found in train"
    q_rows = [
        [f'<span class="origin">{escape(q["origin"])}</span>', escape(q["kind"]), escape(q["reason"])]
        for q in report["quarantine"]
    ]
    by_kind = ", ".join(f"{k}: {v}" for k, v in report["quarantine_by_kind"].items())
    clean_rows = [[escape(k), escape(v)] for k, v in (report["cleaning"] or {}).items()]
    enc_rows = [[escape(k), f"{v:,}"] for k, v in (report["encodings"] or {}).items()]
    sample_html = "".join(
        f"<h3>{escape(name)}</h3>"
        + "".join(
            f'<div class="muted">{escape(x["origin"])} @ {x["offset"]:,}</div>{_pre(x["text"])}' for x in items
        )
        for name, items in report["samples"].items()
    )
    note_rows = [[escape(n.get("note", ""))] for n in report["notes"]]
    config_rows = [
        [escape(k), f"<code>{escape(json.dumps(v))}</code>"]
        for k, v in sorted(report["processing"]["config"].items())
    ]
    tok = d.get("tokenizer") or {}
    body = f"""
<header><h1>Text data report</h1>
<div class="sub">fingerprint <code>{escape(d["fingerprint"])}</code> · tokenizer {escape(tok.get("kind"))}, {escape(tok.get("vocab_size"))} tokens ({escape(d.get("token_dtype"))}) ·
source <code>{escape(json.dumps(d["source"], sort_keys=True)[:300])}</code></div></header>
<main>
{_cards(report)}
<section><h2>Splits</h2><p class="muted">{escape((report.get("split") or {}).get("method", ""))} split</p>
{table(["split", "documents", "characters", "tokens", "tokens per character"], split_rows)}</section>
<section><h2>Lengths</h2>{_length_chart(report["lengths"], "document_chars", "documents")}
{_length_chart(report["lengths"], "paragraph_chars", "paragraphs")}</section>
<section><h2>Vocabulary ({vocab["size"]:,} {escape(vocab["kind"])} tokens, {vocab["used_in_train"]:,} used in train)</h2>
{unknown_line}{table(["id", "token", "count in train"], top_rows)}</section>
<section><h2>PII scrubbed ({"on" if pii.get("enabled") else "off"}; {pii.get("documents", 0):,} documents touched)</h2>
{table(["kind", "replaced", "replacement"], pii_rows)}</section>
<section><h2>Duplicates</h2>
<p>Documents: {escape(doc_counts.get("exact_copies", 0))} exact copies, {escape(doc_counts.get("near_pairs", 0))} near pairs
(MinHash Jaccard ≥ {escape(dup.get("near_dup_threshold"))}, {escape(dup.get("shingle"))} shingles), policy {escape(dup.get("policy"))}.
Paragraphs (≥ {escape(par.get("min_paragraph_chars"))} characters, {escape(par.get("compared", 0))} of {escape(par.get("paragraphs", 0))} compared):
{escape(par.get("exact_copies", 0))} exact copies, {escape(par.get("near_pairs", 0))} near pairs, {escape(par.get("groups", 0))} groups,
policy {escape(par.get("policy"))}, {escape(par.get("dropped", 0))} dropped.</p>
<h3>Dropped documents ({len(dropped_rows)})</h3>{table(["document", "kind", "copy of (kept)"], dropped_rows)}
<h3>Near-duplicate document pairs ({len(near_rows)})</h3>{table(["a", "b", "Jaccard"], near_rows)}
<h3>Repeated paragraphs ({len(par_rows)} shown)</h3>{table(["kind", "copies", "paragraph", "documents"], par_rows)}</section>
<section><h2>Train/val leakage</h2><p class="muted">Verbatim overlap of each held-out split with train.</p>
{table(leak_head, leak_rows)}</section>
<section><h2>Quarantined ({len(q_rows)})</h2><p class="muted">{escape(by_kind)}</p>
{table(["origin", "kind", "reason"], q_rows)}</section>
<section><h2>Cleaning and encodings</h2>{table(["step", "count"], clean_rows)}{table(["encoding", "documents"], enc_rows)}</section>
<section><h2>Sample passages</h2>{sample_html}</section>
<section><h2>Notes ({len(note_rows)})</h2>{table(["note"], note_rows)}</section>
<section><h2>Processing</h2>{table(["option", "value"], config_rows)}</section>
</main>"""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>genforge text data report</title>'
        f"<style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def write_text_report(path: str | Path) -> dict[str, Any]:
    """(Re)write report.json and report.html of the text dataset at `path`; returns the report."""
    dataset = open_dataset(path)
    if not isinstance(dataset, TextDataset):
        raise DataError(
            f"{Path(path) / 'manifest.json'}: field 'modality' is {dataset.modality!r}, not 'text'"
        )
    report = build_text_report(dataset)
    write_json(dataset.path / REPORT_JSON, report)
    write_text(dataset.path / REPORT_HTML, render_text(report))
    return report
