"""The run report's sections for text runs (registered in `evaluate.report.REPORT_SECTIONS`).

Metrics (with what each means and the settings that make two reports comparable), the training
curves and the data quality findings (the image report's own sections), the completions of
`genforge eval` with every span copied verbatim from the training text marked, and the
memorisation numbers beside their held-out control.
"""

from __future__ import annotations

import html
from typing import Any

from genforge.evaluate.report import (
    REPORT_SECTIONS,
    ReportContext,
    Section,
    curves_section,
    esc,
    flatten,
    read_data_report,
    read_jsonl,
    table,
)
from genforge.evaluate.text.evaluation import OUTPUTS

PASSAGE_CHARS = 400  # of each split's sample passage in the data section
RATIO_GOAL = 2.0  # issue 12: the best run copies 50-character windows at most 2x as often as held-out text


def highlight(text: str, spans: list[list[int]] | list[tuple[int, int]]) -> str:
    """`text` HTML-escaped, each [start, end) span (sorted, disjoint) inside <mark>."""
    out, pos = [], 0
    for start, end in spans:
        out.append(html.escape(text[pos:start]))
        out.append(f"<mark>{html.escape(text[start:end])}</mark>")
        pos = end
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _no_metrics(ctx: ReportContext) -> str:
    return (f'<p class="warn">No {esc(ctx.metrics_path.name)}: run <code>genforge eval {esc(ctx.run_dir)} '
            f"--ref DATASET</code> first.</p>")  # fmt: skip


