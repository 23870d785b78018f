"""Differentially private training of the text model (train/privacy.py, train/feeds/text.py): fixed
windows as the examples, Poisson sampling over them, per-example gradients of the whole gpt, the
budget, bit-exact resume, the tokenizer's coverage, the bytes tokenizer, and the audit of a DP run."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from cli_runner import run_cli
from genforge.core.config import from_dict
from genforge.core.errors import ConfigError, DataError
from genforge.data.text import TextDoc, load_tokenizer, write_text_dataset
from genforge.data.text.config import TextIngestConfig
from genforge.data.text.tokenizer import TOKENIZERS, BytesTokenizer
from genforge.models.base import Batch
from genforge.models.text.gpt import GPT
from genforge.train.feeds.text import WindowLoader
from genforge.train.launch import build_trainer
from genforge.train.privacy import METRIC_KEYS, accountant_epsilon, public_metrics
from test_text_train import (
    TINY,
    _Interrupt,
    corpus,
    make_text_dataset,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks (conftest.one_thread)

WINDOW = 33  # TINY's block_size + 1
# a given sigma: calibrating one takes Opacus a while (the CLI test calibrates)
GIVEN = {"epsilon": 50.0, "noise_multiplier": 1.0, "delta": 1e-3}
DP_WARNING = "differentially private text run"
NON_ASCII = "naïve café, Ærøskøbing — 日本語の文 🎉🇫🇷\nЁжик\tµ"
# PyTorch's note that a hook fires on output gradients (the data needs none): all Opacus needs
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")


@pytest.fixture(scope="module")
def char_data(tmp_path_factory):
    """The test corpus with a char tokenizer: ~400 train windows of 33 tokens, val beside them."""
    return make_text_dataset(tmp_path_factory.mktemp("char") / "ds")


@pytest.fixture(scope="module")
def bytes_data(tmp_path_factory, char_data):
    """The same splits with the bytes tokenizer."""
    from genforge.data.canonical import open_dataset

    ds = open_dataset(char_data)
    splits = {
        name: [TextDoc("corpus.txt", ds.split(name).text)] for name in ds.split_names
    }  # one document each
    directory = tmp_path_factory.mktemp("bytes") / "ds"
    write_text_dataset(directory, splits, BytesTokenizer(), {"source": {"kind": "test"}})
    return directory


def _trainer(out, data, steps=8, sets=(), privacy=None, resume=False, callbacks=()):
    return build_trainer(
        out, model_name="gpt", data=data, flags={"steps": steps, "batch_size": 8}, sets=[*TINY, *sets],
        privacy=GIVEN if privacy is None else privacy, resume=resume, callbacks=callbacks,
    )  # fmt: skip


def _quiet_trainer(*args, **kwargs):
    """A DP trainer on char data, without the tokenizer warning a test is not about."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", DP_WARNING)
        return _trainer(*args, **kwargs)


def _model_json(run: Path) -> dict:
    return json.loads((run / "model.json").read_text())


def _train_windows(data: Path) -> int:
    from genforge.data.canonical import open_dataset

    return len(open_dataset(data).train_split.tokens) // WINDOW


# --- the bytes tokenizer --------------------------------------------------------------------------------


