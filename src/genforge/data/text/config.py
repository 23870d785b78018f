"""`TextIngestConfig`: every option of `genforge data ingest` on text, saved beside the dataset
(`ingest.json`, as the image ingest saves its `IngestConfig`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from genforge.core.errors import ConfigError

PII_KINDS = ("email", "phone", "ip", "card")
DEFAULT_REPLACEMENTS = {"email": "<EMAIL>", "phone": "<PHONE>", "ip": "<IP>", "card": "<CARD>"}


@dataclass
class TextIngestConfig:
    # tokenizer, trained on the train split only; bytes (UTF-8 bytes, 256 ids) learns nothing from
    # the data, which is what a differentially private text run needs (docs/privacy.md)
    tokenizer: Literal["char", "bpe", "bytes"] = "char"
    vocab_size: int = 4096  # bpe only: char's vocabulary is whatever characters train holds, bytes' 256
    # sources
    field: str | None = (
        None  # JSONL: the field holding the text (None: "text"); HF: the column (None: "text", else the only string column)
    )
    column: str = "text"  # CSV: the column holding the text
    limit: int | None = None  # read at most this many source documents
    # decoding: a document whose decoded text has a smaller share of printable characters
    # (letters, marks, numbers, punctuation, symbols, spaces, \n, \t) is quarantined as binary
    min_printable: float = 0.95
    # cleaning
    nfc: bool = True  # Unicode NFC: one encoding of "é" and friends, so dedup and the tokenizer see one form
    strip_control: bool = True  # drop control characters except \n and \t (\r\n and \r become \n)
    # PII scrubbing, before dedup and the tokenizer so neither ever sees what was scrubbed
    pii: bool = True
    # (dataclasses.field: the `field` option above shadows the bare name in this class body)
    pii_replacements: dict[str, str] = dataclasses.field(default_factory=lambda: dict(DEFAULT_REPLACEMENTS))
    # duplicates: documents drop later copies (exact and near) by default; paragraphs are
    # reported only, since a corpus legitimately repeats short lines ("Exeunt.", refrains)
    dup_policy: Literal["drop", "keep-first"] = "drop"
    paragraph_dup_policy: Literal["report", "drop"] = "report"
    near_dup_threshold: float = 0.8  # MinHash LSH Jaccard threshold of shingle sets
    num_perm: int = 128  # MinHash permutations
    shingle: Literal["words", "chars"] = "words"  # words for spaced scripts, chars for any script
    shingle_size: int = 5  # words (or characters) per shingle
    min_paragraph_chars: int = 100  # shorter paragraphs are not compared (they repeat naturally)
    # splits
    split_by: Literal["auto", "document", "position"] = "auto"  # auto: position for one document
    val_fraction: float | None = None  # None: 0.1, or 0 when the source has val or test
    seed: int = 0
    # train/val leakage measures
    leakage_window: int = 50  # characters per window
    leakage_ngram: int = 13  # words per n-gram

    def __post_init__(self) -> None:
        if self.tokenizer == "bpe" and self.vocab_size < 257:
            raise ConfigError(
                f"vocab_size: a byte-level BPE vocabulary needs at least 257 tokens, got {self.vocab_size}"
            )
        if self.vocab_size > 1 << 32:
            raise ConfigError(
                f"vocab_size: at most 2**32 tokens fit the uint32 token files, got {self.vocab_size}"
            )
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit: expected a positive integer, got {self.limit!r}")
        if not 0.0 <= self.min_printable <= 1.0:
            raise ConfigError(f"min_printable: expected a number in [0, 1], got {self.min_printable!r}")
        unknown = sorted(set(self.pii_replacements) - set(PII_KINDS))
        if unknown:
            raise ConfigError(
                f"pii_replacements: unknown kind(s) {', '.join(unknown)}; known: {', '.join(PII_KINDS)}"
            )
        self.pii_replacements = {**DEFAULT_REPLACEMENTS, **self.pii_replacements}
        bad = [
            k
            for k, v in self.pii_replacements.items()
            if not isinstance(v, str) or any(c.isdigit() for c in v)
        ]
        if bad:
            # a replacement with digits could be matched again by the card/phone/IP patterns
            raise ConfigError(f"pii_replacements.{bad[0]}: expected a string without digits")
        if not 0.0 < self.near_dup_threshold <= 1.0:
            raise ConfigError(
                f"near_dup_threshold: expected a number in (0, 1], got {self.near_dup_threshold!r}"
            )
        if self.num_perm < 16:
            raise ConfigError(f"num_perm: expected at least 16 permutations, got {self.num_perm!r}")
        if self.shingle_size < 1:
            raise ConfigError(f"shingle_size: expected a positive integer, got {self.shingle_size!r}")
        if self.min_paragraph_chars < 0:
            raise ConfigError(f"min_paragraph_chars: expected 0 or more, got {self.min_paragraph_chars!r}")
        if self.val_fraction is not None and not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction: expected a number in [0, 1), got {self.val_fraction!r}")
        if self.leakage_window < 1 or self.leakage_ngram < 1:
            raise ConfigError("leakage_window, leakage_ngram: expected positive integers")
