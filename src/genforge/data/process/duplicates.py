"""Exact and near duplicates: content hashes, 64-bit DCT perceptual hashes, multi-index search.

The perceptual hash is the classic pHash (the 8x8 lowest DCT-II frequencies of the grey image,
thresholded at their median), computed straight from the image at its own size: the lowest
frequencies of an image and of its 32x32 resize agree up to one common factor, which the
median threshold ignores. So no resize is needed, and a batch is two matrix products.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations
from math import comb

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

HASH_SIDE = 8  # 8x8 frequencies -> 64 bits


@lru_cache(maxsize=32)
def dct_rows(n: int, k: int = HASH_SIDE) -> np.ndarray:
    """The first `k` rows of the unnormalised DCT-II matrix of size n (as scipy.fft.dct)."""
    u = np.arange(k, dtype=np.float64)[:, None]
    x = np.arange(n, dtype=np.float64)[None, :]
    return (2.0 * np.cos(np.pi * u * (2 * x + 1) / (2 * n))).astype(np.float32)


GREY_WEIGHTS = (0.299, 0.587, 0.114)


@lru_cache(maxsize=32)
def _column_transform(w: int, c: int) -> np.ndarray:
    """(W*C, 8): grey conversion and the column DCT in one matrix, for rows laid out as W*C."""
    weights = np.array(GREY_WEIGHTS if c == 3 else (1.0,) * c, np.float32) / (1.0 if c in (1, 3) else c)
    return np.kron(dct_rows(w).T, weights[:, None]).astype(np.float32)


def low_frequencies(images: np.ndarray) -> np.ndarray:
    """uint8 or float (N,H,W,C) -> float32 (N,8,8): lowest DCT-II coefficients of the grey image."""
    n, h, w, c = images.shape
    x = images.reshape(n, h, w * c).astype(np.float32, copy=False)
    return dct_rows(h) @ (x @ _column_transform(w, c))


def phash_bits(coeffs: np.ndarray) -> np.ndarray:
    flat = coeffs.reshape(len(coeffs), -1)
    return flat > np.median(flat, axis=1, keepdims=True)


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """bool (N,64) -> uint64 (N,), first bit most significant."""
    return np.packbits(bits, axis=1).view(">u8")[:, 0].astype(np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


def _band_plan(n: int, max_distance: int) -> tuple[int, int]:
    """(bands, radius) for multi-index hashing: with m bands, two hashes within distance d
    agree within floor(d/m) bits on at least one band (pigeonhole). Cost model: m * variants
    lookups per hash, plus the expected candidate pairs m * variants * n^2 / 2^width."""
    best = None
    for m in range(1, min(64, max_distance + 1) + 1):
        width, radius = 64 // m, max_distance // m
        variants = sum(comb(width, k) for k in range(radius + 1))
        cost = m * variants * (n + n * n / 2.0**width)
        if best is None or cost < best[0]:
            best = (cost, m, radius)
    assert best is not None
    return best[1], best[2]


def _flip_masks(width: int, radius: int) -> list[int]:
    return [sum(1 << b for b in bits) for k in range(radius + 1) for bits in combinations(range(width), k)]


DENSE_BAND_BITS = 24  # bands up to this wide are looked up in a dense count table, not by bisection
QUERY_CHUNK = 8192


def near_pairs(hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i < j) with Hamming distance <= max_distance, without comparing all pairs.

    Multi-index hashing: the 64 bits are cut into m bands; every pair within the distance
    agrees within r = max_distance // m bits on some band, so each hash looks up the band
    values at most r flips from its own, and the candidates are verified on all 64 bits.
    """
    hashes = np.asarray(hashes, np.uint64)
    n = len(hashes)
    found: list[np.ndarray] = [np.zeros(0, np.int64)]
    m, radius = _band_plan(n, max_distance)
    edges = np.linspace(0, 64, m + 1).round().astype(int)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True) if n > 1 else ():
        width = int(hi - lo)
        key = (hashes >> np.uint64(64 - hi)) & np.uint64((1 << width) - 1)
        order = np.argsort(key, kind="stable")
        skey = key[order]
        if width <= DENSE_BAND_BITS:
            counts = np.bincount(key.astype(np.int64), minlength=1 << width)
            starts = np.cumsum(counts) - counts
        for flip in _flip_masks(width, radius):
            # a pair whose band values differ by `flip` is found from both ends: query only from
            # the end where flip's top bit is 0 (for flip 0, keep a < b below)
            top = np.uint64(1 << (flip.bit_length() - 1)) if flip else np.uint64(0)
            senders = np.flatnonzero((key & top) == 0) if flip else np.arange(n)
            for q0 in range(0, len(senders), QUERY_CHUNK):
                src = senders[q0 : q0 + QUERY_CHUNK]
                query = (key[src] ^ np.uint64(flip)).astype(
                    np.int64 if width <= DENSE_BAND_BITS else np.uint64
                )
                if width <= DENSE_BAND_BITS:
                    first, count = starts[query], counts[query]
                else:
                    first = np.searchsorted(skey, query, "left")
                    count = np.searchsorted(skey, query, "right") - first
                total = int(count.sum())
                if not total:
                    continue
                a = np.repeat(src, count)
                b = order[np.arange(total) - np.repeat(np.cumsum(count) - count - first, count)]
                if not flip:
                    keep = a < b
                    a, b = a[keep], b[keep]
                close = hamming(hashes[a], hashes[b]) <= max_distance  # verify before storing: few survive
                a, b = a[close], b[close]
                found.append(np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b))
    codes = np.unique(np.concatenate(found))
    i, j = codes // max(n, 1), codes % max(n, 1)
    return i, j, hamming(hashes[i], hashes[j])