def test_bytes_tokenizer_round_trips_any_text(tmp_path):
    tok = BytesTokenizer.train(["whatever the data holds"], 12345)
    ids = tok.encode(NON_ASCII)
    assert ids == list(NON_ASCII.encode("utf-8")) and len(ids) > len(NON_ASCII)  # multi-byte characters
    assert max(ids) > 127 and all(0 <= i < 256 for i in ids) and tok.vocab_size == 256
    assert tok.decode(ids) == NON_ASCII
    assert np.array_equal(tok.encode_array(NON_ASCII), np.array(ids, np.int64))
    assert tok.encode_batch([NON_ASCII, ""]) == [ids, []]
    # learns nothing: trained on other text (or none), the same tokenizer, byte for byte
    assert tok.to_json() == BytesTokenizer.train(["something else entirely"]).to_json()
    assert not TOKENIZERS.get("bytes").learns_from_data
    assert TOKENIZERS.get("char").learns_from_data and TOKENIZERS.get("bpe").learns_from_data
    # a model's output may stop mid-character: the broken bytes decode to U+FFFD
    euro = "€".encode()
    assert tok.decode([*b"ab", euro[0], euro[1]]) == "ab\ufffd" and tok.decode(list(euro)) == "€"
    with pytest.raises(ValueError, match="token id 256 is outside the byte vocabulary"):
        tok.decode([1, 256])
    # saved as tokenizer.json and read back by its marker
    tok.save(tmp_path / "tokenizer.json")
    back = load_tokenizer(tmp_path)
    assert isinstance(back, BytesTokenizer) and back.kind == "bytes" and back.decode(ids) == NON_ASCII
    marker = json.loads((tmp_path / "tokenizer.json").read_text())
    assert marker["genforge"]["kind"] == "bytes" and marker["vocab_size"] == 256
    (tmp_path / "bad.json").write_text(json.dumps({**marker, "vocab_size": 300}))
    with pytest.raises(
        DataError, match=r"bad.json: a bytes tokenizer must have .* 'vocab_size' 256, got 'utf-8' and 300"
    ):
        load_tokenizer(tmp_path / "bad.json")
    assert from_dict(TextIngestConfig, {"tokenizer": "bytes"}).tokenizer == "bytes"
    with pytest.raises(ConfigError, match="tokenizer"):
        from_dict(TextIngestConfig, {"tokenizer": "words"})


def test_ingest_with_the_bytes_tokenizer(tmp_path, monkeypatch, capsys):
    from genforge.data.canonical import open_dataset

    source = tmp_path / "story.txt"
    source.write_text(corpus(lines=150) + "\n" + NON_ASCII + "\n", encoding="utf-8")
    code, _, err = run_cli(monkeypatch, capsys, "data", "ingest", source, "--out", tmp_path / "d",
                           "--tokenizer", "bytes", "--threads", "1")  # fmt: skip
    assert code == 0, err
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["tokenizer"]["kind"] == "bytes" and manifest["tokenizer"]["vocab_size"] == 256
    ds = open_dataset(tmp_path / "d")
    assert isinstance(ds.tokenizer, BytesTokenizer)
    for name in ds.split_names:  # every split's tokens are its text's UTF-8 bytes
        split = ds.split(name)
        assert np.array_equal(
            np.asarray(split.tokens), np.frombuffer(split.text.encode("utf-8"), np.uint8)
        ), name
    assert any(np.asarray(ds.split(n).tokens).max() > 127 for n in ds.split_names)  # the non-ASCII line


# --- fixed windows and Poisson sampling --------------------------------------------------------------------


def test_poisson_window_sampling():
    n, b = 300, 20
    tokens = (np.arange(WINDOW * n + 7) % 251).astype(np.uint16)  # 7 trailing tokens fill no window
    loader = WindowLoader(tokens, WINDOW, b, seed=5, poisson=True)
    q = b / n
    assert loader.num_examples == n and loader.sample_rate == q
    sizes = np.array([len(loader.indices(k)) for k in range(400)])
    assert abs(sizes.mean() - b) < 4 * math.sqrt(n * q * (1 - q) / 400)  # expected batch size b
    assert sizes.var() == pytest.approx(n * q * (1 - q), rel=0.25)  # binomial spread: sizes vary
    # a function of (seed, step) alone
    assert np.array_equal(loader.indices(7), WindowLoader(tokens, WINDOW, b, 5, True).indices(7))
    assert not np.array_equal(loader.indices(7), loader.indices(8))
    assert not np.array_equal(loader.indices(7), WindowLoader(tokens, WINDOW, b, 6, True).indices(7))
    # fixed, non-overlapping windows
    idx = loader.indices(3)
    batch = loader.gather(idx)
    assert batch.shape == (len(idx), WINDOW) and batch.dtype == np.int64
    for i, row in zip(idx, batch, strict=True):
        assert np.array_equal(row, tokens[i * WINDOW : (i + 1) * WINDOW])
    assert loader.gather(np.zeros(0, np.int64)).shape == (0, WINDOW)  # an empty Poisson batch
    # privacy.poisson=false: batch_size distinct windows
    fixed = WindowLoader(tokens, WINDOW, b, 5, poisson=False)
    assert fixed.sample_rate is None and fixed.num_examples == n
    assert len(set(fixed.indices(0).tolist())) == b and not np.array_equal(fixed.indices(0), fixed.indices(1))


