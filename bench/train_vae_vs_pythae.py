"""genforge's VAE vs pythae's VAE on MNIST for the same wall time.

    .venv/bin/python bench/train_vae_vs_pythae.py --seconds 60 [--fid] [--threads N]

Data: the MNIST test split (`../shared/data/mnist-test`), its first 9,000 images for training and
the last 1,000 held out. Both models: Bernoulli likelihood (binary cross-entropy summed over
pixels, images in [0, 1]), latent 16, Adam lr 1e-3, batch 64, trained for `--seconds` of wall time
each, one after the other. Ours runs through the real trainer (`genforge.train.Trainer.fit` with
`max_time`); pythae through its `TrainingPipeline` with its MNIST benchmark conv nets
(`pythae.models.nn.benchmarks.mnist`), stopped when the time is up (pythae has no time budget:
a wrapper around its model's forward ends training at the deadline).

Reported on the held-out images: negative ELBO (one posterior sample, fixed seed), its
reconstruction and KL parts (nats per image), the MSE of the posterior-mean reconstruction in
[0, 1] units, and training images/s. With `--fid`, FID of 1,000 prior samples against the held-out
images via `genforge.evaluate` (its default feature extractor for labelled data). `pythae` is a
bench-only dependency.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist-test"
N_TRAIN, LATENT, LR, BATCH = 9000, 16, 1e-3, 64


def load() -> tuple[np.ndarray, np.ndarray]:
    from genforge.data.sources.idx import read_idx

    if not (MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        sys.exit(f"MNIST test split not found in {MNIST} (see shared/data/README.md)")
    return read_idx(MNIST / "t10k-images-idx3-ubyte.gz"), read_idx(MNIST / "t10k-labels-idx1-ubyte.gz")


def held_out_scores(encode, decode_logits, x01: torch.Tensor) -> dict[str, float]:
    """encode(x01) -> (mu, logvar); decode_logits(z) -> Bernoulli logits. Per-image nats."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        mu, logvar = encode(x01)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=g)
        recon = (
            F.binary_cross_entropy_with_logits(decode_logits(z), x01, reduction="none")
            .flatten(1)
            .sum(1)
            .mean()
        )
        kl = (0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(1)).mean()
        mse = (torch.sigmoid(decode_logits(mu)) - x01).square().mean()
    return {"neg_elbo": float(recon + kl), "recon": float(recon), "kl": float(kl), "mse": float(mse)}


def run_ours(images: np.ndarray, labels: np.ndarray, seconds: float, work: Path):
    from genforge.data.canonical import SplitData, open_dataset, write_dataset
    from genforge.models.vae import VAE
    from genforge.train.config import TrainConfig
    from genforge.train.trainer import Trainer

    ds_dir = work / "mnist"
    ds_dir.mkdir()
    splits = {
        "train": SplitData(images[:N_TRAIN, ..., None], labels[:N_TRAIN].astype(np.int64)),
        "test": SplitData(images[N_TRAIN:, ..., None], labels[N_TRAIN:].astype(np.int64)),
    }
    write_dataset(ds_dir, splits, class_names=[str(i) for i in range(10)], meta={"source": "mnist-test"})
    cfg = VAE.default_config(28, 1, latent_dim=LATENT, lr=LR)
    tcfg = TrainConfig(
        max_time=f"{seconds}s",
        batch_size=BATCH,
        tensorboard=False,
        sample_every=0,
        checkpoint_every=0,
        progress="none",
    )
    trainer = Trainer("vae", cfg, tcfg, open_dataset(ds_dir), work / "run-ours")
    summary = trainer.fit()
    model = trainer.model.eval()

    def encode(x01):
        return model.encode(x01 * 2 - 1)

    return (
        model,
        summary["images"] / summary["elapsed"],
        summary["images"],
        encode,
        model.decode,
        work / "run-ours",
    )


class _Deadline(Exception):
    pass


