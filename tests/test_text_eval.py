"""Evaluating text: metrics against references (sacrebleu, brute force, arithmetic), `genforge eval`
on a tiny trained gpt run and on samples files, and the text report."""

from __future__ import annotations

import json
import math
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from genforge.cli import app
from genforge.core.errors import ConfigError, DataError, GenforgeError
from genforge.evaluate.evaluate import EvalConfig, evaluate
from genforge.evaluate.report import write_report
from genforge.evaluate.text import overlap
from genforge.evaluate.text.evaluation import line_prompts
from genforge.evaluate.text.metrics import (
    distinct_n,
    likelihood_summary,
    loss_windows,
    self_bleu,
    split_nll,
)
from genforge.evaluate.text.overlap import TrainIndex, window_rate
from genforge.evaluate.text.report import highlight
from test_eval_fixtures import squares_dataset as image_dataset

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"
WORDS = ("the king queen sword love night day my lord good sir heart death thou art and of to with fair "
         "speak now come hence where what noble blood crown grace").split()  # fmt: skip


def corpus(seed: int, lines: int) -> str:
    """Play-like text: speaker lines and random sentences, few long repeats."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(lines):
        out.append(rng.choice(["KING:", "QUEEN:", "LORD:"]))
        out.append(" ".join(rng.choice(WORDS, int(rng.integers(4, 12)))).capitalize() + ".")
    return "\n".join(out) + "\n"


# --- diversity ---------------------------------------------------------------------------------


def test_distinct_n_on_hand_made_samples() -> None:
    samples = ["a b a b", "c d"]
    # words a b a b c d: 4 distinct of 6; bigrams (a b) (b a) (a b) (c d): 3 of 4; no bigram spans samples
    assert distinct_n(samples, 1) == pytest.approx(4 / 6)
    assert distinct_n(samples, 2) == pytest.approx(3 / 4)
    assert distinct_n(samples, 3) == pytest.approx(2 / 2)
    assert distinct_n(["x x x x"], 1) == pytest.approx(1 / 4)
    assert distinct_n(["one", "two"], 2) is None


def test_self_bleu_matches_sacrebleu_called_directly() -> None:
    import sacrebleu

    samples = ["the cat sat on the mat .", "the cat sat on a hat !", "a dog ran in the park today",
               "the cat sat on the mat .", "nothing in common here"]  # fmt: skip
    score, idx = self_bleu(samples)
    expected = [
        sacrebleu.sentence_bleu(s, samples[:i] + samples[i + 1 :]).score for i, s in enumerate(samples)
    ]
    assert idx == list(range(5))
    assert score == pytest.approx(np.mean(expected), abs=1e-9)
    assert expected[0] == pytest.approx(100.0)  # an exact repeat of another sample
    assert self_bleu(["same words here", "same words here"])[0] == pytest.approx(100.0)
    sub, chosen = self_bleu(samples, max_hypotheses=2, seed=3)
    assert len(chosen) == 2 and sub == pytest.approx(np.mean([expected[i] for i in chosen]), abs=1e-9)
    assert self_bleu(samples, max_hypotheses=2, seed=3) == (sub, chosen)


# --- memorisation ------------------------------------------------------------------------------


def brute_force(train: str, passage: str, w: int) -> tuple[int, int, set[int], int]:
    windows = {train[i : i + w] for i in range(len(train) - w + 1)}
    starts = {i for i in range(len(passage) - w + 1) if passage[i : i + w] in windows}
    longest = 0
    for i in range(len(passage)):
        while i + longest < len(passage) and passage[i : i + longest + 1] in train:
            longest += 1
    return max(len(passage) - w + 1, 0), len(starts), starts, longest


def planted(rng: np.random.Generator, train: str, alphabet: str, length: int, copies: list[int]) -> str:
    text = "".join(rng.choice(list(alphabet), length))
    for size in copies:  # splice in verbatim pieces of train at random places
        src, dst = int(rng.integers(0, len(train) - size)), int(rng.integers(0, len(text) - size))
        text = text[:dst] + train[src : src + size] + text[dst + size :]
    return text


@pytest.mark.parametrize("seed,w", [(0, 50), (1, 50), (2, 12), (3, 5)])
def test_copied_windows_and_longest_span_match_brute_force(seed: int, w: int) -> None:
    rng = np.random.default_rng(seed)
    alphabet = "abcde \n"  # a small alphabet: short chance matches happen, long ones do not
    train = "".join(rng.choice(list(alphabet), 3000))
    passages = [planted(rng, train, alphabet, 300, c) for c in ([], [w], [w + 37], [w - 1, 2 * w], [120, 60])]
    passages += ["", "abc", train[:w], train[100 : 100 + w + 20] + train[500 : 500 + w + 3]]
    stats = TrainIndex(train, w).stats(passages)
    total = copied = 0
    for p, st in zip(passages, stats, strict=True):
        windows, n_copied, starts, longest = brute_force(train, p, w)
        assert (st.windows, st.copied, st.longest) == (windows, n_copied, longest), p[:40]
        assert st.spans == overlap.merge_windows(np.array(sorted(starts), dtype=np.int64), w)
        covered = {c for s, e in st.spans for c in range(s, e)}
        assert covered == {c for s in starts for c in range(s, s + w)}
        if longest:
            s, e = st.longest_at
            assert e - s == longest and p[s:e] == train[st.longest_train_at : st.longest_train_at + longest]
        total, copied = total + windows, copied + n_copied
    assert window_rate(stats) == (copied / total, copied, total)
    assert stats[2].longest >= w + 37 and stats[-2].longest == w and stats[-2].copied == 1


def test_longest_span_follows_every_occurrence_of_a_repeated_window() -> None:
    # "ABCDE" occurs twice in train with different continuations: each passage continues one of
    # them, so the longest span needs the right occurrence, whichever the index lists first
    train = "zzzzABCDE1xxxxxqqqqqqABCDE2yyyyyqqqq"
    passages = ["..ABCDE1xxxxx..", "..ABCDE2yyyyy.."]
    stats = TrainIndex(train, 5).stats(passages)
    assert [s.longest for s in stats] == [11, 11]
    assert [train[s.longest_train_at : s.longest_train_at + 11] for s in stats] == [
        "ABCDE1xxxxx",
        "ABCDE2yyyyy",
    ]


def test_exact_when_every_window_hash_collides(monkeypatch) -> None:
    # base 1 makes a window's hash the sum of its code points: anagrams collide everywhere, and
    # only the character-by-character check keeps the counts right
    from genforge.data.text import overlap as hashing

    monkeypatch.setattr(hashing, "_B", np.uint64(1))
    monkeypatch.setattr(hashing, "_B_INV", np.uint64(1))
    rng = np.random.default_rng(7)
    train = "".join(rng.choice(list("ab"), 400))
    passages = [planted(rng, train, "ab", 120, [15]), "".join(rng.choice(list("ab"), 90))]
    for p, st in zip(passages, TrainIndex(train, 10).stats(passages), strict=True):
        windows, n_copied, _starts, longest = brute_force(train, p, 10)
        assert (st.windows, st.copied, st.longest) == (windows, n_copied, longest)


def test_tinyshakespeare_control_rate_matches_a_set_of_slices() -> None:
    if not SHAKESPEARE.is_file():
        pytest.skip(f"real data not available: {SHAKESPEARE} is absent")
    text = SHAKESPEARE.read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)  # nanoGPT's position split
    train, val = text[:cut], text[cut:]
    start = time.perf_counter()
    index = TrainIndex(train)
    st = index.stats([val], longest=False)[0]
    seconds = time.perf_counter() - start
    windows = {train[i : i + 50] for i in range(len(train) - 49)}
    expected = sum(val[i : i + 50] in windows for i in range(len(val) - 49))
    assert (st.windows, st.copied) == (len(val) - 49, expected)
    planted_copy = val[:200] + train[5000:5300] + val[200:400]
    assert index.stats([planted_copy])[0].longest >= 300
    assert seconds < 20  # about 0.2 s on one core; the bound only catches a pathological slowdown


# --- likelihood --------------------------------------------------------------------------------


@pytest.mark.parametrize("n_tokens", [2, 9, 64, 65, 101])
@pytest.mark.parametrize("stride", [None, 1, 3, 8])
def test_loss_windows_score_every_target_once(n_tokens: int, stride: int | None) -> None:
    tokens = np.arange(1, n_tokens + 1, dtype=np.int64) * 7 % 1000

    def target_as_nats(batch: torch.Tensor) -> torch.Tensor:  # "loss" = the target id itself
        return batch[:, 1:].double()

    total, scored = split_nll(target_as_nats, tokens, block_size=8, stride=stride, batch_size=3)
    assert scored == n_tokens - 1 and total == float(tokens[1:].sum())
    windows = loss_windows(n_tokens, 8, stride)
    assert all(w.end - w.start <= 9 for w in windows)
    if stride is not None and stride < 8:
        # every prediction after the first window keeps at least block - stride tokens of context
        assert all(w.skip >= 8 - stride for w in windows[1:])


def test_uniform_logits_give_ln_v_nats_per_token() -> None:
    vocab = 37
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocab, 500)

    def uniform(batch: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*batch[:, :-1].shape, vocab)
        return F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].reshape(-1), reduction="none").view(
            len(batch), -1
        )

    total, scored = split_nll(uniform, tokens, block_size=16)
    assert total / scored == pytest.approx(math.log(vocab), rel=1e-6)
    chars = likelihood_summary(total, scored, n_tokens=500, n_chars=500)  # one character per token
    assert chars["bits_per_char"] == pytest.approx(math.log2(vocab), rel=1e-6)
    assert chars["perplexity"] == pytest.approx(vocab, rel=1e-5)
    bpe = likelihood_summary(total, scored, n_tokens=500, n_chars=2000)  # 4 characters per token
    assert bpe["bits_per_char"] == pytest.approx(math.log2(vocab) / 4, rel=1e-6)
    assert bpe["val_loss"] == pytest.approx(math.log(vocab), rel=1e-6)


# --- runs and the CLI --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> tuple[Path, Path]:
    """A text dataset ingested from one file (position split, as nanoGPT) and a gpt trained 40 steps."""
    root = tmp_path_factory.mktemp("text")
    (root / "plays.txt").write_text(corpus(0, 700))
    runner = CliRunner()
    res = runner.invoke(app, ["data", "ingest", str(root / "plays.txt"), "--out", str(root / "ds"),
                              "--split-by", "position", "--threads", "1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [
        "train", "--model", "gpt", "--data", str(root / "ds"), "--out", str(root / "run"), "--steps", "40",
        "-b", "16", "--threads", "1", "--set", "model.block_size=32", "--set", "model.n_layer=1",
        "--set", "model.n_head=2", "--set", "model.n_embd=32", "--set", "model.lr=0.003",
        "--set", "model.warmup_steps=5", "--set", "train.log_every=10", "--set", "train.tensorboard=false",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    return root / "run", root / "ds"


def test_line_prompts_are_held_out_line_starts() -> None:
    text = "KING:\nThe crown is mine and none shall take it from me today.\n\n  indented\nQUEEN:\n"
    prompts = line_prompts(text, 20, 32, seed=4)
    assert prompts == line_prompts(text, 20, 32, seed=4) and len(prompts) == 20
    assert set(prompts) <= {"KING:\n", "QUEEN:\n", "The crown is mine and none"}
    assert len(set(prompts)) == 3  # blank and indented lines are never prompts
    assert line_prompts(text, 3, 0, seed=0) == ["", "", ""]


def test_eval_cli_on_a_trained_run(text_run) -> None:
    run, ds = text_run
    res = CliRunner().invoke(
        app, ["eval", str(run), "--ref", str(ds), "-n", "6", "--seed", "3", "--threads", "1"]
    )
    assert res.exit_code == 0, res.output
    assert "bits_per_char" in res.output and "copied_window_rate" in res.output
    m = json.loads((run / "metrics.json").read_text())
    v = m["values"]
    for key in (
        "val_loss",
        "bits_per_char",
        "perplexity",
        "distinct_1",
        "distinct_2",
        "distinct_3",
        "self_bleu",
        "copied_window_rate",
        "copied_window_rate_control",
        "copied_window_ratio",
        "longest_copied_span",
        "mia_auc",
        "mia_tpr_at_1fpr",
    ):
        assert isinstance(v[key], float | int) and math.isfinite(v[key]), key
    assert 0.0 <= v["mia_auc"] <= 1.0 and m["metrics"]["mia_auc"]["details"]["window_tokens"] > 1
    vocab = json.loads((ds / "manifest.json").read_text())["tokenizer"]["vocab_size"]
    assert v["val_loss"] < math.log(vocab) - 0.3  # 40 steps learn the character frequencies at least
    assert v["perplexity"] == pytest.approx(math.exp(v["val_loss"]))
    assert v["bits_per_char"] == pytest.approx(v["val_loss"] / math.log(2))  # char tokens: 1 per character
    lik = m["metrics"]["val_loss"]["details"]
    assert lik["scored_tokens"] == lik["split_tokens"] - 1 and lik["tokens_from"] == "the dataset's tokens"
    assert m["target"]["kind"] == "run" and m["target"]["step"] == 40 and m["reference"]["split"] == "val"
    rows = [json.loads(line) for line in (run / "metrics.samples.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["tokens"] == 256 and r["prompt"] for r in rows)
    # deterministic per seed: the same samples and numbers again, different ones for another seed
    again = evaluate(run, ds, EvalConfig(n=6, seed=3), out=run / "again.json")
    assert again["values"] == v
    assert [json.loads(x)["text"] for x in (run / "again.samples.jsonl").read_text().splitlines()] == [
        r["text"] for r in rows
    ]
    other = evaluate(run, ds, EvalConfig(n=6, seed=4), out=run / "other.json")
    assert other["values"]["self_bleu"] != v["self_bleu"]
    res = CliRunner().invoke(app, ["report", str(run), "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert (run / "report.html").read_text().count('<pre class="sample"><span class="prompt">') == 6


def test_uniform_gpt_scores_ln_v_through_eval(text_run, tmp_path) -> None:
    """A gpt whose logits are all equal (tied embedding zeroed) costs exactly ln V nats per token."""
    from genforge.models.pipeline import load_pipeline, save_model

    run, ds = text_run
    pipe = load_pipeline(run)
    assert pipe.model.config.tie_weights
    with torch.no_grad():
        pipe.model.transformer.wte.weight.zero_()
    save_model(pipe.model, pipe.info["model"], tmp_path, {k: v for k, v in pipe.info.items()
                                                          if k not in ("model", "family", "modality", "config")})  # fmt: skip
    (tmp_path / "tokenizer.json").write_bytes((run / "tokenizer.json").read_bytes())
    m = evaluate(tmp_path, ds, EvalConfig(n=2, options={"max_tokens": 8, "self_bleu_samples": 0}))
    vocab = pipe.model.config.vocab_size
    assert m["values"]["val_loss"] == pytest.approx(math.log(vocab), rel=1e-6)
    assert m["values"]["bits_per_char"] == pytest.approx(math.log2(vocab), rel=1e-6)


def test_a_run_is_scored_on_the_text_whatever_the_dataset_tokenizer(text_run, tmp_path) -> None:
    """Against the same text tokenised with BPE, a char run re-encodes the split with its own
    tokenizer: the same characters, so the same numbers."""
    run, ds = text_run
    res = CliRunner().invoke(app, ["data", "ingest", str(ds.parent / "plays.txt"), "--out", str(tmp_path / "bpe"),
                                   "--split-by", "position", "--tokenizer", "bpe", "--vocab-size", "300",
                                   "--threads", "1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    cfg = EvalConfig(n=4, seed=1, options={"max_tokens": 64}, features="random")
    char = evaluate(run, ds, cfg, out=tmp_path / "char.json")
    bpe = evaluate(run, tmp_path / "bpe", cfg, out=tmp_path / "bpe.json")
    assert bpe["metrics"]["val_loss"]["details"]["tokens_from"] == "the split's text encoded with the run's tokenizer"
    assert bpe["values"] == char["values"]
    assert bpe["warnings"][0] == "features: an image option, ignored for text"
    # the only other warnings: the tiny split's membership audit saying what it cannot resolve
    assert all(w.startswith("membership: ") for w in bpe["warnings"][1:])


def test_bad_options_and_inputs_name_what_is_wrong(text_run, tmp_path) -> None:
    run, ds = text_run
    with pytest.raises(ConfigError, match="unknown field.*max_tokenz"):
        evaluate(run, ds, EvalConfig(options={"max_tokenz": 3}))
    with pytest.raises(ConfigError, match="seed belong to EvalConfig itself"):
        evaluate(run, ds, EvalConfig(options={"seed": 3}))
    bad = tmp_path / "s.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": 1}\n')
    with pytest.raises(DataError, match=r"s\.jsonl:2: expected an object with a string field 'text'"):
        evaluate(bad, ds, EvalConfig())
    with pytest.raises(GenforgeError, match="a text model, but dataset .* holds image"):
        evaluate(run, image_dataset(tmp_path / "images"), EvalConfig(n=4))
    res = CliRunner().invoke(app, ["eval", str(tmp_path / "x.csv"), "--ref", str(ds)])
    assert isinstance(res.exception, GenforgeError) and "samples as .jsonl or .txt" in str(res.exception)


# --- samples files and the report --------------------------------------------------------------


class TagChecker(HTMLParser):
    """Every non-void element closed in order; the text inside <mark> collected."""

    VOID = {"meta", "img", "br", "hr", "input", "link", "col", "area", "base", "source", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.marks: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)
        if tag == "mark":
            self.marks.append("")

    def handle_endtag(self, tag) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data) -> None:
        if self.stack and self.stack[-1] == "mark":
            self.marks[-1] += data


def test_samples_file_eval_and_report_highlight_copies(text_run, tmp_path) -> None:
    run, ds = text_run
    train = (ds / "train" / "text.txt").read_text()
    copy = train[1000:1090]
    samples = [f"<b>Fresh & new</b> words {i}: " + corpus(10 + i, 3) for i in range(3)]
    samples[1] = "Tom & <i>Jerry</i> said: " + copy + " -- and then nothing from the play at all."
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps({"text": s}) + "\n" for s in samples))
    m = evaluate(path, ds, EvalConfig(n=8))
    assert "val_loss" not in m["values"] and "likelihood" in m["skipped"]
    expected = [brute_force(train, s, 50) for s in samples]
    assert m["values"]["copied_window_rate"] == pytest.approx(
        sum(e[1] for e in expected) / sum(e[0] for e in expected)
    )
    assert m["values"]["longest_copied_span"] == max(e[3] for e in expected) >= 90
    assert m["values"]["copied_window_ratio"] > 2  # a verbatim copy: above the goal
    # the report of the run shows these metrics, with the copied span marked and escaped
    page_path = write_report(
        run, out=tmp_path / "report.html", metrics_path=tmp_path / "samples.metrics.json"
    )
    page = page_path.read_text()
    checker = TagChecker()
    checker.feed(page)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    copied = [m for m in checker.marks if m != "marked"]
    assert any(copy in m for m in copied) and all(m in train for m in copied)
    assert "Tom &amp; &lt;i&gt;Jerry&lt;/i&gt;" in page and "<i>Jerry" not in page
    for heading in ("Metrics", "Training curves", "Samples with copied spans highlighted",
                    "Memorisation: verbatim copies from the training text", "Data quality of the training set"):  # fmt: skip
        assert f"<h2>{heading}</h2>" in page
    assert "above the goal" in page and "held-out control" in page and "reference value" in page
    assert "The full data report" in page and "Train/held-out leakage" in page  # the text data report


def test_txt_samples_are_separated_by_endoftext(text_run, tmp_path) -> None:
    _run, ds = text_run
    path = tmp_path / "s.txt"
    path.write_text("first sample\nwith two lines\n<|endoftext|>\nsecond one\n<|endoftext|>\n")
    m = evaluate(path, ds, EvalConfig())
    assert m["samples_file"] == "s.metrics.samples.jsonl"  # beside s.metrics.json
    rows = [json.loads(x) for x in (tmp_path / m["samples_file"]).read_text().splitlines()]
    assert [r["text"] for r in rows] == ["first sample\nwith two lines", "second one"]
    assert m["values"]["distinct_1"] == pytest.approx(6 / 6)


def test_report_of_a_text_run_without_metrics_says_how_to_get_them(text_run, tmp_path) -> None:
    run, _ds = text_run
    page = write_report(run, out=tmp_path / "r.html", metrics_path=tmp_path / "none.json").read_text()
    assert "genforge eval" in page and "<h2>Training curves</h2>" in page
    assert 'alt="training curves"' in page  # the image report's curves section, reused


def test_highlight_escapes_and_marks() -> None:
    assert highlight("a<b>c&d", [(1, 4)]) == "a<mark>&lt;b&gt;</mark>c&amp;d"
    assert highlight("xyz", []) == "xyz"
