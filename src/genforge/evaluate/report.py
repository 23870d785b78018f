"""`genforge report RUN_DIR`: one self-contained HTML page about a training run.

The sections depend on the run's modality (`REPORT_SECTIONS`, keyed by it). Images: a sample grid
(one row per class when conditional) beside real reference images, the metrics of `genforge
eval` with a line per metric saying what it means, metric curves from metrics.jsonl, the nearest
training images of the closest samples, and the data quality findings of the training dataset
(DATASET_DIR/report.json). Text registers its own (`evaluate.text.report`), reusing the curves
and data quality sections. Every image is inlined as base64, so the file can be mailed or
archived alone.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from genforge.core.atomic import write_text
from genforge.core.errors import GenforgeError
from genforge.core.modality import DEFAULT as DEFAULT_MODALITY
from genforge.core.modality import lookup, modality_registry
from genforge.evaluate.evaluate import read_metrics
from genforge.evaluate.report_template import PAGE
from genforge.train.samples import encode_png, make_grid

GRID_SCALE = 3  # small images are upscaled (nearest) by the browser so digits are visible
MAX_CURVES = 12


def _img(image: np.ndarray, alt: str, scale: int = GRID_SCALE) -> str:
    data = base64.b64encode(encode_png(image)).decode()
    h, w = image.shape[:2]
    return f'<img class="px" alt="{html.escape(alt)}" width="{w * scale}" height="{h * scale}" src="data:image/png;base64,{data}">'


def _figure(image: np.ndarray, caption: str, scale: int = GRID_SCALE) -> str:
    return f"<figure>{_img(image, caption, scale)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def esc(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.5g}"
    return html.escape(str(value))


def table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{esc(c)}</td>' if isinstance(c, int | float) else f"<td>{esc(c)}</td>"
                         for c in row) + "</tr>"
        for row in rows
    )  # fmt: skip
    return f"<table><tr>{head}</tr>{body}</table>"


def _generated(run_dir: Path, n: int, seed: int) -> tuple[np.ndarray | None, str]:
    """Samples from the final (EMA) weights, one row per class when conditional; else the last training grid."""
    try:
        from genforge.models.pipeline import load_pipeline

        pipe = load_pipeline(run_dir)
        if pipe.conditional:
            per = max(1, n // pipe.num_classes)
            labels = np.repeat(np.arange(pipe.num_classes), per)
            images, _ = pipe.generate(len(labels), seed=seed, labels=labels)
            return make_grid(images, ncols=per), f"{per} samples per class, one row per class (seed {seed})"
        images, _ = pipe.generate(n, seed=seed)
        return make_grid(images), f"{n} samples from the final weights (seed {seed})"
    except GenforgeError as exc:
        grids = sorted((run_dir / "samples").glob("step-*.png"))
        if not grids:
            return None, f"no samples: {exc}"
        from PIL import Image

        return np.asarray(
            Image.open(grids[-1]).convert("RGB")
        ), f"last training grid {grids[-1].name} ({exc})"


def _samples_section(run_dir: Path, dataset: Any, n: int, seed: int) -> str:
    grid, caption = _generated(run_dir, n, seed)
    parts = (
        [_figure(grid, "generated: " + caption)]
        if grid is not None
        else [f'<p class="warn">{esc(caption)}</p>']
    )
    if dataset is not None:
        split = dataset.reference_split
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(split), min(n, len(split)), replace=False))
        parts.append(
            _figure(
                make_grid(np.asarray(split.images[idx])), f"real: {len(idx)} images of the {split.name} split"
            )
        )
    return '<div class="pair">' + "".join(parts) + "</div>"


def _metric_rank(output: str) -> int:
    """Position of an output in registration order (fid, kid, prdc, ...); metrics.json is key-sorted."""
    from genforge.evaluate.metrics import METRICS

    order = [out for name in METRICS.names_in_order() for out in METRICS.get(name).outputs]
    return order.index(output) if output in order else len(order)


def _metrics_section(metrics: dict[str, Any] | None, path: Path) -> str:
    if metrics is None:
        return f'<p class="warn">No {html.escape(path.name)}: run <code>genforge eval {html.escape(str(path.parent))} --ref DATASET</code> first.</p>'
    rows = [[name, rec["value"], f"{rec['better']} is better", rec["meaning"], rec["n_samples"]]
            for name, rec in sorted(metrics["metrics"].items(), key=lambda kv: _metric_rank(kv[0]))]  # fmt: skip
    ext, ref = metrics["extractor"], metrics["reference"]
    target = metrics["target"]
    lines = [
        table(["metric", "value", "direction", "what it means", "samples"], rows),
        f"<p>Features: <code>{esc(ext['id'])}</code> (hash {esc(ext['hash'])}, preprocessing "
        f"<code>{esc(json.dumps(ext['preprocessing']))}</code>); reference: {esc(ref['split'])} split "
        f"({esc(ref['count'])} images, fingerprint {esc(ref['fingerprint'])}); model step {esc(target.get('step'))}, "
        f"EMA weights: {esc(target.get('ema'))}. Numbers are comparable only when all of these match.</p>",
    ]
    lines += [f'<p class="warn">warning: {esc(w)}</p>' for w in metrics.get("warnings", [])]
    lines += [
        f'<p class="muted">skipped {esc(k)}: {esc(v)}</p>' for k, v in metrics.get("skipped", {}).items()
    ]
    return "\n".join(lines)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill
    return rows


def curves_section(run_dir: Path) -> str:
    rows = read_jsonl(run_dir / "metrics.jsonl")
    series: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        for key, value in row.items():
            if (
                key != "step"
                and isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            ):
                xs, ys = series.setdefault(key, ([], []))
                xs.append(row.get("step", len(xs)))
                ys.append(value)
    series = {k: v for k, v in series.items() if len(v[0]) >= 2}
    if not series:
        return '<p class="muted">No metrics.jsonl curves (fewer than two logged steps).</p>'
    # evaluation curves first: they are what the report is about
    keys = sorted(series, key=lambda k: (not k.startswith("eval/"), k))[:MAX_CURVES]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(12, 2.8 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        xs, ys = series[key]
        ax.plot(xs, ys, lw=1.2)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    shown = f" (first {MAX_CURVES} of {len(series)})" if len(series) > MAX_CURVES else ""
    return f'<img alt="training curves" src="data:image/png;base64,{data}" style="max-width:100%"><p class="muted">{len(keys)} series{shown} from metrics.jsonl.</p>'


def _memorisation_section(metrics: dict[str, Any] | None, metrics_path: Path) -> str:
    mem = (metrics or {}).get("memorisation")
    if not mem:
        return '<p class="muted">No memorisation audit in the metrics (run <code>genforge eval</code> with a dataset that has a train split).</p>'
    rows = [[space, mem[space]["copy_rate"], mem[space]["expected_rate_if_generalising"], mem[space]["threshold"],
             mem[space]["sample_nn_distance_median"], mem[space]["heldout_nn_distance_median"], mem[space]["exact_copies"]]
            for space in ("features", "pixels")]  # fmt: skip
    out = [
        table(
            [
                "space",
                "copy rate",
                "expected if generalising",
                "threshold",
                "median sample NN dist",
                "median held-out NN dist",
                "exact copies",
            ],
            rows,
        ),  # fmt: skip
        f"<p>A sample is flagged when it is closer to a training image than the threshold: "
        f"{esc(mem['features']['calibration'])}.</p>",
    ]
    pairs_path = metrics_path.parent / mem.get("pairs_file", "")
    if pairs_path.is_file():
        with np.load(pairs_path) as z:
            for space in ("features", "pixels"):
                samples, train = z[f"{space}_sample_images"], z[f"{space}_train_images"]
                dist, flagged = z[f"{space}_distance"], z[f"{space}_flagged"]
                gap = np.full((*samples.shape[:2], 2, samples.shape[3]), 128, np.uint8)
                pairs = np.concatenate(
                    [samples, gap, train], axis=2
                )  # side by side: sample | nearest train image
                caption = "; ".join(
                    f"{d:.3g}{' FLAGGED' if f else ''}" for d, f in zip(dist, flagged, strict=True)
                )
                out.append(_figure(make_grid(pairs, ncols=min(6, len(pairs))),
                                   f"{space} space, closest first (each pair: sample | nearest training image), "
                                   f"distances: {caption}"))  # fmt: skip
    return "\n".join(out)


def flatten(prefix: str, value: Any) -> list[list[Any]]:
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in flatten(f"{prefix}.{k}" if prefix else str(k), v)]
    return [[prefix, value]]


def read_data_report(dataset_dir: Path | None) -> tuple[dict[str, Any] | None, str]:
    """(DATASET_DIR/report.json, its summary and quarantine tables as HTML), or (None, a line
    saying why there is none); every modality's report.json has `summary` and `quarantine_by_kind`."""
    if dataset_dir is None:
        return None, '<p class="muted">The run does not name its dataset.</p>'
    path = dataset_dir / "report.json"
    if not path.is_file():
        return None, f'<p class="muted">No data quality report at {esc(path)} (written by <code>genforge data ingest</code>).</p>'
    try:
        rep = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        return None, f'<p class="warn">{esc(path)}: not valid JSON ({esc(exc)})</p>'
    out = [
        f"<p>From <code>{esc(path)}</code>.</p>",
        table(["finding", "value"], flatten("", rep.get("summary", {}))),
    ]
    if rep.get("quarantine_by_kind"):
        out.append(
            "<h3>Quarantined, by kind</h3>"
            + table(["kind", "count"], [[k, v] for k, v in rep["quarantine_by_kind"].items()])
        )
    return rep, "\n".join(out)


