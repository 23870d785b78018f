"""Text tokenisers: round trips (char and byte-level BPE, unicode), <unk>, save/load, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genforge.core.errors import DataError
from genforge.data.text.tokenizer import (
    BPETokenizer,
    CharTokenizer,
    load_tokenizer,
    tokenizer_hash,
    train_tokenizer,
)

TRAIN = [
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n",
    "Ünïcödé café — naïve façade, 日本語のテキスト, emoji 😀🎭, tabs\tand\r\nCRLF.\n",
    "ROMEO:\nBut, soft! what light through yonder window breaks?\n",
] * 20
UNSEEN = "Héllo wörld 😀 — ROMEO & JULIET 2024, 中文, \x7f\t\n"


def test_char_ids_are_sorted_characters_like_nanogpt() -> None:
    text = "hello world\n"
    tok = CharTokenizer.train([text])
    chars = sorted(set(text))
    assert tok.chars == chars
    assert tok.encode(text) == [chars.index(c) for c in text]
    assert tok.vocab_size == len(chars) + 1 and tok.unk_id == len(chars)
    assert tok.decode(tok.encode(text)) == text


def test_char_unknown_characters_map_to_unk(tmp_path: Path) -> None:
    tok = CharTokenizer.train(["abc"])
    ids = tok.encode("abzc")
    assert ids == [0, 1, tok.unk_id, 2]
    assert tok.decode(ids) == "ab\ufffdc"  # one character per id
    with pytest.raises(ValueError, match="outside"):
        tok.decode([0, 99])
    with pytest.raises(ValueError, match="outside"):
        tok.decode([-1])


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_round_trip_and_save_load(kind: str, tmp_path: Path) -> None:
    tok = train_tokenizer(kind, TRAIN, 300)
    for text in TRAIN[:3] + ["", " ", "\n\n"]:
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode_batch(TRAIN[:3]) == [tok.encode(t) for t in TRAIN[:3]]
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    back = load_tokenizer(path)
    assert back.kind == kind and type(back) is type(tok)
    assert back.vocab_size == tok.vocab_size
    assert back.encode(UNSEEN) == tok.encode(UNSEEN)
    assert tokenizer_hash(back) == tokenizer_hash(tok)
    assert load_tokenizer(tmp_path).encode(TRAIN[1]) == tok.encode(TRAIN[1])  # a directory holding one


def test_bpe_round_trips_unseen_unicode_and_compresses() -> None:
    tok = BPETokenizer.train(TRAIN, 300)
    assert tok.vocab_size <= 300
    assert tok.decode(tok.encode(UNSEEN)) == UNSEEN  # byte level: nothing is unknown
    text = TRAIN[0]
    assert len(tok.encode(text)) < len(text.encode("utf-8"))  # merges learnt from train
    # documents concatenate: decoding joined ids gives the joined text
    a, b = TRAIN[0], TRAIN[1]
    assert tok.decode(tok.encode(a) + tok.encode(b)) == a + b


def test_bpe_file_is_plain_hugging_face_json(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    tok = BPETokenizer.train(TRAIN, 280)
    tok.save(tmp_path / "tokenizer.json")
    hf = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert hf.encode(UNSEEN).ids == tok.encode(UNSEEN)


def test_bpe_vocab_size_too_small() -> None:
    with pytest.raises(ValueError, match="at least 257"):
        BPETokenizer.train(TRAIN, 100)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"hello": 1}', "not a tokenizer genforge knows"),
        ('{"genforge": {"kind": "char"}, "chars": ["ab"], "unk": {"id": 1}}', "single characters"),
        ('{"genforge": {"kind": "char"}, "chars": ["b", "a"], "unk": {"id": 2}}', "sorted"),
        ('{"genforge": {"kind": "char"}, "chars": ["a", "b"], "unk": {"id": 5}}', "unk.id"),
        ('{"model": {"type": "BPE", "vocab": 3}}', "not a valid Hugging Face tokenizer"),
    ],
)
def test_bad_tokenizer_file_names_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as err:
        load_tokenizer(path)
    assert str(path) in str(err.value)


def test_missing_tokenizer_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no tokenizer file"):
        load_tokenizer(tmp_path / "nope.json")


def test_char_file_is_readable_json(tmp_path: Path) -> None:
    tok = CharTokenizer.train(["ba\n"])
    tok.save(tmp_path / "t.json")
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["genforge"]["kind"] == "char" and data["chars"] == ["\n", "a", "b"]
    assert data["unk"]["id"] == 3
