"""The membership-inference audit of a text run: records are non-overlapping windows of
block_size + 1 tokens (the model's training example) from the train split (members) and the
held-out split (non-members), scored by the model's loss (`attacks.text_scores`)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from genforge.core.errors import DataError
from genforge.evaluate.privacy import membership as mia
from genforge.evaluate.privacy.config import MembershipConfig


def windows(tokens: np.ndarray, length: int, index: np.ndarray) -> np.ndarray:
    """The `index`-th non-overlapping windows of `length` tokens."""
    starts = np.asarray(index, np.int64) * length
    return np.stack([np.asarray(tokens[s : s + length], np.int64) for s in starts]) if len(starts) else np.zeros((0, length), np.int64)


def text_membership(pipe: Any, dataset: Any, split: str, config: MembershipConfig, seed: int) -> mia.MembershipResult:
    """Audit text run `pipe` (a TextPipeline) on windows of the train split against `split`'s."""
    from genforge.evaluate.text.evaluation import reference_tokens

    t0 = time.perf_counter()
    length = pipe.block_size + 1
    member_tokens, origin = reference_tokens(pipe, dataset, dataset.split("train"))
    held_tokens, _ = reference_tokens(pipe, dataset, dataset.split(split))
    counts = len(member_tokens) // length, len(held_tokens) // length
    if min(counts) < 2:
        raise DataError(f"{dataset.path}: the membership audit needs >= 2 windows of {length} tokens in the train "
                        f"and {split!r} splits, got {counts[0]} and {counts[1]}")  # fmt: skip
    mi, ni = mia.draw_pairs(*counts, config.n, seed)
    data = torch.from_numpy(np.concatenate([windows(member_tokens, length, mi), windows(held_tokens, length, ni)]))
    records = mia.Records(data, None, np.r_[np.ones(len(mi), bool), np.zeros(len(ni), bool)])
    result = mia.audit(records, config, seed, model=pipe.model)
    result.details.update({"member_split": "train", "nonmember_split": split, "family": pipe.model.family,
                           "window_tokens": length, "tokens_from": origin})  # fmt: skip
    result.seconds = round(time.perf_counter() - t0, 3)
    return result
