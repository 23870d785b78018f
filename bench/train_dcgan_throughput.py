"""DCGAN training throughput: genforge's trainer step vs the TensorFlow DCGAN tutorial, same machine.

    .venv/bin/python bench/train_dcgan_throughput.py [--rounds 3] [--steps 8] [--no-compile]

The article's architecture (the TensorFlow tutorial's), batch 256, on the MNIST test split
(`../shared/data/mnist-test`). Each variant runs in its own worker process, set up and warmed up
first; then the driver runs them in turn, round after round (interleaved, so load from other
processes on a shared machine hits all of them alike), and reports the median images/s per
variant and its median ratio to TensorFlow over the rounds. Ours is timed through the real
trainer's step (`Trainer._train_step`: batch loading, autocast, both phases, optimizer steps, EMA,
loss records) plus the divergence check that `fit` runs every step on CPU.

It also measures the matmul peak (the best of a large `torch.mm` and a 3x3 convolution, fp32 and bf16), counts the FLOPs of one
training step with `torch.utils.flop_counter.FlopCounterMode` to give achieved FLOP/s as a
fraction of that peak, and profiles the fp32 and the fastest variant with `torch.profiler`.
`tensorflow-cpu` is a bench-only dependency.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist-test"
BATCH = 256

# A variant is "tf" (the TensorFlow tutorial) or a precision (fp32 | bf16) with "+"-joined flags:
#   cl        channels-last memory format (trainer `channels_last: true`)
#   subpixel  stride-2 transposed convs computed as conv + pixel shuffle (model `upsample: subpixel`)
#   sim       simultaneous D/G updates from one forward, the tutorial's own train_step (model
#             `update: simultaneous`); without it PyTorch's alternating updates (3 D passes a step)
#   compile   torch.compile (inductor) of G and D
#   fill      torch's NaN-filling of new tensors under deterministic mode ON (the trainer turns it
#             off: determinism does not need it, it only makes reads of uninitialised memory visible)
#   noretain  the trainer's `retain_host_memory` OFF (glibc gives freed activations back to the
#             kernel after each step, so they are page-faulted in again; core/host_memory.py)
#   nofill    the trainer's default (kept so that older result tables' names still run)
FLAGS = ("cl", "subpixel", "sim", "compile", "fill", "noretain", "nofill")
DEFAULT_VARIANTS = "tf,fp32,fp32+sim,bf16,bf16+sim,bf16+sim+noretain"


def parse_variant(name: str) -> dict | None:
    if name == "tf":
        return None
    precision, *flags = name.split("+")
    if precision not in ("fp32", "bf16") or not set(flags) <= set(FLAGS):
        raise ValueError(
            f"variant {name!r}: expected tf or fp32|bf16 followed by +flags of {', '.join(FLAGS)}"
        )
    return {"precision": precision, **{f: f in flags for f in FLAGS}}


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    from genforge.data.sources.idx import read_idx

    if not (MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        sys.exit(f"MNIST test split not found in {MNIST} (see shared/data/README.md)")
    return read_idx(MNIST / "t10k-images-idx3-ubyte.gz"), read_idx(MNIST / "t10k-labels-idx1-ubyte.gz")


def canonical_mnist(directory: Path):
    from genforge.data.canonical import SplitData, open_dataset, write_dataset

    images, labels = load_mnist()
    if not (directory / "manifest.json").is_file():
        directory.mkdir(parents=True, exist_ok=True)
        split = SplitData(images[..., None], labels.astype(np.int64))
        write_dataset(
            directory,
            {"train": split},
            class_names=[str(i) for i in range(10)],
            meta={"source": "mnist-test"},
        )
    return open_dataset(directory)


def torch_trainer(variant: str, work: Path):
    """The real trainer on the canonical MNIST split with the article's DCGAN."""
    import torch

    from genforge.models.gan import DCGAN
    from genforge.train.config import TrainConfig
    from genforge.train.trainer import Trainer

    v = parse_variant(variant)
    cfg = DCGAN.default_config(
        28,
        1,
        upsample="subpixel" if v["subpixel"] else "transposed",
        update="simultaneous" if v["sim"] else "alternating",
    )
    tcfg = TrainConfig(
        steps=10**9,
        batch_size=BATCH,
        precision=v["precision"],
        channels_last=v["cl"],
        retain_host_memory=not v["noretain"],
        tensorboard=False,
        sample_every=0,
        checkpoint_every=0,
        progress="none",
    )
    trainer = Trainer("dcgan", cfg, tcfg, canonical_mnist(work / "mnist"), work / f"run-{variant}")
    torch.utils.deterministic.fill_uninitialized_memory = v["fill"]
    if v["compile"]:
        trainer.model.generator.compile()
        trainer.model.discriminator.compile()
    return trainer


def torch_step(trainer) -> None:
    trainer._train_step(trainer.step)
    trainer.step += 1
    trainer._check_divergence()


