"""What the trainer's bookkeeping costs per step: `Trainer` vs a bare loop over the same phases.

    .venv/bin/python bench/train_overhead.py [--batch 64] [--steps 10] [--rounds 5] [--model dcgan]

Both run the same model (the article's DCGAN on the MNIST test split by default), the same fused
Adam optimisers and the same batches. The bare loop does only what any training loop must: take a
batch, convert it to float, and per phase forward, zero grads, backward, step. The trainer step
adds what `fit` does on every CPU step: EMA update, loss-term accumulation, the divergence check
(one scalar read). The two alternate round by round (load from other processes hits both alike);
the report gives the median images/s of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_dcgan_throughput import canonical_mnist  # noqa: E402


def build(model: str, batch: int, work: Path):
    import genforge.models.zoo  # noqa: F401
    from genforge.models.registry import MODELS
    from genforge.train.config import TrainConfig
    from genforge.train.trainer import Trainer

    dataset = canonical_mnist(work / "mnist")
    cfg = MODELS.get(model).default_config(28, 1)
    tcfg = TrainConfig(
        steps=10**9, batch_size=batch, tensorboard=False, sample_every=0, checkpoint_every=0, progress="none"
    )
    return Trainer(model, cfg, tcfg, dataset, work / "run")


def bare_step(trainer, step: int) -> None:
    """The minimum: the trainer's own loader and optimisers, none of its bookkeeping."""
    from genforge.data.loader import to_float
    from genforge.models.base import Batch

    batch = Batch(to_float(next(trainer.loader).images), None)
    for ph in trainer.phases:
        out = trainer.model.training_step(ph.name, batch, step)
        ph.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        ph.optimizer.step()


def trainer_step(trainer, step: int) -> None:
    trainer._train_step(step)
    trainer._check_divergence()


def bookkeeping_only(trainer, step: int) -> None:
    """Just what the trainer adds to a step: EMA update, loss records, divergence check."""
    for ph in trainer.phases:
        trainer._record(ph.name, _OUTPUTS[ph.name])
    trainer.ema.update(step)
    trainer._check_divergence()


_OUTPUTS: dict = {}


def timed(fn, trainer, steps: int, start: int) -> float:
    t = time.perf_counter()
    for i in range(steps):
        fn(trainer, start + i)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model", default="dcgan")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="genforge-bench-") as tmp:
        work = Path(tmp)
        runs = {
            "bare": build(args.model, args.batch, work / "a"),
            "trainer": build(args.model, args.batch, work / "b"),
        }
        fns = {"bare": bare_step, "trainer": trainer_step}
        for name, tr in runs.items():  # warm-up (allocator, oneDNN primitive caches)
            timed(fns[name], tr, 2, 0)
        rates: dict[str, list[float]] = {name: [] for name in runs}
        extra_ms: list[float] = []
        trainer = runs["trainer"]
        for ph in trainer.phases:  # the terms a real step of this model records
            batch = trainer._next_batch()
            _OUTPUTS[ph.name] = trainer.model.training_step(ph.name, batch, 0)
        for r in range(args.rounds):
            for name, tr in runs.items():
                seconds = timed(fns[name], tr, args.steps, 2 + r * args.steps)
                rates[name].append(args.steps * args.batch / seconds)
            extra_ms.append(1000 * timed(bookkeeping_only, trainer, 100, 0) / 100)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, model {args.model}, batch {args.batch}"
    )
    for name, values in rates.items():
        print(
            f"{name:8s} median {statistics.median(values):8.1f} img/s  rounds {[round(v, 1) for v in values]}"
        )
    bare_ms = 1000 * args.batch / statistics.median(rates["bare"])
    extra = statistics.median(extra_ms)
    print(f"bookkeeping alone: median {extra:.3f} ms/step (rounds {[round(x, 3) for x in extra_ms]}), ")
    print(f"  = {100 * extra / bare_ms:.2f}% of the bare step's {bare_ms:.1f} ms")
    ratios = [t / b for t, b in zip(rates["trainer"], rates["bare"], strict=True)]
    print(
        f"trainer/bare throughput: median {statistics.median(ratios):.3f} (per round {[round(x, 3) for x in ratios]})"
    )


if __name__ == "__main__":
    main()
