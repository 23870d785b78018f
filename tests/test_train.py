"""The trainer end to end on tiny models: run layout, determinism, in-process resume, budgets, CLI."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from cli_runner import run_cli
from genforge.core.errors import ConfigError, GenforgeError
from genforge.train.callbacks import Callback
from genforge.train.launch import build_trainer, parse_sets
from test_train_models import make_dataset

QUIET = ["train.progress=none", "train.tensorboard=false"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "ds")


def _train(out, dataset, model="test-ae", steps=12, sets=(), resume=False, **flags):
    trainer = build_trainer(
        out,
        model_name=model,
        data=dataset,
        flags={"steps": steps, "batch_size": 8, **flags},
        sets=[*QUIET, "train.log_every=2", *sets],
        resume=resume,
    )
    return trainer, trainer.fit(resume=resume)


def test_run_directory_layout_and_learning(tmp_path, dataset):
    sets = ["train.checkpoint_every=5", "train.keep_last=2", "train.sample_every=5", "train.tensorboard=true"]
    trainer, summary = _train(tmp_path / "run", dataset, steps=40, sets=sets, **{"seed": 3})
    run = tmp_path / "run"
    assert summary["step"] == 40 and summary["images"] == 40 * 8
    info = json.loads((run / "model.json").read_text())
    assert info["model"] == "test-ae" and info["step"] == 40 and info["ema"] is True
    assert (
        info["dataset"]["fingerprint"] == json.loads((dataset / "manifest.json").read_text())["fingerprint"]
    )
    run_json = json.loads((run / "run.json").read_text())
    assert run_json["train"]["seed"] == 3 and run_json["model_config"]["image_size"] == 8
    steps = sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir())
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert steps[-2:] == ["step-0000035", "step-0000040"]
    assert f"step-{best['step']:07d}" in steps and len(steps) <= 3
    assert sorted(p.name for p in (run / "samples").iterdir())[:2] == ["step-0000005.png", "step-0000010.png"]
    assert any((run / "tb").iterdir())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # every log_every steps, and at each checkpoint so the best-checkpoint metric is current
    assert [r["step"] for r in records] == [s for s in range(1, 41) if s % 2 == 0 or s % 5 == 0]
    for key in ("images", "time", "images_per_s", "main/loss", "main/mse", "lr/main", "loss"):
        assert key in records[-1]
    # the autoencoder learns: the reconstruction error falls well below its starting value
    assert records[-1]["main/mse"] < 0.6 * records[0]["main/mse"]
    # the final weights hold the EMA decoder, not the live one
    weights = load_file(str(run / "model.safetensors"))
    live = trainer.model.decoder.weight.detach().numpy()
    assert not np.array_equal(weights["decoder.weight"], live)
    np.testing.assert_array_equal(
        weights["decoder.weight"], trainer.ema.state_tensors()["decoder.weight"].numpy()
    )


def test_same_seed_same_weights_other_seed_differs(tmp_path, dataset):
    weights = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        _train(tmp_path / name, dataset, model="test-gan", steps=6, seed=seed)
        weights.append(load_file(str(tmp_path / name / "model.safetensors")))
    assert all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not np.array_equal(weights[0]["generator.weight"], weights[2]["generator.weight"])


@pytest.mark.parametrize("model", ["test-ae", "test-gan"])
def test_in_process_resume_is_bit_exact(tmp_path, dataset, model):
    # the GAN draws from a generator it holds; the autoencoder from the global RNG, with random
    # translations of its batches from the trainer's augmentation generator
    extra = {"test-gan": ["model.d_repeats=2"], "test-ae": ["augment.translate.p=0.5", "augment.hflip.p=0.5"]}
    sets = ["train.checkpoint_every=4", *extra[model]]
    _train(tmp_path / "full", dataset, model=model, steps=12, sets=sets)
    _train(tmp_path / "part", dataset, model=model, steps=8, sets=sets)
    trainer, summary = _train(tmp_path / "part", dataset, model=model, steps=12, sets=sets, resume=True)
    assert summary["step"] == 12
    if model == "test-ae":
        assert trainer.augment is not None
        assert json.loads((tmp_path / "part" / "run.json").read_text())["augment"]["translate"]["p"] == 0.5
    full = load_file(str(tmp_path / "full" / "model.safetensors"))
    part = load_file(str(tmp_path / "part" / "model.safetensors"))
    assert full.keys() == part.keys()
    for key in full:
        assert np.array_equal(full[key], part[key]), key
    # the resumed log continues without duplicates
    steps = [json.loads(x)["step"] for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))


@pytest.mark.parametrize("model", ["test-ae", "dae"])
def test_resuming_a_finished_run_trains_nothing_and_keeps_it(tmp_path, dataset, model):
    # a restoration model (dae) shows training batches as its progress view: a resume that
    # trains no step has none, and used to fail there after the run was already complete
    run = tmp_path / "run"
    _train(run, dataset, model=model, steps=4)
    before = load_file(str(run / "model.safetensors"))
    samples = sorted(p.name for p in (run / "samples").iterdir())
    _, summary = _train(run, dataset, model=model, steps=4, resume=True)
    assert summary["step"] == 4
    after = load_file(str(run / "model.safetensors"))
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    assert sorted(p.name for p in (run / "samples").iterdir()) == samples
    # a larger budget continues the same run
    _, summary = _train(run, dataset, model=model, steps=6, resume=True)
    assert summary["step"] == 6 and json.loads((run / "model.json").read_text())["step"] == 6


class _RandomEval(Callback):
    """Consumes every global RNG stream and logs a score that is best (0) at step 6."""

    def __init__(self):
        self.steps = []

    def on_step_end(self, trainer, step):
        torch.rand(5), np.random.rand(3), random.random()
        trainer.log_metrics(step, {"eval/score": float(abs(step - 6))})
        self.steps.append(step)


def test_callbacks_do_not_change_training_and_drive_best_checkpoint(tmp_path, dataset):
    sets = ["train.checkpoint_every=2", "train.keep_last=1", "train.best_metric=eval/score"]
    _train(tmp_path / "plain", dataset, steps=10, sets=sets)
    cb = _RandomEval()
    trainer = build_trainer(
        tmp_path / "cb",
        model_name="test-ae",
        data=dataset,
        flags={"steps": 10, "batch_size": 8},
        sets=[*QUIET, *sets],
        callbacks=[cb],
    )
    trainer.fit()
    assert cb.steps == list(range(1, 11))
    a = load_file(str(tmp_path / "plain" / "model.safetensors"))
    b = load_file(str(tmp_path / "cb" / "model.safetensors"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    best = json.loads((tmp_path / "cb" / "checkpoints" / "best.json").read_text())
    assert best["step"] == 6 and best["value"] == 0.0
    kept = sorted(p.name for p in (tmp_path / "cb" / "checkpoints").iterdir() if p.is_dir())
    assert kept == ["step-0000006", "step-0000010"]


def test_image_budget_and_phase_batches(tmp_path, dataset):
    # two discriminator repeats: each step draws the step batch plus one fresh batch
    _, summary = _train(
        tmp_path / "run", dataset, model="test-gan", steps=None, images=80, sets=["model.d_repeats=2"]
    )
    assert summary["images"] == 80 and summary["step"] == 5 and "image budget" in summary["stop_reason"]


def test_time_budget_stops(tmp_path, dataset):
    _, summary = _train(tmp_path / "run", dataset, steps=None, max_time="1s")
    assert summary["elapsed"] >= 1.0 and "time budget" in summary["stop_reason"]


def test_config_errors(tmp_path, dataset):
    with pytest.raises(ConfigError, match="no training budget"):
        _train(tmp_path / "a", dataset, steps=None)
    with pytest.raises(ConfigError, match="latnt"):
        _train(tmp_path / "b", dataset, sets=["model.latnt=3"])
    with pytest.raises(ConfigError, match="image_size"):
        _train(tmp_path / "c", dataset, sets=["model.image_size=16"])
    with pytest.raises(ConfigError, match="SECTION.FIELD"):
        parse_sets(["latent=3"])
    assert parse_sets(["model.diffaugment.p=0.5", "train.ema=false"]) == {
        "model": {"diffaugment": {"p": 0.5}},
        "train": {"ema": False},
    }
    # YAML 1.1 reads 3e-3 (no dot) as a string; --set gives the number a user means
    assert parse_sets(["model.lr=3e-3", "model.name=e"]) == {"model": {"lr": 0.003, "name": "e"}}
    _train(tmp_path / "d", dataset, steps=2)
    with pytest.raises(GenforgeError, match="--resume"):
        _train(tmp_path / "d", dataset, steps=2)
    with pytest.raises(ConfigError, match="batch_size"):
        _train(tmp_path / "d", dataset, steps=4, resume=True, batch_size=16)


def _cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    """Run the genforge command line in this process; (exit status, stderr)."""
    code, _out, err = run_cli(monkeypatch, capsys, *args)
    return code, err


def test_cli_train_then_sample(tmp_path, dataset, monkeypatch, capsys):
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model:\n  latent: 3\ntrain:\n  log_every: 2\n  tensorboard: false\n")
    train = ["train", "--model", "test-ae", "--data", dataset, "--out", run, "--config", cfg]
    code, err = _cli(monkeypatch, capsys, *train, "--steps", "4", "-b", "8", "--set", "train.ema_decay=0.5")
    assert code == 0, err
    info = json.loads((run / "model.json").read_text())
    assert (
        info["config"]["latent"] == 3
        and info["train"]["ema_decay"] == 0.5
        and info["train"]["batch_size"] == 8
    )
    code, err = _cli(
        monkeypatch, capsys, "sample", run, "-n", "5", "--out", tmp_path / "s.npz", "--seed", "4"
    )
    assert code == 0, err
    images = np.load(tmp_path / "s.npz")["images"]
    assert images.shape == (5, 8, 8, 1) and images.dtype == np.uint8
    code, err = _cli(
        monkeypatch, capsys, "sample", run, "-n", "3", "--out", tmp_path / "walk", "--interpolate"
    )
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "walk").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    # user errors come back as a message and exit status 2, not a traceback
    code, err = _cli(monkeypatch, capsys, *train, "--steps", "4")
    assert code == 2 and "already holds a run" in err
    code, err = _cli(
        monkeypatch, capsys, "sample", run, "-n", "2", "--out", tmp_path / "t.npz", "--class", "1"
    )
    assert code == 2 and "not class-conditional" in err
    code, err = _cli(
        monkeypatch,
        capsys,
        "train",
        "--model",
        "test-ae",
        "--data",
        dataset,
        "--out",
        tmp_path / "r2",
        "--max-time",
        "5q",
    )
    assert code == 2 and "duration" in err


def test_cli_restore(tmp_path, dataset, monkeypatch, capsys):
    import torch

    from genforge.models.pipeline import from_uint8, load_pipeline, to_uint8

    run = tmp_path / "run"
    code, err = _cli(monkeypatch, capsys, "train", "-m", "test-restorer", "-d", dataset, "-o", run, "--steps", "3", "-b", "8",
                     "--set", "train.tensorboard=false")  # fmt: skip
    assert code == 0, err
    images = np.load(dataset / "val" / "images-00000.npy")[:5]
    np.savez(tmp_path / "in.npz", images=images)
    code, err = _cli(monkeypatch, capsys, "restore", run, tmp_path / "in.npz", "--out", tmp_path / "out.npz",
                     "--corrupt", "gaussian", "--seed", "3")  # fmt: skip
    assert code == 0, err
    out = np.load(tmp_path / "out.npz")
    assert out["images"].shape == images.shape and not np.array_equal(out["corrupted"], images)
    model = load_pipeline(run).model
    with torch.no_grad():
        expected = to_uint8(model.restore(from_uint8(out["corrupted"])))
    assert np.array_equal(out["images"], expected)
    code, err = _cli(
        monkeypatch,
        capsys,
        "restore",
        run,
        tmp_path / "in.npz",
        "--out",
        tmp_path / "o2.npz",
        "--corrupt",
        "nope",
    )
    assert code == 2 and "unknown corruption" in err


def test_sample_output_matches_pipeline(tmp_path, dataset):
    from genforge.models.pipeline import load_pipeline
    from genforge.train.sampling import generate, write_images

    _train(tmp_path / "run", dataset, steps=2)
    images, labels = generate(tmp_path / "run", 6, seed=11)
    expected, _ = load_pipeline(tmp_path / "run").generate(6, seed=11)
    assert labels is None and np.array_equal(images, expected)
    write_images(tmp_path / "x.npz", images, labels)
    assert np.array_equal(np.load(tmp_path / "x.npz")["images"], images)
    with pytest.raises(GenforgeError, match="exists"):
        write_images(tmp_path / "x.npz", images, labels)


def test_precision_choices(tmp_path, dataset):
    from genforge.train.precision import cpu_has_bf16

    with pytest.raises(ConfigError, match="fp16 is for CUDA"):
        _train(tmp_path / "a", dataset, steps=2, precision="fp16", device="cpu")
    if not cpu_has_bf16():
        with pytest.raises(ConfigError, match="bf16 needs a CPU"):
            _train(tmp_path / "b", dataset, steps=2, precision="bf16", device="cpu")
        return
    trainer, _ = _train(tmp_path / "b", dataset, steps=6, precision="bf16", sets=["train.channels_last=true"])
    run = json.loads((tmp_path / "b" / "run.json").read_text())
    assert run["precision"] == "bf16" and run["train"]["channels_last"] is True
    records = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["main/loss"]) for r in records)
    # the weights stay fp32 (autocast computes in bf16, the optimiser updates fp32 masters)
    assert load_file(str(tmp_path / "b" / "model.safetensors"))["decoder.weight"].dtype == np.float32


def test_retaining_freed_host_memory_is_accepted_by_glibc():
    import platform

    from genforge.core.host_memory import retain_freed_memory

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt thresholds are a glibc feature")
    assert retain_freed_memory() is True


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(monkeypatch):
    from genforge.train import precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert precision.resolve_precision("auto", cpu).name == "bf16"
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert precision.resolve_precision("auto", cpu).name == "fp32"
    assert precision.auto_precision(torch.device("cuda")) == "fp32"  # no GPU measured


def _builtin_models() -> list[str]:
    import genforge.models.zoo  # noqa: F401  (registers the built-in families)
    from genforge.models.registry import MODELS

    # only the package's own image families (text ones have their own bf16 test in
    # test_text_train.py): other test modules register toy models at import
    return [
        name
        for name in MODELS.names()
        if MODELS.get(name).__module__.startswith("genforge.") and MODELS.get(name).modality == "image"
    ]


@pytest.mark.parametrize("name", _builtin_models())
def test_every_family_trains_under_bf16_autocast(tmp_path, name):
    # precision auto is bf16 on CPUs with native bf16: every family must run under it (mixed
    # fp32/bf16 tensors meet in losses, penalties and augmentations)
    from genforge.train.precision import cpu_has_bf16

    if not cpu_has_bf16():
        pytest.skip("this CPU has no native bf16 (AVX512-BF16/AMX); precision auto is fp32 here")
    data = make_dataset(tmp_path / "ds", n=16, size=28)
    trainer = build_trainer(
        tmp_path / "run",
        model_name=name,
        data=data,
        flags={"steps": 2, "batch_size": 4, "precision": "bf16"},
        sets=[*QUIET, "train.log_every=1", "train.sample_every=0", "train.checkpoint_every=0"],
        conditional=name in ("cgan", "cvae"),
    )
    trainer.fit()
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [v for r in records for k, v in r.items() if k.endswith("/loss")]
    assert losses and all(np.isfinite(losses))


def test_run_records_the_class_mix_it_trained_on(tmp_path, dataset):
    _train(tmp_path / "run", dataset, steps=1)
    info = json.loads((tmp_path / "run" / "model.json").read_text())["dataset"]
    counts = np.bincount(np.load(dataset / "train" / "labels.npy"), minlength=2).tolist()
    assert info["split"] == "train" and info["class_counts"] == counts and counts[0] != counts[1]


def test_conditional_labels_follow_the_training_class_mix():
    from pathlib import Path
    from types import SimpleNamespace

    from genforge.models.pipeline import Pipeline, interleaved_quotas

    model = SimpleNamespace(conditional=True, config=SimpleNamespace(num_classes=3))
    pipe = Pipeline(model=model, info={"dataset": {"class_counts": [50, 30, 20]}}, path=Path("."))
    assert np.bincount(pipe.class_labels(10)).tolist() == [5, 3, 2]
    assert pipe.class_labels(10).tolist() == [0, 1, 2, 0, 0, 1, 0, 2, 1, 0]  # spread, not blocks
    older = Pipeline(model=model, info={"dataset": {}}, path=Path("."))  # a run without counts: uniform
    assert older.class_labels(6).tolist() == [0, 1, 2, 0, 1, 2]
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 999, 5000):
        weights = rng.dirichlet(np.ones(10))
        labels = interleaved_quotas(weights, n)
        quotas = np.bincount(labels, minlength=10)
        assert quotas.sum() == n and np.all(np.abs(quotas - n * weights) < 1)
        if n >= 999:  # every half of the sequence holds about half of each class
            half = np.bincount(labels[: n // 2], minlength=10)
            assert np.all(np.abs(half - quotas / 2) <= 1)


def test_in_training_evaluation_samples_the_class_mix(tmp_path, dataset):
    from genforge.models.pipeline import load_pipeline

    trainer, _ = _train(tmp_path / "run", dataset, model="cvae", steps=1, sets=["model.num_classes=2"])
    counts = np.bincount(np.load(dataset / "train" / "labels.npy"), minlength=2)
    labels = trainer.eval_labels(64).numpy()
    assert np.abs(np.bincount(labels, minlength=2) - 64 * counts / counts.sum()).max() < 1
    # the same labels `genforge eval` asks a finished run for; the grids keep cycling classes
    assert np.array_equal(labels, load_pipeline(tmp_path / "run").class_labels(64))
    assert trainer.sample_labels(4).tolist() == [0, 1, 0, 1]


def test_resume_of_a_run_saved_before_a_field_existed(tmp_path, dataset):
    # run.json of an older genforge lacks fields added since (train.compile, a model option): the
    # run trained with their defaults, so it resumes; a non-default value for such a field is refused
    _train(tmp_path / "old", dataset, steps=4, sets=["train.checkpoint_every=4"])
    path = tmp_path / "old" / "run.json"
    saved = json.loads(path.read_text())
    del saved["train"]["compile"]
    del saved["model_config"][next(iter(saved["model_config"]))]
    path.write_text(json.dumps(saved))
    _, summary = _train(tmp_path / "old", dataset, steps=6, resume=True)
    assert summary["step"] == 6
    with pytest.raises(ConfigError, match="train fields differ: compile"):
        _train(tmp_path / "old", dataset, steps=8, resume=True, sets=["train.compile=auto"])
