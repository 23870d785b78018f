"""Continuous batching of decode steps for text models.

One thread owns the model and a slot KV cache (`model.new_cache(slots)`). Every iteration of its
loop it (1) drops sequences whose caller went away, (2) admits waiting sequences into free slots,
prefilling each (`model.prefill(cache, slot, prompt_ids) -> logits (vocab,)`; the choices of one
prompt share a prefill through `cache.copy`) and drawing its first token, then (3) runs ONE `model.decode(cache, slots, last_ids) -> logits (S, vocab)` over every
active sequence and draws each one's next token. A request that arrives while others are being
decoded therefore joins the running batch at the next step instead of waiting for them to finish,
and a finished sequence frees its slot at once.

Each sequence draws from its own `torch.Generator` (`sequence_generator(seed, choice index)`, as
`TextPipeline.complete` does), one row of the batch at a time, so its text does not depend on what
else is in the batch.

Results reach the event loop as `TokenEvent`s in the request's asyncio queue: for a streaming
request, text deltas as they become final (incomplete UTF-8 and anything that may still turn into
a stop string are held back), at most one per `stream_interval` a choice (its first token at
once): a fast model's tokens then share events instead of costing the event loop and the client
one each; for every request, one event per choice with the rest of its text and the finish
reason. One step's events cost each event loop one wake-up.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from genforge.deploy.batching import BatcherClosed, BatcherOverloaded
from genforge.models.text.sampling import SamplingParams, TextStream, next_tokens, sequence_generator

log = logging.getLogger("genforge.deploy")


class SlotModel(Protocol):
    """What the scheduler needs of a text model (models/text/gpt.py); the cache it makes has
    `release(slot)` and `copy(src, dst)`."""

    def new_cache(self, slots: int) -> Any: ...

    def prefill(self, cache: Any, slot: int, ids: torch.Tensor) -> torch.Tensor: ...

    def decode(self, cache: Any, slots: Sequence[int], ids: Sequence[int]) -> torch.Tensor: ...


class Tokenizer(Protocol):
    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass(frozen=True)
class ChoiceSpec:
    """One sequence to generate: a prompt's token ids and how to continue it."""

    index: int  # the choice's index in the response
    prompt_ids: tuple[int, ...]
    max_tokens: int
    params: SamplingParams
    seed: int
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class TokenEvent:
    index: int
    text: str  # new final text ("" on the last event when nothing was held back)
    finish_reason: str | None = None  # "stop" | "length" on a choice's last event
    completion_tokens: int = 0  # on the last event: tokens generated
    error: BaseException | None = None  # the step failed: the choice is over


@dataclass(eq=False)
class _Sequence:
    spec: ChoiceSpec
    stream: CompletionStream
    text: TextStream
    generator: torch.Generator
    sent: int = 0  # characters of text.text handed to the caller
    slot: int = -1
    last: int = -1  # the token to feed to the next decode step
    generated: int = 0
    shown_at: float = float("-inf")  # when text last went to a streaming caller
    submitted: float = field(default_factory=time.perf_counter)


class CompletionStream:
    """The caller's side of one request: `await next_events()`; `cancel()` when it goes away.

    `incremental`: text events as tokens come (streaming); otherwise each choice sends one event,
    with all its text, when it ends (no event-loop work per token)."""

    def __init__(
        self, scheduler: DecodeScheduler, loop: asyncio.AbstractEventLoop, choices: int, incremental: bool
    ):
        self._scheduler = scheduler
        self.loop = loop
        self.incremental = incremental
        self.queue: asyncio.Queue[TokenEvent] = asyncio.Queue()
        self.remaining = choices  # choices without their last event yet
        self.cancelled = False

    async def next_events(self) -> list[TokenEvent]:
        """The next event and every other one already there (a consumer that fell behind
        catches up in one go)."""
        events = [await self.queue.get()]
        while not self.queue.empty():
            events.append(self.queue.get_nowait())
        self.remaining -= sum(e.finish_reason is not None or e.error is not None for e in events)
        return events

    @property
    def done(self) -> bool:
        return self.remaining == 0

    def cancel(self) -> None:
        """Stop generating for this request (its slots are freed at the next step)."""
        if not self.cancelled:
            self.cancelled = True
            self._scheduler.wake()


