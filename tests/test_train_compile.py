"""`train.compile`: when a run compiles, that a compiled gpt trains like the eager one, that its
checkpoint loads in an eager model, and that evaluation and sampling do not compile graphs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from genforge.core.errors import ConfigError
from genforge.models.pipeline import load_pipeline
from genforge.train import compile as train_compile
from genforge.train.compile import compile_wanted, cpp_compiler
from genforge.train.config import TrainConfig
from genforge.train.launch import build_trainer
from test_text_train import make_text_dataset

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks (conftest.one_thread)

CPU = torch.device("cpu")
TINY = [
    "model.block_size=16", "model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.warmup_steps=2",
    "train.progress=none", "train.tensorboard=false", "train.log_every=1", "train.sample_every=0",
    "train.ema=false", "train.precision=fp32",
]  # fmt: skip


def test_compile_wanted_follows_the_mode_and_the_budget(monkeypatch):
    assert not compile_wanted(False, CPU, 3600.0, None)
    assert compile_wanted(True, CPU, 10.0, None)
    # auto: only budgets that repay a cold compile, only on the measured device
    assert not compile_wanted("auto", CPU, 95.0, None)
    assert compile_wanted("auto", CPU, train_compile.AUTO_MIN_SECONDS, None)
    assert compile_wanted("auto", CPU, None, train_compile.AUTO_MIN_STEPS)
    assert not compile_wanted("auto", CPU, None, train_compile.AUTO_MIN_STEPS - 1)
    assert not compile_wanted("auto", CPU, 60.0, 10**6)  # the time budget ends the run first
    assert not compile_wanted("auto", torch.device("cuda"), 3600.0, None)
    monkeypatch.setattr(train_compile.shutil, "which", lambda name: None)
    assert cpp_compiler() is None
    assert not compile_wanted("auto", CPU, 3600.0, None)
    with pytest.raises(ConfigError, match="train.compile.*C\\+\\+ compiler"):
        compile_wanted(True, CPU, 10.0, None)


def test_config_reads_true_false_and_auto():
    assert TrainConfig(steps=1).compile is False
    from genforge.core.config import from_dict

    assert from_dict(TrainConfig, {"steps": 1, "compile": "auto"}, where="train").compile == "auto"
    with pytest.raises(ConfigError, match="train.compile"):
        from_dict(TrainConfig, {"steps": 1, "compile": "fast"}, where="train")


def _losses(run: Path) -> list[float]:
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


@pytest.mark.slow  # ~35 s with an empty inductor cache on 2 busy cores, ~6 s warm
@pytest.mark.skipif(cpp_compiler() is None, reason="no C++ compiler: inductor cannot build CPU kernels")
def test_compiled_run_trains_like_eager_and_loads_eager(tmp_path):
    data = make_text_dataset(tmp_path / "ds")
    runs = {}
    for name, sets in (("eager", []), ("compiled", ["train.compile=true"])):
        trainer = build_trainer(
            tmp_path / name,
            model_name="gpt",
            data=data,
            flags={"steps": 6, "batch_size": 4},
            sets=[*TINY, *sets],
        )
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        trainer.fit()
        runs[name] = trainer
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert runs["compiled"].compiled and not runs["eager"].compiled
    assert json.loads((tmp_path / "compiled" / "run.json").read_text())["compiled"] is True
    assert graphs == 1  # one graph for the training forward (the end-of-run samples ran eager)
    eager, compiled = _losses(tmp_path / "eager"), _losses(tmp_path / "compiled")
    assert len(eager) == len(compiled) == 6
    # the same batches and initial weights; inductor's fused kernels round differently
    np.testing.assert_allclose(compiled, eager, rtol=0, atol=2e-4)
    assert compiled[-1] < compiled[0]  # and it learns

    # the checkpoint: the same tensor names as an eager run's (no `_orig_mod.` prefixes), loaded
    # by an eager pipeline; evaluation of the compiled model itself adds no graph
    weights = load_file(str(tmp_path / "compiled" / "model.safetensors"))
    assert weights.keys() == load_file(str(tmp_path / "eager" / "model.safetensors")).keys()
    model = runs["compiled"].model.eval()
    tokens = torch.randint(0, model.config.vocab_size, (2, 17))
    assert torch.isfinite(model.nll(tokens)).all()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    pipe = load_pipeline(tmp_path / "compiled")
    assert "forward" not in vars(pipe.model)  # an eager model
    for key, value in pipe.model.state_dict().items():
        np.testing.assert_array_equal(value.float().numpy(), weights[key].astype(np.float32), err_msg=key)


@pytest.mark.slow  # ~25 s with an empty inductor cache, a few seconds warm
@pytest.mark.skipif(cpp_compiler() is None, reason="no C++ compiler: inductor cannot build CPU kernels")
def test_compiled_denoiser_steps_like_eager_and_restores_eagerly():
    from genforge.models.audio.denoiser import Denoiser
    from genforge.models.base import Batch
    from genforge.train.compile import compile_regions

    config = Denoiser.default_config(8000, 2000, crop=1000, refine=4, hidden=16, blocks=2)
    torch.manual_seed(0)
    clean = 0.1 * torch.randn(4, 2000)
    models = {}
    for name in ("eager", "compiled"):
        torch.manual_seed(1)
        models[name] = Denoiser(config)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    regions = compile_regions(models["compiled"])
    # the real-valued layers only: the STFT, the complex mask and the losses stay eager
    assert {type(r).__name__ for r in regions} >= {"Conv1d", "Sequential", "_Refiner"}
    losses, grads = {}, {}
    for name, model in models.items():
        torch.manual_seed(2)  # the same crops and noise (the global RNG)
        steps = [model.training_step("main", Batch(data=clean), s).loss for s in range(3)]
        steps[0].backward()
        losses[name] = [float(loss.detach()) for loss in steps]
        grads[name] = [p.grad for p in model.parameters()]
    np.testing.assert_allclose(losses["compiled"], losses["eager"], rtol=0, atol=1e-4)
    for compiled, eager in zip(grads["compiled"], grads["eager"], strict=True):  # the backward too
        assert compiled is not None and float((compiled - eager).norm()) <= 1e-3 * float(eager.norm()) + 1e-7
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs >= 1
    out = models["compiled"].restore(clean)  # no_grad: the eager forward, no new graph
    assert out.shape == clean.shape
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    # the waveform U-Net ran slower compiled: it names no region, nor does a restoration family by
    # default (its step calls `net`, not the model's forward), and a run records that
    assert Denoiser(Denoiser.default_config(8000, 2000, arch="wave", channels=4, depth=2)).compile_regions() == []
    from genforge.models.registry import MODELS

    assert MODELS.get("dae")(MODELS.get("dae").default_config(8, 1)).compile_regions() == []