def data_quality_section(dataset_dir: Path | None) -> str:
    rep, head = read_data_report(dataset_dir)
    if rep is None:
        return head
    out = [head]
    leakage = rep.get("leakage") or []
    if leakage:
        rows = [[json.dumps(item)[:200]] for item in leakage[:10]]
        out.append(
            f"<h3>Train/held-out leakage ({len(leakage)} pairs, first {len(rows)})</h3>"
            + table(["pair"], rows)
        )
    for note in rep.get("notes", []):
        out.append(f'<p class="warn">{esc(note)}</p>')
    return "\n".join(out)


@dataclass
class ReportContext:
    """What a section may draw on."""

    run_dir: Path
    info: dict[str, Any]  # model.json
    dataset_dir: Path | None  # --ref, else the run's training dataset
    dataset: Any | None  # open_dataset(dataset_dir) when it is a canonical dataset
    metrics: dict[str, Any] | None  # metrics.json of `genforge eval`, when written
    metrics_path: Path
    n: int  # samples shown
    seed: int


@dataclass(frozen=True)
class Section:
    title: str  # the <h2> heading
    render: Callable[[ReportContext], str]  # -> the section's HTML


def _privacy_section(info: dict[str, Any]) -> str:
    """What a differentially private run (model.json `privacy`, train/privacy.py) guarantees."""
    p = info["privacy"]
    target = "" if p.get("target_epsilon") is None else f" (target {esc(p['target_epsilon'])})"
    return "\n".join([
        f"<p>Trained with {esc(p.get('mechanism'))} ({esc(p.get('library'))}): <b>epsilon "
        f"{esc(p.get('epsilon'))}</b>{target} at delta {esc(p.get('delta'))}, {esc(p.get('accountant'))} accountant, "
        f"for {esc(p.get('unit'))}. Private: {esc(_private_part(p))}; trained without private data: "
        f"{esc(', '.join(p.get('public_phases', [])) or 'nothing else')}.</p>",
        table(["setting", "value"], [[k, p.get(k)] for k in (
            "noise_multiplier", "max_grad_norm", "sensitivity", "sample_rate", "sampling", "expected_batch_size", "dataset_size",
            "steps", "planned_steps", "noise_multiplicity")]),
        '<p class="muted">The guarantee covers the weights and samples. The metrics, curves, nearest training '
        "images and data quality findings on this page are computed from the private data outside it: share "
        "this report only with those who may see the data (docs/privacy.md).</p>",
        *_base_note(info.get("init_from")),
    ])  # fmt: skip


