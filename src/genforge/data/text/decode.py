"""Bytes -> text: a byte-order mark or strict UTF-8 first (most text is UTF-8, and that check is
cheap), else `charset-normalizer`'s detection; binary or undecodable data is quarantined with a
reason instead of being decoded into garbage."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

# byte-order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one)
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
SNIFF = 8192  # bytes looked at for NUL bytes: binary formats show them early
# characters that text does not hold: C0/C1 controls other than \t \n \r \f, and U+FFFD (bytes
# some earlier tool could not decode)
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ufffd]")


@dataclass
class Decoded:
    text: str | None  # None: quarantined
    encoding: str | None = None
    reason: str | None = None  # why quarantined
    kind: str | None = None  # "binary" | "undecodable" | "empty"


def printable_share(text: str) -> float:
    if not text:
        return 1.0
    return 1.0 - len(_UNPRINTABLE.findall(text)) / len(text)


def decode_bytes(data: bytes, min_printable: float = 0.95) -> Decoded:
    """Decode `data` as text, or say why it is not text."""
    if not data:
        return Decoded(None, reason="empty file", kind="empty")
    text, encoding = None, None
    for bom, name in BOMS:
        if data.startswith(bom):
            try:
                text, encoding = data[len(bom) :].decode(name), name + "-bom"
            except UnicodeDecodeError as exc:
                return Decoded(
                    None,
                    reason=f"starts with a {name} byte-order mark but is not {name} ({exc.reason})",
                    kind="undecodable",
                )
            break
    if text is None:
        if b"\x00" in data[:SNIFF]:
            # no text encoding without a byte-order mark puts NUL bytes in text (UTF-16 without
            # a BOM is rare and charset-normalizer would only guess at it)
            return Decoded(None, reason="binary data: NUL bytes in the first 8 KiB", kind="binary")
        try:
            text, encoding = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding, why = _detect(data)
            if text is None:
                return Decoded(None, reason=why, kind="undecodable")
    share = printable_share(text)
    if share < min_printable:
        return Decoded(
            None,
            encoding=encoding,
            reason=f"binary or garbled: only {share:.1%} printable characters as {encoding} "
            f"(min_printable {min_printable:g})",
            kind="binary",
        )
    return Decoded(text, encoding)


def _detect(data: bytes) -> tuple[str | None, str | None, str]:
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        return None, None, "undecodable: not UTF-8 and no other text encoding fits"
    return str(best), best.encoding, ""
