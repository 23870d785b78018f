"""`genforge` commands of the data stage: `data ingest`, `data report`."""

from __future__ import annotations

from pathlib import Path

import typer

from genforge.core.threads import THREADS_HELP
from genforge.core.threads import configure as configure_threads


def ingest(
    source: str = typer.Argument(
        ...,
        help="A source name (digits, mnist, ...) or a path: image folder, tar(.gz) archive, IDX file, .npz/.npy; "
        "text: a .txt/.md file, a folder of them, .jsonl, .csv, a tar(.gz) of text files, hf:NAME; "
        "audio: a WAV/FLAC/OGG/MP3 file, a folder of them, a tar(.gz) of them, hf:NAME with an Audio column.",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Dataset directory to write (appears only when complete)."
    ),
    size: str = typer.Option(
        None, "--size", help="Target size H or HxW (default: the source's, if all agree)."
    ),
    channels: int = typer.Option(
        None, "--channels", help="1 (grey) or 3 (RGB) (default: the source's, if all agree)."
    ),
    val_fraction: float = typer.Option(
        None,
        "--val-fraction",
        help="Share of train to carve off as val (default 0.1, or 0 when the source has a test split).",
    ),
    limit: int = typer.Option(None, "--limit", help="Read at most N source items."),
    workers: int = typer.Option(
        None, "--workers", help="Decode processes (images: default one per core, at most 2; audio: default 0; 0: none)."
    ),
    resize_filter: str = typer.Option(
        None, "--resize-filter", help="lanczos | bicubic | bilinear | area | nearest."
    ),
    fit: str = typer.Option(
        None, "--fit", help="crop (centre crop, default) or pad to the target aspect ratio."
    ),
    background: str = typer.Option(
        None, "--background", help="white | black | #rrggbb behind transparency and padding."
    ),
    near_dup_distance: int = typer.Option(
        None, "--near-dup-distance", help="Max pHash Hamming distance (default 6)."
    ),
    near_dup_similarity: float = typer.Option(
        None,
        "--near-dup-similarity",
        help="Min structure similarity 0..1 confirming a near pair (default 0.985).",
    ),
    dup_policy: str = typer.Option(
        None,
        "--dup-policy",
        help="keep-first (report only) or drop (later copies); default keep-first for images, drop for text and audio.",
    ),
    seed: int = typer.Option(None, "--seed", help="Seed of the val carve."),
    modality: str = typer.Option(
        "auto",
        "--modality",
        help="image | text | audio | auto (text for .txt/.md/.jsonl/.csv and mostly-text folders/archives; "
        "audio for audio files and mostly-audio folders/archives).",
    ),
    tokenizer: str = typer.Option(None, "--tokenizer", help="Text: char (default) or bpe (byte-level BPE)."),
    vocab_size: int = typer.Option(None, "--vocab-size", help="Text: BPE vocabulary size (default 4096)."),
    field: str = typer.Option(
        None, "--field", help="Text: the JSONL field / HF column holding the text (default text)."
    ),
    column: str = typer.Option(
        None, "--column", help="Text: the CSV column holding the text (default text)."
    ),
    split_by: str = typer.Option(
        None,
        "--split-by",
        help="Text: document (seeded, whole documents) or position (last share of the characters, as nanoGPT); "
        "default: position for one document, else document.",
    ),
    pii: bool = typer.Option(
        None, "--pii/--no-pii", help="Text: replace e-mails, phones, IPs and card numbers (default on)."
    ),
    near_dup_threshold: float = typer.Option(
        None,
        "--near-dup-threshold",
        help="Text: MinHash Jaccard threshold of near duplicates (default 0.8); "
        "audio: cosine of log-mel fingerprints (default 0.995).",
    ),
    label_pattern: str = typer.Option(
        None,
        "--label-pattern",
        help='Audio: file-name fields, e.g. "{label}_{speaker}_{take}" ({label} is the class, other fields are '
        "kept per clip); default: the class is the sub-folder name.",
    ),
    group_by: str = typer.Option(
        None, "--group-by", help="Audio: carve val by whole values of a field, e.g. speaker (speaker-disjoint splits)."
    ),
    sample_rate: int = typer.Option(
        None, "--sample-rate", help="Audio: resample to this rate in Hz (default: the source's most common rate)."
    ),
    clip_seconds: float = typer.Option(
        None, "--clip-seconds", help="Audio: clip length after padding or cropping (default 1.0 s)."
    ),
    max_seconds: float = typer.Option(
        None, "--max-seconds", help="Audio: quarantine files longer than this (default 30 s)."
    ),
    loudness: str = typer.Option(
        None, "--loudness", help="Audio: rms (default), lufs (pyloudnorm) or none."
    ),
    loudness_target: float = typer.Option(
        None, "--loudness-target", help="Audio: target level, dBFS for rms, LUFS for lufs (default -20)."
    ),
    trim_db: float = typer.Option(
        None, "--trim-db", help="Audio: trim leading/trailing frames this many dB below the loudest (default 40)."
    ),
    pad: str = typer.Option(None, "--pad", help="Audio: centre (default) or end: where short clips' audio goes."),
    crop: str = typer.Option(None, "--crop", help="Audio: centre (default) or start: what long clips keep."),
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

    options = {
        "size": parse_size(size) if size is not None else None,
        "channels": channels,
        "val_fraction": val_fraction,
        "limit": limit,
        "workers": workers,
        "resize_filter": resize_filter,
        "fit": fit,
        "background": background,
        "near_dup_distance": near_dup_distance,
        "near_dup_similarity": near_dup_similarity,
        "dup_policy": dup_policy,
        "seed": seed,
        "tokenizer": tokenizer,
        "vocab_size": vocab_size,
        "field": field,
        "column": column,
        "split_by": split_by,
        "pii": pii,
        "near_dup_threshold": near_dup_threshold,
        "label_pattern": label_pattern,
        "group_by": group_by,
        "sample_rate": sample_rate,
        "clip_seconds": clip_seconds,
        "max_seconds": max_seconds,
        "loudness": loudness,
        "loudness_target": loudness_target,
        "trim_db": trim_db,
        "pad": pad,
        "crop": crop,
    }
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