def test_dp_feed_draws_windows_and_resumes(tmp_path, char_data):
    trainer = _quiet_trainer(tmp_path / "f", char_data)
    feed, n = trainer.feed, _train_windows(char_data)
    assert feed.loader.num_examples == n and feed.loader.sample_rate == 8 / n
    assert len({len(feed.loader.indices(k)) for k in range(20)}) > 1  # Poisson: batch sizes vary
    assert trainer.private.num_examples == n and trainer.private.sample_rate == 8 / n
    tokens = np.asarray(trainer.dataset.train_split.tokens)
    windows = {tuple(tokens[i * WINDOW : (i + 1) * WINDOW]) for i in range(n)}
    batches = [feed.next_batch().data for _ in range(3)]
    assert all(tuple(row.tolist()) in windows for b in batches for row in b)
    assert feed.state_dict() == {"drawn": 3}
    other = _quiet_trainer(tmp_path / "f2", char_data).feed
    other.load_state_dict(feed.state_dict())
    assert torch.equal(other.next_batch().data, feed.next_batch().data)
    # without DP, the feed is as it was: random starts from (seed, batch), no window set
    plain = build_trainer(tmp_path / "p", model_name="gpt", data=char_data, flags={"steps": 1, "batch_size": 8},
                          sets=TINY)  # fmt: skip
    assert not hasattr(plain.feed, "loader") and plain.private is None
    starts = np.random.default_rng([0, 0]).integers(0, len(tokens) - WINDOW + 1, size=8)
    assert np.array_equal(plain.feed.next_batch().data.numpy(), tokens[starts[:, None] + np.arange(WINDOW)])


# --- the whole network, per example ----------------------------------------------------------------------


def test_per_example_gradients_of_the_whole_gpt_match_autograd(tmp_path, char_data):
    trainer = _quiet_trainer(tmp_path / "g", char_data)
    model = trainer.model.train()
    assert not model.config.tie_weights and model.config.bias  # the family's private defaults
    assert trainer.private.module_names == ["transformer"] and trainer.precision.name == "fp32"
    batch = trainer.feed.next_batch()
    b = len(batch.data)
    assert b >= 2
    trainer.private._enable_hooks(True)
    try:
        model.training_step("main", batch, 0).loss.backward()
    finally:
        trainer.private._enable_hooks(False)
    named = dict(model.named_parameters())
    assert {"transformer.wte.weight", "transformer.lm_head.weight", "transformer.ln_f.weight"} <= set(named)
    for name, p in named.items():  # every parameter, each example's gradient: their mean is autograd's
        assert p.grad_sample is not None and p.grad_sample.shape == (b, *p.shape), name
        err = (p.grad_sample.sum(0) / b - p.grad).norm() / p.grad.norm()
        assert float(err) < 1e-5, (name, float(err))
    # and each is that example's own gradient: the first example alone, by autograd
    own = torch.autograd.grad(
        model.training_step("main", Batch(batch.data[:1]), 0).loss, list(named.values())
    )
    for (name, p), g in zip(named.items(), own, strict=True):
        err = (p.grad_sample[0] - g).norm() / g.norm()
        assert float(err) < 1e-5, (name, float(err))


def _hooked_gpt(**fields):
    from opacus.grad_sample import GradSampleHooks

    cfg = GPT.default_config(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16, **fields)
    model = GPT(cfg).train()
    return model, GradSampleHooks(model.transformer, loss_reduction="mean", strict=True)


