"""Drawing tokens and cutting text: temperature, top-k, top-p, per-sequence generators, stops.

Every sequence draws from its own `torch.Generator` (one uniform number per token) and its row
of the batch is filtered and sampled on its own, so a sequence's tokens depend on its seed and
its logits only, not on which other sequences share the batch (continuous batching mixes
requests freely). Filtering happens in descending-probability order and the draw inverts that
order's cumulative distribution, so the same uniform number picks the same token however the
other rows are set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from genforge.core.errors import ConfigError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0 = greedy (the most likely token)
    top_k: int | None = None  # keep the k most likely tokens
    top_p: float | None = None  # keep the smallest set of tokens whose probability reaches p

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ConfigError(f"temperature: must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k: must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p: must be in (0, 1], got {self.top_p}")


def sequence_generator(seed: int, index: int) -> torch.Generator:
    """The generator of the `index`-th sequence of a request with `seed`: n completions of one
    seed differ from each other, and each is reproducible on its own."""
    state = np.random.SeedSequence([int(seed) & (2**63 - 1), int(index)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def next_tokens(
    logits: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """One token per row of `logits` (S, vocab), row i filtered by params[i] and drawn with
    generators[i]; a LongTensor (S,). Steps no row needs (a temperature of 1, no top-k, no
    top-p, no greedy row) are skipped: each is the identity on the rows that do not ask for it."""
    rows, vocab = logits.shape
    if not len(params) == len(generators) == rows:
        raise ValueError(f"{rows} rows of logits, {len(params)} params, {len(generators)} generators")
    if rows == 1:
        return _next_token_one_row(logits, params[0], generators[0])
    # one uniform number per row, drawn even for greedy rows: a row's generator advances by
    # exactly one draw per token whatever its settings
    u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators]) if rows > 1 else (
        torch.rand(1, generator=generators[0], dtype=torch.float64))
    ordered, order = logits.detach().float().cpu().sort(dim=-1, descending=True, stable=True)
    if any(p.temperature not in (0.0, 1.0) for p in params):
        temperature = torch.tensor([p.temperature if p.temperature > 0 else 1.0 for p in params])
        ordered = ordered / temperature[:, None]
    if any(p.top_k is not None and p.top_k < vocab for p in params):
        top_k = torch.tensor([min(p.top_k or vocab, vocab) for p in params])
        ordered = ordered.masked_fill(torch.arange(vocab)[None, :] >= top_k[:, None], float("-inf"))
    probs = torch.softmax(ordered.double(), dim=-1)
    if any(p.top_p is not None for p in params):
        # nucleus: drop a token when the tokens before it already hold top_p of the mass (the
        # first token always stays; rows without top_p drop nothing)
        top_p = torch.tensor([float("inf") if p.top_p is None else p.top_p for p in params], dtype=torch.float64)
        before = probs.cumsum(-1) - probs
        drop = before >= top_p[:, None]
        drop[:, 0] = False
        probs = probs.masked_fill(drop, 0.0)
    cdf = probs.cumsum(-1)
    picked = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp_(max=vocab - 1)
    if any(p.temperature == 0 for p in params):
        greedy = torch.tensor([p.temperature == 0 for p in params])
        picked = torch.where(greedy[:, None], torch.zeros_like(picked), picked)
    return order.gather(1, picked)[:, 0]


def _next_token_one_row(logits: torch.Tensor, p: SamplingParams, generator: torch.Generator) -> torch.Tensor:
    """`next_tokens` for one row, the same steps in numpy: one stream's sampler costs ~30 us less a
    token this way (a dozen small torch operations' overhead), about 8% of a token at nanoGPT's CPU
    size; tests/test_text_sampling.py checks it draws the tokens the batched path draws."""
    u = float(torch.rand(1, generator=generator, dtype=torch.float64))
    x = logits.detach().float().cpu().numpy()[0]
    order = np.argsort(-x, kind="stable")
    ordered = x[order]
    if p.temperature not in (0.0, 1.0):
        ordered = ordered / np.float32(p.temperature)
    if p.top_k is not None and p.top_k < len(x):
        ordered[p.top_k :] = -np.inf
    z = ordered.astype(np.float64)
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    if p.top_p is not None:
        drop = np.cumsum(probs) - probs >= p.top_p
        drop[0] = False
        probs = np.where(drop, 0.0, probs)
    cdf = np.cumsum(probs)
    picked = 0 if p.temperature == 0 else min(int(np.searchsorted(cdf, u * cdf[-1], side="right")), len(x) - 1)
    return torch.tensor([int(order[picked])])


class IncrementalDecoder:
    """Token ids -> text deltas, for tokenizers whose tokens may be parts of a character (byte-level
    BPE): a delta is released once the text decoded so far no longer ends in an incomplete
    UTF-8 sequence (U+FFFD), the offsets method of HF text-generation-inference."""

    def __init__(self, decode: Callable[[list[int]], str]):
        self.decode = decode
        self.ids: list[int] = []
        self._prefix = 0  # tokens before this offset are settled text
        self._read = 0

    def push(self, token: int) -> str:
        self.ids.append(int(token))
        prefix_text = self.decode(self.ids[self._prefix : self._read])
        text = self.decode(self.ids[self._prefix :])
        if len(text) > len(prefix_text) and not text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self.ids)
            return text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        prefix_text = self.decode(self.ids[self._prefix : self._read])
        text = self.decode(self.ids[self._prefix :])
        self._prefix = self._read = len(self.ids)
        return text[len(prefix_text) :]


class TextStream:
    """The growing text of one generated sequence, ended by its first stop string.

    `push(token)` returns True once a stop string has appeared (the stop string and anything
    after it are cut from `text`); `take()` returns the text that is safe to show so far: it holds
    back a tail that could still turn into a stop string, so a streamed response never shows
    text that the final one cuts."""

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str] = ()):
        self.stop = [s for s in stop if s]
        self._decoder = IncrementalDecoder(decode)
        self.text = ""
        self.stopped = False  # a stop string ended the sequence
        self.finished = False  # stopped, or ended by the caller (finish)
        self._shown = 0

    @property
    def ids(self) -> list[int]:
        return self._decoder.ids

    def push(self, token: int) -> bool:
        if self.finished:
            raise RuntimeError("push after the sequence ended")
        before = len(self.text)
        self.text += self._decoder.push(token)
        self._check_stop(before)
        return self.stopped

    def finish(self) -> None:
        """The sequence ends (length limit): release any held-back partial character; take()
        then returns everything left."""
        if not self.stopped:
            before = len(self.text)
            self.text += self._decoder.flush()
            self._check_stop(before)
        self.finished = True

    def _check_stop(self, before: int) -> None:
        if not self.stop:
            return
        longest = max(len(s) for s in self.stop)
        start = max(0, before - longest + 1)  # a stop string may straddle the new text's start
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = self.finished = True

    def take(self) -> str:
        """Text not returned by an earlier take() that no stop string can still claim."""
        end = len(self.text)
        if not self.finished:
            end -= self._held_back()
        delta = self.text[self._shown : max(end, self._shown)]
        self._shown = max(end, self._shown)
        return delta

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop string."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:n]):
                    best = n
                    break
        return best
