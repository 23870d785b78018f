"""Text processing: decoding, cleaning, MinHash near duplicates against brute force, splits
(position split identical to nanoGPT's), overlap measures."""

from __future__ import annotations

import random
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from genforge.data.text.canonical import TextDoc
from genforge.data.text.decode import decode_bytes
from genforge.data.text.overlap import leakage, ngram_hashes, window_hashes
from genforge.data.text.process import (
    clean,
    find_duplicates,
    jaccard,
    near_duplicate_pairs,
    paragraph_spans,
    shingles,
)
from genforge.data.text.split import plan_splits, position_cut

FRENCH = (
    "Il était une fois, dans un château très éloigné, une princesse qui rêvait de voyages à "
    "l'étranger. Elle préférait les forêts aux salons, et l'été aux fêtes de la cour.\n"
) * 3


# ---- decoding


def test_utf8_and_bom_and_latin1() -> None:
    assert decode_bytes("héllo 😀".encode()).text == "héllo 😀"
    assert decode_bytes("hello".encode("utf-8-sig")).text == "hello"
    utf16 = decode_bytes("hello wörld\n".encode("utf-16"))  # with a BOM: NUL bytes but text
    assert utf16.text == "hello wörld\n" and utf16.encoding.startswith("utf-16")
    latin = decode_bytes(FRENCH.encode("latin-1"))
    assert latin.text == FRENCH and latin.encoding not in ("utf-8", None)


def test_binary_and_undecodable_are_quarantined() -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
    out = decode_bytes(png)
    assert out.text is None and out.kind == "binary" and "NUL" in out.reason
    rng = random.Random(0)
    noise = bytes(rng.randrange(1, 256) for _ in range(4000))  # no NUL, no encoding
    out = decode_bytes(noise)
    assert out.text is None and out.kind in ("binary", "undecodable") and out.reason
    assert decode_bytes(b"").kind == "empty"
    ctrl = decode_bytes(b"\x01\x02\x03\x04 abc" * 50)  # valid UTF-8, but control bytes
    assert ctrl.text is None and "printable" in ctrl.reason


# ---- cleaning


def test_nfc_line_ends_and_control_characters() -> None:
    decomposed = "Cafe\u0301 na\u0131\u0308ve\r\nline two\rline three\x00\x07\x1b[0m\tTab\ufeff\n"
    text, stats = clean(decomposed)
    assert text == "Café naı̈ve\nline two\nline three[0m\tTab\n"
    assert stats.nfc_changed == 1 and stats.line_ends == 2 and stats.control_removed == 4
    kept, stats = clean(decomposed, nfc=False, strip_control=False)
    assert kept == decomposed and stats.nfc_changed == stats.control_removed == 0


def test_paragraph_spans() -> None:
    text = "one\ntwo\n\n\nthree\n  \nfour\n"
    assert [text[s:e] for s, e in paragraph_spans(text)] == ["one\ntwo", "three", "four\n"]


# ---- near duplicates: MinHash LSH against brute-force Jaccard


def _corpus(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(400)]
    base = [[rng.choice(vocab) for _ in range(120)] for _ in range(12)]
    docs = [" ".join(b) for b in base]
    for k, b in enumerate(base[:6]):  # variants with a few words changed: high Jaccard
        v = list(b)
        for _ in range(k % 3 + 1):
            v[rng.randrange(len(v))] = rng.choice(vocab)
        docs.append(" ".join(v))
    for b in base[6:9]:  # half rewritten: low Jaccard
        v = list(b)
        for i in range(0, len(v), 2):
            v[i] = rng.choice(vocab)
        docs.append(" ".join(v))
    return docs


def test_minhash_matches_brute_force() -> None:
    docs = _corpus()
    sets = [shingles(d, "words", 5) for d in docs]
    threshold = 0.7
    truth = {(i, j): jaccard(sets[i], sets[j]) for i, j in combinations(range(len(docs)), 2)}
    found = {(i, j): sim for i, j, sim in near_duplicate_pairs(sets, threshold, num_perm=128)}
    # every reported pair is a true pair with its exact similarity (no false positives)
    for pair, sim in found.items():
        assert truth[pair] >= threshold and sim == pytest.approx(truth[pair], abs=1e-4)
    # every similar pair is found (the LSH collects candidates below the threshold)
    clear = {p for p, s in truth.items() if s >= threshold}
    assert clear and clear <= set(found)
    assert len(clear) >= 6  # the six light edits
    assert all(truth[p] < 0.3 for p in truth if p not in found and truth[p] < threshold)


def test_find_duplicates_exact_and_near_groups() -> None:
    docs = _corpus()
    docs.append(docs[0])  # an exact copy
    dups = find_duplicates(docs, 0.7, 128, "words", 5)
    comp = dups.components()
    assert comp[len(docs) - 1] == 0 and comp[12] == 0  # exact copy and the first light edit join doc 0
    counts = dups.counts()
    assert counts["exact_copies"] == 1 and counts["groups"] >= 6
    assert find_duplicates(["only one"], 0.7, 128, "words", 5).counts()["groups"] == 0


