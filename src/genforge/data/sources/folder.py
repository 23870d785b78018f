"""`folder`: a directory of image files, walked recursively in sorted order.

Class sub-folders become labels and top-level split folders (`train/`, `val/`, `valid/`,
`validation/`, `test/`) become splits (see `layout`). Every file with an image extension is
yielded as bytes, broken or not: deciding belongs to the process stage. A file or folder that
cannot be read (permission denied, broken link, symlink loop) is yielded as an error item, and
the walk goes on. Hidden files and folders (leading dot) are skipped.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genforge.core.errors import DataError
from genforge.data.sources.base import RawItem
from genforge.data.sources.layout import is_image_name, place, split_name
from genforge.data.sources.options import SourceOptions, limited, parse_options


@dataclass
class FolderOptions(SourceOptions):
    follow_symlinks: bool = True  # walk into symlinked folders (loops are detected and reported)


def os_reason(exc: OSError) -> str:
    """A short reason for an OSError, with the words a user searches for."""
    if exc.errno == errno.ELOOP:
        return "symlink loop (too many levels of symbolic links)"
    if exc.errno == errno.EACCES:
        return "permission denied"
    if exc.errno == errno.ENOENT:
        return "no such file (broken symlink?)"
    return exc.strerror or str(exc)


class FolderSource:
    name = "folder"
    # the file names that are items: the text folder source walks with its own
    wanted = staticmethod(is_image_name)

    def __init__(self, root: str | Path, options: FolderOptions):
        self.root = Path(root)
        self.options = options
        if not self.root.is_dir():
            raise DataError(f"{self.root}: not a directory")
        self.class_names = self._list_classes()

    def _subdirs(self, directory: Path) -> list[str]:
        try:
            with os.scandir(directory) as it:
                return [e.name for e in it if not e.name.startswith(".") and _is_dir(e)]
        except OSError:
            return []  # reported as an error item during the walk

    def _list_classes(self) -> list[str]:
        names: set[str] = set()
        for top in self._subdirs(self.root):
            if split_name(top) is None:
                names.add(top)
            else:
                names.update(self._subdirs(self.root / top))
        return sorted(names)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "path": str(self.root.resolve()),
            "class_names": self.class_names,
            "follow_symlinks": self.options.follow_symlinks,
        }

    def __iter__(self) -> Iterator[RawItem]:
        root_stat = os.stat(self.root)
        return limited(self._walk(self.root, (), {(root_stat.st_dev, root_stat.st_ino)}), self.options.limit)

    def _walk(
        self, directory: Path, folders: tuple[str, ...], ancestors: set[tuple[int, int]]
    ) -> Iterator[RawItem]:
        split, label = place(folders)
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield RawItem(
                origin=str(directory), split=split, label=label, error=f"cannot list folder: {os_reason(exc)}"
            )
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                link = entry.is_symlink()
                st = os.stat(path) if link else entry.stat(follow_symlinks=False)
            except OSError as exc:
                if self.wanted(entry.name) or exc.errno == errno.ELOOP:
                    yield RawItem(origin=str(path), split=split, label=label, error=os_reason(exc))
                continue
            if stat.S_ISDIR(st.st_mode):
                if link and not self.options.follow_symlinks:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    yield RawItem(
                        origin=str(path),
                        split=split,
                        label=label,
                        error=f"symlink loop: {path} points back to its ancestor {os.path.realpath(path)}",
                    )
                    continue
                yield from self._walk(path, (*folders, entry.name), ancestors | {key})
            elif not self.wanted(entry.name):
                continue
            elif stat.S_ISREG(st.st_mode):
                yield self._read(path, split, label)
            else:  # a FIFO would block the read forever; devices and sockets are no images either
                yield RawItem(origin=str(path), split=split, label=label, error="not a regular file")

    @staticmethod
    def _read(path: Path, split: str | None, label: str | None) -> RawItem:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            return RawItem(
                origin=str(path), split=split, label=label, error=f"cannot read file: {os_reason(exc)}"
            )
        return RawItem(origin=str(path), split=split, label=label, data=data)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


class FolderFactory:
    def matches(self, spec: str) -> bool:
        return os.path.isdir(spec)

    def open(self, spec: str, **options: Any) -> FolderSource:
        return FolderSource(spec, parse_options(FolderOptions, options, "folder"))


FACTORY = FolderFactory()  # registered as 'folder' by `builtin`, in matching order
