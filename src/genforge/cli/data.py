"""`genforge` commands of the data stage: `data ingest`, `data report`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from genforge.core.threads import THREADS_HELP
from genforge.core.threads import configure as configure_threads

# parameters of `data ingest` itself; each other one is a field of a modality's ingest config
_INGEST_PARAMS = ("source", "out", "modality", "overwrite", "threads")


def _config_option(flag: str, help_text: str) -> Any:
    """An ingest config option: None when not given, so `ingesters.build_config` can refuse an
    option foreign to the source's modality rather than mistake a default for a choice."""
    return typer.Option(None, flag, help=help_text)


def ingest(
    ctx: typer.Context,
    source: str = typer.Argument(
        ...,
        help="A source name (digits, mnist, ...) or a path: image folder, tar(.gz) archive, IDX file, .npz/.npy; "
        "text: a .txt/.md file, a folder of them, .jsonl, .csv, a tar(.gz) of text files, hf:NAME; "
        "audio: a WAV/FLAC/OGG/MP3 file, a folder of them, a tar(.gz) of them, hf:NAME with an Audio column.",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Dataset directory to write (appears only when complete)."
    ),
    size: str = _config_option("--size", "Target size H or HxW (default: the source's, if all agree)."),
    channels: int = _config_option(
        "--channels", "1 (grey) or 3 (RGB) (default: the source's, if all agree)."
    ),
    val_fraction: float = _config_option(
        "--val-fraction",
        "Share of train to carve off as val (default 0.1, or 0 when the source has a test split).",
    ),
    limit: int = _config_option("--limit", "Read at most N source items."),
    workers: int = _config_option(
        "--workers", "Decode processes (images: default one per core, at most 2; audio: default 0; 0: none)."
    ),
    resize_filter: str = _config_option("--resize-filter", "lanczos | bicubic | bilinear | area | nearest."),
    fit: str = _config_option("--fit", "crop (centre crop, default) or pad to the target aspect ratio."),
    background: str = _config_option(
        "--background", "white | black | #rrggbb behind transparency and padding."
    ),
    near_dup_distance: int = _config_option("--near-dup-distance", "Max pHash Hamming distance (default 6)."),
    near_dup_similarity: float = _config_option(
        "--near-dup-similarity", "Min structure similarity 0..1 confirming a near pair (default 0.985)."
    ),
    dup_policy: str = _config_option(
        "--dup-policy",
        "keep-first (report only) or drop (later copies); default keep-first for images, drop for text and audio.",
    ),
    seed: int = _config_option("--seed", "Seed of the val carve."),
    modality: str = typer.Option(
        "auto",
        "--modality",
        help="image | text | audio | auto (text for .txt/.md/.jsonl/.csv and mostly-text folders/archives; "
        "audio for audio files and mostly-audio folders/archives).",
    ),
    tokenizer: str = _config_option("--tokenizer", "Text: char (default), bpe (byte-level BPE) or bytes (UTF-8 bytes, learns nothing from the data)."),
    vocab_size: int = _config_option("--vocab-size", "Text: BPE vocabulary size (default 4096)."),
    field: str = _config_option(
        "--field", "Text: the JSONL field / HF column holding the text (default text)."
    ),
    column: str = _config_option("--column", "Text: the CSV column holding the text (default text)."),
    split_by: str = _config_option(
        "--split-by",
        "Text: document (seeded, whole documents) or position (last share of the characters, as nanoGPT); "
        "default: position for one document, else document.",
    ),
    pii: bool = _config_option(
        "--pii/--no-pii", "Text: replace e-mails, phones, IPs and card numbers (default on)."
    ),
    near_dup_threshold: float = _config_option(
        "--near-dup-threshold",
        "Text: MinHash Jaccard threshold of near duplicates (default 0.8); "
        "audio: cosine of log-mel fingerprints (default 0.995).",
    ),
    label_pattern: str = _config_option(
        "--label-pattern",
        'Audio: file-name fields, e.g. "{label}_{speaker}_{take}" ({label} is the class, other fields are '
        "kept per clip); default: the class is the sub-folder name.",
    ),
    group_by: str = _config_option(
        "--group-by", "Audio: carve val by whole values of a field, e.g. speaker (speaker-disjoint splits)."
    ),
    sample_rate: int = _config_option(
        "--sample-rate", "Audio: resample to this rate in Hz (default: the source's most common rate)."
    ),
    clip_seconds: float = _config_option(
        "--clip-seconds", "Audio: clip length after padding or cropping (default 1.0 s)."
    ),
    max_seconds: float = _config_option(
        "--max-seconds", "Audio: quarantine files longer than this (default 30 s)."
    ),
    loudness: str = _config_option("--loudness", "Audio: rms (default), lufs (pyloudnorm) or none."),
    loudness_target: float = _config_option(
        "--loudness-target", "Audio: target level, dBFS for rms, LUFS for lufs (default -20)."
    ),
    trim_db: float = _config_option(
        "--trim-db", "Audio: trim leading/trailing frames this many dB below the loudest (default 40)."
    ),
    pad: str = _config_option("--pad", "Audio: centre (default) or end: where short clips' audio goes."),
    crop: str = _config_option("--crop", "Audio: centre (default) or start: what long clips keep."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset directory."),
    threads: int = typer.Option(
        0, "--threads", help=THREADS_HELP + " Also caps the decode processes of the default --workers."
    ),
) -> None:
    """Decode, validate, dedupe and split SOURCE into a canonical dataset, with its quality report."""
    configure_threads(threads)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from genforge.data import ingesters
    from genforge.data.process.config import parse_size

    # the config options by field name, as given (None when not); read from the call so that an
    # option added above needs no second line here
    options = {name: value for name, value in ctx.params.items() if name not in _INGEST_PARAMS}
    options["size"] = parse_size(size) if size is not None else None
    chosen = ingesters.resolve(source, modality)
    ingester = ingesters.get(chosen)
    cfg = ingesters.build_config(chosen, options, source, detected=modality == "auto")
    console = Console(stderr=True)
    # no auto-refresh thread: the decode workers are then forked from a single-threaded process
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]ingest[/]"),
        BarColumn(),
        TextColumn(
            "{task.completed:,} read · {task.fields[quarantined]:,} quarantined · {task.fields[rate]}"
        ),
        TimeElapsedColumn(),
        console=console,
        auto_refresh=False,
        transient=True,
    ) as bar:
        task = bar.add_task("ingest", total=None, quarantined=0, rate="")

        def progress(read: int, quarantined: int) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            rate = f"{read / elapsed:,.0f} items/s" if elapsed > 0 else ""
            bar.update(task, completed=read, quarantined=quarantined, rate=rate)
            bar.refresh()

        result = ingester.run(source, out, cfg, overwrite=overwrite, progress=progress)
    for line in ingester.summary(result):
        typer.echo(line)
    typer.echo(f"dataset: {result.path.resolve()}  (fingerprint {result.manifest['fingerprint']})")
    typer.echo(f"report:  {(result.path / 'report.html').resolve()}")


def report(
    dataset: Path = typer.Argument(..., help="A canonical dataset directory (from `genforge data ingest`)."),
) -> None:
    """(Re)write DATASET/report.json and a self-contained DATASET/report.html."""
    from genforge.data import ingesters

    modality, result = ingesters.write_report(dataset)
    typer.echo(ingesters.get(modality).report_summary(result))
    typer.echo(f"report: {(dataset / 'report.html').resolve()}")


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(
        help="Collect and process data: ingest a source into a canonical dataset; report on its quality.",
        no_args_is_help=True,
    )
    data_app.command("ingest")(ingest)
    data_app.command("report")(report)
    app.add_typer(data_app, name="data")
