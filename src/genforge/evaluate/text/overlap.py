"""Verbatim overlap between generated text and the training text: the memorisation metrics.

A passage copies the training text where one of its w-character windows (w = 50, the issue's
definition) occurs verbatim in it. Windows are hashed with the data stage's rolling hash
(`data.text.overlap.rolling_hashes`, the one its train/val leakage check uses) and looked up in
the sorted hashes of every training window of the same length; every hash hit is then compared
character by character, so a collision can never count as a copy: the answers are exact.

Why not a Python set of 50-character slices: on tinyshakespeare's 1,003,854-character train
split the set takes 0.52 s to build and about 100 MB; hashing and sorting the windows of one
length takes about 0.09 s and 12 bytes per window, and the same code answers the other lengths
the longest-span search asks for.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from genforge.data.text.overlap import rolling_hashes

WINDOW = 50
_VERIFY_CHUNK = 1 << 14  # rows compared at once: bounds the (rows, L) temporary arrays
_TABLES_KEPT = 4  # training-window tables cached (about 12 bytes per training character each)


def codes_of(text: str) -> np.ndarray:
    """The code points of `text` as uint32 (one per Python character)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


@dataclass
class SpanStats:
    """Overlap of one passage with the training text."""

    chars: int
    windows: int  # w-character windows of the passage
    copied: int  # of them found verbatim in the training text
    spans: list[tuple[int, int]] = field(default_factory=list)  # [start, end) unions of copied windows
    longest: int = 0  # longest substring found verbatim in the training text (any length)
    longest_at: tuple[int, int] = (0, 0)  # where it is in the passage
    longest_train_at: int = -1  # and where in the training text (-1 when longest is 0)

    def to_dict(self) -> dict:
        return {"chars": self.chars, "windows": self.windows, "copied_windows": self.copied,
                "copied_spans": [list(s) for s in self.spans], "longest_copied_span": self.longest,
                "longest_at": list(self.longest_at), "longest_train_at": self.longest_train_at}  # fmt: skip


def merge_windows(starts: np.ndarray, width: int) -> list[tuple[int, int]]:
    """Unions of the windows [s, s + width) as sorted, disjoint [start, end) spans."""
    spans: list[tuple[int, int]] = []
    for s in np.sort(starts).tolist():
        if spans and s <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], s + width))
        else:
            spans.append((s, s + width))
    return spans


