"""Precision/recall on k-NN manifolds (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020).

Each real point's manifold ball has the radius of its k-th nearest real neighbour (likewise for
fake points for recall). With D the real x fake distances, r_i / f_j the real / fake radii:
    precision = mean_j [exists i: D_ij <= r_i]        (fake inside the real manifold)
    recall    = mean_i [exists j: D_ij <= f_j]        (real inside the fake manifold)
    density   = mean_j sum_i [D_ij <= r_i] / k        (~1 for identical distributions)
    coverage  = mean_i [min_j D_ij <= r_i]            (real balls that contain a fake)
The reference implementation (github.com/clovaai/generative-evaluation-prdc) uses `<`; with
continuous features the two agree. D is never held whole: one block of fake rows at a time.
"""

from __future__ import annotations

import numpy as np
import torch

from genforge.evaluate.metrics.base import METRICS, EvalInputs, Metric, MetricValues, Output
from genforge.evaluate.neighbours import BLOCK, kth_neighbour_sq, sq_dist_blocks

K = 5


def prdc(real: np.ndarray, fake: np.ndarray, k: int = K, block: int = BLOCK) -> dict[str, float]:
    real_r = torch.from_numpy(kth_neighbour_sq(real, k, block))
    fake_r = torch.from_numpy(kth_neighbour_sq(fake, k, block))
    in_real = np.empty(len(fake), bool)
    density_counts = np.empty(len(fake), np.float64)
    real_in_fake = torch.zeros(len(real), dtype=torch.bool)
    real_min = torch.full((len(real),), float("inf"))
    for rows, d in sq_dist_blocks(fake, real, block):  # d: (fake block, real)
        inside = d < real_r[None, :]
        in_real[rows] = inside.any(1).numpy()
        density_counts[rows] = inside.sum(1).double().numpy()
        real_in_fake |= (d < fake_r[rows][:, None]).any(0)
        real_min = torch.minimum(real_min, d.min(0).values)
    return {
        "precision": float(in_real.mean()),
        "recall": float(real_in_fake.double().mean()),
        "density": float(density_counts.mean() / k),
        "coverage": float((real_min < real_r).double().mean()),
    }


def _prdc(inputs: EvalInputs) -> MetricValues:
    k = int(inputs.options.get("prdc_k", K))
    return MetricValues(prdc(inputs.reference.features, inputs.samples.features, k), details={"k": k})


METRICS.register(
    "prdc",
    Metric(
        _prdc,
        {
            "precision": Output("higher", "share of samples inside the real k-NN manifold (fidelity); 0..1"),
            "recall": Output(
                "higher", "share of real images inside the samples' k-NN manifold (diversity); 0..1"
            ),
            "density": Output(
                "higher", "how many real k-NN balls hold each sample, / k; ~1 = like real data"
            ),
            "coverage": Output(
                "higher", "share of real k-NN balls that contain a sample (mode coverage); 0..1"
            ),
        },
        cheap=True,
    ),
)
