"""Per-item processing (decode, normalise, resize, hash) and the worker pool that runs it.

The main process streams the source and ships batches of encoded bytes; workers return
stacked uint8 arrays plus their hashes and analysis, so little crosses the process boundary
and the CPU-heavy part runs on every core.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from PIL import Image

from genforge.core.hashing import hash_array
from genforge.data.process.analysis import ImageAnalysis, analyse_images
from genforge.data.process.decode import (
    Quarantined,
    bombs_are_errors,
    decode_bytes,
    normalise_array,
    normalise_mode,
)
from genforge.data.process.resize import array_channels, draft_request, fit_image

Payload = tuple[bytes | None, np.ndarray | None]


@dataclass(frozen=True)
class ProcessSpec:
    size: tuple[int, int] | None  # (H, W)
    channels: int | None
    fit: str
    resize_filter: str
    background: tuple[int, int, int]


@dataclass
class BatchResult:
    images: list[np.ndarray] = field(default_factory=list)  # uint8 HxWxC, one per good item
    good: list[int] = field(default_factory=list)  # position in the batch of each good item
    hashes: list[str] = field(default_factory=list)
    bad: list[tuple[int, str, str]] = field(default_factory=list)  # (position, kind, reason)
    notes: list[tuple[int, str]] = field(default_factory=list)
    analysis: ImageAnalysis | None = None  # set when all good images share one shape


def process_item(payload: Payload, spec: ProcessSpec) -> tuple[np.ndarray, list[str]]:
    data, array = payload
    if data is not None:
        draft = partial(draft_request, spec.size, spec.fit) if spec.size else None
        im, notes = decode_bytes(data, draft=draft, gray=spec.channels == 1)
        im = normalise_mode(im, spec.background)
        if spec.channels:
            target_mode = "L" if spec.channels == 1 else "RGB"
            im = im if im.mode == target_mode else im.convert(target_mode)
        arr = None
    elif array is not None:
        notes = []
        arr = normalise_array(array, spec.background)
        if spec.channels:
            arr = array_channels(arr, spec.channels)
        if spec.size is None or arr.shape[:2] == tuple(spec.size):
            return arr, notes
        im = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    else:
        raise Quarantined("empty", "the source gave neither bytes nor an array")
    if spec.size:
        im = fit_image(im, spec.size, spec.fit, spec.resize_filter, spec.background)
    arr = np.asarray(im)
    return (arr[:, :, None] if arr.ndim == 2 else arr), notes


def process_batch(payloads: list[Payload], spec: ProcessSpec) -> BatchResult:
    out = BatchResult()
    with bombs_are_errors():
        for pos, payload in enumerate(payloads):
            try:
                arr, notes = process_item(payload, spec)
            except Quarantined as q:
                out.bad.append((pos, q.kind, q.reason))
                continue
            out.good.append(pos)
            out.images.append(arr)
            out.hashes.append(hash_array(arr))
            out.notes.extend((pos, n) for n in notes)
    if out.images and len({a.shape for a in out.images}) == 1:
        stacked = np.stack(out.images)
        out.images = [stacked]  # one array crosses the process boundary, not hundreds
        out.analysis = analyse_images(stacked)
    return out


_SPEC: ProcessSpec | None = None


def _init_worker(spec: ProcessSpec) -> None:
    global _SPEC
    _SPEC = spec


def _run_in_worker(payloads: list[Payload]) -> BatchResult:
    assert _SPEC is not None
    return process_batch(payloads, _SPEC)


def auto_workers() -> int:
    from genforge.core.threads import budget

    # the cores this process may use: --threads / OMP_NUM_THREADS / the cores free at start
    cores = budget()
    return min(2, cores) if cores > 1 else 0


def start_method() -> str:
    """fork starts fast and never re-imports the caller's __main__ (a script without a
    __main__ guard stays safe); with other threads alive, a fork could copy a held lock, so
    then the forkserver."""
    methods = mp.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def run_batches(
    batches: Iterable[list[Payload]], spec: ProcessSpec, workers: int | None
) -> Iterator[BatchResult]:
    """`process_batch` over `batches`, results in order; at most a few batches in flight.

    workers=None picks automatically and stays in-process when the source fits in one batch
    (starting processes costs more than a small ingest).
    """
    batches = iter(batches)
    if workers is None:
        first = next(batches, None)
        if first is None:
            return
        second = next(batches, None)
        workers = auto_workers() if second is not None else 0
        batches = itertools.chain([first] if second is None else [first, second], batches)
    if workers == 0:
        for batch in batches:
            yield process_batch(batch, spec)
        return
    ctx = mp.get_context(start_method())
    with ctx.Pool(workers, initializer=_init_worker, initargs=(spec,)) as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.apply_async(_run_in_worker, (batch,)))
            if len(pending) > 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
