"""Perceptual hashing, multi-index near-duplicate search and duplicate grouping."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter
from sklearn.datasets import load_digits

from genforge.data.process.analysis import analyse_images, duplicates_of
from genforge.data.process.duplicates import (
    _band_plan,
    find_duplicates,
    hamming,
    low_frequencies,
    near_pairs,
    pack_bits,
    phash_bits,
)
from genforge.data.process.worker import ProcessSpec, process_item


def smooth_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = gaussian_filter(rng.normal(size=(n, size, size)), sigma=(0, 2.5, 2.5))
    raw = (raw - raw.min(axis=(1, 2), keepdims=True)) / np.ptp(raw, axis=(1, 2), keepdims=True)
    return np.rint(raw * 255).astype(np.uint8)


def test_phash_matches_the_imagehash_reference():
    images = smooth_images(40)
    ours = phash_bits(low_frequencies(images[..., None])).reshape(-1, 8, 8)
    ref = np.stack([imagehash.phash(Image.fromarray(im, "L")).hash for im in images])
    assert (ours == ref).all(axis=(1, 2)).mean() >= 0.95  # float32 vs float64 can flip a bit at the median
    assert (ours != ref).sum(axis=(1, 2)).max() <= 1


def test_phash_ignores_size_brightness_and_contrast():
    base = smooth_images(8, size=64)[..., None]
    small = np.stack(
        [np.asarray(Image.fromarray(b[..., 0]).resize((32, 32), Image.Resampling.LANCZOS)) for b in base]
    )
    h = pack_bits(phash_bits(low_frequencies(base)))
    assert hamming(h, pack_bits(phash_bits(low_frequencies(small[..., None])))).max() <= 4
    brighter = np.clip(base.astype(int) * 0.8 + 30, 0, 255).astype(np.uint8)
    assert hamming(h, pack_bits(phash_bits(low_frequencies(brighter)))).max() <= 2
    others = hamming(h[:4], h[4:])
    assert others.min() > 12  # different images stay far apart


def test_pack_bits_and_hamming_agree_with_bit_counts():
    rng = np.random.default_rng(1)
    bits = rng.random((50, 64)) < 0.5
    packed = pack_bits(bits)
    assert packed.dtype == np.uint64
    i, j = rng.integers(0, 50, 200), rng.integers(0, 50, 200)
    assert np.array_equal(hamming(packed[i], packed[j]), (bits[i] != bits[j]).sum(axis=1))


@pytest.mark.parametrize("distance", [0, 3, 6, 10])
def test_near_pairs_equals_brute_force(distance):
    rng = np.random.default_rng(distance)
    centres = rng.integers(0, 2**63, 300, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    flips = [
        np.uint64(sum(1 << int(b) for b in rng.choice(64, rng.integers(0, 9), replace=False)))
        for _ in range(900)
    ]
    hashes = np.concatenate([centres, centres[rng.integers(0, 300, 900)] ^ np.array(flips, np.uint64)])
    i, j, d = near_pairs(hashes, distance)
    a, b = np.triu_indices(len(hashes), 1)
    bd = hamming(hashes[a], hashes[b])
    keep = bd <= distance
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == set(
        zip(a[keep].tolist(), b[keep].tolist(), strict=True)
    )
    assert (i < j).all() and np.array_equal(d, hamming(hashes[i], hashes[j]))


def test_band_plan_satisfies_pigeonhole():
    for d in range(0, 20):
        m, r = _band_plan(60000, d)
        assert m * (r + 1) > d  # some band is within r bits whenever all 64 are within d


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def test_planted_copies_are_found_in_digits_and_distinct_digits_are_not_flagged():
    digits = load_digits()
    base = np.rint(digits.images / 16 * 255).astype(np.uint8)
    # upscale to 32x32 RGB like a processed dataset would be
    base = np.stack(
        [
            np.asarray(Image.fromarray(b).resize((32, 32), Image.Resampling.LANCZOS).convert("RGB"))
            for b in base
        ]
    )
    rng = np.random.default_rng(0)
    src = rng.choice(len(base), 30, replace=False)
    exact = base[src[:10]]
    reencoded = np.stack([jpeg_roundtrip(base[k], 75) for k in src[10:20]])
    brighter = np.clip(base[src[20:]].astype(int) + 12, 0, 255).astype(np.uint8)
    images = np.concatenate([base, exact, reencoded, brighter])
    spec = ProcessSpec(None, None, "crop", "lanczos", (255, 255, 255))
    hashes = [str(hash(process_item((None, im), spec)[0].tobytes())) for im in images]
    dups = duplicates_of(hashes, analyse_images(images), max_distance=6, min_similarity=0.985)
    n = len(base)
    exact_found = {frozenset(g) for g in dups.exact}
    assert all(frozenset({int(src[k]), n + k}) in exact_found for k in range(10))
    near_pairs_found = {(i, j) for i, j, _ in dups.near_pairs}
    for k in range(10, 30):
        assert dups.component[src[k]] == dups.component[n + k], (
            f"planted copy {k} not grouped with its original"
        )
        assert (int(src[k]), n + k) in near_pairs_found or dups.component[src[k]] == dups.component[n + k]
    planted = set(src.tolist()) | set(range(n, len(images)))
    flagged = {i for g in dups.groups() for i in g.tolist()} - planted
    assert len(flagged) / n < 0.03, f"{len(flagged)} of {n} distinct digits flagged as near duplicates"


def test_blank_images_are_exact_duplicates_only():
    images = np.zeros((6, 16, 16, 1), np.uint8)
    images[3:] = 255  # black and white blanks have the same pHash, but they are not the same image
    hashes = ["black"] * 3 + ["white"] * 3
    dups = duplicates_of(hashes, analyse_images(images), max_distance=6, min_similarity=0.985)
    assert sorted(map(sorted, dups.exact)) == [[0, 1, 2], [3, 4, 5]]
    assert dups.near == [] and len(dups.groups()) == 2


def test_reordered_duplicates_equal_a_fresh_search_in_the_new_order():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**62, 200, dtype=np.int64).astype(np.uint64)
    hashes = np.concatenate([base, base[:50] ^ np.uint64(3), base[50:60]])
    content = [str(i) for i in range(250)] + [str(50 + k) for k in range(10)]  # 10 exact copies
    perm = rng.permutation(len(hashes))
    moved = find_duplicates(content, hashes, 4).reordered(perm)
    fresh = find_duplicates([content[i] for i in perm], hashes[perm], 4)
    assert len(fresh.exact) == 10 and len(fresh.near_pairs) == 50
    assert (moved.exact, moved.near, moved.near_pairs) == (fresh.exact, fresh.near, fresh.near_pairs)
    assert [g.tolist() for g in moved.groups()] == [g.tolist() for g in fresh.groups()]