def run_pythae(images: np.ndarray, seconds: float, work: Path):
    from pythae.models import VAE as PythaeVAE
    from pythae.models import VAEConfig
    from pythae.models.nn.benchmarks.mnist import Decoder_Conv_AE_MNIST, Encoder_Conv_VAE_MNIST
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig

    x = torch.from_numpy(images[:N_TRAIN, None].astype(np.float32) / 255.0)
    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="bce")
    state = {"images": 0, "start": None}

    class TimedVAE(PythaeVAE):
        def forward(self, inputs, **kwargs):
            if self.training:
                now = time.perf_counter()
                state["start"] = state["start"] or now
                if now - state["start"] >= seconds:
                    state["end"] = now
                    raise _Deadline
                state["images"] += len(inputs["data"])
            return super().forward(inputs, **kwargs)

    torch.manual_seed(0)
    model = TimedVAE(config, encoder=Encoder_Conv_VAE_MNIST(config), decoder=Decoder_Conv_AE_MNIST(config))
    tcfg = BaseTrainerConfig(
        output_dir=str(work / "pythae"),
        per_device_train_batch_size=BATCH,
        num_epochs=10_000,
        learning_rate=LR,
        no_cuda=True,
    )
    try:
        TrainingPipeline(model=model, training_config=tcfg)(train_data=x)
    except _Deadline:
        pass
    model.eval()

    def encode(x01):
        out = model.encoder(x01)
        return out.embedding, out.log_covariance

    def decode_logits(z):
        # its decoder ends in a sigmoid; the logit of its output feeds the same scoring code
        return torch.logit(model.decoder(z).reconstruction.clamp(1e-6, 1 - 1e-6))

    elapsed = state.get("end", time.perf_counter()) - state["start"]
    return model, state["images"] / elapsed, state["images"], encode, decode_logits


def fid(samples01: np.ndarray, work: Path, dataset_dir: Path) -> float:
    from genforge.evaluate.evaluate import EvalConfig, evaluate

    path = work / f"samples-{time.monotonic_ns()}.npz"
    np.savez(path, images=(samples01 * 255).round().astype(np.uint8)[..., None])
    result = evaluate(path, dataset_dir, EvalConfig(n=len(samples01), metrics=["fid"], memorisation=False))
    return float(result["metrics"]["fid"]["value"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="training wall time for each model")
    ap.add_argument("--fid", action="store_true", help="also FID of 1,000 samples via genforge.evaluate")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for both (0 = torch's default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    images, labels = load()
    held = torch.from_numpy(images[N_TRAIN:, None].astype(np.float32) / 255.0)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="gf-vae-bench-") as tmp:
        work = Path(tmp)
        ours, ips, n, encode, decode, _ = run_ours(images, labels, args.seconds, work)
        rows["genforge vae"] = {"images/s": ips, "images": n, **held_out_scores(encode, decode, held)}
        theirs, ips, n, p_encode, p_decode = run_pythae(images, args.seconds, work)
        rows["pythae VAE"] = {"images/s": ips, "images": n, **held_out_scores(p_encode, p_decode, held)}
        if args.fid:
            g = torch.Generator().manual_seed(1)
            z = torch.randn(1000, LATENT, generator=g)
            with torch.no_grad():
                ours_samples = torch.sigmoid(decode(z)).numpy()[:, 0]
                theirs_samples = torch.sigmoid(p_decode(z)).numpy()[:, 0]
            rows["genforge vae"]["fid"] = fid(ours_samples, work, work / "mnist")
            rows["pythae VAE"]["fid"] = fid(theirs_samples, work, work / "mnist")
    params = {
        "genforge vae": sum(p.numel() for p in ours.parameters()),
        "pythae VAE": sum(p.numel() for p in theirs.parameters()),
    }
    cols = ["images/s", "images", "neg_elbo", "recon", "kl", "mse"] + (["fid"] if args.fid else [])
    print(f"| model | parameters | {' | '.join(cols)} |")
    print("|" + " --- |" * (len(cols) + 2))
    for name, row in rows.items():
        cells = [f"{row[c]:.0f}" if c in ("images/s", "images") else f"{row[c]:.4g}" for c in cols]
        print(f"| {name} | {params[name]:,} | {' | '.join(cells)} |")
    if not all(math.isfinite(r["neg_elbo"]) for r in rows.values()):
        sys.exit("a model diverged (non-finite ELBO)")


if __name__ == "__main__":
    main()
