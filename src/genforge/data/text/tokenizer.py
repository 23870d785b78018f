"""Text tokenisers, trained on a dataset's train split and saved with it as `tokenizer.json`.

Three kinds, one interface (`encode`, `encode_batch`, `decode`, `vocab_size`, `kind`, `save`):

- `char`: one id per character, the vocabulary being the sorted set of the train split's
  characters (ids 0..n-1, the same ids nanoGPT's `shakespeare_char/prepare.py` gives), plus one
  `<unk>` id, n, for characters the train split never showed.
- `bpe`: byte-level BPE through Hugging Face `tokenizers` (ByteLevel pre-tokenizer and decoder,
  all 256 bytes in the initial alphabet, so every string round-trips and nothing is unknown).
- `bytes`: the UTF-8 bytes of the text, ids 0..255. It learns nothing from the data, so unlike
  the other two its vocabulary is not a statistic of the (possibly private) train split: the
  tokenizer a differentially private text run can use with its guarantee intact
  (docs/privacy.md). No special tokens: documents are joined by a blank line, as for the others.

The file formats tell the kinds apart without a side file: a char or bytes tokenizer's JSON
carries `"genforge": {"kind": ...}`; a BPE tokenizer's file is Hugging Face's own tokenizer JSON
(loadable by `tokenizers.Tokenizer.from_file` and `transformers`), recognised by its
`model.type == "BPE"` (HF rejects unknown top-level keys, so no marker is added to it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from genforge.core.atomic import write_text
from genforge.core.errors import DataError
from genforge.core.hashing import sha256_bytes
from genforge.core.registry import Registry

TOKENIZER_FILE = "tokenizer.json"
CHAR_FORMAT_VERSION = 1
BYTES_FORMAT_VERSION = 1
BYTE_VALUES = 256
UNK = "<unk>"
# what decode() gives for the char tokenizer's <unk> id: one character, so decoded text keeps
# one character per id (bits per character and span offsets stay aligned)
UNK_DECODED = "\ufffd"
MIN_BPE_VOCAB = 257  # the 256 byte tokens plus at least one merge


class Tokenizer(Protocol):
    kind: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def encode_array(self, text: str) -> np.ndarray: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def to_json(self) -> str: ...

    def save(self, path: str | Path) -> None: ...


@dataclass(frozen=True)
class TokenizerKind:
    """How to train a kind (`train(texts, vocab_size)`) and how to recognise and read its file
    (`claims(json_object)`, `from_json(json_object, path)`)."""

    train: Callable[[Iterable[str], int], Tokenizer]
    claims: Callable[[dict[str, Any]], bool]
    from_json: Callable[[dict[str, Any], Path], Tokenizer]
    # True when `train` reads the texts: the vocabulary is then a statistic of the train split,
    # outside a differentially private run's guarantee (train/feeds/text.py records which)
    learns_from_data: bool = True


TOKENIZERS: Registry[TokenizerKind] = Registry("tokenizer kind")


def _hash(tokenizer: Tokenizer) -> str:
    return sha256_bytes(tokenizer.to_json().encode("utf-8"))


def _marked(data: dict[str, Any], kind: str) -> bool:
    """Whether a tokenizer file's JSON carries genforge's marker for `kind`."""
    marker = data.get("genforge")
    return isinstance(marker, dict) and marker.get("kind") == kind


class CharTokenizer:
    """One id per character: ids 0..n-1 are the sorted characters of the training text (as in
    nanoGPT's char-level prepare.py); id n (`unk_id`) is `<unk>`, which every character outside
    the vocabulary encodes to and which decodes to U+FFFD."""

    kind = "char"

    def __init__(self, chars: Iterable[str]):
        self.chars: list[str] = sorted(set(chars))
        if any(len(c) != 1 for c in self.chars):
            raise ValueError("a char tokenizer's vocabulary holds single characters only")
        self.unk_id = len(self.chars)
        self._stoi = {c: i for i, c in enumerate(self.chars)}
        self._itos = [*self.chars, UNK_DECODED]
        # sorted code points: encode_array maps a whole text with one searchsorted
        self._codes = np.array([ord(c) for c in self.chars], np.int64)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 0) -> CharTokenizer:
        """The vocabulary of `texts` (`vocab_size` is ignored: the text fixes it)."""
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        return cls(seen)

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def encode_array(self, text: str) -> np.ndarray:
        """Ids of `text` as int64, vectorised (a million characters in milliseconds)."""
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32).astype(np.int64)
        if not len(self._codes):
            return np.full(len(codes), self.unk_id, np.int64)
        pos = np.searchsorted(self._codes, codes)
        pos_clipped = np.minimum(pos, len(self._codes) - 1)
        return np.where(self._codes[pos_clipped] == codes, pos_clipped, self.unk_id)

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        itos = self._itos
        ids = [int(i) for i in ids]
        if ids and (min(ids) < 0 or max(ids) >= len(itos)):
            bad = next(i for i in ids if not 0 <= i < len(itos))
            raise ValueError(f"token id {bad} is outside the char vocabulary (0..{len(itos) - 1})")
        return "".join([itos[i] for i in ids])

    def to_json(self) -> str:
        return json.dumps(
            {
                "genforge": {"kind": self.kind, "format_version": CHAR_FORMAT_VERSION},
                "chars": self.chars,
                "unk": {"id": self.unk_id, "token": UNK, "decodes_to": UNK_DECODED},
            },
            ensure_ascii=False,
            indent=1,
        )

    def save(self, path: str | Path) -> None:
        write_text(path, self.to_json() + "\n")

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> CharTokenizer:
        chars = data.get("chars")
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise DataError(f"{path}: field 'chars' must be a list of single characters")
        if chars != sorted(set(chars)):
            raise DataError(f"{path}: field 'chars' must be sorted and without repeats")
        tok = cls(chars)
        unk = data.get("unk", {})
        if not isinstance(unk, dict) or unk.get("id") != tok.unk_id:
            raise DataError(f"{path}: field 'unk.id' must be {tok.unk_id} (the number of chars)")
        return tok

    @staticmethod
    def claims(data: dict[str, Any]) -> bool:
        return _marked(data, CharTokenizer.kind)


class BytesTokenizer:
    """The text's UTF-8 bytes as ids 0..255: fixed before any data is seen, every string
    encodes, and a sequence of ids that is not valid UTF-8 (a model's output cut mid-character)
    decodes with U+FFFD in place of the broken bytes, which is also what the streaming decoder
    (models/text/sampling.py `IncrementalDecoder`) waits on before releasing text."""

    kind = "bytes"

    @classmethod
    def train(cls, texts: Iterable[str] = (), vocab_size: int = 0) -> BytesTokenizer:
        """The byte tokenizer; `texts` and `vocab_size` are ignored (it learns nothing)."""
        return cls()

    @property
    def vocab_size(self) -> int:
        return BYTE_VALUES

    def encode_array(self, text: str) -> np.ndarray:
        # surrogatepass: a lone surrogate (not valid text, but a possible Python string) still
        # encodes instead of raising; it decodes to U+FFFD
        return np.frombuffer(text.encode("utf-8", "surrogatepass"), np.uint8).astype(np.int64)

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8", "surrogatepass"))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < BYTE_VALUES]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the byte vocabulary (0..{BYTE_VALUES - 1})")
        return bytes(ids).decode("utf-8", "replace")

    def to_json(self) -> str:
        return json.dumps(
            {"genforge": {"kind": self.kind, "format_version": BYTES_FORMAT_VERSION},
             "encoding": "utf-8", "vocab_size": BYTE_VALUES},
            indent=1,
        )  # fmt: skip

    def save(self, path: str | Path) -> None:
        write_text(path, self.to_json() + "\n")

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> BytesTokenizer:
        if data.get("encoding") != "utf-8" or data.get("vocab_size") != BYTE_VALUES:
            raise DataError(
                f"{path}: a bytes tokenizer must have 'encoding' \"utf-8\" and 'vocab_size' {BYTE_VALUES}, got "
                f"{data.get('encoding')!r} and {data.get('vocab_size')!r}"
            )
        return cls()

    @staticmethod
    def claims(data: dict[str, Any]) -> bool:
        return _marked(data, BytesTokenizer.kind)


class BPETokenizer:
    """Byte-level BPE (Hugging Face `tokenizers`): exact round trip of any text."""

    kind = "bpe"

    def __init__(self, hf: Any):
        self.hf = hf

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 4096) -> BPETokenizer:
        from tokenizers import Tokenizer as HfTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        if vocab_size < MIN_BPE_VOCAB:
            raise ValueError(
                f"a byte-level BPE vocabulary needs at least {MIN_BPE_VOCAB} tokens, got {vocab_size}"
            )
        hf = HfTokenizer(models.BPE())
        # no prefix space: encode(a) + encode(b) decodes to a + b, so documents and prompts
        # concatenate without inventing characters
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: nothing is unknown
            special_tokens=[],
            show_progress=False,
        )
        hf.train_from_iterator(texts, trainer)
        return cls(hf)

    @property
    def vocab_size(self) -> int:
        return int(self.hf.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text).ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(e.ids) for e in self.hf.encode_batch(list(texts))]

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self.hf.encode(text).ids, np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the BPE vocabulary (0..{self.vocab_size - 1})")
        return self.hf.decode(ids, skip_special_tokens=False)

    def to_json(self) -> str:
        return self.hf.to_str()

    def save(self, path: str | Path) -> None:
        write_text(path, self.to_json())

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> BPETokenizer:
        from tokenizers import Tokenizer as HfTokenizer

        try:
            return cls(HfTokenizer.from_str(json.dumps(data)))
        except Exception as exc:  # the Rust side raises a plain Exception with the serde message
            raise DataError(f"{path}: not a valid Hugging Face tokenizer file ({exc})") from None

    @staticmethod
    def claims(data: dict[str, Any]) -> bool:
        model = data.get("model")
        return isinstance(model, dict) and model.get("type") == "BPE"


TOKENIZERS.register("char", TokenizerKind(CharTokenizer.train, CharTokenizer.claims, CharTokenizer.from_json))
TOKENIZERS.register("bpe", TokenizerKind(BPETokenizer.train, BPETokenizer.claims, BPETokenizer.from_json))
TOKENIZERS.register(
    "bytes",
    TokenizerKind(
        BytesTokenizer.train, BytesTokenizer.claims, BytesTokenizer.from_json, learns_from_data=False
    ),
)


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A tokenizer of `kind` trained on `texts` (the train split only)."""
    return TOKENIZERS.get(kind).train(texts, vocab_size)


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    """Content hash of the saved form: part of a text dataset's fingerprint."""
    return _hash(tokenizer)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer saved at `path` (a `tokenizer.json`, or a dataset directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            f"{path}: no tokenizer file (expected a tokenizer.json written with the dataset)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the tokenizer file ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}")
    for name in TOKENIZERS.names_in_order():
        kind = TOKENIZERS.get(name)
        if kind.claims(data):
            return kind.from_json(data, path)
    raise DataError(
        f"{path}: not a tokenizer genforge knows: expected a char or bytes tokenizer (field 'genforge.kind' = "
        "'char' or 'bytes') or a Hugging Face byte-level BPE tokenizer (field 'model.type' = 'BPE')"
    )