def tf_step_fn():
    """The TensorFlow DCGAN tutorial (tensorflow.org/tutorials/generative/dcgan), as written there."""
    import tensorflow as tf
    from tensorflow.keras import layers

    images, _ = load_mnist()
    train_images = images.reshape(images.shape[0], 28, 28, 1).astype("float32")
    train_images = (train_images - 127.5) / 127.5
    noise_dim = 100

    def make_generator_model():
        model = tf.keras.Sequential()
        model.add(layers.Input(shape=(100,)))
        model.add(layers.Dense(7 * 7 * 256, use_bias=False))
        model.add(layers.BatchNormalization())
        model.add(layers.LeakyReLU())
        model.add(layers.Reshape((7, 7, 256)))
        model.add(layers.Conv2DTranspose(128, (5, 5), strides=(1, 1), padding="same", use_bias=False))
        model.add(layers.BatchNormalization())
        model.add(layers.LeakyReLU())
        model.add(layers.Conv2DTranspose(64, (5, 5), strides=(2, 2), padding="same", use_bias=False))
        model.add(layers.BatchNormalization())
        model.add(layers.LeakyReLU())
        model.add(
            layers.Conv2DTranspose(
                1, (5, 5), strides=(2, 2), padding="same", use_bias=False, activation="tanh"
            )
        )
        return model

    def make_discriminator_model():
        model = tf.keras.Sequential()
        model.add(layers.Input(shape=(28, 28, 1)))
        model.add(layers.Conv2D(64, (5, 5), strides=(2, 2), padding="same"))
        model.add(layers.LeakyReLU())
        model.add(layers.Dropout(0.3))
        model.add(layers.Conv2D(128, (5, 5), strides=(2, 2), padding="same"))
        model.add(layers.LeakyReLU())
        model.add(layers.Dropout(0.3))
        model.add(layers.Flatten())
        model.add(layers.Dense(1))
        return model

    generator, discriminator = make_generator_model(), make_discriminator_model()
    cross_entropy = tf.keras.losses.BinaryCrossentropy(from_logits=True)

    def discriminator_loss(real_output, fake_output):
        real_loss = cross_entropy(tf.ones_like(real_output), real_output)
        fake_loss = cross_entropy(tf.zeros_like(fake_output), fake_output)
        return real_loss + fake_loss

    def generator_loss(fake_output):
        return cross_entropy(tf.ones_like(fake_output), fake_output)

    generator_optimizer = tf.keras.optimizers.Adam(1e-4)
    discriminator_optimizer = tf.keras.optimizers.Adam(1e-4)

    @tf.function
    def train_step(images):
        noise = tf.random.normal([BATCH, noise_dim])
        with tf.GradientTape() as gen_tape, tf.GradientTape() as disc_tape:
            generated_images = generator(noise, training=True)
            real_output = discriminator(images, training=True)
            fake_output = discriminator(generated_images, training=True)
            gen_loss = generator_loss(fake_output)
            disc_loss = discriminator_loss(real_output, fake_output)
        gradients_of_generator = gen_tape.gradient(gen_loss, generator.trainable_variables)
        gradients_of_discriminator = disc_tape.gradient(disc_loss, discriminator.trainable_variables)
        generator_optimizer.apply_gradients(
            zip(gradients_of_generator, generator.trainable_variables, strict=True)
        )
        discriminator_optimizer.apply_gradients(
            zip(gradients_of_discriminator, discriminator.trainable_variables, strict=True)
        )
        return gen_loss, disc_loss

    dataset = (
        tf.data.Dataset.from_tensor_slices(train_images).shuffle(60000).batch(BATCH, drop_remainder=True)
    )
    batches = iter(dataset.repeat())

    def step() -> None:
        train_step(next(batches))[1].numpy()  # fetch a loss: the step has finished

    return step


def set_threads(variant: str, threads: int) -> None:
    """0 keeps each library's default (all cores); on a machine shared with other jobs, fewer
    threads than cores avoids workers spinning at barriers while another holds the core."""
    if threads <= 0:
        return
    if variant == "tf":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    else:
        import torch

        torch.set_num_threads(threads)


def worker(variant: str, work: Path, warmup: int, threads: int) -> None:
    """Set up one variant, warm it up, then run `run N` commands from stdin, answering seconds."""
    set_threads(variant, threads)
    if variant == "tf":
        step = tf_step_fn()
    else:
        trainer = torch_trainer(variant, work)
        step = lambda: torch_step(trainer)  # noqa: E731
    for _ in range(warmup):
        step()
    print("ready", flush=True)
    for line in sys.stdin:
        n = int(line.split()[1])
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)


