"""A minimal streaming tar reader for the common case: ustar/GNU/pax headers, regular files.

`tarfile` parses every header field through several Python calls per member, which caps a
stream of small files at ~45k members per CPU-second; this reader decompresses in large chunks
and reads only the fields a source needs (name, type, size, checksum), so it runs several times
faster. Anything rarer (sparse files, binary pax charsets, a global pax size, an extended
header that is not followed by a valid one, combined GNU and pax names) raises `Unsupported` before the member is yielded,
and the caller replays the archive through `tarfile`, which keeps results identical.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

BLOCK = 512
CHUNK = 1 << 20  # decompressed bytes per read: large enough that per-read overhead vanishes
_ZERO = bytes(BLOCK)
_REGULAR = (b"0", b"\0", b"7")  # tarfile.REGULAR_TYPES without sparse, which falls back
_LINKS = (b"1", b"2")
_DIR = b"5"
_PAX = (b"x", b"X")
_GLOBAL = b"g"
_EXTENDED = (b"L", b"K", *_PAX, _GLOBAL)  # headers that describe the next member
_SPARSE = b"S"  # old GNU sparse member: left to tarfile
_SUPPORTED = frozenset(tarfile.SUPPORTED_TYPES)
_PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")
_SIGNED = struct.Struct("148b8x356b")
# first bytes -> opener of the decompressed stream; the same magic numbers tarfile's "r|*" tests
_OPENERS: tuple[tuple[tuple[bytes, ...], Callable[[str], BinaryIO]], ...] = (
    ((b"\x1f\x8b\x08",), gzip.open),
    ((b"BZh91",), bz2.open),
    ((b"\x5d\x00\x00\x80", b"\xfd7zXZ"), lzma.open),
)
_STREAM_ERRORS = (zlib.error, OSError, lzma.LZMAError)

FILE, LINK, SPECIAL = "file", "link", "special file"


class Unsupported(Exception):
    """A tar feature this reader leaves to `tarfile`."""


class TarReadError(Exception):
    """The archive is corrupt or cut short here."""


def open_stream(path: str | Path) -> BinaryIO:
    """The archive's decompressed byte stream (plain tar read as is)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    for magics, opener in _OPENERS:
        if head.startswith(magics):
            return opener(str(path))
    return open(path, "rb")


class _Buffer:
    """Decompressed bytes in large chunks. A read error is kept until the bytes it withheld are
    needed: `tarfile` also only fails when it reaches them (trailing garbage after the
    end-of-archive block never matters), and a stream that merely ends early reads as short."""

    def __init__(self, stream: BinaryIO):
        self._read = getattr(stream, "read1", stream.read)  # read1: no bytes lost to a late error
        self.buf = b""
        self.pos = 0
        self._error: Exception | None = None
        self._ended = False

    def take(self, n: int) -> bytes:
        """The next n bytes, fewer only where the data ends."""
        end = self.pos + n
        if end > len(self.buf):
            self._fill(n)
            end = min(n, len(self.buf))
        data = self.buf[self.pos : end]
        self.pos = end
        return data

    def skip(self, n: int) -> bool:
        """Pass over n bytes; False where the data ends first."""
        end = self.pos + n
        if end > len(self.buf):
            self._fill(n)
            end = n
            if end > len(self.buf):
                self.pos = len(self.buf)
                return False
        self.pos = end
        return True

    def _fill(self, n: int) -> None:
        parts, have = [self.buf[self.pos :]], len(self.buf) - self.pos
        while have < n and not self._ended:
            try:
                chunk = self._read(CHUNK)
            except EOFError:  # a compressed stream cut short: the data just ends, as in tarfile
                chunk = b""
            except _STREAM_ERRORS as exc:
                self._error, chunk = exc, b""
            if not chunk:
                self._ended = True
                break
            parts.append(chunk)
            have += len(chunk)
        self.buf, self.pos = b"".join(parts), 0
        if have < n and self._error is not None:
            raise TarReadError(f"invalid compressed data ({self._error})")


