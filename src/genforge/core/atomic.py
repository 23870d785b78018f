"""Atomic writes: write to a temporary name in the same directory, then rename.

A reader never sees a half-written file or directory, and a killed writer leaves only a
temporary name that starts with `.tmp-` (cleaned by the next writer of the same target). A full
disk (ENOSPC, EDQUOT) while writing becomes a `DiskFullError` naming the target, after the
temporary name is removed: the target is as it was before.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genforge.core.errors import DiskFullError, GenforgeError

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# native writers (safetensors, ONNX) report the OS error inside their own exception's message
_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded", "StorageFull", "QuotaExceeded")


def is_disk_full(exc: BaseException | None) -> bool:
    """True when `exc`, or an exception it was raised from or while handling, is a full disk."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFullError):
            return True
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        if not isinstance(exc, GenforgeError) and any(t in str(exc) for t in _DISK_FULL_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(target: str | os.PathLike, exc: BaseException) -> DiskFullError:
    reason = "No space left on device"
    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:  # the OS's words (space or quota), if any
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in DISK_FULL_ERRNOS and cause.strerror:
            reason = cause.strerror
            break
        cause = cause.__cause__ or cause.__context__
    return DiskFullError(
        f"{target}: {reason} while writing it; nothing was replaced (what was there before is intact). "
        "Free some space, or write somewhere else, and run again"
    )


def _reraise(exc: BaseException, target: Path) -> None:
    if not isinstance(exc, DiskFullError) and is_disk_full(exc):
        raise disk_full_error(target, exc) from exc
    raise exc


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _public(path: str | Path, mode: int) -> None:
    # mkstemp/mkdtemp create owner-only entries; the renamed result should be as readable as any
    # file the user creates (a dataset read by a service account, say)
    os.chmod(path, mode & ~_umask())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside `target`; on success it replaces `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{target.name}.", dir=target.parent)
    try:
        _public(tmp, 0o666)
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _reraise(exc, target)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target` for writers that take a file name
    (safetensors, np.save); on success it replaces `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{target.name}.", dir=target.parent, suffix=target.suffix)
    os.close(fd)
    try:
        _public(tmp, 0o666)
        yield Path(tmp)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _reraise(exc, target)


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_file(target, "wb") as fh:
        fh.write(data)


def write_text(target: str | os.PathLike, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | os.PathLike, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    # numpy scalars and paths show up in manifests and metrics; everything else is a bug.
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside `target`; on success it is renamed to `target`.

    On any exception (or a kill) `target` is untouched: either absent or the previous version.
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not overwrite:
        raise GenforgeError(f"{target} already exists; remove it or pass --overwrite")
    for stale in target.parent.glob(f".tmp-{target.name}.*"):
        # leftovers of a killed writer of the same target
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}.", dir=target.parent))
    try:
        _public(tmp, 0o777)
        yield tmp
        if target.exists():
            old = target.with_name(f".tmp-{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            # also a full disk met by a nested atomic write: name the directory, not its temporary file
            raise disk_full_error(target, exc) from exc
        raise


@contextlib.contextmanager
def atomic_files(directory: str | os.PathLike, name: str) -> Iterator[Path]:
    """Yield an empty staging directory beside `directory`'s files for a set of files that belong
    together (an export and its description, weights and their JSON). Only when the block ends
    without an exception, each file written into it replaces its namesake in `directory`;
    otherwise nothing in `directory` changes. `name` (the main file) names the staging directory.
    """
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".tmp-{name}.", dir=directory))
    try:
        _public(stage, 0o777)
        yield stage
        # every file is complete before the first rename (renaming needs no space)
        for path in sorted(stage.iterdir()):
            os.replace(path, directory / path.name)
        _fsync_dir(directory)
    except BaseException as exc:
        if is_disk_full(exc):
            raise disk_full_error(directory / name, exc) from exc
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