def _metrics(ctx: ReportContext) -> str:
    m = ctx.metrics
    if m is None:
        return _no_metrics(ctx)
    order = list(OUTPUTS)
    records = sorted(m["metrics"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
    rows = [[name, rec["value"], "reference value" if rec["better"] == "reference" else f"{rec['better']} is better",
             rec["meaning"], rec["n_samples"]] for name, rec in records]  # fmt: skip
    ref, target, cfg = m["reference"], m["target"], m.get("config", {})
    tok = ref.get("tokenizer") or {}
    lines = [
        table(["metric", "value", "direction", "what it means", "samples"], rows),
        f"<p>Reference: {esc(ref.get('split'))} split ({esc(ref.get('tokens'))} tokens, {esc(ref.get('chars'))} "
        f"characters, fingerprint {esc(ref.get('fingerprint'))}, tokenizer {esc(tok.get('kind'))} of "
        f"{esc(tok.get('vocab_size'))}); model step {esc(target.get('step'))}, EMA weights {esc(target.get('ema'))}; "
        f"samples: {esc(cfg.get('n'))} completions of up to {esc(cfg.get('max_tokens'))} tokens, temperature "
        f"{esc(cfg.get('temperature'))}, top-k {esc(cfg.get('top_k'))}, top-p {esc(cfg.get('top_p'))}, seed "
        f"{esc(cfg.get('seed'))}. Numbers are comparable only when all of these match.</p>",
    ]
    lines += [f'<p class="warn">warning: {esc(w)}</p>' for w in m.get("warnings", [])]
    lines += [f'<p class="muted">skipped {esc(k)}: {esc(v)}</p>' for k, v in m.get("skipped", {}).items()]
    return "\n".join(lines)


def _sample_rows(ctx: ReportContext) -> list[dict[str, Any]] | None:
    name = (ctx.metrics or {}).get("samples_file")
    path = ctx.metrics_path.parent / name if name else None
    return read_jsonl(path) if path is not None and path.is_file() else None


def _samples(ctx: ReportContext) -> str:
    if ctx.metrics is None:
        return _no_metrics(ctx)
    rows = _sample_rows(ctx)
    if rows is None:
        return f'<p class="warn">No samples file beside {esc(ctx.metrics_path)}: run <code>genforge eval</code> again.</p>'
    window = ctx.metrics.get("config", {}).get("window", 50)
    shown = rows[: ctx.n]
    out = [f"<p>{len(shown)} of {len(rows)} completions; the prompt (a held-out line start) in grey, every "
           f"{esc(window)}-character window found verbatim in the training text <mark>marked</mark>.</p>"]  # fmt: skip
    for r in shown:
        spans = r.get("copied_spans", [])
        note = (f"#{r['index']}: {len(r['text'])} characters, {esc(r.get('tokens'))} tokens, "
                f"{esc(r.get('copied_windows', 0))} of {esc(r.get('windows', 0))} windows copied, "
                f"longest verbatim span {esc(r.get('longest_copied_span'))} characters")  # fmt: skip
        prompt = f'<span class="prompt">{html.escape(r.get("prompt", ""))}</span>' if r.get("prompt") else ""
        out.append(f'<p class="muted">{note}</p><pre class="sample">{prompt}{highlight(r["text"], spans)}</pre>')
    return "\n".join(out)


def _memorisation(ctx: ReportContext) -> str:
    m = ctx.metrics
    if m is None:
        return _no_metrics(ctx)
    v = m["values"]
    rec = m["metrics"].get("copied_window_rate")
    if rec is None:
        why = m.get("skipped", {}).get("memorisation", "no samples long enough")
        return f'<p class="muted">No memorisation numbers: {esc(why)}.</p>'
    d = rec["details"]
    rows = [
        ["copied 50-character windows", v.get("copied_window_rate"), v.get("copied_window_rate_control")],
        ["windows (copied / all)", f"{d['copied_windows']} / {d['sample_windows']}",
         f"{d['control_copied_windows']} / {d['control_windows']}"],
        ["longest verbatim span, max", v.get("longest_copied_span"), v.get("longest_copied_span_control")],
        ["longest verbatim span, median", v.get("longest_copied_span_median"),
         v.get("longest_copied_span_control_median")],
    ]  # fmt: skip
    ratio = v.get("copied_window_ratio")
    verdict = "" if ratio is None else (
        f'<p class="{"flag" if ratio > RATIO_GOAL else "muted"}">Copy ratio {ratio:.3g} (samples / held-out, the '
        f"held-out rate floored at one window): {'above' if ratio > RATIO_GOAL else 'within'} the goal of "
        f"{RATIO_GOAL:g}x.</p>"
    )  # fmt: skip
    return "\n".join([
        table(["", "samples", "held-out control"], rows),
        f"<p>The control is the held-out split itself: its windows found in the training text (all "
        f"{esc(d['control_windows'])} of them), and the longest spans of {esc(d['control_passages'])} held-out "
        f"passages as long as the samples. {esc(d['samples_with_copies'])} samples copy at least one window.</p>",
        verdict,
    ])  # fmt: skip


def _data(ctx: ReportContext) -> str:
    """The text data report's summary, leakage shares, notes and a passage of each split, with a
    link to its own HTML page (length histograms, vocabulary, duplicates, PII)."""
    rep, head = read_data_report(ctx.dataset_dir)
    if rep is None:
        return head
    out = []
    page = ctx.dataset_dir / "report.html"
    if page.is_file():
        out.append(f'<p>The full data report: <a href="{html.escape(page.resolve().as_uri())}">{esc(page)}</a>.</p>')
    out.append(head)
    if isinstance(rep.get("leakage"), dict) and rep["leakage"]:
        out.append("<h3>Train/held-out leakage (verbatim windows and word n-grams found in train)</h3>"
                   + table(["finding", "value"], flatten("", rep["leakage"])))  # fmt: skip
    for note in rep.get("notes", []):
        text = note.get("note", note) if isinstance(note, dict) else note
        out.append(f'<p class="warn">{esc(text)}</p>')
    for split, passages in (rep.get("samples") or {}).items():
        for p in passages[:1]:
            out.append(f'<p class="muted">A passage of {esc(split)} ({esc(p.get("origin"))}):</p>'
                       f'<pre class="sample">{html.escape(str(p.get("text", ""))[:PASSAGE_CHARS])}</pre>')  # fmt: skip
    return "\n".join(out)


REPORT_SECTIONS.register("text", [
    Section("Metrics", _metrics),
    Section("Training curves", lambda c: curves_section(c.run_dir)),
    Section("Samples with copied spans highlighted", _samples),
    Section("Memorisation: verbatim copies from the training text", _memorisation),
    Section("Data quality of the training set", _data),
])  # fmt: skip
