"""Shuffled training batches from a canonical dataset split, resumable and DDP-sharded.

Design (measured in bench/data_loader.py):
- The split is copied into RAM once when it fits (else read through its memory map) and stored
  channels-first, so every batch is a contiguous uint8 (B, C, H, W) tensor: the layout the models
  take, 4x fewer bytes than float for the host-to-device copy, and no per-batch transpose.
  `to_float` turns it into float in [-1, 1] on the target device.
- Each epoch's order is a function of (seed, epoch) alone, so the loader's whole state is
  {seed, epoch, position}: resuming needs no RNG state, and every rank derives the same order.
- Rank r of W takes slice [r*B, (r+1)*B) of each global batch of W*B indices: the union of the
  ranks' batches at step k is the single-process batch of size W*B at step k.
- A batch is a fresh array from one `np.take`; allocating it is as fast as writing into a reused
  buffer at these sizes, and a consumer may keep batches without them changing under it.
- `poisson=True` (differentially private training, train/privacy.py): each batch instead takes
  every sample independently with probability q = batch_size / N, as the privacy accountant
  assumes, so batch sizes vary (mean batch_size, possibly 0). Batch k's draw comes from
  (seed, epoch, position) alone, so the state and its resume stay the same three integers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch

from genforge.core.errors import DataError

# Copy a split into RAM only when it takes at most this share of the memory available now.
RAM_SHARE = 0.5
# mixed into the seed of Poisson draws, so they never share a stream with an epoch's permutation
POISSON_STREAM = 0x5049534E


class LoaderBatch(NamedTuple):
    images: torch.Tensor  # uint8 (B, C, H, W); audio: float32 (B, T)
    labels: torch.Tensor  # int64 (B,), -1 = unlabelled


def to_float(images: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 (B,C,H,W) -> contiguous float32 (B,C,H,W) in [-1, 1] on `device`.

    The uint8 tensor is moved first, so the copy to an accelerator carries a quarter of the bytes.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise DataError(f"to_float expects uint8 (B,C,H,W) images, got {images.dtype} {tuple(images.shape)}")
    x = images.to(device, non_blocking=True) if device is not None else images
    return x.contiguous().float().div_(127.5).sub_(1.0)


def _fits_in_ram(nbytes: int) -> bool:
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return False
    return nbytes <= RAM_SHARE * available


def inverse_frequency_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample probabilities proportional to 1 / (size of the sample's class); they sum to 1."""
    if len(labels) == 0 or (labels < 0).any():
        raise DataError("class-balanced sampling needs a label >= 0 for every image")
    counts = np.bincount(labels)
    weights = 1.0 / counts[labels]
    return weights / weights.sum()


