"""The run report's sections for audio runs (registered in `evaluate.report.REPORT_SECTIONS`).

Generated clips play beside real clips of the same class (`<audio controls>` with WAV data URIs,
so the page stands alone) over their log-mel spectrograms; the metrics of `genforge eval` with
the real-data control and the memoriser floor beside the model; the training curves and the data
quality findings (the image report's sections); the memorisation pairs (each generated clip beside
its nearest training clip, playable, with both spectrograms).
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any

import numpy as np
import torch

from genforge.audio.spectrogram import log_mel
from genforge.audio.wav import encode_wav
from genforge.core.errors import GenforgeError
from genforge.evaluate.audio.evaluation import MEANINGS, OUTPUT_NAMES, SPEAKER_METRIC
from genforge.evaluate.audio.features import mel_config_for
from genforge.evaluate.audio.target import voice_section
from genforge.evaluate.report import (
    REPORT_SECTIONS,
    ReportContext,
    Section,
    curves_section,
    data_quality_section,
    esc,
    table,
)
from genforge.train.samples import encode_png

PER_CLASS = 2  # generated (and real) clips per class in the samples section
UNCONDITIONAL = 8  # clips of an unconditional model
PAIRS_SHOWN = 6  # memorisation pairs per space
DB_RANGE = 80.0  # spectrogram thumbnails show the loudest 80 dB of each clip
THUMB_SCALE = 2
PLAYER_PX = 220  # narrow players: two clips side by side in a table cell
LABELS = {"control": "real-data control", "memoriser": "memoriser floor"}
# metrics table order: the distances first, then fidelity/diversity, then the classifiers'
ORDER = ["fad", "kad", "precision", "recall", "density", "coverage", "classifier_score", "classifier_confidence",
         "conditional_accuracy", "speaker_accuracy", "class_fad_mean", "fad_train", "fad_gap", "copy_rate"]  # fmt: skip


def spectrogram_image(clip: np.ndarray, sample_rate: int) -> np.ndarray:
    """uint8 (mels, frames, 3): the clip's log-mel in dB (the loudest DB_RANGE dB of the clip),
    low frequencies at the bottom, magma colours."""
    import matplotlib

    db = log_mel(torch.from_numpy(np.asarray(clip, np.float32)[None]), mel_config_for(sample_rate))[0].numpy()
    db = db * (10.0 / np.log(10.0))
    scaled = np.clip((db - (db.max() - DB_RANGE)) / DB_RANGE, 0.0, 1.0)[::-1]
    return (matplotlib.colormaps["magma"](scaled)[..., :3] * 255).astype(np.uint8)


def clip_html(clip: np.ndarray, sample_rate: int, caption: str) -> str:
    """A player (WAV data URI) over the clip's spectrogram, with a caption."""
    wav = base64.b64encode(encode_wav(np.asarray(clip, np.float32), sample_rate)).decode()
    spec = spectrogram_image(clip, sample_rate)
    png = base64.b64encode(encode_png(spec)).decode()
    h, w = spec.shape[:2]
    alt = html.escape(f"log-mel spectrogram: {caption}")
    return (f'<figure class="clip"><img class="px" alt="{alt}" width="{w * THUMB_SCALE}" '
            f'height="{h * THUMB_SCALE}" src="data:image/png;base64,{png}"><br>'
            f'<audio controls preload="none" style="width:{PLAYER_PX}px" src="data:audio/wav;base64,{wav}"></audio>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip


def _clips(clips: np.ndarray, sample_rate: int, captions: list[str]) -> str:
    return (
        '<div class="pair">'
        + "".join(clip_html(c, sample_rate, t) for c, t in zip(clips, captions, strict=True))
        + "</div>"
    )


def _real(split: Any, label: int | None, count: int, seed: int) -> np.ndarray:
    """Indices of `count` clips of `split` (of class `label` when given), drawn with `seed`."""
    pool = np.arange(len(split)) if label is None else np.flatnonzero(np.asarray(split.labels) == label)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(pool, min(count, len(pool)), replace=False)) if len(pool) else pool


