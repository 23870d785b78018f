"""Fetch a file from a list of mirrors: retried with backoff, resumed, verified, never half-written.

The bytes go to `TARGET.part`; an interrupted transfer leaves it there and the next attempt asks
for the rest with an HTTP Range request. Only a file whose *content* sha256 matches (of the
decompressed bytes when it is gzipped, since mirrors re-compress the same data differently) is
renamed to TARGET; a mismatch deletes the `.part` file so nothing corrupt stays in the cache.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from genforge.core.errors import ConfigError, GenforgeError

# progress(file name, bytes so far, total bytes or None when the server does not say)
Progress = Callable[[str, int, "int | None"], None]

CHUNK = 1 << 16
GZIP_MAGIC = b"\x1f\x8b"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(GenforgeError):
    """No mirror delivered the file with the expected content."""


class IncompleteTransfer(OSError):
    """The connection ended before the announced size arrived (the `.part` file is kept)."""


def content_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's content, of the decompressed bytes when the file is gzipped."""
    h = hashlib.sha256()
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        with gzip.GzipFile(fileobj=raw) if gzipped else contextlib.nullcontext(raw) as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, sha256: str | None) -> str | None:
    """None when `path` holds the expected content, else why not."""
    if sha256 is None:
        return None
    try:
        actual = content_sha256(path)
    except (OSError, EOFError, zlib.error) as exc:
        return f"content is not readable ({exc})"
    return None if actual == sha256.lower() else f"content sha256 is {actual}, expected {sha256.lower()}"


def _transfer(url: str, part: Path, timeout: float, progress: Progress | None) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "genforge"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:  # the .part file is not a prefix of this file: start over next time
            part.unlink(missing_ok=True)
        raise
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        resumed = bool(have) and response.status == 206
        if resumed:
            m = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            if m is None or int(m[1]) != have:
                part.unlink(missing_ok=True)
                raise IncompleteTransfer(f"server resumed at the wrong offset (Content-Range {m and m[0]!r})")
            total = int(m[3]) if m[3] != "*" else None
        else:
            have = 0  # the server sent the whole file (it ignored or was not asked a Range)
        done = have
        with open(part, "ab" if resumed else "wb") as fh:
            while chunk := response.read(CHUNK):
                fh.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(part.name[: -len(".part")], done, total)
            fh.flush()
            os.fsync(fh.fileno())
    if total is not None and done != total:
        raise IncompleteTransfer(f"connection closed after {done} of {total} bytes")


def fetch(
    urls: Sequence[str],
    target: str | os.PathLike,
    *,
    sha256: str | None,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 30.0,
    progress: Progress | None = None,
) -> Path:
    """Make `target` hold the file at any of `urls` (tried in order), whose content hashes to `sha256`.

    A `target` that already verifies is used as it is (no network). Each of `retries` rounds tries
    every URL; rounds are separated by `backoff * 2**round` seconds. `sha256=None` skips
    verification: only for files without a published digest, by the caller's explicit choice.
    Raises DownloadError listing what each attempt got.
    """
    if not urls:
        raise ConfigError("download: no URL to fetch from (the mirror list is empty)")
    if retries < 1:
        raise ConfigError(f"download: retries must be >= 1, got {retries}")
    target = Path(target)
    if target.exists():
        if _verify(target, sha256) is None:
            return target
        target.unlink()  # a cached file that no longer verifies: fetch it again
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    failures: list[str] = []
    for round_ in range(retries):
        if round_:
            time.sleep(backoff * 2 ** (round_ - 1))
        for url in urls:
            try:
                _transfer(url, part, timeout, progress)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                # URLError/HTTPError/timeouts are OSErrors; ValueError: a malformed URL
                failures.append(f"{url}: {_reason(exc)}")
                continue
            problem = _verify(part, sha256)
            if problem is not None:
                part.unlink(missing_ok=True)
                failures.append(f"{url}: {problem}")
                continue
            os.replace(part, target)
            return target
    raise DownloadError(
        f"could not download {target.name} into {target.parent} ({retries} round(s) over {len(urls)} URL(s)):\n  "
        + "\n  ".join(failures)
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot connect ({exc.reason})"
    return str(exc) or type(exc).__name__