def exact_groups(keys: Sequence[str]) -> list[list[int]]:
    """Indices sharing a content hash, in first-seen order (groups of two or more)."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component label of each of n nodes given undirected edges a-b."""
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


@dataclass
class Duplicates:
    """Duplicate structure of N images (indices into the caller's order)."""

    exact: list[list[int]]  # groups of identical pixels
    near: list[list[int]]  # groups of near-identical images (one representative per exact group)
    near_pairs: list[tuple[int, int, int]]  # (i, j, Hamming distance) with i < j
    component: np.ndarray  # (N,) label: images with one label are copies of each other

    def groups(self) -> list[np.ndarray]:
        """Index arrays (ascending) of every component with more than one image, by first member."""
        order = np.argsort(self.component, kind="stable")
        labels = self.component[order]
        cuts = np.flatnonzero(np.diff(labels)) + 1
        return sorted((g for g in np.split(order, cuts) if len(g) > 1), key=lambda g: int(g[0]))

    def reordered(self, order: np.ndarray) -> Duplicates:
        """The same duplicates with image order[k] renumbered k (order: a permutation of all images),
        listed exactly as `find_duplicates` would list them for the reordered images."""
        pos = np.empty(len(order), np.int64)
        pos[order] = np.arange(len(order))

        def regroup(groups: list[list[int]]) -> list[list[int]]:
            return sorted((sorted(int(pos[i]) for i in g) for g in groups), key=lambda g: g[0])

        pairs = sorted((min(pos[i], pos[j]), max(pos[i], pos[j]), d) for i, j, d in self.near_pairs)
        return Duplicates(
            exact=regroup(self.exact),
            near=regroup(self.near),
            near_pairs=[(int(i), int(j), int(d)) for i, j, d in pairs],
            component=self.component[order],
        )


def structure_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of the low-frequency features without their DC term: blind to
    brightness and contrast changes, sensitive to any change of what is drawn where."""
    a, b = a[:, 1:].astype(np.float64), b[:, 1:].astype(np.float64)
    norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.divide((a * b).sum(axis=1), norm, out=np.zeros(len(a)), where=norm > 0)


def find_duplicates(
    content_hashes: Sequence[str],
    phashes: np.ndarray,
    max_distance: int,
    searchable: np.ndarray | None = None,
    features: np.ndarray | None = None,
    min_similarity: float = 0.0,
) -> Duplicates:
    """Exact groups by content hash; near pairs by pHash among one representative per exact
    group (only where `searchable`: a blank image's pHash is noise), confirmed by
    `structure_similarity` of `features` >= min_similarity: on tiny images (8x8 digits) 64
    hash bits are the whole picture and distinct images collide."""
    n = len(content_hashes)
    exact = exact_groups(content_hashes)
    rep = np.ones(n, bool)
    ea, eb = [], []
    for g in exact:
        rep[g[1:]] = False
        ea.extend([g[0]] * (len(g) - 1))
        eb.extend(g[1:])
    if searchable is not None:
        rep &= searchable
    reps = np.flatnonzero(rep)
    i, j, dist = near_pairs(np.asarray(phashes)[reps], max_distance)
    i, j = reps[i], reps[j]
    if features is not None and min_similarity > 0 and len(i):
        ok = structure_similarity(features[i], features[j]) >= min_similarity
        i, j, dist = i[ok], j[ok], dist[ok]
    a = np.concatenate([np.asarray(ea, np.int64), i])
    b = np.concatenate([np.asarray(eb, np.int64), j])
    comp = components(n, a, b)
    near_labels = components(n, i, j)
    near: dict[int, list[int]] = {}
    for node in np.unique(np.concatenate([i, j])):
        near.setdefault(int(near_labels[node]), []).append(int(node))
    pairs = [(int(x), int(y), int(d)) for x, y, d in zip(i, j, dist, strict=True)]
    return Duplicates(exact=exact, near=list(near.values()), near_pairs=pairs, component=comp)