def _samples(ctx: ReportContext) -> str:
    from genforge.models.pipeline import load_pipeline

    try:
        pipe = load_pipeline(ctx.run_dir)
    except GenforgeError as exc:
        return f'<p class="warn">No samples: {esc(exc)}</p>'
    if getattr(pipe.model, "task", "generate") != "generate":
        return f'<p class="muted">Model {esc(pipe.name)} restores audio rather than generating it: see the metrics.</p>'
    rate = pipe.sample_rate
    split = ctx.dataset.reference_split if ctx.dataset is not None else None
    names = (ctx.dataset.class_names if ctx.dataset is not None else []) or [
        str(k) for k in range(pipe.num_classes)
    ]
    speakers = pipe.speaker_names
    if not pipe.conditional:
        count = min(UNCONDITIONAL, ctx.n)
        audio, _ = pipe.generate(count, seed=ctx.seed)
        spk = pipe.resolve_speakers(count, None, None)
        parts = [f"<h3>Generated ({count} clips, seed {ctx.seed})</h3>",
                 _clips(audio, rate, [_speaker_caption(f"#{i}", spk, i, speakers) for i in range(count)])]  # fmt: skip
        if split is not None:
            idx = _real(split, None, count, ctx.seed)
            parts += [f"<h3>Real ({len(idx)} clips of the {esc(split.name)} split)</h3>",
                      _clips(np.asarray(split.audio[idx]), ctx.dataset.sample_rate, [f"{split.name}[{i}]" for i in idx])]  # fmt: skip
        return "\n".join(parts)
    per = max(1, min(PER_CLASS, ctx.n // max(pipe.num_classes, 1)))
    labels = np.repeat(np.arange(pipe.num_classes), per)
    audio, _ = pipe.generate(len(labels), seed=ctx.seed, labels=labels)
    spk = pipe.resolve_speakers(len(labels), None, None)
    rows = []
    for k in range(pipe.num_classes):
        name = names[k] if k < len(names) else str(k)
        gen = _clips(
            audio[labels == k],
            rate,
            [_speaker_caption(f"class {name}", spk, i, speakers) for i in np.flatnonzero(labels == k)],
        )
        real = '<p class="muted">no reference dataset</p>'
        if split is not None and split.has_labels:
            idx = _real(split, k, per, ctx.seed + k)
            real = _clips(
                np.asarray(split.audio[idx]),
                ctx.dataset.sample_rate,
                [f"{split.name}[{i}]{_real_speaker(split, i, ctx.dataset.speaker_names)}" for i in idx],
            )
        rows.append(f"<tr><td>{esc(name)}</td><td>{gen}</td><td>{real}</td></tr>")
    head = (f"<p>{per} generated clip(s) per class (seed {ctx.seed}{', speakers in turn' if spk is not None else ''})"
            f" beside {per} real clip(s) of the class from the {esc(split.name if split is not None else '-')} split; "
            f"spectrograms show each clip's loudest {DB_RANGE:g} dB, low frequencies at the bottom.</p>")  # fmt: skip
    return head + "<table><tr><th>class</th><th>generated</th><th>real</th></tr>" + "".join(rows) + "</table>"


def _speaker_caption(text: str, spk: Any, i: int, names: list[str]) -> str:
    if spk is None:
        return text
    s = int(spk[i])
    return f"{text}, speaker {names[s] if s < len(names) else s}"


def _real_speaker(split: Any, i: int, names: list[str]) -> str:
    ids = split.speakers
    if ids is None or ids[i] < 0:
        return ""
    return f", speaker {names[ids[i]] if ids[i] < len(names) else ids[i]}"


def _no_metrics(ctx: ReportContext) -> str:
    return (f'<p class="warn">No {esc(ctx.metrics_path.name)}: run <code>genforge eval {esc(ctx.run_dir)} '
            f"--ref DATASET</code> first.</p>")  # fmt: skip


def _rank(name: str) -> int:
    return ORDER.index(name) if name in ORDER else len(ORDER)


def _info(name: str) -> tuple[str, str]:
    """(better, meaning) of a metric output under its audio name."""
    import genforge.evaluate.metrics  # noqa: F401  (registers the metrics output_info reads)
    from genforge.evaluate.metrics.base import output_info

    info = output_info({v: k for k, v in OUTPUT_NAMES.items()}.get(name, name))
    better = info.better if info is not None else ("higher" if name == SPEAKER_METRIC else "lower")
    return better, MEANINGS.get(name) or (info.meaning if info is not None else "")


def _metrics(ctx: ReportContext) -> str:
    m = ctx.metrics
    if m is None:
        return _no_metrics(ctx)
    base = m.get("baselines") or {}
    cols = [c for c in ("control", "memoriser") if c in base]
    records = m["metrics"]
    # a row for every number of the model or a baseline (an unlabelled samples file has no
    # conditional accuracy, its control has)
    names = sorted({*records, *(k for c in cols for k in base[c]["values"])}, key=_rank)
    rows = []
    for name in names:
        better, meaning = (
            (records[name]["better"], records[name]["meaning"]) if name in records else _info(name)
        )
        rows.append([name, records[name]["value"] if name in records else "",
                     *[base[c]["values"].get(name, "") for c in cols], f"{better} is better", meaning])  # fmt: skip
    ratio = m.get("values", {}).get("fad_memoriser_ratio")
    if ratio is not None:
        rows.append(["fad_memoriser_ratio", ratio, *["" for _ in cols], "lower is better",
                     "FAD / the memoriser floor's FAD: 1 = as close to the reference as replaying the training set"])  # fmt: skip
    header = [
        "metric",
        "model",
        *[f"{c} ({base[c].get('count', '')} clips)" for c in cols],
        "direction",
        "what it means",
    ]
    ref, target, ext = m.get("reference", {}), m.get("target", {}), m.get("extractor") or {}
    held = ext.get("heldout") or {}
    lines = [table(header, rows)]
    lines += [f'<p class="muted">{esc(LABELS[c])}: {esc(base[c].get("description"))}</p>' for c in cols]
    if ext:
        lines.append(
            f"<p>Features: <code>{esc(ext.get('id'))}</code> (hash {esc(ext.get('hash'))}, "
            f"<code>{esc(json.dumps(ext.get('preprocessing')))}</code>), held-out digit accuracy "
            f"{esc(held.get('heldout_accuracy'))}, speaker accuracy {esc(held.get('heldout_speaker_accuracy'))} "
            f"({esc(held.get('heldout_split'))} split). Reference: {esc(ref.get('split'))} split ({esc(ref.get('count'))} "
            f"clips at {esc(ref.get('sample_rate'))} Hz, fingerprint {esc(ref.get('fingerprint'))}); model step "
            f"{esc(target.get('step'))}, EMA weights {esc(target.get('ema'))}. Numbers are comparable only when all "
            "of these match.</p>")  # fmt: skip
    lines += [f'<p class="warn">warning: {esc(w)}</p>' for w in m.get("warnings", [])]
    lines += [f'<p class="muted">skipped {esc(k)}: {esc(v)}</p>' for k, v in m.get("skipped", {}).items()]
    return "\n".join(lines)


def _memorisation(ctx: ReportContext) -> str:
    mem = (ctx.metrics or {}).get("memorisation")
    if not mem:
        return ('<p class="muted">No memorisation audit in the metrics (run <code>genforge eval</code> with a '
                "dataset that has a train split).</p>")  # fmt: skip
    spaces = [s for s, v in mem.items() if isinstance(v, dict) and "copy_rate" in v]
    rows = [[s, mem[s]["copy_rate"], mem[s]["expected_rate_if_generalising"], mem[s]["threshold"],
             mem[s]["sample_nn_distance_median"], mem[s]["heldout_nn_distance_median"], mem[s]["exact_copies"]]
            for s in spaces]  # fmt: skip
    out = [table(["space", "copy rate", "expected if generalising", "threshold", "median sample NN dist",
                   "median held-out NN dist", "exact copies"], rows),
           f"<p>A clip is flagged when it is closer to a training clip than the threshold "
           f"({esc(mem[spaces[0]]['calibration']) if spaces else ''}): in the evaluator's feature space "
           "(near copies) and in raw waveform space (literal copies).</p>"]  # fmt: skip
    pairs = ctx.metrics_path.parent / mem.get("pairs_file", "")
    rate = int((ctx.metrics or {}).get("reference", {}).get("sample_rate") or 0)
    if pairs.is_file() and rate:
        with np.load(pairs) as z:
            for s in spaces:
                if f"{s}_sample_images" not in z.files:
                    continue
                gen, train = z[f"{s}_sample_images"][:PAIRS_SHOWN], z[f"{s}_train_images"][:PAIRS_SHOWN]
                rows_html = []
                dist, flagged = z[f"{s}_distance"], z[f"{s}_flagged"]
                sample_idx, train_idx = z[f"{s}_sample_index"], z[f"{s}_train_index"]
                for i in range(len(gen)):
                    flag = ' <span class="flag">FLAGGED</span>' if flagged[i] else ""
                    rows_html.append(f"<tr><td>{esc(float(dist[i]))}{flag}</td>"
                                     f"<td>{clip_html(gen[i], rate, f'sample #{int(sample_idx[i])}')}</td>"
                                     f"<td>{clip_html(train[i], rate, f'train[{int(train_idx[i])}]')}</td></tr>")  # fmt: skip
                out.append(f"<h3>{esc(s)} space: the {len(gen)} closest samples</h3><table><tr><th>distance</th>"
                           "<th>generated</th><th>nearest training clip</th></tr>" + "".join(rows_html) + "</table>")  # fmt: skip
    return "\n".join(out)


def _data(ctx: ReportContext) -> str:
    page = ctx.dataset_dir / "report.html" if ctx.dataset_dir is not None else None
    link = (f'<p>The full data report (players, spectrograms, quarantine): <a href="{html.escape(page.resolve().as_uri())}">'
            f"{esc(page)}</a>.</p>" if page is not None and page.is_file() else "")  # fmt: skip
    return link + data_quality_section(ctx.dataset_dir)


REPORT_SECTIONS.register("audio", [
    Section("Samples beside real clips", _samples),
    Section("Metrics, with the real-data control and the memoriser floor", _metrics),
    Section("Training curves", lambda c: curves_section(c.run_dir)),
    Section("Memorisation audit: closest training clips", _memorisation),
    Section("Voices: target speaker, training clips, allow-list", voice_section),
    Section("Data quality of the training set", _data),
])  # fmt: skip
