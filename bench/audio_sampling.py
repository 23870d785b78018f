"""Sampling speed of every audio family as a real-time factor (issue 10's goal: >= 100 for the GAN and
VAE routes, >= 2 for diffusion at its default steps), on this machine's cores.

    .venv/bin/python bench/audio_sampling.py [--threads 2] [--n 64] [--repeat 3]

Each family is built with its default config for FSDD's shape (8 kHz, 1-s clips, 10 digits, 5
speakers; fresh weights: speed does not depend on them) and generates `--n` class- and
speaker-conditioned clips per call through `model.sample`, as `genforge sample` and the service do
(the mel families include their Griffin-Lim vocoder; diffusion its default sampler steps). The real-time
factor is seconds of audio made per second of wall time (the best of `--repeat` calls after one
warm-up call).
"""

from __future__ import annotations

import argparse
import time

import torch

from common import cpu_model, markdown_table
from genforge.core.config import to_dict
from genforge.models.registry import MODELS, build_model

# family -> the real-time goal: GAN and VAE routes >= 100, diffusion >= 2
FAMILIES = {"mel-vae": 100, "mel-sngan": 100, "wavegan": 100, "mel-ddpm": 2, "diffwave": 2}
SAMPLE_RATE, LENGTH, CLASSES, SPEAKERS = 8000, 8000, 10, 5


def rtf(name: str, n: int, repeat: int) -> tuple[float, float]:
    """(best seconds per call, real-time factor) of family `name` making n clips."""
    cls = MODELS.get(name)
    config = cls.default_config(
        sample_rate=SAMPLE_RATE, length=LENGTH, num_classes=CLASSES, num_speakers=SPEAKERS
    )
    model = build_model(name, to_dict(config)).eval()
    labels = torch.arange(n) % CLASSES
    speakers = torch.arange(n) % SPEAKERS
    times = []
    with torch.no_grad():
        for i in range(repeat + 1):
            gen = torch.Generator().manual_seed(i)
            start = time.perf_counter()
            audio = model.sample(n, generator=gen, labels=labels, speakers=speakers)
            if i:  # the first call warms up allocators and kernels
                times.append(time.perf_counter() - start)
    assert audio.reshape(n, -1).shape[1] == LENGTH, f"{name}: {tuple(audio.shape)}"
    best = min(times)
    return best, n * LENGTH / SAMPLE_RATE / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=64, help="clips per call")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--families", default=",".join(FAMILIES))
    args = ap.parse_args()
    import genforge.models.zoo  # noqa: F401  (registers the families)

    torch.set_num_threads(args.threads)
    rows = []
    for name in args.families.split(","):
        seconds, factor = rtf(name, args.n, args.repeat)
        goal = FAMILIES[name]
        rows.append(
            [
                name,
                f"{args.n}",
                f"{seconds:.3f}",
                f"{factor:,.1f}",
                f">= {goal}",
                "met" if factor >= goal else "not met",
            ]
        )
        print(name, f"{factor:.1f}", flush=True)
    print(f"\nMachine: {cpu_model()}, {args.threads} threads, torch {torch.__version__}. "
          f"Command: `.venv/bin/python bench/audio_sampling.py --threads {args.threads} --n {args.n} --repeat {args.repeat}`\n")  # fmt: skip
    header = ["family", "clips per call", "best s per call", "real-time factor", "goal", "status"]
    print("\n".join(markdown_table(header, rows, "lrrrll")))


if __name__ == "__main__":
    main()
