"""`genforge eval` on text: a run directory (or a file of samples) against a text dataset.

What it measures, and on what:
- likelihood (run directories only): the model's nats per token over the whole reference split
  (val, else test), perplexity, and bits per character of that split's text;
- samples: `n` completions (default 64) of `max_tokens` tokens (default 256) at temperature 1,
  no top-k/top-p: the model's own distribution, not a tuned sampler. Each is prompted with the
  start of a held-out line (up to `prompt_chars`, cut at a word boundary; `prompt_chars: 0` gives
  empty prompts), the lines drawn with `seed`, so the prompts are text the model never trained
  on and the set depends only on (n, seed). Metrics read the completions only, never the prompts;
- diversity: distinct-1/2/3 over whitespace tokens, self-BLEU (sacrebleu);
- memorisation: the share of the completions' 50-character windows found verbatim in the train
  split, the longest verbatim span per completion, and the same for the held-out text as the
  control (all its windows for the rate; passages as long as the completions for the spans).

metrics.json has the images' shape (`format`, `target`, `reference`, `config`, flat `values` for
scenario gates, `metrics` records with details, `skipped`, `warnings`, `timing`); the
completions and their copied spans go to a sidecar, `<metrics stem>.samples.jsonl`, which
`genforge report` highlights.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.atomic import atomic_files, write_json, write_text
from genforge.core.config import from_dict, to_dict
from genforge.core.errors import ConfigError, DataError, GenforgeError
from genforge.data.canonical import open_dataset
from genforge.evaluate.evaluate import EVALUATIONS, FORMAT, EvalConfig, default_out
from genforge.evaluate.text import metrics as tm
from genforge.evaluate.text.overlap import SpanStats, TrainIndex, codes_of, window_rate
from genforge.train.privacy import metric_values

DEFAULT_N = 64
SAMPLE_SEPARATOR = "<|endoftext|>"  # between samples in a .txt samples file (GPT-2's document separator)
SAMPLES_SUFFIX = ".samples.jsonl"
# a loss batch holds at most this many logits (floats) and this many tokens: bounded memory
# whatever the vocabulary (a BPE vocabulary of 50k makes logits the big tensor)
LOGITS_PER_BATCH = 1 << 24
TOKENS_PER_BATCH = 1 << 14


@dataclass
class TextEvalConfig:
    n: int = DEFAULT_N  # completions drawn (or at most used, from a samples file)
    seed: int = 0
    split: str | None = None  # reference split; default val, else test
    max_tokens: int = 256
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    prompt_chars: int = 32  # 0: empty prompts
    window: int = 50  # characters per memorisation window
    self_bleu_samples: int = 16  # hypotheses scored (each against all other samples); 0 = all
    loss_stride: int | None = None  # None: non-overlapping windows of block_size tokens

    def __post_init__(self) -> None:
        checks = {"n": self.n >= 2, "max_tokens": self.max_tokens >= 1, "temperature": self.temperature >= 0,
                  "prompt_chars": self.prompt_chars >= 0, "window": self.window >= 1,
                  "self_bleu_samples": self.self_bleu_samples >= 0}  # fmt: skip
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{name} out of range: {getattr(self, name)}")

    @classmethod
    def from_eval(cls, config: EvalConfig) -> TextEvalConfig:
        """The text settings of `config`: its n, seed and split, and `options` for the rest."""
        clash = sorted(set(config.options) & {"n", "seed", "split"})
        if clash:
            raise ConfigError(f"eval options: {', '.join(clash)} belong to EvalConfig itself (-n, --seed, --split)")
        data = {**config.options, "n": config.n or DEFAULT_N, "seed": config.seed, "split": config.split}
        return from_dict(cls, data, where="eval options")


# every value in metrics.json: group, which direction is better ("reference" for the held-out
# controls a value is compared with), and what it means (the report prints these lines)
OUTPUTS: dict[str, tuple[str, str, str]] = {
    "val_loss": ("likelihood", "lower", "mean negative log-likelihood of the reference split, nats per token"),
    "perplexity": ("likelihood", "lower", "exp(val_loss): the effective number of equally likely next tokens"),
    "bits_per_char": ("likelihood", "lower", "the split's total nats / ln 2 / its characters: comparable across tokenisers"),
    "distinct_1": ("diversity", "higher", "distinct words / words over all samples (whitespace tokens)"),
    "distinct_2": ("diversity", "higher", "distinct word bigrams / bigrams over all samples"),
    "distinct_3": ("diversity", "higher", "distinct word trigrams / trigrams over all samples"),
    "self_bleu": ("diversity", "lower", "mean BLEU (0-100) of a sample against all the others: high = samples repeat each other"),
    "copied_window_rate": ("memorisation", "lower", "share of the samples' 50-character windows found verbatim in the train text"),
    "copied_window_rate_control": ("memorisation", "reference", "the same share for the held-out text: what unseen text of the corpus scores"),
    "copied_window_ratio": ("memorisation", "lower", "copied_window_rate / control (the control floored at one window): 1 = copies like unseen text"),
    "longest_copied_span": ("memorisation", "lower", "longest verbatim span from the train text in any sample, characters"),
    "longest_copied_span_median": ("memorisation", "lower", "median over samples of each one's longest verbatim span"),
    "longest_copied_span_control": ("memorisation", "reference", "the longest span for held-out passages as long as the samples"),
    "longest_copied_span_control_median": ("memorisation", "reference", "median of the held-out passages' longest spans"),
    # the membership-inference audit (evaluate/privacy/text.py): the model's loss on train windows vs held-out ones
    "mia_auc": ("membership", "lower", "ROC AUC of the loss attack, train windows (members) against held-out ones: 0.5 = chance"),
    "mia_tpr_at_1fpr": ("membership", "lower", "true-positive rate of the loss attack at 1% false positives: 0.01 = chance"),
}  # fmt: skip


@dataclass
class TextSamples:
    texts: list[str]  # what the model generated (completions without their prompts)
    prompts: list[str]
    tokens: list[int | None]  # generated tokens per sample (None when unknown)
    finish: list[str | None]
    source: dict[str, Any]  # kind, path, model, step, ema


def line_prompts(text: str, n: int, max_chars: int, seed: int) -> list[str]:
    """n prompts: the starts of non-blank lines of `text` drawn with `seed`, each cut to its
    line (the line break kept) or, when longer than max_chars, to its last whole word within."""
    if max_chars == 0:
        return [""] * n
    codes = codes_of(text)
    starts = np.concatenate([[0], np.flatnonzero(codes == ord("\n")) + 1])
    starts = [int(s) for s in starts if s < len(text) and not text[s].isspace()]
    if not starts:
        return [""] * n
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(starts), n, replace=n > len(starts))
    out = []
    for k in picks.tolist():
        piece = text[starts[k] : starts[k] + max_chars + 1]
        line_end = piece.find("\n")
        if 0 <= line_end < max_chars:
            out.append(piece[: line_end + 1])
            continue
        piece = piece[:max_chars]
        cut = max(piece.rfind(" "), piece.rfind("\t"))
        out.append((piece[:cut] if cut > 0 else piece).rstrip())
    return out


def read_samples_file(path: Path, n: int) -> TextSamples:
    """Samples from a .jsonl (one object per line with a string field 'text', optional 'prompt')
    or a .txt (samples separated by lines holding only <|endoftext|>; none: one sample)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read samples ({exc})") from None
    texts: list[str] = []
    prompts: list[str] = []
    if path.suffix == ".jsonl":
        for lineno, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc})") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise DataError(f"{path}:{lineno}: expected an object with a string field 'text'")
            texts.append(row["text"])
            prompts.append(str(row.get("prompt", "")))
    else:
        texts = [p.strip("\n") for p in raw.split(SAMPLE_SEPARATOR)]
        texts = [t for t in texts if t]
        prompts = [""] * len(texts)
    if len(texts) < 2:
        raise DataError(f"{path}: {len(texts)} sample(s); the diversity metrics need at least 2")
    texts, prompts = texts[:n], prompts[:n]
    source = {"kind": path.suffix.lstrip("."), "path": str(path.resolve()), "step": None, "ema": None}
    return TextSamples(texts, prompts, [None] * len(texts), [None] * len(texts), source)