def test_why_dp_runs_untie_the_head_and_keep_layer_norm_biases():
    """GPT.private_defaults: with a tied head the embedding's hook sees only the lookup, so the
    per-example gradients of the tied matrix miss the output layer's part; and Opacus' LayerNorm
    sampler fails without a bias (if this starts passing, Opacus fixed it: drop the refusal)."""
    tokens = torch.randint(0, 20, (4, 9), generator=torch.Generator().manual_seed(0))
    model, hooks = _hooked_gpt(tie_weights=True, bias=True)
    model.training_step("main", Batch(tokens), 0).loss.backward()
    w = model.transformer.wte.weight
    assert float((w.grad_sample.sum(0) / 4 - w.grad).norm()) > 0.5 * float(w.grad.norm())
    hooks.remove_hooks()
    assert [p.split(":")[0] for p in model.private_training_problems()] == ["model.tie_weights"]
    model, hooks = _hooked_gpt(tie_weights=False, bias=False)
    with pytest.raises(AttributeError, match="requires_grad"):
        model.training_step("main", Batch(tokens), 0).loss.backward()
    hooks.remove_hooks()
    assert [p.split(":")[0] for p in model.private_training_problems()] == ["model.bias"]


def test_refuses_what_opacus_cannot_split_per_example(tmp_path, char_data):
    for i, (sets, field) in enumerate([
        (["model.tie_weights=true"], "model.tie_weights"),
        (["model.bias=false"], "model.bias"),
        (["model.positions=learned"], "model.positions"),
        (["model.block_size=2000"], "windows of 2001 tokens"),  # fewer windows than a batch
        (["train.compile=true"], "train.compile"),  # layer hooks: a compiled region would skip them
    ]):  # fmt: skip
        with pytest.raises(ConfigError, match=field):
            _quiet_trainer(tmp_path / f"r{i}", char_data, sets=sets)
    with pytest.raises(ConfigError, match=r"privacy.delta: 0.01 is not below 1/N"):
        _quiet_trainer(tmp_path / "d", char_data, privacy={**GIVEN, "delta": 0.01})


# --- training, budget, resume, records ---------------------------------------------------------------------


def test_dp_gpt_stops_at_the_budget_and_records_it(tmp_path, char_data):
    privacy = {"epsilon": 1.0, "noise_multiplier": 1.0, "delta": 1e-3}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = _trainer(tmp_path / "b", char_data, steps=500, privacy=privacy)
    said = [str(w.message) for w in caught if DP_WARNING in str(w.message)]
    assert len(said) == 1 and "char tokenizer's vocabulary was learnt from the train split" in said[0]
    summary = trainer.fit()
    assert summary["stop_reason"].startswith("privacy budget spent (epsilon")
    steps, p = summary["step"], trainer.private
    assert 0 < steps < 500 and p.steps_taken == steps
    assert p.epsilon() <= 1.0 < p.epsilon_after(steps + 1)  # stopped at the last step within the target
    info = _model_json(tmp_path / "b")
    rec, n = info["privacy"], _train_windows(char_data)
    assert rec["steps"] == steps and rec["epsilon"] == pytest.approx(
        accountant_epsilon("rdp", 1.0, 8 / n, steps, 1e-3)
    )
    assert (rec["dataset_size"], rec["sample_rate"], rec["sampling"]) == (n, 8 / n, "poisson")
    assert rec["private_modules"] == ["transformer"] and rec["private_phases"] == ["main"]
    assert rec["unit"].startswith(f"one window of {WINDOW} tokens") and "k times epsilon" in rec["unit"]
    assert rec["tokenizer"]["kind"] == "char" and rec["tokenizer"]["covered"] is False
    assert (info["config"]["tie_weights"], info["config"]["bias"]) == (False, True)
    logged = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["privacy/dp_steps"] <= steps and 0 < logged[-1]["privacy/epsilon"] <= 1.0


