"""Text as a modality of the data stage: sources, decoding, cleaning, PII scrubbing, dedup,
splits, tokenisers and the canonical text dataset (`TextDataset`, registered under "text")."""

from __future__ import annotations

from typing import Any

from genforge.data.ingesters import INGESTERS, Ingester, lazy, lazy_value
from genforge.data.text.canonical import TextDataset, TextDoc, TextSplit, write_text_dataset
from genforge.data.text.tokenizer import BPETokenizer, CharTokenizer, load_tokenizer

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "TextDataset",
    "TextDoc",
    "TextSplit",
    "load_tokenizer",
    "write_text_dataset",
]


def _summary(result: Any) -> list[str]:
    m, s = result.manifest, result.report["summary"]
    c = m["counts"]
    splits = ", ".join(f"{name} {v['documents']:,}" for name, v in s["splits"].items())
    tokens = ", ".join(f"{name} {v['tokens']:,}" for name, v in s["splits"].items())
    pii = ", ".join(f"{k} {v:,}" for k, v in s["pii"].items()) or "off"
    leaks = ", ".join(f"{k} {v:.2%}" for k, v in s["leakage_window_share"].items()) or "no held-out split"
    tok = m["tokenizer"]
    return [
        f"read {c['read']:,} documents: {c['documents']:,} kept ({splits}), {c['quarantined']:,} quarantined, "
        f"{c['duplicates_dropped']:,} duplicates dropped, {s['paragraph_duplicate_groups']:,} repeated paragraph groups",
        f"tokens: {tokens} ({tok['kind']} tokenizer, vocabulary {tok['vocab_size']:,}); PII replaced: {pii}",
        f"leakage: held-out {m['process']['leakage_window']}-char windows found in train: {leaks}",
    ]


def _report_summary(report: dict[str, Any]) -> str:
    s = report["summary"]
    return (
        f"{s['documents']:,} documents, {s['chars']:,} characters, {s['tokens']:,} tokens, "
        f"{s['quarantined']:,} quarantined, {s['duplicates_dropped']:,} duplicates dropped, "
        f"PII {sum(s['pii'].values()):,} replaced"
    )


INGESTERS.register(
    "text",
    Ingester(
        claims=lazy("genforge.data.text.sources", "claims"),
        config=lazy_value("genforge.data.text.config", "TextIngestConfig"),
        run=lazy("genforge.data.text.ingest", "ingest"),
        report=lazy("genforge.data.text.report", "write_text_report"),
        summary=_summary,
        report_summary=_report_summary,
        owns_name=lazy("genforge.data.text.sources", "is_text_name"),
    ),
)