def generate_samples(pipe: Any, prompts: list[str], cfg: TextEvalConfig) -> TextSamples:
    completions = pipe.complete(prompts, n=1, max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                                top_k=cfg.top_k, top_p=cfg.top_p, seed=cfg.seed)  # fmt: skip
    info = pipe.info
    source = {"kind": "run", "path": str(Path(pipe.path).resolve()), "model": info.get("model"),
              "family": info.get("family"), "step": info.get("step"), "ema": info.get("ema"),
              "privacy": info.get("privacy")}  # fmt: skip
    return TextSamples([c.text for c in completions], prompts, [c.n_tokens for c in completions],
                       [c.finish_reason for c in completions], source)  # fmt: skip


def reference_tokens(pipe: Any, dataset: Any, split: Any) -> tuple[np.ndarray, str]:
    """The split's tokens under the run's tokenizer: the dataset's own when the run trained with
    the same tokenizer, else the split's text encoded again (so a char run and a BPE run are
    scored on the same characters)."""
    from genforge.data.text.tokenizer import tokenizer_hash

    if tokenizer_hash(pipe.tokenizer) == dataset.manifest.get("tokenizer", {}).get("hash"):
        return np.asarray(split.tokens), "the dataset's tokens"
    return np.asarray(pipe.tokenizer.encode_array(split.text)), "the split's text encoded with the run's tokenizer"


