"""Blocked nearest-neighbour distances in feature space (torch matmul, float32).

All comparisons in PRDC and the memorisation audit are monotone in the distance, so squared
Euclidean distances are used throughout; a block of rows at a time keeps memory at
block x N floats, so 10k x 10k in 1,000-d runs in seconds on two cores.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

BLOCK = 2048


def _t(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x.float()


def sq_dist_blocks(x: np.ndarray, y: np.ndarray, block: int = BLOCK) -> Iterator[tuple[slice, torch.Tensor]]:
    """(rows of x, squared distances of those rows to every row of y), one block of x rows at a time."""
    xt, yt = _t(x), _t(y)
    y_sq = (yt * yt).sum(1)
    for start in range(0, len(xt), block):
        xb = xt[start : start + block]
        d = (xb * xb).sum(1, keepdim=True) + y_sq[None, :] - 2.0 * (xb @ yt.T)
        yield slice(start, start + len(xb)), d.clamp_min_(0.0)


def kth_neighbour_sq(x: np.ndarray, k: int, block: int = BLOCK) -> np.ndarray:
    """Squared distance of each row of x to its k-th nearest other row of x."""
    if len(x) <= k:
        raise ValueError(f"need more than k={k} points, got {len(x)}")
    out = np.empty(len(x), np.float32)
    for rows, d in sq_dist_blocks(x, x, block):
        # a point's distance to itself is set to -1 so it always ranks first and is skipped
        d[torch.arange(d.shape[0]), torch.arange(rows.start, rows.stop)] = -1.0
        out[rows] = d.topk(k + 1, dim=1, largest=False).values[:, k].numpy()
    return out


def nearest(x: np.ndarray, y: np.ndarray, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """For each row of x: index of its nearest row of y and the (non-squared) distance to it."""
    idx = np.empty(len(x), np.int64)
    dist = np.empty(len(x), np.float64)
    for rows, d in sq_dist_blocks(x, y, block):
        v, i = d.min(dim=1)
        idx[rows], dist[rows] = i.numpy(), np.sqrt(v.double().numpy())
    return idx, dist