def _deliver(items: list[tuple[CompletionStream, TokenEvent]]) -> None:
    for stream, event in items:
        stream.queue.put_nowait(event)


class TextMetricsSink(Protocol):
    def step(self, batch: int) -> None: ...

    def first_token(self, seconds: float) -> None: ...

    def tokens(self, generated: int) -> None: ...

    def active(self, delta: int) -> None: ...


class DecodeScheduler:
    """The decode loop over a `SlotModel` with `slots` concurrent sequences; `max_waiting`
    bounds the sequences queued for a slot (more is `BatcherOverloaded`, a 503)."""

    def __init__(
        self,
        model: SlotModel,
        tokenizer: Tokenizer,
        *,
        slots: int,
        max_waiting: int = 4096,
        metrics: TextMetricsSink | None = None,
        name: str = "genforge-decoder",
        stream_interval: float = 0.0,
    ):
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.model = model
        self.tokenizer = tokenizer
        self.slots = slots
        self.max_waiting = max_waiting
        self.metrics = metrics
        # streamed sequences: new text goes out at most every `stream_interval` seconds (the
        # first token and the end at once); 0: every token
        self.stream_interval = stream_interval
        self._cond = threading.Condition()
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._active: list[_Sequence] = []
        self._free = list(range(slots - 1, -1, -1))  # a stack: the lowest slot is reused first
        self._closed = False
        self._cache = model.new_cache(slots)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # caller side (event loop) ------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, choices: Sequence[ChoiceSpec], incremental: bool = True) -> CompletionStream:
        """Queue a request's choices; events arrive in the returned stream's queue."""
        stream = CompletionStream(self, asyncio.get_running_loop(), len(choices), incremental)
        seqs = [
            _Sequence(
                spec=c,
                stream=stream,
                text=TextStream(self.tokenizer.decode, c.stop),
                generator=sequence_generator(c.seed, c.index),
            )
            for c in choices
        ]
        with self._cond:
            if self._closed:
                raise BatcherClosed("the service is shutting down")
            if self._waiting and len(self._waiting) + len(seqs) > self.max_waiting:
                raise BatcherOverloaded(f"{len(self._waiting)} sequences are waiting for a slot; retry later")
            self._waiting.extend(seqs)
            self._cond.notify()
        return stream

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def close(self, timeout: float | None = None) -> bool:
        """Take no new requests, finish the admitted and waiting ones, stop; False if not in time."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    # the loop (its own thread) -----------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                admitted = self._admit()
                if admitted is None:
                    return
                events: list[tuple[CompletionStream, TokenEvent]] = []
                try:
                    if admitted:
                        self._prefill(admitted, events)
                    if self._active:
                        self._step(events)
                except Exception as exc:  # every waiting caller must hear about it
                    log.exception("decode step failed")
                    for seq in [*admitted, *self._active]:
                        if seq.slot >= 0:  # not yet told (a sequence may be in both lists)
                            self._leave(seq, None, events, error=exc)
                self._send(events)

    def _admit(self) -> list[_Sequence] | None:
        """Drop cancelled sequences, then take waiting ones into free slots (None: shut down)."""
        with self._cond:
            while True:
                for seq in [s for s in self._active if s.stream.cancelled]:
                    self._leave(seq, None, None)
                self._waiting = collections.deque(s for s in self._waiting if not s.stream.cancelled)
                admitted = []
                while self._waiting and self._free:
                    seq = self._waiting.popleft()
                    seq.slot = self._free.pop()
                    admitted.append(seq)
                    if self.metrics is not None:
                        self.metrics.active(1)
                if admitted or self._active:
                    return admitted
                if self._closed:
                    return None
                self._cond.wait()

    def _prefill(self, admitted: list[_Sequence], events: list) -> None:
        """Run the new sequences' prompts into their slots and draw each one's first token. The
        choices of one request with the same prompt share one prefill (its cache is copied)."""
        groups: dict[tuple[int, tuple[int, ...]], list[_Sequence]] = {}
        for seq in admitted:
            groups.setdefault((id(seq.stream), seq.spec.prompt_ids), []).append(seq)
        copy = getattr(self._cache, "copy", None)
        for (_, prompt), seqs in groups.items():
            if copy is None:  # a cache that cannot copy: prefill each
                logits = torch.stack([self.model.prefill(self._cache, s.slot, list(prompt)) for s in seqs])
            else:
                logits = self.model.prefill(self._cache, seqs[0].slot, list(prompt))[None].expand(
                    len(seqs), -1
                )
                for seq in seqs[1:]:
                    copy(seqs[0].slot, seq.slot)
            tokens = next_tokens(logits, [s.spec.params for s in seqs], [s.generator for s in seqs])
            now = time.perf_counter()
            for seq, token in zip(seqs, tokens.tolist(), strict=True):
                if self.metrics is not None:
                    self.metrics.first_token(now - seq.submitted)
                self._active.append(seq)
                self._accept(seq, int(token), events)
        if self.metrics is not None:
            self.metrics.tokens(len(admitted))

    def _step(self, events: list) -> None:
        """ONE decode over every active sequence, then each draws its next token."""
        batch = list(self._active)
        # lists, not tensors: the model takes either, and a step of one stream is short enough
        # (~0.2 ms) for two tensor round trips to show
        logits = self.model.decode(self._cache, [s.slot for s in batch], [s.last for s in batch])
        tokens = next_tokens(logits, [s.spec.params for s in batch], [s.generator for s in batch])
        if self.metrics is not None:
            self.metrics.step(len(batch))
            self.metrics.tokens(len(batch))
        for seq, token in zip(batch, tokens.tolist(), strict=True):
            self._accept(seq, int(token), events)

    def _accept(self, seq: _Sequence, token: int, events: list) -> None:
        seq.generated += 1
        seq.last = token
        if seq.text.push(token):
            self._leave(seq, "stop", events)
        elif seq.generated >= seq.spec.max_tokens:
            self._leave(seq, "length", events)
        elif seq.stream.incremental and (now := time.perf_counter()) - seq.shown_at >= self.stream_interval:
            if text := self._take(seq):
                seq.shown_at = now
                events.append((seq.stream, TokenEvent(seq.spec.index, text)))

    @staticmethod
    def _take(seq: _Sequence) -> str:
        text = seq.text.take()
        seq.sent += len(text)
        return text

    def _leave(
        self, seq: _Sequence, reason: str | None, events: list | None, error: BaseException | None = None
    ) -> None:
        """Free the sequence's slot; tell its caller how it ended (unless it went away)."""
        if seq in self._active:
            self._active.remove(seq)
        if seq.slot >= 0:
            self._cache.release(seq.slot)
            self._free.append(seq.slot)
            seq.slot = -1
            if self.metrics is not None:
                self.metrics.active(-1)
        if events is not None:
            text = ""
            if error is None:
                seq.text.finish()
                # the end: nothing can turn into a stop string any more, so the held-back tail goes too
                text = seq.text.text[seq.sent :]
                seq.sent = len(seq.text.text)
            events.append((seq.stream, TokenEvent(seq.spec.index, text, reason, seq.generated, error)))

    @staticmethod
    def _send(events: list[tuple[CompletionStream, TokenEvent]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for stream, event in events:
            if not stream.cancelled:
                by_loop.setdefault(stream.loop, []).append((stream, event))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass

    def warmup(self, prompt: Sequence[int], tokens: int = 4) -> None:
        """Prefill and decode a few tokens in slot 0 before serving (first passes allocate)."""
        with torch.inference_mode():
            logits = self.model.prefill(self._cache, 0, list(prompt))
            for _ in range(tokens):
                logits = self.model.decode(
                    self._cache, torch.tensor([0]), logits.view(-1, logits.shape[-1]).argmax(-1)
                )
            self._cache.release(0)
