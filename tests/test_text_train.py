"""The gpt through the one trainer and the CLI: the text feed, loss falling on a tiny corpus,
bit-exact resume, bf16, the learning-rate schedule, `--init-from` and `genforge sample` on text."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from cli_runner import run_cli
from genforge.core.errors import ConfigError, GenforgeError
from genforge.data.text import CharTokenizer, TextDoc, write_text_dataset
from genforge.train.callbacks import Callback
from genforge.train.launch import build_trainer
from test_train_models import make_dataset

WORDS = "the king queen speaks to a fool and sleeps loud soft in his her castle".split()
TINY = [
    "model.block_size=32", "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.lr=0.003",
    "model.warmup_steps=5", "train.progress=none", "train.tensorboard=false", "train.log_every=5",
    "train.sample_every=0",
]  # fmt: skip


def corpus(seed: int = 0, lines: int = 500, words: list[str] = WORDS) -> str:
    rng = random.Random(seed)
    return "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(3, 7))) + "." for _ in range(lines))


def make_text_dataset(directory: Path, text: str | None = None) -> Path:
    """A char-level dataset: the first 90% of `text` for train, the rest for val."""
    text = corpus() if text is None else text
    cut = int(len(text) * 0.9)
    directory.mkdir(parents=True, exist_ok=True)
    tok = CharTokenizer.train([text[:cut], "\n\n"])
    splits = {"train": [TextDoc("corpus.txt", text[:cut])], "val": [TextDoc("corpus.txt", text[cut:])]}
    write_text_dataset(directory, splits, tok, {"source": {"kind": "test"}})
    return directory


@pytest.fixture(scope="module")
def text_data(tmp_path_factory):
    return make_text_dataset(tmp_path_factory.mktemp("text") / "ds")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks (conftest.one_thread)


def _train(out, data, steps=20, sets=(), resume=False, callbacks=(), init_from=None, model="gpt", **flags):
    trainer = build_trainer(
        out, model_name=model, data=data, flags={"steps": steps, "batch_size": 8, **flags},
        sets=[*TINY, *sets], resume=resume, callbacks=callbacks, init_from=init_from,
    )  # fmt: skip
    return trainer, trainer.fit(resume=resume)


def _records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_feed_windows_are_the_split_and_resumable(tmp_path, text_data):
    trainer = build_trainer(tmp_path / "run", model_name="gpt", data=text_data, flags={"steps": 1, "batch_size": 4},
                            sets=TINY)  # fmt: skip
    feed = trainer.feed
    tokens = np.asarray(trainer.dataset.train_split.tokens)
    batches = [feed.next_batch().data for _ in range(3)]
    assert batches[0].shape == (4, 33) and batches[0].dtype == torch.int64
    for row in batches[0]:  # every row is a contiguous window of the train tokens
        starts = np.flatnonzero(tokens[: len(tokens) - 32] == int(row[0]))
        assert any(np.array_equal(tokens[s : s + 33], row.numpy()) for s in starts)
    state = feed.state_dict()
    assert state == {"drawn": 3}
    following = feed.next_batch().data
    feed.load_state_dict(state)
    assert torch.equal(feed.next_batch().data, following)  # the counter is the whole state
    assert not torch.equal(batches[0], batches[1])
    with pytest.raises(ConfigError, match="vocab_size"):
        build_trainer(tmp_path / "bad", model_name="gpt", data=text_data, flags={"steps": 1}, sets=[*TINY, "model.vocab_size=99"])
    with pytest.raises(ConfigError, match="block_size"):
        build_trainer(tmp_path / "big", model_name="gpt", data=text_data, flags={"steps": 1},
                      sets=[*TINY, "model.block_size=100000"])  # fmt: skip
    with pytest.raises(ConfigError, match="image dataset|text model"):
        build_trainer(tmp_path / "img", model_name="gpt", data=make_dataset(tmp_path / "img-ds"), flags={"steps": 1})


def test_loss_falls_and_run_holds_the_tokenizer(tmp_path, text_data):
    run = tmp_path / "run"
    _train(run, text_data, steps=80, sets=["train.sample_every=40", "train.sample_count=3"])
    records = _records(run)
    first, last = records[0]["main/loss"], records[-1]["main/loss"]
    assert first > 2.4 and last < 0.75 * first, (first, last)
    assert all(np.isfinite(r["main/grad_norm"]) for r in records)
    # warmup then cosine decay to min_lr_ratio of the lr over the step budget
    lrs = [r["lr/main"] for r in records]
    assert lrs[0] < lrs[1] and max(lrs) == pytest.approx(3e-3, rel=0.05) and lrs[-1] < 0.2 * max(lrs)
    assert (run / "tokenizer.json").read_bytes() == (text_data / "tokenizer.json").read_bytes()
    info = json.loads((run / "model.json").read_text())
    assert info["modality"] == "text" and info["family"] == "transformer" and info["config"]["vocab_size"] > 10
    samples = (run / "samples" / "step-0000080.txt").read_text()
    assert samples.count("--- sample") == 3 and (run / "samples" / "step-0000040.txt").is_file()


class _Interrupt(Callback):
    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, trainer, step):
        if step == self.at:
            raise KeyboardInterrupt


def test_resume_is_bit_exact(tmp_path, text_data):
    """Killed after the checkpoint at step 6 and resumed, the run ends with the weights of an
    uninterrupted one: the feed's counter, dropout's RNG, the warmup + cosine schedule (over the
    same budget), EMA and AdamW state all continue exactly (bf16 where the CPU has it)."""
    sets = ["train.checkpoint_every=6", "model.dropout=0.1"]
    _train(tmp_path / "full", text_data, steps=12, sets=sets)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "part", text_data, steps=12, sets=sets, callbacks=[_Interrupt(7)])
    assert not (tmp_path / "part" / "model.safetensors").exists()
    _, summary = _train(tmp_path / "part", text_data, steps=12, sets=sets, resume=True)
    assert summary["step"] == 12
    full = load_file(str(tmp_path / "full" / "model.safetensors"))
    part = load_file(str(tmp_path / "part" / "model.safetensors"))
    assert full.keys() == part.keys()
    for key in full:
        assert np.array_equal(full[key], part[key]), key
    lr = [r["lr/main"] for r in _records(tmp_path / "full")]
    assert lr == [r["lr/main"] for r in _records(tmp_path / "part")][-len(lr) :]


def test_bf16_and_fp32_both_train(tmp_path, text_data):
    from genforge.train.precision import cpu_has_bf16

    losses = {}
    for precision in ["fp32", "bf16"] if cpu_has_bf16() else ["fp32"]:
        trainer, _ = _train(tmp_path / precision, text_data, steps=30, precision=precision)
        assert json.loads((tmp_path / precision / "run.json").read_text())["precision"] == precision
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # fp32 master weights
        losses[precision] = [r["main/loss"] for r in _records(tmp_path / precision)]
    for curve in losses.values():
        assert curve[-1] < 0.8 * curve[0]
    if "bf16" in losses:  # same data, same init: the curves agree to bf16's precision
        assert abs(losses["bf16"][-1] - losses["fp32"][-1]) < 0.1


# --- --init-from -------------------------------------------------------------------------------


def test_init_from_starts_from_the_base_weights(tmp_path, text_data):
    base = tmp_path / "base"
    _train(base, text_data, steps=10)
    trainer = build_trainer(tmp_path / "ft", data=text_data, flags={"steps": 3, "batch_size": 8},
                            sets=[*TINY, "model.lr=0.0001"], init_from=base)  # fmt: skip
    weights = load_file(str(base / "model.safetensors"))
    for key, value in trainer.model.state_dict().items():
        assert np.array_equal(value.numpy(), weights[key]), key
    assert trainer.model.config.lr == 1e-4  # the base's config, overridden as usual
    trainer.fit()
    record = json.loads((tmp_path / "ft" / "run.json").read_text())["init_from"]
    assert record["path"] == str(base.resolve()) and record["step"] == 10 and record["model"] == "gpt"
    assert len(record["weights_sha256"]) == 64
    assert json.loads((tmp_path / "ft" / "model.json").read_text())["init_from"] == record
    # resuming keeps the record; naming another base on resume is refused
    fine = ["model.lr=0.0001"]
    _train(tmp_path / "ft", text_data, steps=5, sets=fine, resume=True)
    assert json.loads((tmp_path / "ft" / "run.json").read_text())["init_from"] == record
    with pytest.raises(ConfigError, match="drop --init-from"):
        _train(tmp_path / "ft", text_data, steps=6, sets=fine, resume=True, init_from=tmp_path / "other-base")
    # another architecture: the differing config fields are named
    with pytest.raises(ConfigError, match="n_embd"):
        build_trainer(tmp_path / "wide", data=text_data, flags={"steps": 1}, sets=[*TINY, "model.n_embd=64"], init_from=base)
    # another tokenizer: the base's token ids would mean other text
    other = make_text_dataset(tmp_path / "other", corpus(1, words=["xyz", "qv"] + WORDS))
    with pytest.raises(ConfigError, match="tokenizer"):
        build_trainer(tmp_path / "tok", data=other, flags={"steps": 1}, sets=TINY, init_from=base)
    with pytest.raises(GenforgeError, match="finished"):
        build_trainer(tmp_path / "none", data=text_data, flags={"steps": 1}, sets=TINY, init_from=tmp_path / "nothing")


def test_init_from_an_image_family(tmp_path):
    data = make_dataset(tmp_path / "img")
    quiet = ["train.progress=none", "train.tensorboard=false", "model.widths=[8,8]", "model.latent_dim=4"]
    flags = {"steps": 4, "batch_size": 8}
    build_trainer(tmp_path / "base", model_name="vae", data=data, flags=flags, sets=quiet).fit()
    trainer = build_trainer(tmp_path / "ft", data=data, flags=flags, sets=quiet[:2], init_from=tmp_path / "base")
    weights = load_file(str(tmp_path / "base" / "model.safetensors"))
    assert trainer.model_name == "vae"
    for key, value in trainer.model.state_dict().items():
        assert np.array_equal(value.numpy(), weights[key]), key
    trainer.fit()
    assert json.loads((tmp_path / "ft" / "model.json").read_text())["init_from"]["model"] == "vae"
    with pytest.raises(ConfigError, match="family"):
        build_trainer(tmp_path / "gan", model_name="dcgan", data=data, flags=flags, sets=quiet[:2],
                      init_from=tmp_path / "base")  # fmt: skip


# --- sampling: the pipeline and `genforge sample` --------------------------------------------------


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, text_data):
    run = tmp_path_factory.mktemp("run") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    _train(run, text_data, steps=60)
    torch.set_num_threads(threads)
    return run


def test_pipeline_completions_are_deterministic_and_stop(text_run):
    from genforge.models.pipeline import load_pipeline

    pipe = load_pipeline(text_run)
    assert pipe.modality == "text" and not pipe.conditional and pipe.num_classes == 0
    kw = {"max_tokens": 40, "temperature": 0.9, "top_k": 20, "top_p": 0.95}
    three = pipe.complete(["the king"], n=3, seed=4, **kw)
    assert [c.index for c in three] == [0, 1, 2] and all(c.n_tokens == 40 for c in three)
    assert all(c.finish_reason == "length" and c.n_prompt_tokens == len("the king") for c in three)
    assert len({c.text for c in three}) == 3  # n completions of one prompt differ
    again = pipe.complete(["the king"], n=3, seed=4, **kw)
    assert [c.text for c in again] == [c.text for c in three]
    # completion 0 is the same alone as beside others: its draws depend on (seed, index) only
    assert pipe.complete(["the king"], n=1, seed=4, **kw)[0].text == three[0].text
    assert pipe.complete(["the king"], n=1, seed=5, **kw)[0].text != three[0].text
    # a stop string ends the completion just before it, and the tokens before it are the same
    text = three[1].text
    stop = text[10:12]
    cut = text.index(stop)
    stopped = pipe.complete(["the king"], n=2, seed=4, stop=[stop], **kw)[1]
    assert stopped.finish_reason == "stop" and stopped.text == text[:cut]
    assert stopped.token_ids == three[1].token_ids[: stopped.n_tokens]
    # an empty prompt starts after a line break; several prompts in one call
    both = pipe.complete(["", "a fool"], n=2, max_tokens=5, seed=0)
    assert [c.prompt for c in both] == ["", "", "a fool", "a fool"] and both[0].n_prompt_tokens == 0
    with pytest.raises(ConfigError, match="max_tokens"):
        pipe.complete(["x"], max_tokens=0)


def _cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    return run_cli(monkeypatch, capsys, *args)


def test_cli_train_and_sample_text(tmp_path, text_data, text_run, monkeypatch, capsys):
    run = tmp_path / "cli-run"
    sets = [x for s in TINY for x in ("--set", s)]
    code, _, err = _cli(monkeypatch, capsys, "train", "--model", "gpt", "--data", text_data, "--out", run,
                        "--steps", "3", "-b", "4", *sets)  # fmt: skip
    assert code == 0, err
    assert json.loads((run / "model.json").read_text())["step"] == 3
    args = ["sample", text_run, "--prompt", "the queen", "-n", "2", "--max-tokens", "30", "--temperature", "0.8",
            "--top-k", "20", "--top-p", "0.95", "--seed", "1"]  # fmt: skip
    code, printed, err = _cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert printed.count("=== completion") == 2 and printed.count("the queen") >= 2
    code, again, _ = _cli(monkeypatch, capsys, *args)
    assert again == printed
    code, _, err = _cli(monkeypatch, capsys, *args, "--stop", "\\n", "--out", tmp_path / "s.jsonl")
    assert code == 0, err
    rows = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("\n" not in r["text"] for r in rows)
    assert all(r["finish_reason"] in ("stop", "length") and r["prompt"] == "the queen" for r in rows)
    code, _, err = _cli(monkeypatch, capsys, *args, "--out", tmp_path / "s.jsonl")
    assert code == 2 and "--overwrite" in err
    code, _, err = _cli(monkeypatch, capsys, "sample", text_run, "--class", "1")
    assert code == 2 and "--class" in err and "text run" in err
    image_run = tmp_path / "img-run"
    _cli(monkeypatch, capsys, "train", "-m", "vae", "-d", make_dataset(tmp_path / "img"), "-o", image_run,
         "--steps", "1", "-b", "8", "--set", "train.tensorboard=false", "--set", "model.widths=[8]")  # fmt: skip
    code, _, err = _cli(monkeypatch, capsys, "sample", image_run, "--prompt", "hi", "--out", tmp_path / "x.npz")
    assert code == 2 and "--prompt" in err and "image run" in err
    code, _, err = _cli(monkeypatch, capsys, "sample", image_run, "-n", "3")
    assert code == 2 and "--out is required" in err
    code, printed, err = _cli(monkeypatch, capsys, "sample", image_run, "-n", "3", "--out", tmp_path / "x.npz")
    assert code == 0 and np.load(tmp_path / "x.npz")["images"].shape[0] == 3


def test_two_process_gloo_run_matches_single_process(tmp_path, text_data):
    """Ranks take their share of one global draw of windows: 2 processes of batch B train what
    one process of batch 2B trains (fp32: bf16 rounds a half batch differently)."""
    import subprocess

    from test_train_models import PYTHON, cli_env, write_launcher

    launcher = write_launcher(tmp_path)
    args = ["train", "--model", "gpt", "--data", str(text_data), "--steps", "4", "--batch-size", "8", "--seed", "2",
            "--precision", "fp32", *[x for s in TINY for x in ("--set", s)], "--set", "train.log_every=2"]  # fmt: skip
    env = cli_env()
    single = subprocess.run([PYTHON, str(launcher), *args, "--out", str(tmp_path / "one")], env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert single.returncode == 0, single.stderr
    ddp_cmd = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(launcher)]
    ddp = subprocess.run([*ddp_cmd, *args, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True,
                         timeout=240)  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = load_file(str(tmp_path / "one" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "model.safetensors"))
    for key in one:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-4, atol=1e-5, err_msg=key)
    assert json.loads((tmp_path / "two" / "run.json").read_text())["world_size"] == 2
