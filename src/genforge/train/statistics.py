"""Per-class means of an embedding over the training split: the data statistic a family with
`data_statistics` (models/mmd.py) trains against, computed once before its first step.

Each example's row is clipped to L2 norm `radius` and summed into its class; the class counts
ride along as one more coordinate of weight `count_weight`, with radius^2 + count_weight^2 = 1.
Adding or removing one example then changes the (classes x (dim + 1)) table by a vector of norm
<= 1 in one row: sensitivity 1, so one draw of N(0, sigma^2) per entry is the Gaussian mechanism
(train/privacy_release.py calibrates sigma). Without privacy the same code runs with sigma 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from genforge.core.errors import GenforgeError

COUNT_WEIGHT = 0.2  # the count coordinate's share of the unit norm; the rows get sqrt(1 - 0.04) = 0.98


class ClassMeans:
    """Accumulates clipped per-class sums and counts, then releases (noisy) per-class means."""

    def __init__(self, rows: int, dim: int, count_weight: float = COUNT_WEIGHT):
        if not 0.0 < count_weight < 1.0:
            raise GenforgeError(f"count_weight must lie in (0, 1), got {count_weight}")
        self.rows, self.dim, self.count_weight = rows, dim, count_weight
        self.radius = math.sqrt(1.0 - count_weight**2)
        self.table = torch.zeros(rows, dim + 1, dtype=torch.float64)
        self.examples = 0

    def add(self, embeddings: torch.Tensor, rows: torch.Tensor) -> None:
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim or len(rows) != len(embeddings):
            raise GenforgeError(f"statistics: embeddings {tuple(embeddings.shape)} with {len(rows)} rows, "
                                f"expected (n, {self.dim})")  # fmt: skip
        e = embeddings.detach().double().cpu()
        norms = e.norm(dim=1, keepdim=True)
        e = e * (self.radius / norms.clamp(min=self.radius))  # clip: rows longer than radius shrink to it
        r = rows.detach().long().cpu()
        if len(r) and bool((r < 0).any() or (r >= self.rows).any()):
            raise GenforgeError(f"statistics: class rows must be in 0..{self.rows - 1}")
        self.table[:, : self.dim].index_add_(0, r, e)
        self.table[:, self.dim].index_add_(0, r, torch.full((len(r),), self.count_weight, dtype=torch.float64))
        self.examples += len(r)

    def add_all(self, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> ClassMeans:
        for embeddings, rows in pairs:
            self.add(embeddings, rows)
        return self

    def means(self, sigma: float = 0.0, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 (rows, dim) means, float64 (rows,) counts), from the table plus N(0, sigma^2)
        per entry (sigma 0: exact). A noisy count is floored at 1 example."""
        table = self.table.clone()
        if sigma > 0:
            table += sigma * torch.randn(table.shape, generator=generator, dtype=torch.float64)
        counts = (table[:, self.dim] / self.count_weight).clamp(min=1.0)
        return (table[:, : self.dim] / counts[:, None]).float(), counts
