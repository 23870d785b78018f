"""One writer at a time per run or dataset directory: a lock file beside it, naming its holder.

`DirLock(path)` holds an exclusive `flock` on `PARENT/.NAME.lock` while `PARENT/NAME` is written
(the lock sits beside the directory because datasets appear by renaming a temporary directory
into place). The file records the holder's PID, host and command, for the error a second writer
gets. The kernel drops a flock when its holder dies, so a lock file left by a killed process is
stale by construction and the next writer takes it over; on a file system without flock the PID
decides (a lock of a PID no longer running on this host is taken over). Locks are re-entrant in a
process: the trainer's in-training evaluation may write into the run being trained.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from genforge.core.errors import LockedError

# lock file path -> [pid that took it, fd, depth]; guarded by _GUARD
_HELD: dict[str, list[int]] = {}
_GUARD = threading.Lock()


def lock_path(target: str | os.PathLike) -> Path:
    """`PARENT/.NAME.lock` for directory `PARENT/NAME` (the parent resolved, so two spellings of a
    path share one lock)."""
    target = Path(os.path.abspath(target))
    return target.parent.resolve() / f".{target.name}.lock"


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _read(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 65536).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_holder(target: str | os.PathLike) -> dict[str, Any]:
    """What the lock file of `target` says about its (last) holder; {} when there is none."""
    try:
        fd = os.open(lock_path(target), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        return _read(fd)
    finally:
        os.close(fd)


def _describe(holder: dict[str, Any]) -> str:
    parts = [f"PID {holder.get('pid', '?')}"]
    if holder.get("host"):
        parts[0] += f" on {holder['host']}"
    if holder.get("command"):
        parts.append(f"`{holder['command']}`")
    if holder.get("since"):
        parts.append(f"since {holder['since']}")
    return ", ".join(parts)


def _locked_error(target: Path, path: Path, holder: dict[str, Any]) -> LockedError:
    return LockedError(
        f"{target} is being written by another process ({_describe(holder)}); wait until it has "
        f"finished, or stop it. If no such process is running, remove the lock file {path}"
    )


def _holder_is_live(holder: dict[str, Any]) -> bool:
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    if holder.get("host") not in (None, socket.gethostname()):
        return True  # cannot tell from here: assume it runs
    return pid_alive(pid)


def _command() -> str:
    if not sys.argv:
        return ""
    prog = os.path.basename(sys.argv[0])
    prog = "genforge" if prog in ("__main__.py", "-m", "-c", "") else prog
    return " ".join([prog, *sys.argv[1:]])[:300]


class DirLock:
    """Exclusive writer lock on a directory (a context manager; `acquire`/`release` also work).

    `previous` is what the lock file said before this process took it over (a dead holder's PID),
    or {} for a fresh lock."""

    def __init__(self, target: str | os.PathLike):
        self.target = Path(target)
        self.path = lock_path(target)
        self.previous: dict[str, Any] = {}
        self._held = False

    def acquire(self) -> DirLock:
        key = str(self.path)
        with _GUARD:
            entry = _HELD.get(key)
            if entry is not None and entry[0] == os.getpid():
                entry[2] += 1
                self._held = True
                return self
            fd = self._take()
            _HELD[key] = [os.getpid(), fd, 1]
        self._held = True
        return self

    def _take(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) or _holder_is_live(holder):
                    os.close(fd)
                    raise _locked_error(self.target, self.path, holder) from None
                # no flock on this file system, and the recorded holder is gone: the PID decides
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # its holder released (and removed) it between our open and flock
                os.close(fd)
                continue
            self.previous = _read(fd)
            record = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": _command(),
                "since": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            }
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
            return fd
        raise LockedError(f"{self.target}: could not take the lock file {self.path} (it keeps changing)")

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        key = str(self.path)
        with _GUARD:
            entry = _HELD.get(key)
            if entry is None or entry[0] != os.getpid():
                return
            entry[2] -= 1
            if entry[2] > 0:
                return
            del _HELD[key]
            # remove while still holding it: a waiter that opened the old file sees it is gone
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            os.close(entry[1])

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def ensure_free(target: str | os.PathLike) -> None:
    """Raise LockedError when another live process holds the lock of `target`; takes nothing."""
    path = lock_path(target)
    with _GUARD:
        entry = _HELD.get(str(path))
        if entry is not None and entry[0] == os.getpid():
            return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) or _holder_is_live(holder):
                raise _locked_error(Path(target), path, holder) from None
    finally:
        os.close(fd)