def matmul_peak(dtype, n: int = 2048, reps: int = 5) -> float:
    """FLOP/s of the best of `reps` n x n matmuls or 3x3 convolutions (the driver takes the best
    over all rounds, so that time slices lost to other processes on a shared machine do not lower
    the peak). Both, because on this AMD CPU fp32 `torch.mm` goes to MKL, which takes its AVX2 path
    there, while convolutions (and bf16 matmuls) run in oneDNN's AVX-512 kernels: the mm alone
    under-states the fp32 peak that the models' convolutions can reach by about 2x."""
    import torch
    import torch.nn.functional as F

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    x, w = torch.randn(64, 256, 16, 16, dtype=dtype), torch.randn(256, 256, 3, 3, dtype=dtype)
    jobs = [
        (lambda: torch.mm(a, b), 2 * n**3),
        (lambda: F.conv2d(x, w, padding=1), 2 * 64 * 256 * 256 * 9 * 16 * 16),
    ]
    rate = 0.0
    for run, flops in jobs:
        run()
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t0)
        rate = max(rate, flops / best)
    return rate


def step_flops(work: Path, variant: str) -> int:
    """FLOPs of one training step of `variant` in fp32 (simultaneous updates run one D pass fewer;
    the TF tutorial's step is the simultaneous one)."""
    from torch.utils.flop_counter import FlopCounterMode

    trainer = torch_trainer("fp32+sim" if variant == "tf" or parse_variant(variant)["sim"] else "fp32", work)
    torch_step(trainer)
    with FlopCounterMode(display=False) as counter:
        torch_step(trainer)
    return counter.get_total_flops()


def profile(variant: str, work: Path, steps: int = 3) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    trainer = torch_trainer(variant, work)
    for _ in range(2):
        torch_step(trainer)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            torch_step(trainer)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=40)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8, help="timed training steps per variant per round")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument(
        "--variants",
        default=DEFAULT_VARIANTS,
        help="comma-separated: tf, or fp32|bf16 with +flags of " + ", ".join(FLAGS),
    )
    ap.add_argument("--threads", type=int, default=0, help="threads per framework (0 = its default)")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, Path(args.work), args.warmup, args.threads)
        return

    import torch

    variants = args.variants.split(",")
    set_threads("torch", args.threads)
    try:
        for v in variants:
            parse_variant(v)
    except ValueError as exc:
        sys.exit(str(exc))
    with tempfile.TemporaryDirectory(prefix="gf-dcgan-bench-") as tmp:
        work = Path(tmp)
        canonical_mnist(work / "mnist")
        procs = {}
        for v in variants:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                v,
                "--work",
                tmp,
                "--warmup",
                str(args.warmup),
                "--threads",
                str(args.threads),
            ]
            procs[v] = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO
            )
        ready = {}
        for v, p in procs.items():  # set-up and warm-up (compilation included) happen before any timing
            line = p.stdout.readline().strip()
            if line != "ready":
                p.kill()
                print(f"variant {v} failed to start; skipped", file=sys.stderr)
                continue
            ready[v] = p
        rates: dict[str, list[float]] = {v: [] for v in ready}
        peak32 = peak16 = 0.0
        for r in range(args.rounds):
            peak32, peak16 = max(peak32, matmul_peak(torch.float32)), max(peak16, matmul_peak(torch.bfloat16))
            for v, p in ready.items():
                p.stdin.write(f"run {args.steps}\n")
                p.stdin.flush()
                seconds = json.loads(p.stdout.readline())["seconds"]
                rates[v].append(args.steps * BATCH / seconds)
            print(f"round {r + 1}: " + ", ".join(f"{v} {rates[v][-1]:.0f}" for v in ready), file=sys.stderr)
        for p in ready.values():
            p.stdin.close()
            p.wait()

        flops = {v: step_flops(work, v) for v in rates}
        print(
            f"machine: {torch.get_num_threads()} torch threads; matmul peak fp32 {peak32 / 1e9:.0f} GFLOP/s, bf16 {peak16 / 1e9:.0f} GFLOP/s"
        )
        counts = sorted({f"{f / 1e9:.2f}" for f in flops.values()})
        print(
            f"FLOPs per training step (batch {BATCH}, both phases, FlopCounterMode): {' / '.join(counts)} GFLOP"
            " (simultaneous / alternating updates)\n"
        )
        print(
            "| variant | images/s (median) | per round | ratio to TF (median of rounds) | achieved GFLOP/s | of peak |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        tf_rates = rates.get("tf")
        for v, rs in rates.items():
            med = statistics.median(rs)
            ratio = (
                statistics.median(a / b for a, b in zip(rs, tf_rates, strict=True))
                if tf_rates
                else float("nan")
            )
            gflops = med / BATCH * flops[v] / 1e9
            peak = peak16 if "bf16" in v else peak32
            note = "" if v != "tf" else " (same architecture and update, FLOPs as ours)"
            print(
                f"| {v} | {med:.0f} | {' / '.join(f'{x:.0f}' for x in rs)} | {ratio:.2f}x | {gflops:.0f}{note} | {gflops * 1e9 / peak:.1%} |"
            )
        if not args.no_profile:
            best = max(
                (v for v in rates if v != "tf" and not v.endswith("compile")),
                key=lambda v: statistics.median(rates[v]),
            )
            for v in dict.fromkeys(["fp32", best]):
                print(f"\nprofile of {v} (3 steps, top ops by self CPU time):\n")
                print(profile(v, work))


if __name__ == "__main__":
    main()
