"""`genforge data ingest` on text: source -> decoded, cleaned, PII-scrubbed, deduplicated, split,
tokenised canonical text dataset + report.

Steps, each counted in the manifest (`counts`, `cleaning`, `pii`, `duplicates`) and the report:
read (sources) -> decode (UTF-8 or detected; binary and undecodable documents quarantined with
a reason) -> clean (NFC, line ends, control characters; a document left empty is quarantined) ->
PII scrub -> document duplicates (exact + MinHash near; later copies dropped by default) ->
paragraph duplicates (reported; dropped on request) -> split -> tokenizer trained on train ->
token files -> train/val leakage (shared windows and n-grams) -> report. PII is scrubbed before
anything is compared or learnt, so neither duplicates nor the tokenizer see it.
The dataset directory appears all at once (an atomic rename), or not at all.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.atomic import atomic_dir, write_json
from genforge.core.config import save_json, to_dict
from genforge.core.errors import DataError
from genforge.core.lock import DirLock
from genforge.data.process.config import CONFIG_FILE, PROCESS_LOG
from genforge.data.process.ingest import IngestResult
from genforge.data.process.split import split_name
from genforge.data.text.canonical import DOC_SEPARATOR, TextDoc, write_text_dataset
from genforge.data.text.config import PII_KINDS, TextIngestConfig
from genforge.data.text.decode import decode_bytes
from genforge.data.text.overlap import leakage
from genforge.data.text.pii import scrub
from genforge.data.text.process import CleanStats, DuplicateGroups, clean, find_duplicates, paragraph_spans
from genforge.data.text.sources import RawText, open_text_source
from genforge.data.text.split import plan_splits
from genforge.data.text.tokenizer import train_tokenizer

Progress = Callable[[int, int], None]  # (documents read, documents quarantined)
SHOWN_PAIRS = 200  # duplicate records kept in the process log; the counts cover all


@dataclass
class Collected:
    docs: list[TextDoc] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    quarantine: list[dict[str, str]] = field(default_factory=list)
    encodings: Counter = field(default_factory=Counter)
    cleaning: CleanStats = field(default_factory=CleanStats)
    pii: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PII_KINDS, 0))
    pii_documents: int = 0
    read: int = 0
    chars_read: int = 0

    def add(self, raw: RawText, cfg: TextIngestConfig) -> None:
        self.read += 1
        if raw.error is not None:
            self._quarantine(raw.origin, "unreadable", raw.error)
            return
        text = raw.text
        if text is None:
            decoded = decode_bytes(raw.data or b"", cfg.min_printable)
            if decoded.text is None:
                self._quarantine(raw.origin, decoded.kind or "undecodable", decoded.reason or "")
                return
            text = decoded.text
            self.encodings[decoded.encoding] += 1
        else:
            self.encodings["text"] += 1
        self.chars_read += len(text)
        text, stats = clean(text, cfg.nfc, cfg.strip_control)
        self.cleaning.add(stats)
        if not text.strip():
            self._quarantine(
                raw.origin, "empty", "no text left after cleaning" if raw.text is None else "empty text"
            )
            return
        if cfg.pii:
            scrubbed = scrub(text, cfg.pii_replacements)
            text = scrubbed.text
            for kind, n in scrubbed.counts.items():
                self.pii[kind] += n
            self.pii_documents += any(scrubbed.counts.values())
        self.docs.append(TextDoc(raw.origin, text, meta=dict(raw.meta)))
        self.splits.append(split_name(raw.split, raw.origin))

    def _quarantine(self, origin: str, kind: str, reason: str) -> None:
        self.quarantine.append({"origin": origin, "kind": kind, "reason": reason})


# which copy of a duplicate group `drop` keeps: held-out copies first, so test stays intact
KEEP_RANK = {"test": 0, "val": 1, "train": 2}


def _document_duplicates(
    got: Collected, cfg: TextIngestConfig
) -> tuple[DuplicateGroups, np.ndarray, list[dict]]:
    dups = find_duplicates(
        [d.text for d in got.docs], cfg.near_dup_threshold, cfg.num_perm, cfg.shingle, cfg.shingle_size
    )
    keep = np.ones(len(got.docs), bool)
    dropped: list[dict[str, Any]] = []
    if cfg.dup_policy != "drop":
        return dups, keep, dropped
    for group in dups.groups():
        first, *rest = sorted(group, key=lambda i: (KEEP_RANK[got.splits[i]], i))
        for i in rest:
            keep[i] = False
            dropped.append(
                {
                    "origin": got.docs[i].origin,
                    "kind": "exact" if dups.hashes[i] == dups.hashes[first] else "near",
                    "duplicate_of": got.docs[first].origin,
                }
            )
    return dups, keep, dropped


def _paragraph_duplicates(
    docs: list[TextDoc], cfg: TextIngestConfig
) -> tuple[list[TextDoc | None], dict[str, Any]]:
    """Paragraph-level duplicates across all documents, before splitting (so a split cannot
    separate two copies when they are dropped): counted, and with policy `drop` every later copy
    removed from its document (None where nothing is left of one)."""
    where: list[tuple[int, int, int]] = []  # (doc, start, end) of each paragraph compared
    texts: list[str] = []
    total = 0
    for d, doc in enumerate(docs):
        for start, end in paragraph_spans(doc.text):
            total += 1
            # short lines repeat legitimately ("Exeunt.", "My lord?"): only long paragraphs count
            if end - start >= cfg.min_paragraph_chars:
                where.append((d, start, end))
                texts.append(doc.text[start:end])
    dups = find_duplicates(texts, cfg.near_dup_threshold, cfg.num_perm, cfg.shingle, cfg.shingle_size)
    groups = dups.groups()
    summary: dict[str, Any] = {
        "paragraphs": total,
        "compared": len(texts),
        "min_paragraph_chars": cfg.min_paragraph_chars,
        **dups.counts(),
        "policy": cfg.paragraph_dup_policy,
        "dropped": 0,
    }
    examples = [
        {
            "kind": "exact" if len({dups.hashes[i] for i in g}) == 1 else "near",
            "copies": len(g),
            "origins": sorted({docs[where[i][0]].origin for i in g})[:5],
            "text": texts[g[0]][:300],
        }
        for g in groups[:20]
    ]
    out: list[TextDoc | None] = list(docs)
    if cfg.paragraph_dup_policy != "drop" or not groups:
        return out, {**summary, "examples": examples}
    drop: dict[int, list[tuple[int, int]]] = {}
    for g in groups:
        for i in g[1:]:
            d, start, end = where[i]
            drop.setdefault(d, []).append((start, end))
    for d, spans in drop.items():
        text, cut, pieces = docs[d].text, 0, []
        for start, end in sorted(spans):
            pieces.append(text[cut:start])
            cut = end
        pieces.append(text[cut:])
        # the removed paragraph's blank lines stay on both sides: keep one paragraph break
        new = "\n\n".join(p.strip("\n") for p in pieces if p.strip("\n"))
        out[d] = TextDoc(docs[d].origin, new, meta=docs[d].meta) if new.strip() else None
    summary["dropped"] = sum(len(v) for v in drop.values())
    return out, {**summary, "examples": examples}


def _describe(source: Any, spec: str) -> dict[str, Any]:
    return {"spec": spec, **source.describe()}


def ingest(
    source: str,
    out: str | Path,
    config: TextIngestConfig | None = None,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> IngestResult:
    """Read, clean, scrub, dedupe, split and tokenise text `source` into the dataset `out`."""
    from genforge.data.text.report import write_text_report

    cfg = config or TextIngestConfig()
    reader = open_text_source(source, cfg)
    with DirLock(out), atomic_dir(out, overwrite=overwrite) as tmp:
        got = Collected()
        for raw in itertools.islice(reader, cfg.limit):
            got.add(raw, cfg)
            if progress is not None and (got.read % 256 == 0):
                progress(got.read, len(got.quarantine))
        if progress is not None:
            progress(got.read, len(got.quarantine))
        description = _describe(reader, source)
        if not got.docs:
            kinds = sorted({q["kind"] for q in got.quarantine})
            raise DataError(
                f"no usable text in {source}: read {got.read} document(s), quarantined "
                f"{len(got.quarantine)} ({', '.join(kinds) or 'none'})"
            )
        dups, keep, dropped = _document_duplicates(got, cfg)
        cleaned, paragraphs = _paragraph_duplicates(
            [d for d, k in zip(got.docs, keep, strict=True) if k], cfg
        )
        kept = np.flatnonzero(keep)
        alive = [i for i, d in enumerate(cleaned) if d is not None]
        docs = [cleaned[i] for i in alive]
        splits = [got.splits[kept[i]] for i in alive]
        # with duplicates kept, copies move to val together (else the carve makes leakage)
        units = dups.components()[kept[alive]] if cfg.dup_policy != "drop" else None
        plan = plan_splits(docs, splits, cfg.split_by, cfg.val_fraction, cfg.seed, DOC_SEPARATOR, units)
        train_texts = [d.text for d in plan.splits["train"]]
        tokenizer = train_tokenizer(cfg.tokenizer, [*train_texts, DOC_SEPARATOR], cfg.vocab_size)
        joined = {name: DOC_SEPARATOR.join(d.text for d in ds) for name, ds in plan.splits.items()}
        leaks = {
            name: leakage(joined["train"], text, cfg.leakage_window, cfg.leakage_ngram)
            for name, text in joined.items()
            if name != "train"
        }
        counts = {
            "read": got.read,
            "quarantined": len(got.quarantine),
            "documents": len(docs),
            "duplicates_dropped": len(dropped),
            "paragraph_duplicates_dropped": paragraphs["dropped"],
            "chars_read": got.chars_read,
            **{f"split_{name}": len(ds) for name, ds in plan.splits.items()},
        }
        meta = {
            "source": description,
            "process": to_dict(cfg),
            "counts": counts,
            "quarantined": len(got.quarantine),
            "encodings": dict(got.encodings),
            "cleaning": {"nfc": cfg.nfc, "strip_control": cfg.strip_control, **vars(got.cleaning)},
            "pii": {
                "enabled": cfg.pii,
                "documents": got.pii_documents,
                "counts": got.pii,
                "replacements": cfg.pii_replacements,
            },
            "duplicates": {
                "policy": cfg.dup_policy,
                "documents": {**dups.counts(), "dropped": len(dropped)},
                "paragraphs": {k: v for k, v in paragraphs.items() if k != "examples"},
                "near_dup_threshold": cfg.near_dup_threshold,
                "shingle": f"{cfg.shingle_size} {cfg.shingle}",
            },
            "split": {"method": plan.method, "val_fraction": cfg.val_fraction},
            "leakage": leaks,
        }
        manifest = write_text_dataset(tmp, plan.splits, tokenizer, meta, separator=DOC_SEPARATOR)
        save_json(cfg, tmp / CONFIG_FILE)
        near_pairs = [
            {"a": got.docs[i].origin, "b": got.docs[j].origin, "jaccard": sim}
            for i, j, sim in dups.near_pairs[:SHOWN_PAIRS]
        ]
        write_json(
            tmp / PROCESS_LOG,
            {
                "quarantine": got.quarantine,
                "dropped": dropped,
                "notes": [{"origin": "", "note": n} for n in plan.notes],
                "near_pairs": near_pairs,
                "paragraph_duplicates": paragraphs["examples"],
            },
        )
        report = write_text_report(tmp)
    return IngestResult(Path(out), manifest, report)