def _number(field: bytes) -> int:
    if field[0] in (0o200, 0o377):  # base-256: rare, tarfile's own parser
        return tarfile.nti(field)
    try:
        return int(field.split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        raise TarReadError("bad header (invalid header)") from None


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _blocks(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _byte_sum(block: bytes) -> int:
    """sum(block) for a 512-byte block, in C: the low half of Adler-32 is 1 + the byte sum modulo
    65521, exact for 256 bytes (at most 65,280)."""
    return (zlib.adler32(block[:256]) & 0xFFFF) + (zlib.adler32(block[256:]) & 0xFFFF) - 2


def _checksum_ok(hdr: bytes) -> bool:
    stored = _number(hdr[148:156])
    unsigned = _byte_sum(hdr) - sum(hdr[148:156]) + 256  # the checksum field counts as spaces
    return stored == unsigned or stored == sum(_SIGNED.unpack_from(hdr)) + 256


def _pax(data: bytes) -> dict[str, str]:
    if b"hdrcharset=" in data:
        raise Unsupported("pax hdrcharset")
    records: dict[str, str] = {}
    pos = 0
    while (match := _PAX_RECORD.match(data, pos)) is not None:
        length = int(match.group(1))
        if length == 0:
            raise Unsupported("malformed pax record")
        key = match.group(2).decode("utf-8", "surrogateescape")
        records[key] = data[match.end(2) + 1 : match.start(1) + length - 1].decode("utf-8", "surrogateescape")
        pos += length
    if any(k.startswith("GNU.sparse") for k in records):
        raise Unsupported("GNU sparse file")
    return records


class TarStream:
    """Members of a tar stream as (name, kind, size, data); data only for wanted regular files
    (shorter than size if the archive is cut short), None otherwise."""

    def __init__(self, stream: BinaryIO):
        self._in = _Buffer(stream)
        self.started = False  # a first header was read: errors before it mean "not a tar archive"

    def members(self, want: Callable[[str], bool]) -> Iterator[tuple[str, str, int, bytes | None]]:
        src = self._in
        shared: dict[str, str] = {}  # global pax records: they apply to every later member
        long_name: str | None = None
        pax: dict[str, str] | None = None
        pending = False  # an extended header waits for its member
        while True:
            hdr = src.take(BLOCK)
            if len(hdr) < BLOCK or hdr == _ZERO or not _checksum_ok(hdr):
                if pending:
                    raise Unsupported("bad header after an extended header")
                if hdr == _ZERO:
                    return
                why = (
                    "empty header" if not hdr else "truncated header" if len(hdr) < BLOCK else "bad checksum"
                )
                raise TarReadError(f"bad header ({why})")
            kind = hdr[156:157]
            size = _number(hdr[124:136])
            self.started = True
            if kind in _EXTENDED:
                data = src.take(_blocks(size))
                if len(data) < _blocks(size) or (kind in _PAX and long_name) or (kind == b"L" and pax):
                    raise Unsupported("extended header cut short or combined")
                pending = True
                if kind == b"L":
                    long_name = _text(data[:size])
                elif kind in _PAX:
                    pax = _pax(data[:size])
                elif kind == _GLOBAL:
                    records = _pax(data[:size])
                    if "size" in records:
                        raise Unsupported("global pax size")
                    shared.update(records)
                continue
            if kind == _SPARSE:
                raise Unsupported("GNU sparse file")
            name = _text(hdr[0:100])
            if kind == b"\0" and name.endswith("/"):
                kind = _DIR
            if kind == _DIR:
                name = name.rstrip("/")
            prefix = _text(hdr[345:500])
            if prefix:
                name = prefix + "/" + name
            records = {**shared, **pax} if pax is not None else shared
            if "path" in records:
                name = records["path"].rstrip("/")
            if pax is not None and "size" in pax:
                try:
                    size = int(pax["size"])
                except ValueError:
                    size = 0
            if long_name is not None:
                name = long_name.removesuffix("/") if kind == _DIR else long_name
            pax, long_name, pending = None, None, False
            regular = kind in _REGULAR
            if want(name):
                if regular:
                    data = src.take(size)
                    yield name, FILE, size, data
                    if len(data) < size or not src.skip(_blocks(size) - size):
                        raise TarReadError("unexpected end of data")
                    continue
                yield name, LINK if kind in _LINKS else SPECIAL, size, None
            if (regular or kind not in _SUPPORTED) and not src.skip(_blocks(size)):
                raise TarReadError("unexpected end of data")
