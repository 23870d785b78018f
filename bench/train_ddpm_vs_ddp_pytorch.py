"""Training and sampling throughput on CPU: genforge `ddpm` vs denoising-diffusion-pytorch, 32x32x3.

    .venv/bin/python bench/train_ddpm_vs_ddp_pytorch.py [--batch 64] [--rounds 5] [--steps 3]

Models: ours with its default 32 px config (2x2 patches, base 32, mults (1, 2, 2)) in bf16 (what
`precision: auto` picks on this CPU), fp32, channels-last and optionally compiled, a wider variant,
the previous default (full resolution, base 16, mults (1, 2, 4)), ours sized like theirs (full
resolution, base 32, two res blocks per level), and theirs: `Unet(dim=32, dim_mults=(1, 2, 4))` in
`GaussianDiffusion(image_size=32)`. Our step uses the trainer's optimiser (fused AdamW).
Training rounds are interleaved (each round times every model once) because the CPU is shared;
ratios are taken within a round. Images are real CIFAR-10 training images from
../shared/data/cifar10 (throughput does not depend on content, but nothing here is synthetic).
Prints Markdown tables.

denoising-diffusion-pytorch (bench-only dependency) imports torchvision at module load for its
Trainer, and PyPI's torchvision does not load beside this torch build; the models used here do not
touch torchvision, so an empty stand-in module is put into `sys.modules` (this script only).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tarfile
import time
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from genforge.models.base import Batch
from genforge.models.diffusion import DDPM
from genforge.train.optim import build_optimizer

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "cifar10-jpg.tar.gz"


def import_theirs():
    os.environ.setdefault("TQDM_DISABLE", "1")  # their sampling loops draw progress bars
    try:
        import torchvision  # noqa: F401
    except Exception:
        stub = types.ModuleType("torchvision")
        stub.transforms = types.ModuleType("torchvision.transforms")
        stub.utils = types.ModuleType("torchvision.utils")
        sys.modules.update(
            {"torchvision": stub, "torchvision.transforms": stub.transforms, "torchvision.utils": stub.utils}
        )
    from denoising_diffusion_pytorch.denoising_diffusion_pytorch import GaussianDiffusion, Unet

    return GaussianDiffusion, Unet


def cifar_images(n: int) -> torch.Tensor:
    """The first n training JPEGs of the archive as float (n, 3, 32, 32) in [0, 1]."""
    if not CIFAR.is_file():
        sys.exit(f"CIFAR-10 archive not found at {CIFAR} (see shared/data/README.md)")
    out = []
    with tarfile.open(CIFAR) as tar:
        for member in tar:
            if member.isfile() and "/train/" in f"/{member.name}" and member.name.endswith(".jpg"):
                img = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
                out.append(np.asarray(img))
                if len(out) == n:
                    break
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0


def flops_per_image(net: torch.nn.Module) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros(1, 3, 32, 32), torch.zeros(1, dtype=torch.long))
    return counter.get_total_flops()


def params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def ours_trainer(model: DDPM, images01: torch.Tensor, bf16: bool = False, channels_last: bool = False):
    """The step the trainer runs (`precision: bf16` = the same under bf16 autocast;
    `channels_last` = the trainer's `channels_last: true`: model and batch in NHWC)."""
    (phase,) = model.phases()
    opt = build_optimizer(phase.optimizer, list(model.parameters()))  # the trainer's (fused on CPU)
    images = images01 * 2 - 1
    if channels_last:
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    batch = Batch(images=images)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.training_step("main", batch, 0).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def theirs_trainer(diffusion: torch.nn.Module, images01: torch.Tensor):
    opt = torch.optim.Adam(diffusion.parameters(), lr=2e-4)

    def step() -> None:
        loss = diffusion(images01)  # it normalises [0, 1] -> [-1, 1] itself
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def timed(fn, repeats: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="training steps per model per round")
    ap.add_argument("--sample-n", type=int, default=8, help="images per sampling call")
    ap.add_argument(
        "--their-ddpm-steps",
        type=int,
        default=100,
        help="steps of their 1000-step ancestral chain to time (the full chain takes minutes on 2 cores)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads for both (on a CPU shared with other jobs, 2 threads can be 10x slower)",
    )
    ap.add_argument("--compile", action="store_true", help="also time the default model under torch.compile")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    GaussianDiffusion, Unet = import_theirs()
    images = cifar_images(args.batch)

    # (label, config overrides, bf16 autocast, channels-last, torch.compile); the trainer's
    # `precision: auto` is bf16 on this CPU (AVX512-BF16), so the first row is what users get
    previous = {"patch_size": 1, "base_channels": 16, "channel_mults": (1, 2, 4), "attention_resolutions": (8,)}
    variants = [
        ("genforge ddpm, default, bf16 (precision auto)", {}, True, False, False),
        ("genforge ddpm, default, fp32", {}, False, False, False),
        ("genforge ddpm, default, bf16 + channels-last", {}, True, True, False),
        *([("genforge ddpm, default, bf16 + torch.compile", {}, True, False, True)] if args.compile else []),
        ("genforge ddpm, default with mults (1, 2, 4), bf16", {"channel_mults": (1, 2, 4)}, True, False, False),
        ("genforge ddpm, previous default (no patches, base 16), bf16", previous, True, False, False),
        ("genforge ddpm, previous default, fp32", previous, False, False, False),
        (
            "genforge ddpm, sized like theirs (no patches, base 32, 2 blocks), fp32",
            {**previous, "base_channels": 32, "num_res_blocks": 2},
            False,
            False,
            False,
        ),
    ]
    models = {}
    for label, overrides, bf16, channels_last, compiled in variants:
        model = DDPM(DDPM.default_config(32, 3, **overrides))
        flops_net = DDPM(model.config).denoiser  # FLOPs are counted on an eager, NCHW copy
        if compiled:
            model.denoiser.compile()  # inductor; the warm-up step below compiles forward and backward
        models[label] = (flops_net, ours_trainer(model.train(), images, bf16=bf16, channels_last=channels_last))
    ours = DDPM(DDPM.default_config(32, 3))  # sampled below, in fp32
    unet = Unet(dim=32, dim_mults=(1, 2, 4))
    theirs = GaussianDiffusion(unet, image_size=32, timesteps=1000)
    models["denoising-diffusion-pytorch"] = (unet, theirs_trainer(theirs.train(), images))
    for _, step in models.values():
        step()  # warm-up: allocator, first-call overheads
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, (_, step) in models.items():
            rates[name].append(args.steps * args.batch / timed(step, args.steps))
    ref = rates["denoising-diffusion-pytorch"]

    print(
        f"### Training, batch {args.batch}, 32x32x3, {args.rounds} interleaved rounds x {args.steps} steps\n"
    )
    print(
        "| model | parameters | forward MFLOP / image | train images/s (median) | per round | ratio to theirs (median of rounds) |"
    )
    print("| --- | ---: | ---: | ---: | --- | ---: |")
    for name, (net, _) in models.items():
        ratio = statistics.median(r / b for r, b in zip(rates[name], ref, strict=True))
        per_round = ", ".join(f"{r:.0f}" for r in rates[name])
        print(
            f"| {name} | {params(net):,} | {flops_per_image(net) / 1e6:.0f} | {statistics.median(rates[name]):.1f} "
            f"| {per_round} | {ratio:.1f}x |"
        )

    # sampling: DDIM 50 and ancestral DDPM over the full 1000-step chain
    n = args.sample_n
    ours.eval()
    theirs.eval()
    their_ddim = GaussianDiffusion(unet, image_size=32, timesteps=1000, sampling_timesteps=50).eval()
    gen = torch.Generator().manual_seed(0)
    rows = []
    with torch.no_grad():
        for label, fn in [
            ("genforge ddpm, default: DDIM 50", lambda: ours.sample(n, generator=gen, steps=50)),
            ("denoising-diffusion-pytorch: DDIM 50", lambda: their_ddim.sample(batch_size=n)),
            ("genforge ddpm, default: DDPM 1000", lambda: ours.sample(n, generator=gen, sampler="ddpm")),
        ]:
            seconds = timed(fn)
            rows.append((label, f"{n / seconds:.3f}", f"{seconds:.1f} s for {n} images (measured in full)"))
        k = args.their_ddpm_steps
        img = torch.randn(n, 3, 32, 32)

        def their_chain() -> None:
            x = img
            for t in reversed(range(1000 - k, 1000)):
                x, _ = theirs.p_sample(x, t)

        seconds = timed(their_chain)
        rows.append(
            (
                "denoising-diffusion-pytorch: DDPM 1000",
                f"{n / (seconds * 1000 / k):.3f}",
                f"{seconds:.1f} s for {k} of the 1000 steps x {n} images; images/s = n / (that x {1000 // k})"
                if k < 1000
                else f"{seconds:.1f} s for {n} images (measured in full)",
            )
        )
    print(f"\n### Sampling, {n} images per call, 32x32x3\n")
    print("| sampler | images/s | how |")
    print("| --- | ---: | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
