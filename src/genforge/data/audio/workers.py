"""Decoding on worker processes (`workers: N`): the main process streams the source and ships
batches of encoded files (or their paths); each worker decodes its batch with libsndfile
(`decode.decode`) and returns the samples or the quarantine reasons, in order. The pool starts
as the image ingest's does (`data.process.worker`: fork where safe). Off by default: see
`AudioIngestConfig.workers`.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterable, Iterator
from functools import partial

from genforge.data.audio.decode import Decoded, Rejected, decode

Limits = tuple[float, float, float]  # (max_seconds, silence_dbfs, clip_level)
BATCH = 128  # files per task: large enough that the round trip is cheap, small enough to stream


def decode_batch(datas: list[bytes | str | None], limits: Limits) -> list[Decoded | Rejected | None]:
    """Each file decoded (None stays None: an item the source could not read)."""
    return [None if data is None else decode(data, *limits) for data in datas]


def decoded(batches: Iterable[list[bytes | str | None]], limits: Limits, workers: int) -> Iterator[list]:
    """`decode_batch` over `batches`, in order, on `workers` processes (0: in this one)."""
    from genforge.data.process.worker import start_method

    run = partial(decode_batch, limits=limits)
    if workers == 0:
        yield from map(run, batches)
        return
    with mp.get_context(start_method()).Pool(workers) as pool:
        yield from pool.imap(run, batches)
