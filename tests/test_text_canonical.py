"""The canonical text dataset: layout, reader interface, open_dataset dispatch, validation errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genforge.core.errors import DataError
from genforge.data.canonical import open_dataset
from genforge.data.text.canonical import DOC_SEPARATOR, TextDataset, TextDoc, token_dtype, write_text_dataset
from genforge.data.text.tokenizer import BPETokenizer, CharTokenizer

DOCS = {
    "train": [
        TextDoc("a.txt", "First Citizen:\nSpeak, speak.\n"),
        TextDoc("b.txt", "All:\nResolved. résolu 😀"),
    ],
    "val": [TextDoc("c.txt", "Second Citizen:\nOne word, good citizens.")],
}


def _write(tmp_path: Path, tokenizer) -> Path:
    out = tmp_path / "data"
    out.mkdir(parents=True)
    write_text_dataset(out, DOCS, tokenizer, {"source": {"kind": "test"}})
    return out


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_write_and_open(tmp_path: Path, kind: str) -> None:
    texts = [d.text for d in DOCS["train"]] + [DOC_SEPARATOR]
    tok = CharTokenizer.train(texts) if kind == "char" else BPETokenizer.train(texts, 300)
    out = _write(tmp_path, tok)
    ds = open_dataset(out)
    assert isinstance(ds, TextDataset) and ds.modality == "text"
    assert ds.split_names == ["train", "val"] and ds.reference_split.name == "val"
    assert ds.model_fields() == {"vocab_size": tok.vocab_size}
    assert ds.class_names == [] and ds.num_classes == 0
    train = ds.train_split
    assert train.text == DOC_SEPARATOR.join(d.text for d in DOCS["train"])
    assert isinstance(train.tokens, np.memmap) and train.tokens.dtype == np.uint16 and train.tokens.ndim == 1
    assert len(train) == len(train.tokens) and train.chars == len(train.text)
    assert not train.has_labels and train.class_counts == []
    assert ds.tokenizer.decode(train.tokens.tolist()) == train.text
    # document offsets are exact in both text and tokens
    for doc, entry in zip(DOCS["train"], train.docs, strict=True):
        c0, c1 = entry["chars"]
        t0, t1 = entry["tokens"]
        assert train.text[c0:c1] == doc.text
        assert ds.tokenizer.decode(train.tokens[t0:t1].tolist()) == doc.text
        assert entry["origin"] == doc.origin and entry["hash"] == doc.hash
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tokenizer"]["kind"] == kind and manifest["token_dtype"] == "uint16"
    assert manifest["splits"]["val"] == {"tokens": len(ds.split("val")), "chars": 40, "documents": 1}
    assert ds.describe()["tokenizer"]["vocab_size"] == tok.vocab_size


def test_val_characters_unseen_in_train_are_unk(tmp_path: Path) -> None:
    tok = CharTokenizer.train([d.text for d in DOCS["train"]] + [DOC_SEPARATOR])
    ds = open_dataset(_write(tmp_path, tok))
    val = ds.split("val")
    assert tok.unk_id in val.tokens.tolist()  # 'g' of "good" never appears in train
    assert len(val.text) == len(val.tokens)  # still one id per character


def test_fingerprint_depends_on_tokens_and_tokenizer(tmp_path: Path) -> None:
    texts = [d.text for d in DOCS["train"]] + [DOC_SEPARATOR]
    a = _write(tmp_path / "a", CharTokenizer.train(texts))
    b = _write(tmp_path / "b", CharTokenizer.train(texts))
    c = _write(tmp_path / "c", CharTokenizer.train([*texts, "xyz"]))  # same text, other vocabulary
    fa, fb, fc = (open_dataset(p).fingerprint for p in (a, b, c))
    assert fa == fb and fa != fc


def test_token_dtype_threshold() -> None:
    assert token_dtype(65535) == np.uint16 and token_dtype(65536) == np.uint32


def _corrupt(tmp_path: Path):
    out = _write(tmp_path, CharTokenizer.train([d.text for d in DOCS["train"]] + [DOC_SEPARATOR]))
    return out, json.loads((out / "manifest.json").read_text())


def test_wrong_token_dtype_names_the_file(tmp_path: Path) -> None:
    out, _ = _corrupt(tmp_path)
    np.save(out / "train" / "tokens.npy", np.load(out / "train" / "tokens.npy").astype(np.int32))
    with pytest.raises(DataError, match=r"train/tokens\.npy: expected uint16"):
        open_dataset(out)


def test_wrong_token_count_names_the_file(tmp_path: Path) -> None:
    out, _ = _corrupt(tmp_path)
    np.save(out / "val" / "tokens.npy", np.load(out / "val" / "tokens.npy")[:-3])
    with pytest.raises(DataError, match=r"val/tokens\.npy.*splits\.val\.tokens"):
        open_dataset(out)


def test_token_ids_outside_vocabulary(tmp_path: Path) -> None:
    out, manifest = _corrupt(tmp_path)
    tokens = np.load(out / "val" / "tokens.npy")
    tokens[0] = 999
    np.save(out / "val" / "tokens.npy", tokens)
    ds = open_dataset(out)
    with pytest.raises(DataError, match="outside the vocabulary"):
        _ = ds.split("val").tokens


def test_text_length_mismatch(tmp_path: Path) -> None:
    out, _ = _corrupt(tmp_path)
    (out / "val" / "text.txt").write_text("short", encoding="utf-8")
    with pytest.raises(DataError, match=r"val/text\.txt: expected 40 characters"):
        _ = open_dataset(out).split("val").text


def test_tokenizer_vocab_mismatch(tmp_path: Path) -> None:
    out, manifest = _corrupt(tmp_path)
    CharTokenizer.train(["abc"]).save(out / "tokenizer.json")
    with pytest.raises(DataError, match="tokenizer.vocab_size"):
        _ = open_dataset(out).tokenizer


def test_bad_manifest_fields(tmp_path: Path) -> None:
    out, manifest = _corrupt(tmp_path)
    manifest["token_dtype"] = "float32"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="token_dtype"):
        open_dataset(out)
