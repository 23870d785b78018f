"""Text metrics as pure functions: held-out likelihood, diversity of samples.

Likelihood: the model's per-token negative log-likelihood (nats) over a whole split, the split
cut into windows of the model's context; bits per character divide by the split's characters,
so models with different tokenisers compare. Diversity: distinct-n over whitespace tokens
(Li et al. 2016) and self-BLEU (Zhu et al. 2018, Texygen) through sacrebleu.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

SELF_BLEU_TOKENIZE = "13a"  # sacrebleu's default tokenizer (mteval-v13a), so scores match its CLI


@dataclass(frozen=True)
class Window:
    start: int  # first token of the window: the model reads tokens[start:end-1]
    end: int  # and predicts tokens[start+1:end]
    skip: int  # predictions already scored by an earlier window (only the rest count)


def loss_windows(n_tokens: int, block_size: int, stride: int | None = None) -> list[Window]:
    """Windows of at most block_size predictions covering every target token 1..n-1 once.

    stride None (= block_size): non-overlapping windows, each prediction seeing 0..block_size-1
    tokens of context, the same average nanoGPT's estimate_loss takes over random windows.
    A smaller stride re-reads context: every window after the first scores only its last
    `stride` predictions, each with at least block_size - stride tokens of context."""
    if block_size < 1:
        raise ValueError("block_size must be >= 1")
    stride = block_size if stride is None else stride
    if not 1 <= stride <= block_size:
        raise ValueError(f"stride must be in 1..block_size ({block_size}), got {stride}")
    out: list[Window] = []
    scored = 1  # the next target to score; token 0 has no context and is never predicted
    start = 0
    while scored < n_tokens:
        end = min(start + block_size + 1, n_tokens)
        out.append(Window(start, end, scored - (start + 1)))
        scored = end
        start += stride
    return out


def split_nll(nll: Callable[[torch.Tensor], torch.Tensor], tokens: np.ndarray, block_size: int,
              stride: int | None = None, batch_size: int = 32) -> tuple[float, int]:  # fmt: skip
    """(total nats, predictions scored) of `tokens` under `nll`, which maps int64 (B, T+1) to
    per-prediction nats (B, T). Windows of equal length go through in batches of batch_size."""
    windows = loss_windows(len(tokens), block_size, stride)
    total, count = 0.0, 0
    by_length: dict[int, list[Window]] = {}
    for w in windows:
        by_length.setdefault(w.end - w.start, []).append(w)
    for group in by_length.values():
        for lo in range(0, len(group), batch_size):
            part = group[lo : lo + batch_size]
            batch = torch.from_numpy(np.stack([np.asarray(tokens[w.start : w.end], dtype=np.int64) for w in part]))
            with torch.no_grad():
                nats = nll(batch).double()
            for row, w in zip(nats, part, strict=True):
                total += float(row[w.skip :].sum())
                count += row.shape[0] - w.skip
    return total, count


def likelihood_summary(total_nats: float, scored: int, n_tokens: int, n_chars: int) -> dict[str, float]:
    """val_loss (nats/token), perplexity and bits per character of a split.

    Token 0 has no context, so `scored` = n_tokens - 1 predictions carry the nats; the split's
    total is estimated as nats/token * n_tokens before dividing by its characters. For a
    character tokenizer that makes bits per character exactly nats/token / ln 2."""
    if scored < 1 or n_chars < 1:
        raise ValueError("need at least one scored token and one character")
    per_token = total_nats / scored
    return {"val_loss": per_token, "perplexity": math.exp(per_token),
            "bits_per_char": per_token * n_tokens / n_chars / math.log(2)}  # fmt: skip


def whitespace_ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    words = text.split()
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct_n(samples: Sequence[str], n: int) -> float | None:
    """Distinct n-grams / all n-grams, pooled over the samples (none spans two samples);
    None when the samples hold no n-gram."""
    grams = [g for s in samples for g in whitespace_ngrams(s, n)]
    return len(set(grams)) / len(grams) if grams else None


def self_bleu(samples: Sequence[str], max_hypotheses: int | None = None, seed: int = 0) -> tuple[float, list[int]]:
    """Mean sentence BLEU (sacrebleu, 0-100, effective order) of each sample against all the
    others as references; high = samples repeat each other. With max_hypotheses, that many
    samples (chosen with `seed`) are scored, each still against all the others.
    Returns (score, indices of the scored samples)."""
    from sacrebleu.metrics import BLEU

    if len(samples) < 2:
        raise ValueError("self-BLEU needs at least two samples")
    idx = list(range(len(samples)))
    if max_hypotheses is not None and max_hypotheses < len(samples):
        idx = sorted(np.random.default_rng(seed).choice(len(samples), max_hypotheses, replace=False).tolist())
    bleu = BLEU(tokenize=SELF_BLEU_TOKENIZE, effective_order=True)
    scores = [bleu.sentence_score(samples[i], [*samples[:i], *samples[i + 1 :]]).score for i in idx]
    return float(np.mean(scores)), idx