def _private_part(p: dict[str, Any]) -> str:
    """What reads the private data: DP-SGD's private modules and phases, or a release's statistics."""
    if p.get("private_modules"):
        return f"{', '.join(p['private_modules'])} (phases {', '.join(p.get('private_phases', []))})"
    return "only the released statistics (no weight is trained on a private example)"


def _base_note(base: dict[str, Any] | None) -> list[str]:
    """A DP fine-tune's base (public pretraining): what the epsilon above does and does not cover."""
    if not base:
        return []
    return [f"<p>Fine-tuned from the base run {esc(base.get('path'))} ({esc(base.get('model'))}, step "
            f"{esc(base.get('step'))}, trained on data {esc(base.get('dataset_fingerprint'))}). The epsilon above "
            "is this run's DP steps alone: the base's training costs none only if its data hold no private "
            "example (public data, such as rendered glyphs).</p>"]  # fmt: skip


# modality -> the report's sections, in page order
REPORT_SECTIONS = modality_registry("report")
REPORT_SECTIONS.register("image", [
    Section("Samples beside real images", lambda c: _samples_section(c.run_dir, c.dataset, c.n, c.seed)),
    Section("Metrics", lambda c: _metrics_section(c.metrics, c.metrics_path)),
    Section("Training curves", lambda c: curves_section(c.run_dir)),
    Section("Memorisation audit: closest training images", lambda c: _memorisation_section(c.metrics, c.metrics_path)),
    Section("Data quality of the training set", lambda c: data_quality_section(c.dataset_dir)),
])  # fmt: skip


