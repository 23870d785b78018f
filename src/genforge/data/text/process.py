"""Cleaning and deduplication of text documents.

- `clean`: Unicode NFC; line ends to "\\n"; control characters other than "\\n" and "\\t"
  stripped (with a leading byte-order mark).
- Duplicates at document and paragraph level: exact (a hash of the text) and near (MinHash LSH
  through `datasketch` over word or character shingles, each candidate pair confirmed by the exact
  Jaccard similarity of its shingle sets, so the LSH can only miss pairs, never invent one).
  Documents: later copies dropped by default (`dup_policy`), since a copied document only
  teaches a model to memorise it. Paragraphs: found and reported by default, dropped on request
  (`paragraph_dup_policy: drop`); paragraphs shorter than `min_paragraph_chars` are not compared,
  since prose legitimately repeats short lines ("Exeunt.", "My lord?").
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from genforge.core.hashing import sha256_bytes

_LINE_ENDS = re.compile(r"\r\n?")
# C0 and C1 control characters except \t and \n (\r is gone by then), DEL, and U+FEFF (a BOM in
# the middle of text is a zero-width no-break space nobody typed)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff]")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_WORD = re.compile(r"\w+")
LSH_MARGIN = 0.15


@dataclass
class CleanStats:
    """What cleaning changed, summed over documents."""

    nfc_changed: int = 0  # documents NFC changed
    line_ends: int = 0  # \r\n or \r replaced by \n
    control_removed: int = 0  # control characters removed

    def add(self, other: CleanStats) -> None:
        self.nfc_changed += other.nfc_changed
        self.line_ends += other.line_ends
        self.control_removed += other.control_removed


def clean(text: str, nfc: bool = True, strip_control: bool = True) -> tuple[str, CleanStats]:
    stats = CleanStats()
    if nfc and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
        stats.nfc_changed = 1
    if strip_control:
        text, stats.line_ends = _LINE_ENDS.subn("\n", text)
        text, stats.control_removed = _CONTROL.subn("", text)
    return text, stats


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) of each paragraph (blocks between blank lines), the blank lines excluded."""
    spans, start = [], 0
    for m in _PARAGRAPH_BREAK.finditer(text):
        if m.start() > start:
            spans.append((start, m.start()))
        start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def content_hash(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))


def shingles(text: str, kind: str = "words", size: int = 5) -> set[str]:
    """The set of `size`-word (or `size`-character) windows of the lower-cased text, spaces
    collapsed; a text shorter than one window is one shingle."""
    if kind == "words":
        words = _WORD.findall(text.lower())
        if len(words) <= size:
            return {" ".join(words)} if words else set()
        return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}
    flat = " ".join(text.lower().split())
    if len(flat) <= size:
        return {flat} if flat else set()
    return {flat[i : i + size] for i in range(len(flat) - size + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def near_duplicate_pairs(
    sets: Sequence[set[str]], threshold: float, num_perm: int = 128, seed: int = 1
) -> list[tuple[int, int, float]]:
    """Pairs (i, j, jaccard) with i < j whose shingle sets have Jaccard similarity >= threshold,
    found through MinHash LSH and confirmed exactly."""
    from datasketch import MinHash, MinHashLSH

    live = [i for i, s in enumerate(sets) if s]
    if len(live) < 2:
        return []
    # shingles enter the MinHash as CRC-32 values (datasketch's default SHA-1 per shingle costs
    # twice as long); a rare CRC collision can only nudge an estimate: pairs are confirmed on the
    # shingle strings themselves
    hashes = MinHash.bulk(
        [[zlib.crc32(s.encode("utf-8")) for s in sets[i]] for i in live],
        num_perm=num_perm,
        seed=seed,
        hashfunc=_identity,
    )
    # candidates from an LSH tuned below the threshold: a pair just above it then collides with
    # probability ~0.99 instead of ~0.5-0.9, and the exact check below removes the extra candidates
    lsh = MinHashLSH(threshold=max(0.1, threshold - LSH_MARGIN), num_perm=num_perm)
    pairs = []
    for i, mh in zip(live, hashes, strict=True):
        for j in lsh.query(mh):
            sim = jaccard(sets[i], sets[j])
            if sim >= threshold:
                pairs.append((min(i, j), max(i, j), round(sim, 4)))
        lsh.insert(i, mh)
    return sorted(pairs)


def _identity(value: int) -> int:
    return value


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)  # the earliest item is the root


@dataclass
class DuplicateGroups:
    """Groups of duplicate items (indices into the list compared): exact copies and near ones."""

    n: int
    hashes: list[str]
    near_pairs: list[tuple[int, int, float]] = field(default_factory=list)

    def components(self) -> np.ndarray:
        """Component id per item: the index of its earliest duplicate (itself when unique)."""
        uf = _UnionFind(self.n)
        first: dict[str, int] = {}
        for i, h in enumerate(self.hashes):
            if h in first:
                uf.union(first[h], i)
            else:
                first[h] = i
        for i, j, _ in self.near_pairs:
            uf.union(i, j)
        return np.array([uf.find(i) for i in range(self.n)], np.int64)

    def groups(self) -> list[list[int]]:
        comp = self.components()
        out: dict[int, list[int]] = {}
        for i, c in enumerate(comp.tolist()):
            out.setdefault(c, []).append(i)
        return [g for g in out.values() if len(g) > 1]

    def counts(self) -> dict[str, int]:
        exact_copies = self.n - len(set(self.hashes))
        groups = self.groups()
        return {
            "exact_copies": exact_copies,  # items whose text an earlier item has exactly
            "near_pairs": len(self.near_pairs),
            "groups": len(groups),
            "redundant": sum(len(g) - 1 for g in groups),  # items beyond the first of each group
        }


def find_duplicates(
    texts: Sequence[str],
    threshold: float,
    num_perm: int,
    shingle: str,
    size: int,
    compare: Iterable[bool] | None = None,
) -> DuplicateGroups:
    """Exact and near duplicates among `texts`; `compare` masks the items taking part in the near
    search (exact copies are always found)."""
    hashes = [content_hash(t) for t in texts]
    if len(texts) < 2:  # nothing to compare (one long document: do not shingle it)
        return DuplicateGroups(len(texts), hashes)
    mask = list(compare) if compare is not None else [True] * len(texts)
    # one representative per exact-copy class: its copies join through the hash anyway
    seen: set[str] = set()
    sets: list[set[str]] = []
    for t, h, m in zip(texts, hashes, mask, strict=True):
        take = m and h not in seen
        seen.add(h)
        sets.append(shingles(t, shingle, size) if take else set())
    return DuplicateGroups(len(texts), hashes, near_duplicate_pairs(sets, threshold, num_perm))
