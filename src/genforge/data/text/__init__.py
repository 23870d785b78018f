"""Text as a modality of the data stage: sources, decoding, cleaning, PII scrubbing, dedup,
splits, tokenisers and the canonical text dataset (`TextDataset`, registered under "text")."""

from __future__ import annotations

from typing import Any

from genforge.data.ingesters import INGESTERS, Ingester
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


def _config() -> type:
    from genforge.data.text.config import TextIngestConfig

    return TextIngestConfig


def _claims(source: str) -> bool:
    from genforge.data.text.sources import claims

    return claims(source)


def _ingest(*args: Any, **kwargs: Any) -> Any:
    from genforge.data.text.ingest import ingest

    return ingest(*args, **kwargs)


def _report(path: Any) -> dict[str, Any]:
    from genforge.data.text.report import write_text_report

    return write_text_report(path)


INGESTERS.register(
    "text",
    Ingester(
        claims=_claims,
        config=_config,
        run=_ingest,
        report=_report,
        summary=_summary,
        report_summary=_report_summary,
    ),
)
