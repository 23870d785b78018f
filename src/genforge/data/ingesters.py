"""`genforge data ingest` per modality: modality -> `Ingester` (how to tell its sources, its
config, how to ingest and report), in `INGESTERS`, a registry keyed by modality like the other
stages' (docs/modalities.md). Images register here; other modalities register from their
package (`data.text`, `data.audio`), imported through `genforge.data.modalities`.

With `--modality auto` every modality is asked whether it `claims(source)`; at most one may,
so the answer never depends on which package was imported first: two claiming is an error that
asks for `--modality`. Images are the fallback: they take whatever no modality claims (names
like `digits`, image folders, IDX, arrays). A folder or archive belongs to the modality owning
most of its first file names (`leading_modalities`).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genforge.core.config import from_dict
from genforge.core.errors import ConfigError, DataError
from genforge.core.modality import lookup, modality_registry

Progress = Callable[[int, int], None]  # (items read, items quarantined)


@dataclass(frozen=True)
class Ingester:
    claims: Callable[[str], bool]  # does this source hold this modality's data?
    config: Callable[[], type]  # the typed dataclass of the ingest options (saved beside the dataset)
    run: Callable[..., Any]  # (source, out, config, *, overwrite, progress) -> IngestResult
    report: Callable[[Path], dict[str, Any]]  # (re)write DATASET/report.{json,html}
    summary: Callable[[Any], list[str]]  # what the CLI prints after ingest (IngestResult -> lines)
    report_summary: Callable[[dict[str, Any]], str]  # what the CLI prints after `data report`
    fallback: bool = False  # reads what no modality claims
    owns_name: Callable[[str], bool] | None = None  # a file name of this modality's files (by extension)


INGESTERS = modality_registry("data ingester")


def lazy_value(module: str, name: str) -> Callable[[], Any]:
    """A function returning `module.name` (a class, say), imported on first call: the CLI should
    not import every stage's code."""
    return lambda: getattr(importlib.import_module(module), name)


def lazy(module: str, name: str) -> Callable[..., Any]:
    """The function `module.name`, imported on first call."""
    get = lazy_value(module, name)

    def call(*args: Any, **kwargs: Any) -> Any:
        return get()(*args, **kwargs)

    return call


def _image_summary(result: Any) -> list[str]:
    counts = result.manifest["counts"]
    summary = result.report["summary"]
    splits = ", ".join(f"{name} {n:,}" for name, n in summary["splits"].items())
    return [
        f"read {counts['read']:,} items: {counts['images']:,} images ({splits}), "
        f"{counts['quarantined']:,} quarantined, {counts['duplicates_dropped']:,} duplicates dropped",
        f"duplicates: {summary['exact_duplicate_groups']:,} exact groups, {summary['near_duplicate_groups']:,} "
        f"near groups, {summary['leakage_pairs']:,} leakage pairs across splits",
    ]


def _image_report_summary(s: dict[str, Any]) -> str:
    s = s["summary"]
    return (
        f"{s['images']:,} images, {s['quarantined']:,} quarantined, {s['exact_duplicate_groups']:,} exact / "
        f"{s['near_duplicate_groups']:,} near duplicate groups, {s['leakage_pairs']:,} leakage pairs"
    )


INGESTERS.register(
    "image",
    Ingester(
        # an HF data set with images: audio or text could otherwise take it by its other columns
        claims=lazy("genforge.data.sources.hf", "is_image_dataset"),
        config=lazy_value("genforge.data.process.config", "IngestConfig"),  # pulls in the image pipeline
        run=lazy("genforge.data.process.ingest", "ingest"),
        report=lazy("genforge.data.report", "write_report"),
        summary=_image_summary,
        report_summary=_image_report_summary,
        fallback=True,
        owns_name=lazy("genforge.data.sources.layout", "is_image_name"),
    ),
)


def get(modality: str) -> Ingester:
    return lookup(INGESTERS, modality, "genforge.data.modalities")


def leading_modalities(names: list[str]) -> list[str]:
    """The modalities owning the most of `names` (the first file names of a folder or archive):
    one, several on a tie, none when no name is any modality's. A modality's `claims` of a folder
    asks whether it is the one, so a stray README.txt among WAV files claims nothing."""
    importlib.import_module("genforge.data.modalities")
    counts: dict[str, int] = {}
    for modality in INGESTERS.names_in_order():
        owns = INGESTERS.get(modality).owns_name
        if owns is not None:
            counts[modality] = sum(map(owns, names))
    most = max(counts.values(), default=0)
    return sorted(m for m, n in counts.items() if n == most and n > 0)


def detect(source: str) -> str:
    """The modality of `source`: the one ingester claiming it, else the fallback; a clear error
    when several claim it (which one reads it must not depend on import order)."""
    importlib.import_module("genforge.data.modalities")
    names = INGESTERS.names_in_order()
    claimed = sorted(n for n in names if INGESTERS.get(n).claims(source))
    if len(claimed) > 1:
        raise ConfigError(
            f"{source}: could be read as {' or '.join(claimed)} data; pass --modality "
            f"({', '.join(claimed)}) to say which"
        )
    chosen = claimed or [n for n in names if INGESTERS.get(n).fallback]
    if not chosen:
        raise ConfigError(f"{source!r}: no modality claims this source; pass --modality ({', '.join(names)})")
    return chosen[0]


def resolve(source: str, modality: str = "auto") -> str:
    """The modality that reads `source`: `modality`, checked, or the detected one for "auto"."""
    if modality == "auto":
        if ("/" in source or Path(source).suffix) and ":" not in source and not Path(source).exists():
            # a path that is not there: say so, rather than that no modality recognises it
            raise DataError(f"{source}: no such file or directory")
        return detect(source)
    get(modality)
    return modality


def build_config(modality: str, options: dict[str, Any], source: str = "", detected: bool = False) -> Any:
    """The modality's ingest config from options keyed by field name (None = not given); an
    option of another modality is an error naming its flag."""
    cls = get(modality).config()
    fields = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in options.items() if v is not None}
    foreign = sorted(set(given) - fields)
    if foreign:
        flags = ", ".join("--" + k.replace("_", "-") for k in foreign)
        how = "detected" if detected else "chosen with --modality"
        raise ConfigError(
            f"{flags}: not an option for {modality} data ({source or 'the source'} is {modality}, {how}); "
            f"pass --modality to read it as another kind"
        )
    return from_dict(cls, given, where=f"{modality} ingest options")


def ingest(
    source: str,
    out: str | Path,
    options: dict[str, Any] | None = None,
    *,
    modality: str = "auto",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> tuple[str, Any]:
    """Ingest `source` into the canonical dataset `out` with its modality's ingester; returns
    (modality, IngestResult). `options` are the modality's config fields (a scenario's `data`)."""
    chosen = resolve(source, modality)
    cfg = build_config(chosen, options or {}, source, detected=modality == "auto")
    return chosen, get(chosen).run(source, out, cfg, overwrite=overwrite, progress=progress)


def write_report(dataset: str | Path) -> tuple[str, dict[str, Any]]:
    """(Re)write the data report of `dataset` with its modality's reporter; (modality, report)."""
    from genforge.core.modality import DEFAULT
    from genforge.data.canonical import read_manifest

    modality = read_manifest(dataset).get("modality", DEFAULT)
    return modality, get(modality).report(Path(dataset))
