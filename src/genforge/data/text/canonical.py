"""The canonical text dataset (docs/modalities.md), written by `genforge data ingest` on text.

Layout of DATASET_DIR (beside the manifest, report and ingest files every modality has):
    tokenizer.json          trained on the train split only (`data.text.tokenizer`)
    <split>/tokens.npy      uint16 (uint32 when the vocabulary exceeds 65,535) 1-D token ids of the
                            split's documents joined in order, memory-mapped when read
    <split>/text.txt        the split's cleaned text, UTF-8: decode(tokens) == text
    <split>/docs.json       per document: origin, content hash, [start, end) character and token offsets
Documents are joined with `DOC_SEPARATOR` (a blank line) in both the text and the tokens, each
document and separator encoded on its own, so document offsets are exact in both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.atomic import write_json, write_text
from genforge.core.errors import DataError
from genforge.core.hashing import hash_array, sha256_bytes
from genforge.data.canonical import DATASETS
from genforge.data.dataset_base import DatasetReader, SplitReader, write_manifest
from genforge.data.text.tokenizer import TOKENIZER_FILE, Tokenizer, load_tokenizer, tokenizer_hash

FORMAT_VERSION = 1
DOC_SEPARATOR = "\n\n"
UINT16_MAX_VOCAB = 65535  # docs/modalities.md: uint32 when the vocabulary exceeds 65,535
TOKENS_FILE, TEXT_FILE, DOCS_FILE = "tokens.npy", "text.txt", "docs.json"


@dataclass
class TextDoc:
    """One cleaned document: where it came from and its text."""

    origin: str  # file path, "archive.tar.gz::member", "data.jsonl:12", "hf:name[train][3]"
    text: str
    hash: str = ""  # sha256 of the UTF-8 text; computed when empty
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.hash:
            self.hash = sha256_bytes(self.text.encode("utf-8"))


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= UINT16_MAX_VOCAB else np.uint32)


def _encode_split(docs: list[TextDoc], tokenizer: Tokenizer, separator: str) -> tuple[np.ndarray, list[dict]]:
    """Token ids of the documents joined by `separator`, and each document's offsets."""
    sep_ids = tokenizer.encode_array(separator) if separator else np.zeros(0, np.int64)
    pieces: list[np.ndarray] = []
    index: list[dict[str, Any]] = []
    char_pos = tok_pos = 0
    for i, doc in enumerate(docs):
        if i:
            pieces.append(sep_ids)
            char_pos += len(separator)
            tok_pos += len(sep_ids)
        ids = tokenizer.encode_array(doc.text)
        pieces.append(ids)
        entry = {
            "origin": doc.origin,
            "hash": doc.hash,
            "chars": [char_pos, char_pos + len(doc.text)],
            "tokens": [tok_pos, tok_pos + len(ids)],
        }
        if doc.meta:
            entry["meta"] = doc.meta
        index.append(entry)
        char_pos += len(doc.text)
        tok_pos += len(ids)
    ids = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    return ids, index


def write_text_dataset(
    directory: str | Path,
    splits: dict[str, list[TextDoc]],
    tokenizer: Tokenizer,
    meta: dict[str, Any],
    *,
    separator: str = DOC_SEPARATOR,
) -> dict[str, Any]:
    """Write `splits` (name -> documents in order) into `directory` (already created, usually an
    atomic_dir) with `tokenizer`, and return the manifest. `meta` adds manifest fields (source,
    process, counts)."""
    directory = Path(directory)
    vocab = tokenizer.vocab_size
    dtype = token_dtype(vocab)
    tok_hash = tokenizer_hash(tokenizer)
    tokenizer.save(directory / TOKENIZER_FILE)
    split_meta: dict[str, Any] = {}
    fingerprint_parts: list[Any] = [FORMAT_VERSION, "text", tok_hash, separator]
    for name, docs in splits.items():
        ids, index = _encode_split(docs, tokenizer, separator)
        if len(ids) and (ids.min() < 0 or ids.max() >= vocab):
            raise DataError(f"split {name!r}: token ids outside the tokenizer's vocabulary of {vocab}")
        tokens = ids.astype(dtype)
        text = separator.join(d.text for d in docs)
        sdir = directory / name
        sdir.mkdir(parents=True, exist_ok=True)
        np.save(sdir / TOKENS_FILE, tokens)
        write_text(sdir / TEXT_FILE, text)
        write_json(sdir / DOCS_FILE, index)
        split_meta[name] = {"tokens": len(tokens), "chars": len(text), "documents": len(docs)}
        fingerprint_parts.append([name, hash_array(tokens)])
    fields = {
        "class_names": None,
        "num_classes": 0,
        "tokenizer": {"kind": tokenizer.kind, "vocab_size": vocab, "file": TOKENIZER_FILE, "hash": tok_hash},
        "token_dtype": dtype.name,
        "doc_separator": separator,
        "splits": split_meta,
    }
    return write_manifest(directory, "text", FORMAT_VERSION, fields, fingerprint_parts, meta)