def test_char_shingles_work_without_spaces() -> None:
    a = "これは日本語の文章です。" * 5
    b = a[:-3] + "だよ。"
    assert jaccard(shingles(a, "chars", 3), shingles(b, "chars", 3)) >= 0.75
    assert len(shingles(a, "words", 5)) <= 2  # words see one or two long tokens only


# ---- splits


def _nanogpt_split(data: str) -> tuple[str, str]:
    # ../shared/anchors/nanogpt/data/shakespeare_char/prepare.py
    n = len(data)
    return data[: int(n * 0.9)], data[int(n * 0.9) :]


def test_position_split_is_nanogpts() -> None:
    rng = random.Random(1)
    for n in (10, 11, 19, 1001, 12345):
        text = "".join(rng.choice("abc \n") for _ in range(n))
        plan = plan_splits([TextDoc("f.txt", text)], ["train"], "auto", None, 0, "\n\n")
        train, val = _nanogpt_split(text)
        assert plan.method == "position"
        assert plan.splits["train"][0].text == train and plan.splits["val"][0].text == val


def test_position_split_over_documents_cuts_one() -> None:
    docs = [TextDoc(f"d{i}", "x" * 10) for i in range(5)]  # joined: 5*10 + 4*2 = 58 chars
    train, val = position_cut(docs, 0.1, "\n\n")
    cut = int(58 * 0.9)  # 52: inside d4 (which starts at 48)
    assert [d.origin for d in train] == ["d0", "d1", "d2", "d3", "d4[:4]"]
    assert [d.origin for d in val] == ["d4[4:]"] and val[0].text == "x" * 6
    assert sum(len(d.text) for d in train) + 2 * 4 == cut


def test_document_split_is_seeded_and_respects_source_splits() -> None:
    docs = [TextDoc(f"d{i}", f"document {i}") for i in range(20)]
    a = plan_splits(docs, ["train"] * 20, "auto", None, 0, "\n\n")
    b = plan_splits(docs, ["train"] * 20, "auto", None, 0, "\n\n")
    c = plan_splits(docs, ["train"] * 20, "auto", None, 1, "\n\n")
    names = [[d.origin for d in p.splits["val"]] for p in (a, b, c)]
    assert a.method == "document" and len(names[0]) == 2 and names[0] == names[1] != names[2]
    three = plan_splits(docs[:3], ["train"] * 3, "document", None, 0, "\n\n")
    assert len(three.splits["val"]) == 1  # at least one document
    only_test = plan_splits(docs, ["test"] * 20, "auto", None, 0, "\n\n")
    assert len(only_test.splits["train"]) == 18 and "used as train" in only_test.notes[0]
    given = plan_splits(docs, ["train"] * 15 + ["val"] * 5, "auto", None, 0, "\n\n")
    assert [d.origin for d in given.splits["val"]] == [f"d{i}" for i in range(15, 20)]
    assert len(given.splits["train"]) == 15


def test_tinyshakespeare_position_split(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "tinyshakespeare" / "input.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    from genforge.data.canonical import open_dataset
    from genforge.data.text.ingest import ingest

    data = path.read_text(encoding="utf-8")
    assert len(data) == 1_115_394
    ds = open_dataset(ingest(str(path), tmp_path / "ts").path)
    train, val = _nanogpt_split(data)
    assert ds.split("val").text == val and ds.train_split.text == train
    chars = sorted(set(data))  # nanoGPT's vocabulary: every character of the file
    stoi = {c: i for i, c in enumerate(chars)}
    # every val character occurs in train, so the ids are nanoGPT's exactly
    assert np.array_equal(ds.split("val").tokens, np.array([stoi[c] for c in val], np.uint16))
    assert len(ds.train_split) == 1_003_854 and len(ds.split("val")) == 111_540  # prepare.py's counts
    assert ds.manifest["pii"]["counts"] == {"email": 0, "phone": 0, "ip": 0, "card": 0}


# ---- overlap


def test_window_hashes_match_substring_equality() -> None:
    rng = random.Random(3)
    text = "".join(rng.choice("ab") for _ in range(400))
    h = window_hashes(text, 12)
    subs = [text[i : i + 12] for i in range(len(text) - 11)]
    for i in range(0, len(subs), 7):
        for j in range(len(subs)):
            assert (h[i] == h[j]) == (subs[i] == subs[j])
    assert len(window_hashes("short", 50)) == 0


def test_leakage_shares() -> None:
    train = " ".join(f"word{i}" for i in range(300))
    copied = " ".join(f"word{i}" for i in range(100, 160))
    fresh = " ".join(f"other{i}" for i in range(60))
    leak = leakage(train, copied, window=50, ngram=13)
    assert leak["window_share"] == 1.0 and leak["ngram_share"] == 1.0
    half = leakage(train, copied + " " + fresh, window=50, ngram=13)
    assert 0.3 < half["window_share"] < 0.7 and 0.3 < half["ngram_share"] < 0.7
    assert leakage(train, fresh)["window_share"] == 0.0
    assert (
        len(ngram_hashes("One two THREE", 2)) == 2 and ngram_hashes("a b", 2)[0] == ngram_hashes("A  B", 2)[0]
    )
