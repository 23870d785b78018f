"""Verbatim overlap between texts, vectorised: 64-bit rolling hashes of every fixed-width
character window (or word n-gram), compared as sorted arrays.

Used for train/val leakage here; the same functions measure memorisation (generated text vs
the train split) in evaluate. A window hash is sum(c[i+j] * B**j) * B**-i (mod 2**64) for the
window starting at i, computed from prefix sums in O(n), since B is odd and so invertible
modulo 2**64. Two different windows share a hash with probability ~2**-64 per pair: far below
what a reported share can show.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

_B = np.uint64(0x9E3779B97F4A7C15)  # odd: invertible modulo 2**64
_B_INV = np.uint64(pow(int(_B), -1, 1 << 64))
_WORD = re.compile(r"\w+")


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32).astype(np.uint64)


def rolling_hashes(codes: np.ndarray, width: int) -> np.ndarray:
    """uint64 hash of every `width`-long window of `codes` (len(codes) - width + 1 of them)."""
    n = len(codes)
    if width < 1 or n < width:
        return np.zeros(0, np.uint64)
    # +1: a zero code (NUL, or word id 0) must still count
    values = codes.astype(np.uint64) + np.uint64(1)
    with np.errstate(over="ignore"):
        # B**0 .. B**(n-1) and their inverses, wrapping modulo 2**64 as uint64 arithmetic does
        powers = np.concatenate([[np.uint64(1)], np.cumprod(np.full(n - 1, _B, np.uint64), dtype=np.uint64)])
        inverse = np.concatenate(
            [[np.uint64(1)], np.cumprod(np.full(n - 1, _B_INV, np.uint64), dtype=np.uint64)]
        )
        prefix = np.concatenate([[np.uint64(0)], np.cumsum(values * powers, dtype=np.uint64)])
        return (prefix[width:] - prefix[:-width]) * inverse[: n - width + 1]


def window_hashes(text: str, width: int = 50) -> np.ndarray:
    """Hashes of every `width`-character window of `text`."""
    return rolling_hashes(_codes(text), width)


def ngram_hashes(text: str, n: int = 13) -> np.ndarray:
    """Hashes of every n-gram of the lower-cased words of `text`."""
    vocab: dict[str, int] = {}
    ids = [vocab.setdefault(w, len(vocab)) for w in _WORD.findall(text.lower())]
    # ids are this text's own; each word's content hash makes n-grams of two texts comparable
    word_hash = np.array([_word_hash(w) for w in vocab], np.uint64)
    return rolling_hashes(word_hash[np.array(ids, np.int64)], n) if ids else np.zeros(0, np.uint64)


def _word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")


def found_mask(query: np.ndarray, reference_sorted: np.ndarray) -> np.ndarray:
    """Per query hash: present in `reference_sorted` (hashes sorted with np.sort). Sort plus binary
    search: numpy's isin/unique on uint64 are ~30x slower here."""
    if not len(query) or not len(reference_sorted):
        return np.zeros(len(query), bool)
    pos = np.minimum(np.searchsorted(reference_sorted, query), len(reference_sorted) - 1)
    return reference_sorted[pos] == query


def share_found(query: np.ndarray, reference_sorted: np.ndarray) -> float:
    """Share of `query` hashes present in `reference_sorted` (0 when there are none to look up)."""
    return float(found_mask(query, reference_sorted).mean()) if len(query) else 0.0


def leakage(train_text: str, held_out_text: str, window: int = 50, ngram: int = 13) -> dict[str, float | int]:
    """How much of `held_out_text` appears verbatim in `train_text`: the share of its
    `window`-character windows and of its `ngram`-word n-grams found in train."""
    train_w = np.sort(window_hashes(train_text, window))
    held_w = window_hashes(held_out_text, window)
    train_g = np.sort(ngram_hashes(train_text, ngram))
    held_g = ngram_hashes(held_out_text, ngram)
    return {
        "window_chars": window,
        "windows": len(held_w),
        "window_share": round(share_found(held_w, train_w), 6),
        "ngram_words": ngram,
        "ngrams": len(held_g),
        "ngram_share": round(share_found(held_g, train_g), 6),
    }