class TextSplit(SplitReader):
    """One split: `tokens` (a read-only memory map), `text`, `docs`. `len()` counts tokens."""

    has_labels = False

    def __init__(self, root: Path, name: str, meta: dict[str, Any], dtype: np.dtype, vocab_size: int):
        super().__init__(root, name, meta)
        self.dtype, self.vocab_size = dtype, vocab_size
        self._tokens = self._open_tokens()

    def _open_tokens(self) -> np.ndarray:
        arr = self._load(TOKENS_FILE, "open the token file", mmap=True)
        if arr.dtype != self.dtype or arr.ndim != 1 or len(arr) != self.meta["tokens"]:
            raise DataError(
                f"{self._file(TOKENS_FILE)}: expected {self.dtype.name} (N,) with N={self.meta['tokens']} "
                f"(manifest.json splits.{self.name}.tokens), got {arr.dtype} {arr.shape}"
            )
        return arr

    def __len__(self) -> int:
        return int(self.meta["tokens"])

    @cached_property
    def tokens(self) -> np.ndarray:
        """All token ids (N,) as a memory map, checked once to lie inside the vocabulary."""
        arr = self._tokens
        if len(arr) and int(arr.max()) >= self.vocab_size:
            raise DataError(
                f"{self._file(TOKENS_FILE)}: token id {int(arr.max())} is outside the "
                f"vocabulary of {self.vocab_size} (manifest.json tokenizer.vocab_size)"
            )
        return arr

    @property
    def chars(self) -> int:
        return int(self.meta["chars"])

    @property
    def documents(self) -> int:
        return int(self.meta["documents"])

    @cached_property
    def text(self) -> str:
        path = self._file(TEXT_FILE)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read the split's text ({exc})") from None
        if len(text) != self.chars:
            raise DataError(
                f"{path}: expected {self.chars} characters (manifest.json splits.{self.name}.chars), got {len(text)}"
            )
        return text

    @cached_property
    def docs(self) -> list[dict[str, Any]]:
        """Per document: origin, hash, [start, end) `chars` and `tokens` offsets."""
        path = self._file(DOCS_FILE)
        try:
            docs = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read the document index ({exc})") from None
        if not isinstance(docs, list) or len(docs) != self.documents:
            raise DataError(
                f"{path}: expected a list of {self.documents} documents (manifest.json splits.{self.name}.documents)"
            )
        return docs

    @property
    def class_counts(self) -> list[int]:
        return []


class TextDataset(DatasetReader[TextSplit]):
    """A text dataset: token memmaps and cleaned text per split, and the tokenizer."""

    modality = "text"

    def _check_manifest(self) -> None:
        info = self.manifest.get("tokenizer")
        if not isinstance(info, dict) or not isinstance(info.get("vocab_size"), int):
            raise self._field_error("tokenizer", "must hold 'kind' and an integer 'vocab_size'")
        self._vocab_size = int(info["vocab_size"])
        dtype_name = self.manifest.get("token_dtype")
        if dtype_name not in ("uint16", "uint32"):
            raise self._field_error("token_dtype", f"must be 'uint16' or 'uint32', got {dtype_name!r}")
        self._dtype = np.dtype(dtype_name)

    def _open_split(self, name: str, meta: dict[str, Any]) -> TextSplit:
        missing = [k for k in ("tokens", "chars", "documents") if not isinstance(meta.get(k), int)]
        if missing:
            raise self._field_error(f"splits.{name}", f"lacks integer {', '.join(missing)}")
        return TextSplit(self.path, name, meta, self._dtype, self._vocab_size)

    @cached_property
    def tokenizer(self) -> Tokenizer:
        tok = load_tokenizer(self.path / self.manifest["tokenizer"].get("file", TOKENIZER_FILE))
        if tok.vocab_size != self._vocab_size:
            raise DataError(
                f"{self.path / TOKENIZER_FILE}: vocabulary of {tok.vocab_size} but manifest.json "
                f"tokenizer.vocab_size is {self._vocab_size}"
            )
        return tok

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def separator(self) -> str:
        return str(self.manifest.get("doc_separator", DOC_SEPARATOR))

    def model_fields(self) -> dict[str, Any]:
        return {"vocab_size": self._vocab_size}

    def _describe_data(self) -> dict[str, Any]:
        return {"tokenizer": {"kind": self.manifest["tokenizer"].get("kind"), "vocab_size": self._vocab_size}}

    def describe(self) -> dict[str, Any]:
        splits = {name: {"tokens": len(s), "chars": s.chars} for name, s in self._splits.items()}
        return {**super().describe(), "splits": splits}


DATASETS.register("text", TextDataset)
