"""`genforge` commands of the train stage: train, sample, restore."""

from __future__ import annotations

from pathlib import Path

import typer

from genforge.core.threads import THREADS_HELP
from genforge.core.threads import configure as configure_threads


def train(
    model: str = typer.Option(
        None, "--model", "-m", help="Model name (see the model registry), e.g. dcgan, vae, ddpm."
    ),
    data: Path = typer.Option(
        None, "--data", "-d", help="Canonical dataset directory (from `genforge data ingest`)."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Run directory to write (model, checkpoints, logs, samples)."
    ),
    config: Path = typer.Option(
        None, "--config", "-c", help="YAML/JSON file with model:, train:, augment:, privacy: sections."
    ),
    max_time: str = typer.Option(None, "--max-time", help="Wall-time budget, e.g. 90s, 5m, 1h."),
    steps: int = typer.Option(None, "--steps", help="Step budget (total, across resumes)."),
    images: int = typer.Option(None, "--images", help="Image budget (total real images drawn)."),
    batch_size: int = typer.Option(None, "--batch-size", "-b", help="Global batch size."),
    seed: int = typer.Option(None, "--seed", help="Random seed (weights, noise, data order)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's latest checkpoint."),
    precision: str = typer.Option(None, "--precision", help="auto | fp32 | bf16 | fp16 (CUDA)."),
    device: str = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N."),
    eval_every: int = typer.Option(0, "--eval-every", help="Evaluate cheap metrics every N steps (0 = off)."),
    eval_n: int = typer.Option(1000, "--eval-n", help="Samples per evaluation during training."),
    conditional: bool = typer.Option(
        False, "--conditional", help="Condition the model on the dataset's classes."
    ),
    set_: list[str] = typer.Option(
        None, "--set", help="Override a config field: model.KEY=V, train.KEY=V, augment.KEY=V, privacy.KEY=V."
    ),
    dp_epsilon: float = typer.Option(
        None, "--dp-epsilon", help="Train with differential privacy (DP-SGD) up to this epsilon (docs/privacy.md)."
    ),
    dp_delta: float = typer.Option(None, "--dp-delta", help="DP delta (default 1e-5; must be below 1/N)."),
    dp_max_grad_norm: float = typer.Option(
        None, "--dp-max-grad-norm", help="DP: clip each example's gradient to this L2 norm (default 1)."
    ),
    init_from: Path = typer.Option(
        None, "--init-from", help="Start from this finished run's weights (fine-tuning; same family and sizes; "
        "audio: new speakers of the data are added by name)."
    ),
    freeze_trunk: bool = typer.Option(
        False, "--freeze-trunk", help="With --init-from: train only the conditioning tables and output layers."
    ),
    freeze_d: int = typer.Option(
        0, "--freeze-d", help="With --init-from, GAN families: keep the discriminator's first K convolutions "
        "(from its input) at the base's weights (FreezeD)."
    ),
    threads: int = typer.Option(0, "--threads", help=THREADS_HELP),
) -> None:
    """Train a model on a canonical dataset; `torchrun --nproc_per_node=N -m genforge train ...` for DDP."""
    configure_threads(threads)
    from genforge.train.launch import build_trainer

    flags = {
        "max_time": max_time,
        "steps": steps,
        "images": images,
        "batch_size": batch_size,
        "seed": seed,
        "precision": precision,
        "device": device,
    }
    callbacks = []
    if eval_every:
        from genforge.evaluate.callback import EvalCallback

        callbacks.append(EvalCallback(every=eval_every, n=eval_n))
    trainer = build_trainer(
        out,
        model_name=model,
        data=data,
        config_file=config,
        sets=set_ or (),
        flags=flags,
        resume=resume,
        conditional=conditional,
        callbacks=callbacks,
        init_from=init_from,
        freeze_trunk=freeze_trunk,
        freeze_d=freeze_d,
        privacy={"epsilon": dp_epsilon, "delta": dp_delta, "max_grad_norm": dp_max_grad_norm},
    )
    trainer.fit(resume=resume)