def test_cli_dp_gpt_with_the_bytes_tokenizer(tmp_path, bytes_data, monkeypatch, capsys):
    run = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = run_cli(monkeypatch, capsys, "train", "--model", "gpt", "--data", bytes_data, "--out", run,
                               "--steps", "6", "-b", "8", "--dp-epsilon", "2", "--dp-delta", "1e-3",
                               *(f"--set={s}" for s in TINY))  # fmt: skip
    assert code == 0, err
    assert not [w for w in caught if DP_WARNING in str(w.message)]  # the bytes tokenizer is covered
    info = _model_json(run)
    p, n = info["privacy"], _train_windows(bytes_data)
    assert p["tokenizer"]["kind"] == "bytes" and p["tokenizer"]["covered"] is True
    assert p["steps"] == 6 and 1.98 <= p["epsilon"] <= 2.0  # sigma calibrated to the 6 planned steps
    assert p["epsilon"] == pytest.approx(accountant_epsilon("rdp", p["noise_multiplier"], 8 / n, 6, 1e-3))
    assert (p["sample_rate"], p["dataset_size"], p["target_epsilon"]) == (8 / n, n, 2.0)
    assert isinstance(load_tokenizer(run), BytesTokenizer)  # the run decodes with the data's tokenizer
    run_json = json.loads((run / "run.json").read_text())
    assert run_json["precision"] == "fp32" and run_json["private_training"]["tokenizer"] == p["tokenizer"]


def test_dp_text_resume_is_bit_exact(tmp_path, char_data):
    """Killed after the checkpoint at step 6 and resumed, a DP run ends with the weights and the
    privacy record of an uninterrupted one: window draws, noise, accountant, schedule, AdamW."""
    sets = ["train.checkpoint_every=6"]
    _quiet_trainer(tmp_path / "full", char_data, steps=12, sets=sets).fit()
    part = _quiet_trainer(tmp_path / "part", char_data, steps=12, sets=sets, callbacks=[_Interrupt(7)])
    with pytest.raises(KeyboardInterrupt):
        part.fit()
    assert not (tmp_path / "part" / "model.safetensors").exists()
    trainer = _quiet_trainer(tmp_path / "part", char_data, steps=12, sets=sets, resume=True)
    assert trainer.fit(resume=True)["step"] == 12
    full = load_file(str(tmp_path / "full" / "model.safetensors"))
    part = load_file(str(tmp_path / "part" / "model.safetensors"))
    assert full.keys() == part.keys() and "transformer.lm_head.weight" in full
    for key in full:
        assert np.array_equal(full[key], part[key]), key
    a, b = _model_json(tmp_path / "full")["privacy"], _model_json(tmp_path / "part")["privacy"]
    assert a == b and a["steps"] == 12
    state = json.loads((tmp_path / "part" / "checkpoints" / "step-0000006" / "state.json").read_text())
    assert state["loader"] == {"drawn": 6} and state["privacy"]["history"][0][2] == 6


# --- evaluation, report and service of a DP text run ---------------------------------------------------------


def test_membership_audit_and_report_of_a_dp_text_run(tmp_path, char_data, monkeypatch):
    from genforge.evaluate.evaluate import EvalConfig, evaluate
    from genforge.evaluate.report import write_report

    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    _quiet_trainer(run, char_data, steps=6).fit()
    metrics = evaluate(
        run, char_data, EvalConfig(n=2, seed=1, options={"max_tokens": 16, "self_bleu_samples": 0})
    )
    v = metrics["values"]
    assert 0.0 <= v["mia_auc"] <= 1.0 and 0.0 <= v["mia_tpr_at_1fpr"] <= 1.0
    assert metrics["metrics"]["mia_auc"]["details"]["window_tokens"] == WINDOW  # the privacy unit
    # the guarantee beside the metrics, as for images: a text scenario can gate on dp_epsilon
    record = _model_json(run)["privacy"]
    assert v["dp_epsilon"] == record["epsilon"] and v["dp_steps"] == record["steps"] and metrics["privacy"] == record
    # what a service shows of it: the privacy record, and no metric computed on the private data
    info = _model_json(run)
    shown = public_metrics(metrics, info)
    assert "withheld" in shown and set(shown["values"]) <= set(METRIC_KEYS.values())
    page = write_report(run, n=2).read_text()
    assert "<h2>Differential privacy" in page and f"one window of {WINDOW} tokens" in page
