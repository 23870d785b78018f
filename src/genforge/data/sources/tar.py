"""`tar`: image files inside a tar archive (.tar, .tar.gz/.tgz, .tar.bz2, .tar.xz), streamed.

The archive is read front to back once (by `tarstream`'s fast reader, or `tarfile` stream mode
for the rare features it leaves out), nothing is extracted to disk, and members are yielded as
bytes without decoding. Splits and labels follow the folder rules
(`train/<class>/x.jpg`). A member that cannot be read (a link, which stream mode cannot
resolve, or a truncated payload) is an error item; a corrupt stream ends the walk with one
error item naming the archive and the last good member.
"""

from __future__ import annotations

import itertools
import os
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from genforge.core.errors import DataError
from genforge.data.sources.base import RawItem
from genforge.data.sources.layout import is_image_name, place
from genforge.data.sources.options import SourceOptions, limited, parse_options
from genforge.data.sources.tarstream import (
    FILE,
    LINK,
    SPECIAL,
    TarReadError,
    TarStream,
    Unsupported,
    open_stream,
)

Entry = tuple[str, str, int, bytes | None]  # (name, kind, size, data: None unless a regular file)

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")

# stream mode keeps every TarInfo in `members`; dropping them now and then keeps memory flat
_FORGET_EVERY = 4096


class _CheckedTarInfo(tarfile.TarInfo):
    """Remembers why reading a header failed: tarfile ends the member walk silently on a truncated
    or garbled header, which must not pass for the end of the archive."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except tarfile.HeaderError as exc:
            tar.header_error = exc  # type: ignore[attr-defined]
            raise


class TarSource:
    name = "tar"
    # the member file names that are items: the text tar source streams with its own
    wanted = staticmethod(is_image_name)

    def __init__(self, path: str | Path, options: SourceOptions):
        self.path = Path(path)
        self.options = options
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such tar archive")
        # class names need a full pass over the archive; they are known after the first one
        self.class_names: list[str] | None = None

    def describe(self) -> dict[str, Any]:
        return {"source": self.name, "path": str(self.path.resolve()), "class_names": self.class_names}

    def __iter__(self) -> Iterator[RawItem]:
        return limited(self._members(), self.options.limit)

    def _wants(self, member: str) -> bool:
        return self.wanted(member[member.rfind("/") + 1 :])

    def _members(self) -> Iterator[RawItem]:
        archive = str(self.path)
        places: dict[str, tuple[str | None, str | None]] = {}
        labels: set[str] = set()
        last = "(start of archive)"
        try:
            for name, kind, size, data in entries(archive, self._wants):
                where = places.get(folder := name[: max(name.rfind("/"), 0)])
                if where is None:
                    where = places[folder] = place([p for p in folder.split("/") if p and p != "."])
                    if where[1] is not None:
                        labels.add(where[1])
                split, label = where
                origin = f"{archive}::{name}"
                last = name
                if data is None:
                    yield RawItem(origin, split, label, error=f"tar member is a {kind}, not a regular file")
                elif len(data) != size:
                    yield RawItem(
                        origin, split, label, error=f"truncated member: {len(data)} of {size} bytes"
                    )
                    return
                else:
                    yield RawItem(origin, split, label, data=data)
        except (TarReadError, tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            yield RawItem(
                f"{archive}::{last}", error=f"archive is corrupt or truncated after member {last!r}: {exc}"
            )
            return
        self.class_names = sorted(labels)


def _wanted(name: str) -> bool:
    return is_image_name(name[name.rfind("/") + 1 :])


def entries(archive: str, want: Callable[[str], bool] = _wanted) -> Iterator[Entry]:
    """Members whose name `want`s them (default: images) as (name, kind, size, data): the fast
    reader, replaced by `tarfile` from the start (skipping what was already given) where it meets
    a feature it leaves to tarfile. The text sources read their members through this too."""
    given = 0
    try:
        stream = open_stream(archive)
    except OSError as exc:
        raise DataError(f"{archive}: not a readable tar archive ({exc})") from None
    with stream:
        reader = TarStream(stream)
        try:
            for entry in reader.members(want):
                yield entry
                given += 1
            return
        except Unsupported:
            pass
        except TarReadError as exc:
            if not reader.started:
                raise DataError(f"{archive}: not a readable tar archive ({exc})") from None
            raise
    yield from itertools.islice(_tarfile_entries(archive, want), given, None)


def _tarfile_entries(archive: str, want: Callable[[str], bool] = _wanted) -> Iterator[Entry]:
    try:
        tar = tarfile.open(archive, mode="r|*", tarinfo=_CheckedTarInfo)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{archive}: not a readable tar archive ({exc})") from None
    with tar:
        stream = tar.fileobj
        while (member := tar.next()) is not None:
            if len(tar.members) >= _FORGET_EVERY:
                tar.members.clear()
            if not want(member.name):
                continue
            if member.isreg() and not member.issparse():
                # the stream sits at this member's data right after next(): reading it
                # directly skips the per-member file object of extractfile()
                yield member.name, FILE, member.size, stream.read(member.size)
            elif member.isfile():
                yield member.name, FILE, member.size, tar.extractfile(member).read()
            else:
                yield member.name, LINK if member.issym() or member.islnk() else SPECIAL, member.size, None
        ending = getattr(tar, "header_error", None)
        if ending is not None and not isinstance(ending, tarfile.EOFHeaderError):
            # no end-of-archive block where a header should be: cut short or corrupt
            raise tarfile.ReadError(f"bad header ({ending or type(ending).__name__})")


class TarFactory:
    def matches(self, spec: str) -> bool:
        return spec.lower().endswith(TAR_SUFFIXES) and os.path.isfile(spec)

    def open(self, spec: str, **options: Any) -> TarSource:
        return TarSource(spec, parse_options(SourceOptions, options, "tar"))


FACTORY = TarFactory()  # registered as 'tar' by `builtin`, in matching order