def sample(
    run_dir: Path = typer.Argument(..., help="A finished training run directory."),
    n: int = typer.Option(
        None, "-n", help="Images (default 64; interpolation: steps), audio clips (default 10) or text completions "
        "(default 1)."
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Images: FILE.npz or a directory for PNGs (required). Audio: FILE.npz or a "
        "directory for WAVs (required). Text: FILE.txt or FILE.jsonl (default: print)."
    ),
    seed: int = typer.Option(0, "--seed", help="Noise seed (text: completion i draws from seed and i)."),
    class_: int = typer.Option(None, "--class", help="Class index for a class-conditional model."),
    speaker: str = typer.Option(
        None, "--speaker", help="Audio: speaker name or index for a speaker-conditional model (default: in turn)."
    ),
    steps: int = typer.Option(None, "--steps", help="Sampling steps (diffusion models)."),
    interpolate: bool = typer.Option(
        False, "--interpolate", help="Walk the latent space from --seed to --seed-b."
    ),
    seed_b: int = typer.Option(None, "--seed-b", help="End seed of --interpolate (default: seed + 1)."),
    prompt: str = typer.Option(None, "--prompt", help="Text: the prompt (\\n for a line break; default empty)."),
    max_tokens: int = typer.Option(None, "--max-tokens", help="Text: tokens to generate at most (default 256)."),
    temperature: float = typer.Option(None, "--temperature", help="Text: softmax temperature (default 1; 0 = greedy)."),
    top_k: int = typer.Option(None, "--top-k", help="Text: sample among the k most likely tokens."),
    top_p: float = typer.Option(None, "--top-p", help="Text: nucleus sampling, keep probability mass p."),
    stop: list[str] = typer.Option(None, "--stop", help="Text: end a completion at this string (repeatable)."),
    runtime: str = typer.Option(
        None, "--runtime", help="Text: decode step in torch | onnx (ONNX Runtime) | onnx-int8 (its weights in 8 "
        "bits: faster, logits rounded) | auto (default: $GENFORGE_TEXT_RUNTIME, else auto: onnx for long CPU "
        "runs, where exporting the step pays off)."
    ),
    device: str = typer.Option(None, "--device", help="cpu | cuda | cuda:N (default cpu)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    threads: int = typer.Option(0, "--threads", help=THREADS_HELP),
) -> None:
    """Generate from a trained run (EMA weights): images into an .npz or PNGs, text completions
    printed or into .txt/.jsonl."""
    configure_threads(threads)
    from genforge.train.sampling import sample_run

    options = {
        "n": n, "out": out, "seed": seed, "class_": class_, "speaker": speaker, "steps": steps, "interpolate": interpolate,
        "seed_b": seed_b, "prompt": prompt, "max_tokens": max_tokens, "temperature": temperature,
        "top_k": top_k, "top_p": top_p, "stop": stop or None, "runtime": runtime, "device": device,
        "overwrite": overwrite,
    }  # fmt: skip
    typer.echo(sample_run(run_dir, options))


def restore(
    run_dir: Path = typer.Argument(..., help="A trained restoration run (a denoising autoencoder, a denoiser)."),
    input_: Path = typer.Argument(
        ..., metavar="INPUT", help="Images: a file, a folder or an .npz. Audio: a file or a folder (any rate)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output of the same kind as INPUT (audio: WAV)."),
    corrupt: str = typer.Option(
        None, "--corrupt", help="Corrupt the input first (demos): kinds, e.g. gaussian,rectangles or white,babble."
    ),
    snr: float = typer.Option(None, "--snr", help="Audio: SNR in dB of the --corrupt noise (default 5)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the corruption."),
    atten_limit: str = typer.Option(
        None, "--atten-limit", metavar="DB|none",
        help="Speech enhancement: cut no part of the input by more than DB (mixes that much of it back in); "
        "'none' for the network's output alone. Default: the run's setting (the speech-enhancement scenario: 26).",
    ),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    threads: int = typer.Option(0, "--threads", help=THREADS_HELP),
) -> None:
    """Restore (denoise, inpaint) images or enhance speech with a trained restoration model."""
    configure_threads(threads)
    from genforge.models.restoration import restorer_for
    from genforge.train.sampling import run_modality

    kinds = [k.strip() for k in corrupt.split(",") if k.strip()] if corrupt else None
    restore_run = restorer_for(run_modality(run_dir))
    typer.echo(restore_run(run_dir, input_, out, kinds, seed=seed, snr=snr, overwrite=overwrite, device=device,
                           atten_limit=atten_limit))


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("sample")(sample)
    app.command("restore")(restore)
