"""`tar`: image files inside a tar archive (.tar, .tar.gz/.tgz, .tar.bz2, .tar.xz), streamed.

The archive is read front to back once (`tarfile` stream mode), nothing is extracted to disk,
and members are yielded as bytes without decoding. Splits and labels follow the folder rules
(`train/<class>/x.jpg`). A member that cannot be read (a link, which stream mode cannot
resolve, or a truncated payload) is an error item; a corrupt stream ends the walk with one
error item naming the archive and the last good member.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genforge.core.errors import DataError
from genforge.data.sources.base import RawItem
from genforge.data.sources.layout import is_image_name, place
from genforge.data.sources.options import SourceOptions, limited, parse_options

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

    def _members(self) -> Iterator[RawItem]:
        archive = str(self.path)
        try:
            tar = tarfile.open(archive, mode="r|*", tarinfo=_CheckedTarInfo)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{archive}: not a readable tar archive ({exc})") from None
        places: dict[str, tuple[str | None, str | None]] = {}
        labels: set[str] = set()
        last = "(start of archive)"
        complete = False
        with tar:
            stream = tar.fileobj
            try:
                while (member := tar.next()) is not None:
                    if len(tar.members) >= _FORGET_EVERY:
                        tar.members.clear()
                    name = member.name
                    slash = name.rfind("/")
                    if not is_image_name(name[slash + 1 :]):
                        continue
                    folder = name[:slash] if slash > 0 else ""
                    where = places.get(folder)
                    if where is None:
                        parts = [p for p in folder.split("/") if p and p != "."]
                        where = places[folder] = place(parts)
                        if where[1] is not None:
                            labels.add(where[1])
                    split, label = where
                    origin = f"{archive}::{name}"
                    last = name
                    if member.isreg() and not member.issparse():
                        # the stream sits at this member's data right after next(): reading it
                        # directly skips the per-member file object of extractfile()
                        data = stream.read(member.size)
                    elif member.isfile():
                        data = tar.extractfile(member).read()
                    else:
                        kind = "link" if member.issym() or member.islnk() else "special file"
                        yield RawItem(
                            origin, split, label, error=f"tar member is a {kind}, not a regular file"
                        )
                        continue
                    if len(data) != member.size:
                        yield RawItem(
                            origin,
                            split,
                            label,
                            error=f"truncated member: {len(data)} of {member.size} bytes",
                        )
                        return
                    yield RawItem(origin, split, label, data=data)
                ending = getattr(tar, "header_error", None)
                if ending is not None and not isinstance(ending, tarfile.EOFHeaderError):
                    # no end-of-archive block where a header should be: cut short or corrupt
                    raise tarfile.ReadError(f"bad header ({ending or type(ending).__name__})")
                complete = True
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                yield RawItem(
                    f"{archive}::{last}",
                    error=f"archive is corrupt or truncated after member {last!r}: {exc}",
                )
        if complete:
            self.class_names = sorted(labels)


class TarFactory:
    def matches(self, spec: str) -> bool:
        return spec.lower().endswith(TAR_SUFFIXES) and os.path.isfile(spec)

    def open(self, spec: str, **options: Any) -> TarSource:
        return TarSource(spec, parse_options(SourceOptions, options, "tar"))


FACTORY = TarFactory()  # registered as 'tar' by `builtin`, in matching order
