"""`genforge data ingest` per modality: modality -> `Ingester` (how to tell its sources, its
config, how to ingest and report), in `INGESTERS`, a registry keyed by modality like the other
stages' (docs/modalities.md). Images register here; other modalities register from their
package (`data.text`), imported through `genforge.data.modalities`.

With `--modality auto` the first registered modality whose `claims(source)` holds reads the
source, images last: they take whatever no other modality claims (names like `digits`, image
folders, IDX, arrays).
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
    fallback: bool = False  # claims what no other modality claims


INGESTERS = modality_registry("data ingester")


def _lazy(module: str, name: str) -> Callable[..., Any]:
    """`module.name`, imported on first call: the CLI should not import every stage's code."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

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


def _image_config() -> type:
    from genforge.data.process.config import IngestConfig  # on first use: it pulls in the image pipeline

    return IngestConfig


INGESTERS.register(
    "image",
    Ingester(
        claims=lambda source: True,
        config=_image_config,
        run=_lazy("genforge.data.process.ingest", "ingest"),
        report=_lazy("genforge.data.report", "write_report"),
        summary=_image_summary,
        report_summary=_image_report_summary,
        fallback=True,
    ),
)


def get(modality: str) -> Ingester:
    return lookup(INGESTERS, modality, "genforge.data.modalities")


def detect(source: str) -> str:
    """The modality of `source`: the first non-fallback ingester claiming it, else the fallback."""
    importlib.import_module("genforge.data.modalities")
    names = INGESTERS.names_in_order()
    ordered = [n for n in names if not INGESTERS.get(n).fallback] + [
        n for n in names if INGESTERS.get(n).fallback
    ]
    for name in ordered:
        if INGESTERS.get(name).claims(source):
            return name
    raise ConfigError(f"{source!r}: no modality claims this source; pass --modality ({', '.join(names)})")


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