class BatchLoader:
    """Infinite iterator of `LoaderBatch`es over uint8 (N,H,W,C) images and int64 labels.

    Every epoch visits each index once in an order drawn from (seed, epoch); with `balanced`
    an epoch is instead N draws with replacement, weighted by inverse class frequency.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        *,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        balanced: bool = False,
        rank: int = 0,
        world_size: int = 1,
        in_memory: bool | None = None,
        poisson: bool = False,
    ):
        # images: uint8 (N,H,W,C), served channels-first; audio clips: float32 (N,T), served as is
        if not ((images.dtype == np.uint8 and images.ndim == 4) or (images.dtype == np.float32 and images.ndim == 2)):
            raise DataError(
                f"loader data must be uint8 images (N,H,W,C) or float32 clips (N,T), got {images.dtype} {images.shape}"
            )
        n = len(images)
        if labels is None:
            labels = np.full(n, -1, np.int64)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        if labels.shape != (n,):
            raise DataError(f"loader: {labels.shape} labels for {n} images")
        if batch_size < 1:
            raise DataError(f"loader: batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"loader: need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)
        self.global_batch = self.batch_size * self.world_size
        if n == 0 or (drop_last and n < self.global_batch):
            raise DataError(
                f"loader: {n} images cannot fill one batch of {self.global_batch} "
                f"(batch_size {batch_size} x world_size {world_size}); lower the batch size"
            )
        if poisson and (balanced or world_size > 1):
            raise DataError("loader: Poisson sampling draws one global batch in one process, unweighted; "
                            "it cannot be combined with balanced sampling or several ranks")
        self.seed, self.shuffle, self.drop_last = int(seed), shuffle, drop_last
        # q of Poisson sampling; None: fixed-size batches from each epoch's order
        self.sample_rate = self.batch_size / n if poisson else None
        self.image_shape = tuple(images.shape[1:])  # (H, W, C); clips: (T,)
        self._channels_last = images.ndim == 4
        if in_memory is None:
            in_memory = _fits_in_ram(images.nbytes)
        self.in_memory = bool(in_memory)
        if self.in_memory:
            # channels-first once, here, instead of a transpose per batch (np.array: a copy in RAM,
            # also of a memory-mapped (N,T) that needs no transpose)
            self._data = np.array(images.transpose(0, 3, 1, 2) if self._channels_last else images, order="C")
        else:
            self._data = images
        self._labels = labels
        self._weights = inverse_frequency_weights(labels) if balanced else None
        self.balanced = balanced
        self.epoch, self.position = 0, 0  # position: samples of this epoch's order already served
        self._epoch_end = len(self) * self.global_batch  # position after an epoch's last batch
        self._order: np.ndarray | None = None
        self._order_epoch = -1

    @classmethod
    def from_split(cls, split: Any, **kwargs: Any) -> BatchLoader:
        """A loader over a `genforge.data.canonical.Split` (images memory-mapped, labels in RAM)."""
        return cls(split.images, split.labels, **kwargs)

    @property
    def num_examples(self) -> int:
        """Samples the batches are drawn from (N of the privacy accountant's q = batch_size / N)."""
        return len(self._labels)

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""
        n = len(self._labels)
        return n // self.global_batch if self.drop_last else -(-n // self.global_batch)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The global order of sample indices for `epoch` (identical on every rank)."""
        if epoch != self._order_epoch:
            n = len(self._labels)
            rng = np.random.Generator(np.random.PCG64([self.seed, epoch]))
            if self._weights is not None:
                order = rng.choice(n, size=n, replace=True, p=self._weights)
            elif self.shuffle:
                order = rng.permutation(n)
            else:
                order = np.arange(n)
            self._order, self._order_epoch = order.astype(np.intp, copy=False), epoch
        return self._order  # type: ignore[return-value]

    def _rank_indices(self, order: np.ndarray, start: int) -> np.ndarray:
        chunk = order[start : start + self.global_batch]
        if len(chunk) < self.global_batch and self.world_size > 1:
            # pad the last, short global batch from the epoch start so all ranks take equal slices
            per_rank = -(-len(chunk) // self.world_size)
            chunk = np.concatenate([chunk, order[: per_rank * self.world_size - len(chunk)]])
        else:
            per_rank = self.batch_size
        return chunk[self.rank * per_rank : (self.rank + 1) * per_rank]

    def __iter__(self) -> Iterator[LoaderBatch]:
        return self

    def __next__(self) -> LoaderBatch:
        return self._gather(self.next_indices())

    def next_indices(self) -> np.ndarray:
        """Advance by one batch and return its sample indices (what `next` gathers): a feed that
        reads per-sample fields beside the data (e.g. audio speakers) indexes them with these."""
        if self.position >= self._epoch_end:
            self.epoch, self.position = self.epoch + 1, 0
        if self.sample_rate is not None:
            idx = self.poisson_indices(self.epoch, self.position)
        else:
            idx = self._rank_indices(self.epoch_order(self.epoch), self.position)
        self.position += self.global_batch
        return idx

    def poisson_indices(self, epoch: int, position: int) -> np.ndarray:
        """The samples of the Poisson batch at (epoch, position): each one independently with
        probability `sample_rate`, in index order."""
        rng = np.random.Generator(np.random.PCG64([self.seed, epoch, position, POISSON_STREAM]))
        return np.flatnonzero(rng.random(len(self._labels)) < self.sample_rate).astype(np.intp, copy=False)

    def gather(self, idx: np.ndarray) -> LoaderBatch:
        """The batch of sample indices `idx`, as channels-first uint8 and int64 labels."""
        idx = np.asarray(idx, dtype=np.intp)
        if len(idx) and not (0 <= idx.min() and idx.max() < len(self._labels)):
            raise DataError(f"loader: indices must lie in 0..{len(self._labels) - 1}")
        return self._gather(idx)

    def _gather(self, idx: np.ndarray) -> LoaderBatch:
        # mode="clip" skips numpy's bounds check (and its buffering); indices come from epoch_order
        images = torch.from_numpy(np.take(self._data, idx, axis=0, mode="clip"))
        if not self.in_memory and self._channels_last:
            images = images.permute(0, 3, 1, 2)  # a view; to_float makes it contiguous
        return LoaderBatch(images, torch.from_numpy(np.take(self._labels, idx, mode="clip")))

    def iter_epoch(self) -> Iterator[LoaderBatch]:
        """The batches left in the current epoch."""
        while self.position < self._epoch_end:
            yield next(self)

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position, "size": len(self._labels)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"seed", "epoch", "position"} - set(state)
        if missing:
            raise DataError(f"loader state: missing field(s) {', '.join(sorted(missing))}")
        size = state.get("size", len(self._labels))
        if size != len(self._labels):
            raise DataError(f"loader state: saved for {size} images, this split has {len(self._labels)}")
        position = int(state["position"])
        if not 0 <= position <= self._epoch_end or position % self.global_batch:
            raise DataError(
                f"loader state: position {position} is not a multiple of the global batch {self.global_batch} "
                f"in 0..{self._epoch_end}"
            )
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), position
        self._order_epoch = -1