def likelihood(pipe: Any, dataset: Any, split: Any, cfg: TextEvalConfig) -> tuple[dict[str, float], dict[str, Any]]:
    tokens, origin = reference_tokens(pipe, dataset, split)
    if len(tokens) < 2:
        raise DataError(f"{dataset.path}: split {split.name!r} holds {len(tokens)} token(s); the loss needs 2")
    block = pipe.block_size
    vocab = int(pipe.model.config.vocab_size)
    batch = max(1, min(LOGITS_PER_BATCH // (block * vocab), TOKENS_PER_BATCH // block))
    pipe.model.eval()
    total, scored = tm.split_nll(pipe.model.nll, tokens, block, cfg.loss_stride, batch)
    values = tm.likelihood_summary(total, scored, len(tokens), split.chars)
    details = {"total_nats": total, "scored_tokens": scored, "split_tokens": len(tokens), "split_chars": split.chars,
               "block_size": block, "stride": cfg.loss_stride or block, "tokens_from": origin,
               "note": "token 0 has no context and is not scored; bits per character take nats/token * "
                       "split tokens / split characters / ln 2"}  # fmt: skip
    return values, details


def control_passages(text: str, lengths: list[int], seed: int) -> list[str]:
    """Held-out passages as long as the samples, at offsets drawn with `seed`."""
    rng = np.random.default_rng(seed + 1)
    out = []
    for length in lengths:
        length = min(length, len(text))
        start = int(rng.integers(0, len(text) - length + 1))
        out.append(text[start : start + length])
    return out


def memorisation(texts: list[str], train_text: str, heldout_text: str, cfg: TextEvalConfig
                 ) -> tuple[dict[str, float], dict[str, Any], list[SpanStats], list[str]]:  # fmt: skip
    index = TrainIndex(train_text, cfg.window)
    control = index.stats([heldout_text], longest=False)
    # one call for samples and held-out passages: the span search shares its per-length tables
    passages = control_passages(heldout_text, [len(t) for t in texts], cfg.seed)
    both = index.stats(texts + passages)
    stats, controls = both[: len(texts)], both[len(texts) :]
    rate, copied, windows = window_rate(stats)
    c_rate, c_copied, c_windows = window_rate(control)
    warnings = []
    values: dict[str, float] = {}
    if rate is None:
        warnings.append(f"no sample is {cfg.window} characters long: no copied-window rate")
    else:
        values["copied_window_rate"] = rate
    if c_rate is not None:
        values["copied_window_rate_control"] = c_rate
        if rate is not None:
            # no held-out window in train (tinyshakespeare: 0 of 111,491) would make the ratio
            # infinite for one copy; the control's resolution, one window, is its floor
            values["copied_window_ratio"] = rate / max(c_rate, 1 / c_windows)
    longest = [s.longest for s in stats]
    c_longest = [s.longest for s in controls]
    values.update({"longest_copied_span": max(longest), "longest_copied_span_median": float(np.median(longest)),
                   "longest_copied_span_control": max(c_longest),
                   "longest_copied_span_control_median": float(np.median(c_longest))})  # fmt: skip
    details = {"window": cfg.window, "sample_windows": windows, "copied_windows": copied,
               "control_windows": c_windows, "control_copied_windows": c_copied,
               "samples_with_copies": sum(s.copied > 0 for s in stats),
               "control_passages": len(controls), "train_chars": len(train_text),
               "heldout_chars": len(heldout_text)}  # fmt: skip
    return values, details, stats, warnings


def diversity(texts: list[str], cfg: TextEvalConfig) -> tuple[dict[str, float], dict[str, Any], list[str]]:
    values: dict[str, float] = {}
    warnings: list[str] = []
    for k in (1, 2, 3):
        d = tm.distinct_n(texts, k)
        if d is None:
            warnings.append(f"distinct_{k}: the samples hold no {k}-gram of whitespace tokens")
        else:
            values[f"distinct_{k}"] = d
    score, scored = tm.self_bleu(texts, cfg.self_bleu_samples or None, cfg.seed)
    values["self_bleu"] = score
    details = {"tokens": "whitespace (str.split) for distinct-n", "self_bleu_tokenize": tm.SELF_BLEU_TOKENIZE,
               "self_bleu_hypotheses": len(scored), "self_bleu_references": len(texts) - 1,
               "self_bleu_note": "sacrebleu sentence BLEU, effective order; comparable only at equal sample counts"}  # fmt: skip
    return values, details, warnings


def _load_target(target: Path, cfg: TextEvalConfig, heldout_text: str) -> tuple[Any, TextSamples]:
    """(the run's pipeline or None, samples) for a run directory or a samples file."""
    if target.is_dir():
        from genforge.models.pipeline import load_pipeline

        pipe = load_pipeline(target)  # evaluate() has checked that it is a text model
        prompts = line_prompts(heldout_text, cfg.n, cfg.prompt_chars, cfg.seed)
        return pipe, generate_samples(pipe, prompts, cfg)
    if target.is_file() and target.suffix in (".jsonl", ".txt"):
        return None, read_samples_file(target, cfg.n)
    raise GenforgeError(f"{target}: expected a run directory (with model.json), or samples as .jsonl or .txt")


def _records(values: dict[str, float], details: dict[str, dict], seconds: dict[str, float],
             context: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    out = {}
    for name, value in values.items():
        group, better, meaning = OUTPUTS[name]
        out[name] = {"value": value, "metric": group, "better": better, "meaning": meaning,
                     "details": details[group], "warnings": [], "seconds": seconds[group], **context}  # fmt: skip
    return out


def samples_path(metrics_path: Path) -> Path:
    return metrics_path.with_name(metrics_path.stem + SAMPLES_SUFFIX)


@EVALUATIONS.register("text")
def evaluate_text(target: str | Path, ref: str | Path, config: EvalConfig,
                  out: str | Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Text: likelihood of the reference split, diversity and memorisation of samples."""
    t0 = time.perf_counter()
    cfg = TextEvalConfig.from_eval(config)
    target = Path(target)
    dataset = open_dataset(ref)
    split = dataset.split(cfg.split) if cfg.split else dataset.reference_split
    pipe, samples = _load_target(target, cfg, split.text)
    t_samples = time.perf_counter() - t0
    values: dict[str, float] = {}
    details: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    # image options a user may pass out of habit: say they did nothing rather than drop them silently
    warnings = [f"{name}: an image option, ignored for text" for name in ("features", "metrics") if getattr(config, name)]
    skipped: dict[str, str] = {}

    def timed(group: str, fn: Any, *args: Any) -> Any:
        start = time.perf_counter()
        result = fn(*args)
        seconds[group] = round(time.perf_counter() - start, 3)
        return result

    if pipe is not None:
        v, details["likelihood"] = timed("likelihood", likelihood, pipe, dataset, split, cfg)
        values.update(v)
    else:
        skipped["likelihood"] = "needs a run directory (a samples file has no model to score the split)"
    v, details["diversity"], w = timed("diversity", diversity, samples.texts, cfg)
    values.update(v)
    warnings += w
    stats: list[SpanStats] = []
    if not config.memorisation:
        skipped["memorisation"] = "turned off (--no-memorisation)"
    elif "train" in dataset.split_names and split.name != "train":
        v, details["memorisation"], stats, w = timed(
            "memorisation", memorisation, samples.texts, dataset.train_split.text, split.text, cfg
        )
        values.update(v)
        warnings += w
    else:
        skipped["memorisation"] = f"needs a train split beside the reference split {split.name!r}"
    if pipe is None:
        skipped["membership"] = "needs a run directory (the audit scores records with the model's loss)"
    elif not config.membership.enabled:
        skipped["membership"] = "turned off (--no-mia)"
    elif "train" in dataset.split_names and split.name != "train":
        from genforge.evaluate.privacy.text import text_membership

        res = timed("membership", text_membership, pipe, dataset, split.name, config.membership, cfg.seed)
        values.update({k: v for k, v in res.values.items() if k in OUTPUTS})
        details["membership"] = res.details
        warnings += res.warnings
    else:
        skipped["membership"] = f"needs a train split beside the reference split {split.name!r}"
    short = sum(len(t) < cfg.window for t in samples.texts)
    if short:
        warnings.append(f"{short} of {len(samples.texts)} samples are shorter than {cfg.window} characters")
    out_path = Path(out) if out else default_out(target)
    tokenizer = {k: dataset.manifest.get("tokenizer", {}).get(k) for k in ("kind", "vocab_size", "hash")}
    context = {"n_samples": len(samples.texts), "reference_split": split.name,
               "reference_fingerprint": dataset.fingerprint, "model_step": samples.source.get("step"),
               "ema": samples.source.get("ema"), "seed": cfg.seed}  # fmt: skip
    rows = [{"index": i, "prompt": p, "text": t, "tokens": n, "finish_reason": f,
             **(stats[i].to_dict() if stats else {})}
            for i, (p, t, n, f) in enumerate(zip(samples.prompts, samples.texts, samples.tokens, samples.finish,
                                                 strict=True))]  # fmt: skip
    sidecar = samples_path(out_path)
    chars = [len(t) for t in samples.texts]
    result: dict[str, Any] = {
        "format": FORMAT,
        "modality": "text",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "target": samples.source,
        "reference": {"dataset": str(Path(ref).resolve()), "split": split.name, "fingerprint": dataset.fingerprint,
                      "count": len(split), "tokens": len(split), "chars": split.chars, "tokenizer": tokenizer},  # fmt: skip
        "config": to_dict(cfg),
        # a differentially private run's guarantee (model.json `privacy`) beside its metrics
        "values": {**values, **metric_values(samples.source.get("privacy"))},
        "privacy": samples.source.get("privacy"),
        "metrics": _records(values, details, seconds, context),
        "skipped": skipped,
        "warnings": warnings,
        "samples_file": sidecar.name,
        "samples_summary": {"count": len(chars), "chars_mean": float(np.mean(chars)) if chars else 0.0,
                            "prompts": "held-out line starts" if cfg.prompt_chars else "empty"},  # fmt: skip
    }
    result["timing"] = {"samples_s": round(t_samples, 3), **{f"{k}_s": v for k, v in seconds.items()},
                        "total_s": round(time.perf_counter() - t0, 3)}  # fmt: skip
    # the samples and metrics.json replace the previous pair together (a full disk: neither)
    with atomic_files(out_path.parent, out_path.name) as stage:
        write_text(stage / sidecar.name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        write_json(stage / out_path.name, result)
    return result

