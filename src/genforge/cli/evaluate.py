"""`genforge` commands of the evaluate stage: evaluator train, eval, report."""

from __future__ import annotations

from pathlib import Path

import typer

from genforge.core.threads import THREADS_HELP
from genforge.core.threads import configure as configure_threads

evaluator_app = typer.Typer(help="Feature extractors used by the metrics (trained once per dataset, cached).",
                            no_args_is_help=True)  # fmt: skip


@evaluator_app.command("train")
def evaluator_train(
    dataset: Path = typer.Argument(
        ..., help="Canonical dataset directory (labelled for --features classifier)."
    ),
    features: str = typer.Option(
        None, "--features", help="classifier (labelled data) or contrastive; default by labels."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of weights and data order."),
    epochs: int = typer.Option(None, "--epochs", help="Classifier epochs."),
    steps: int = typer.Option(None, "--steps", help="Contrastive training steps."),
    retrain: bool = typer.Option(False, "--retrain", help="Train again even if a cached evaluator exists."),
    threads: int = typer.Option(0, "--threads", help=THREADS_HELP),
) -> None:
    """Train (or load from the cache) the dataset's evaluator and print its held-out accuracy."""
    configure_threads(threads)
    from genforge.core.errors import ConfigError
    from genforge.data.canonical import open_dataset
    from genforge.evaluate.extractors.base import default_extractor
    from genforge.evaluate.extractors.classifier import ClassifierConfig, classifier_extractor
    from genforge.evaluate.extractors.contrastive import ContrastiveConfig, contrastive_extractor

    ds = open_dataset(dataset)
    from genforge.evaluate.modalities import EVALUATOR_TRAINING

    if ds.modality in EVALUATOR_TRAINING:  # a modality with its own evaluator (audio: the log-mel CNN)
        for line in EVALUATOR_TRAINING.get(ds.modality)(ds, seed=seed, epochs=epochs, retrain=retrain):
            typer.echo(line)
        return
    name = features or default_extractor(ds)
    if name == "classifier":
        cfg = ClassifierConfig(seed=seed, **({"epochs": epochs} if epochs else {}))
        ext = classifier_extractor(ds, cfg, retrain=retrain)
    elif name == "contrastive":
        cfg = ContrastiveConfig(seed=seed, **({"steps": steps} if steps else {}))
        ext = contrastive_extractor(ds, cfg, retrain=retrain)
    else:
        raise ConfigError(f"--features: only classifier and contrastive are trained; got {name!r}")
    info = ext.info
    typer.echo(f"evaluator: {ext.id}  hash {ext.hash}  weights {ext.weights_hash}  cache {info['cache']}")
    typer.echo(f"trained on {info['train_count']} images of {ds.path} (fingerprint {ds.fingerprint}) "
               f"in {info['train_seconds']:.1f} s")  # fmt: skip
    if info.get("heldout_accuracy") is not None:
        typer.echo(f"held-out accuracy ({info['heldout_split']}): {100 * info['heldout_accuracy']:.2f}%")


def eval_command(
    target: Path = typer.Argument(
        ...,
        help="A training run directory; a samples .npz (images, optional labels; or arr_0, arr_1) or .npy "
        "with NHWC, NCHW or NHW images, uint8 or float; or a folder of image files. Text: samples as .jsonl "
        "(a 'text' field per line) or .txt (separated by <|endoftext|> lines).",
    ),
    ref: Path = typer.Option(..., "--ref", help="Reference canonical dataset directory."),
    n: int = typer.Option(
        None, "--n", "-n", help="Samples to generate (run) or use at most (file); default 10000 images, 64 texts."
    ),
    features: str = typer.Option(
        None, "--features", help="classifier | contrastive | pixels | random | torchscript:PATH."
    ),
    seed: int = typer.Option(0, "--seed", help="Sampling seed and metric subset seed."),
    out: Path = typer.Option(
        None, "--out", "-o", help="Output JSON (default RUN_DIR/metrics.json or NAME.metrics.json)."
    ),
    split: str = typer.Option(None, "--split", help="Reference split (default val, else test)."),
    metric: list[str] = typer.Option(None, "--metric", help="Only this metric (repeatable); default all."),
    batch_size: int = typer.Option(500, "--batch-size", help="Feature extraction batch size."),
    no_memorisation: bool = typer.Option(
        False, "--no-memorisation", help="Skip the nearest-training-image audit."
    ),
    samples_range: str = typer.Option(
        "auto",
        "--samples-range",
        help="Float sample arrays: 0,1 | -1,1 | 0,255 (outside values clipped); auto: [0,1] when every value is "
        "in it, [-1,1] when every value is in it and the smallest is -0.5 or less, else an error.",
    ),
    ts_size: int = typer.Option(None, "--ts-size", help="torchscript: input size (default 299)."),
    ts_range: str = typer.Option(None, "--ts-range", help="torchscript: value range LO,HI (default 0,255)."),
    ts_return_features: bool = typer.Option(
        False, "--ts-return-features", help="torchscript: call module(x, return_features=True)."
    ),
    tstr: bool = typer.Option(
        None, "--tstr/--no-tstr", help="Train-on-synthetic/test-on-real utility (TSTR beside TRTR); default: "
        "on for class-conditional runs, off for samples files (--tstr: a file with labels)."
    ),
    tstr_n: int = typer.Option(None, "--tstr-n", help="Synthetic training samples for TSTR (default: the train split's size)."),
    mia: bool = typer.Option(True, "--mia/--no-mia", help="Membership-inference audit (train vs held-out records)."),
    mia_n: int = typer.Option(None, "--mia-n", help="Membership audit records per side (default 1000)."),
    target_speaker: str = typer.Option(
        None, "--target-speaker", help="Audio (voice cloning): also score the run's clips of this speaker against "
        "the speaker's own clips (target_* values)."
    ),
    threads: int = typer.Option(0, "--threads", help=THREADS_HELP),
) -> None:
    """Compute FID, KID, classifier score, precision/recall/density/coverage, per-class and memorisation metrics
    (images); loss, bits per character, perplexity, diversity and verbatim copies (text)."""
    configure_threads(threads)
    from genforge.core.config import from_dict
    from genforge.evaluate.evaluate import config_from_options, default_out, evaluate
    from genforge.evaluate.privacy.config import MembershipConfig, UtilityConfig

    utility = from_dict(UtilityConfig, {"enabled": tstr, "n": tstr_n}, where="--tstr-n")
    membership = from_dict(MembershipConfig, {"enabled": mia, **({"n": mia_n} if mia_n else {})}, where="--mia-n")
    options = {"size": ts_size, "value_range": ts_range, "return_features": ts_return_features or None}
    cfg = config_from_options(
        n=n, features=features, seed=seed, split=split, metrics=metric or None, batch_size=batch_size,
        memorisation=not no_memorisation, extractor_options={k: v for k, v in options.items() if v is not None},
        samples_range=samples_range, utility=utility, membership=membership,
        options={"target_speaker": target_speaker} if target_speaker else None,
    )  # fmt: skip
    result = evaluate(target, ref, cfg, out)
    _print_metrics(result)
    typer.echo(f"wrote {out or default_out(target)}")


def _print_metrics(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    ext = result.get("extractor")  # images only: text metrics need no feature extractor
    table = Table(
        title=f"{result['target']['path']}  vs  {result['reference']['split']} of {result['reference']['dataset']}"
    )
    for col in ("metric", "value", "better", "n"):
        table.add_column(col)
    for name, rec in result["metrics"].items():
        table.add_row(name, f"{rec['value']:.5g}", rec["better"], str(rec["n_samples"]))
    console = Console()
    console.print(table)
    features = f"features: {ext['id']} (hash {ext['hash']}); " if ext else ""
    console.print(f"{features}timing: {result['timing']}")
    mem = result.get("memorisation")
    if mem:
        spaces = [s for s, a in mem.items() if isinstance(a, dict) and "copy_rate" in a]  # images: features, pixels
        console.print("copy rate: " + ", ".join(f"{s} {mem[s]['copy_rate']:.2%}" for s in spaces)
                      + f" (about {mem['features']['expected_rate_if_generalising']:.0%} expected if generalising)")  # fmt: skip
    for w in result["warnings"]:
        console.print(f"[yellow]warning:[/] {w}")
    for name, why in result["skipped"].items():
        console.print(f"skipped {name}: {why}")


def report_command(
    run_dir: Path = typer.Argument(
        ..., help="A training run directory (evaluate it first for the metrics table)."
    ),
    out: Path = typer.Option(None, "--out", "-o", help="Output HTML (default RUN_DIR/report.html)."),
    metrics: Path = typer.Option(
        None, "--metrics", help="metrics.json to show (default RUN_DIR/metrics.json)."
    ),
    ref: Path = typer.Option(None, "--ref", help="Reference dataset (default: the run's training dataset)."),
    n: int = typer.Option(64, "--n", help="Samples in the grid."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed of the grid."),
    threads: int = typer.Option(0, "--threads", help=THREADS_HELP),
) -> None:
    """Write one self-contained HTML report of a run: samples, real images, metrics, curves, memorisation, data quality."""
    configure_threads(threads)
    from genforge.evaluate.report import write_report

    path = write_report(run_dir, out=out, metrics_path=metrics, ref=ref, n=n, seed=seed)
    typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(evaluator_app, name="evaluator")
    app.command("eval")(eval_command)
    app.command("report")(report_command)