class TrainIndex:
    """Exact verbatim-substring queries against one fixed text (the training split)."""

    def __init__(self, text: str, window: int = WINDOW):
        if window < 1:
            raise ValueError("window must be >= 1")
        self.text, self.window = text, window
        self.codes = codes_of(text)
        self._tables: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def _table(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """(sorted hashes, their window starts) of every training window of `length`."""
        if length in self._tables:
            self._tables.move_to_end(length)
            return self._tables[length]
        hashes = rolling_hashes(self.codes, length)
        order = np.argsort(hashes)
        starts = order.astype(np.int32 if len(order) < 2**31 else np.int64)
        self._tables[length] = table = (hashes[order], starts)
        while len(self._tables) > _TABLES_KEPT:
            self._tables.popitem(last=False)
        return table

    def _same(self, query: np.ndarray, at: np.ndarray, train_at: np.ndarray, length: int) -> np.ndarray:
        """query[at[k]:+length] == train[train_at[k]:+length] for every k, compared in chunks."""
        out = np.zeros(len(at), dtype=bool)
        qv, tv = sliding_window_view(query, length), sliding_window_view(self.codes, length)
        for lo in range(0, len(at), _VERIFY_CHUNK):
            hi = lo + _VERIFY_CHUNK
            out[lo:hi] = (qv[at[lo:hi]] == tv[train_at[lo:hi]]).all(axis=1)
        return out

    def candidates(self, query: np.ndarray, window_hash: np.ndarray, i: int, length: int) -> np.ndarray:
        """Every training start whose window of `length` equals query[i:i+length] (verified)."""
        hashes, starts = self._table(length)
        lo, hi = np.searchsorted(hashes, window_hash[i], "left"), np.searchsorted(hashes, window_hash[i], "right")
        cands = starts[lo:hi].astype(np.int64)
        keep = self._same(query, np.full(len(cands), i, dtype=np.int64), cands, length)
        return cands[keep]

    def matches(self, query: np.ndarray, length: int) -> np.ndarray:
        """For each window start i of `query` (code points), one training start p with
        train[p:p+length] == query[i:i+length], or -1 when the window is not in the training text."""
        window_hash = rolling_hashes(query, length)
        out = np.full(len(window_hash), -1, dtype=np.int64)
        if len(window_hash) == 0 or len(self.codes) < length:
            return out
        hashes, starts = self._table(length)
        k = np.searchsorted(hashes, window_hash)
        k_safe = np.minimum(k, len(hashes) - 1)
        hit = np.flatnonzero((k < len(hashes)) & (hashes[k_safe] == window_hash))
        train_at = starts[k_safe[hit]].astype(np.int64)
        same = self._same(query, hit, train_at, length)
        out[hit[same]] = train_at[same]
        # a hash hit whose first training window differs is a collision (about 1 in 2^64 per pair
        # for text); another window with the same hash may still be equal, so look at them all
        for i in hit[~same].tolist():
            cands = self.candidates(query, window_hash, i, length)
            if len(cands):
                out[i] = cands[0]
        return out

    def _extend(self, query: np.ndarray, i: int, p: int) -> int:
        """Length of the common prefix of query[i:] and train[p:]."""
        a = query[i:]
        b = self.codes[p : p + len(a)]
        differ = np.flatnonzero(a[: len(b)] != b)
        return int(differ[0]) if len(differ) else len(b)

    def stats(self, passages: list[str], longest: bool = True) -> list[SpanStats]:
        """Copied windows, their spans and (unless `longest` is False) the longest verbatim span
        of each passage."""
        w = self.window
        out: list[SpanStats] = []
        short: list[int] = []  # passages without a copied window: their longest span is < w
        queries: list[np.ndarray] = []
        for text in passages:
            codes = codes_of(text)
            queries.append(codes)
            at = self.matches(codes, w)
            hits = np.flatnonzero(at >= 0)
            st = SpanStats(chars=len(codes), windows=len(at), copied=len(hits), spans=merge_windows(hits, w))
            if longest and len(hits):
                self._longest_from_hits(st, codes, hits)
            elif longest:
                short.append(len(out))
            out.append(st)
        self._longest_below_window(out, short, queries)
        return out

    def _longest_from_hits(self, st: SpanStats, codes: np.ndarray, hits: np.ndarray) -> None:
        """Any verbatim span of >= w characters starts with a copied window: extending every
        training occurrence of every copied window to the right finds the longest exactly."""
        w = self.window
        window_hash = rolling_hashes(codes, w)
        for i in hits.tolist():
            for p in self.candidates(codes, window_hash, i, w).tolist():
                length = w + self._extend(codes, i + w, p + w)
                if length > st.longest:
                    st.longest, st.longest_at, st.longest_train_at = length, (i, i + length), p

    def _longest_below_window(self, out: list[SpanStats], todo: list[int],
                              queries: list[np.ndarray]) -> None:  # fmt: skip
        """The longest verbatim span (< w) of each passage in `todo`: a binary search on the
        length, run for all passages together so the ones asking the same length share its table
        ("has a copied span of length L" is monotone in L)."""
        lo = {k: 0 for k in todo}
        hi = {k: min(self.window - 1, out[k].chars, len(self.codes)) for k in todo}
        while True:
            by_length: dict[int, list[int]] = {}
            for k in todo:
                if lo[k] < hi[k]:
                    by_length.setdefault((lo[k] + hi[k] + 1) // 2, []).append(k)
            if not by_length:
                break
            for length, ks in sorted(by_length.items()):
                for k in ks:
                    at = self.matches(queries[k], length)
                    hits = np.flatnonzero(at >= 0)
                    if len(hits):
                        lo[k] = length
                        i = int(hits[0])
                        out[k].longest, out[k].longest_at, out[k].longest_train_at = length, (i, i + length), int(at[i])
                    else:
                        hi[k] = length - 1


def window_rate(stats: list[SpanStats]) -> tuple[float | None, int, int]:
    """(copied windows / windows pooled over passages, copied, windows); None without windows."""
    windows = sum(s.windows for s in stats)
    copied = sum(s.copied for s in stats)
    return (copied / windows if windows else None), copied, windows