def write_report(run_dir: str | Path, out: str | Path | None = None, metrics_path: str | Path | None = None,
                 ref: str | Path | None = None, n: int = 64, seed: int = 0) -> Path:  # fmt: skip
    run_dir = Path(run_dir)
    model_json = run_dir / "model.json"
    if not model_json.is_file():
        raise GenforgeError(f"{run_dir}: no model.json; is this a `genforge train` run directory?")
    info = json.loads(model_json.read_text())
    dataset_dir = (
        Path(ref) if ref else (Path(info["dataset"]["path"]) if info.get("dataset", {}).get("path") else None)
    )
    dataset = None
    if dataset_dir is not None and (dataset_dir / "manifest.json").is_file():
        from genforge.data.canonical import open_dataset

        dataset = open_dataset(dataset_dir)
    mpath = Path(metrics_path) if metrics_path else run_dir / "metrics.json"
    metrics = read_metrics(mpath) if mpath.is_file() else None
    ctx = ReportContext(run_dir, info, dataset_dir, dataset, metrics, mpath, n, seed)
    sections = lookup(REPORT_SECTIONS, info.get("modality", DEFAULT_MODALITY), "genforge.evaluate.modalities")
    if info.get("privacy"):  # any modality's private run
        sections = [Section("Differential privacy", lambda c: _privacy_section(c.info)), *sections]
    from genforge.evaluate.privacy import report as utility_membership

    if utility_membership.has_results(metrics):  # TSTR / membership inference, any modality
        sections = [*sections, Section(utility_membership.TITLE, lambda c: utility_membership.render(c.metrics))]
    page = Template(PAGE).substitute(
        title=html.escape(run_dir.name),
        subtitle=html.escape(
            f"model {info.get('model')} ({info.get('family')}), step {info.get('step')}, "
            f"EMA weights {info.get('ema')}, run {run_dir.resolve()}"
        ),  # fmt: skip
        sections="\n".join(f"<h2>{html.escape(s.title)}</h2>\n{s.render(ctx)}" for s in sections),
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    )
    target = Path(out) if out else run_dir / "report.html"
    write_text(target, page)
    return target
