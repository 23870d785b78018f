"""Evaluation of restoration models (`task = "restore"`, e.g. `dae`): they do not generate, so the
distribution metrics do not apply. Held-out images are corrupted with the model's own corruption
(seeded), restored, and compared with the clean originals in pixel space (PSNR, MSE, L1), beside
the corrupted input as the baseline a restoration has to beat."""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge.core.atomic import write_json
from genforge.data.canonical import open_dataset

FORMAT = "genforge-metrics"
BATCH = 256
# [-1, 1] images: peak-to-peak 2, so PSNR = 10 log10(2^2 / MSE)
PEAK_SQUARED = 4.0

OUTPUTS = {
    "psnr_restored": ("higher", "PSNR (dB) of restored vs clean held-out images"),
    "psnr_corrupted": ("higher", "PSNR (dB) of the corrupted input vs clean: the baseline"),
    "psnr_gain": ("higher", "psnr_restored - psnr_corrupted (dB); > 0 = the model restores"),
    "mse_restored": ("lower", "mean squared error of restored vs clean, [-1, 1] pixel units"),
    "l1_restored": ("lower", "mean absolute error of restored vs clean, [-1, 1] pixel units"),
}


def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(PEAK_SQUARED / mse)


def restoration_metrics(model: Any, clean: torch.Tensor, seed: int) -> dict[str, float]:
    """Metrics of `model.restore` on `clean` float (N,C,H,W) in [-1,1], corrupted with its own corruption."""
    from genforge.models.corruption import corrupt

    gen = torch.Generator().manual_seed(seed)
    psnr_r, psnr_c, mse, l1 = [], [], [], []
    for start in range(0, len(clean), BATCH):
        x = clean[start : start + BATCH]
        noisy = corrupt(x, model.config.corruption, gen)
        restored = model.restore(noisy).float()
        psnr_r.append(_psnr(restored, x))
        psnr_c.append(_psnr(noisy, x))
        mse.append(((restored - x) ** 2).flatten(1).mean(1))
        l1.append((restored - x).abs().flatten(1).mean(1))
    r, c = torch.cat(psnr_r).mean().item(), torch.cat(psnr_c).mean().item()
    return {
        "psnr_restored": r,
        "psnr_corrupted": c,
        "psnr_gain": r - c,
        "mse_restored": torch.cat(mse).mean().item(),
        "l1_restored": torch.cat(l1).mean().item(),
    }


def evaluate_restoration(pipe: Any, ref: str | Path, n: int, seed: int, out_path: Path,
                         split: str | None = None) -> dict[str, Any]:  # fmt: skip
    from genforge.models.pipeline import from_uint8

    dataset = open_dataset(ref)
    reference = dataset.split(split) if split else dataset.reference_split
    images = np.asarray(reference.images[: min(n, len(reference))])
    t0 = time.perf_counter()
    values = restoration_metrics(pipe.model, from_uint8(images), seed)
    seconds = time.perf_counter() - t0
    count = len(images)
    result = {
        "format": FORMAT,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        # the same target record as a generative run's (evaluate.load_samples): readers need no special case
        "target": {"kind": "run", "path": str(Path(pipe.path).resolve()), "model": pipe.name,
                   "step": pipe.info.get("step"), "ema": pipe.info.get("ema")},  # fmt: skip
        "reference": {"dataset": str(Path(ref).resolve()), "split": reference.name, "count": count,
                      "fingerprint": dataset.fingerprint},  # fmt: skip
        "extractor": {"id": "pixels (no feature extractor)", "hash": "-", "preprocessing": {"value_range": [-1.0, 1.0]}},
        "config": {"n": n, "seed": seed, "corruption": list(pipe.model.config.corruption.kinds)},
        "values": values,
        "metrics": {
            name: {"value": values[name], "better": better, "meaning": meaning, "n_samples": count}
            for name, (better, meaning) in OUTPUTS.items()
        },
        "skipped": {},
        "warnings": [],
        "timing": {"restore_s": round(seconds, 3)},
    }
    write_json(out_path, result)
    return result
