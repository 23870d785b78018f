"""Differentially private training (train/privacy.py): Opacus' DP-SGD inside the one trainer,
its accounting, refusals, budget, resume, Poisson sampling, and the records it leaves."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from torch import nn
from torch.nn import functional as F

from genforge.core.errors import ConfigError, GenforgeError
from genforge.data.loader import BatchLoader, to_float
from genforge.models.registry import MODELS
from genforge.train.launch import build_trainer
from genforge.train.privacy import (
    PrivacyConfig,
    accountant_epsilon,
    calibrate_noise,
    check_layers,
    largest_steps,
    public_metrics,
)
from test_train_models import TinyAE, TinyAEConfig, make_dataset

QUIET = ["train.progress=none", "train.tensorboard=false", "train.sample_every=0"]
# tiny GAN networks at 8 px (one stride-2 stage each way)
SMALL_GAN = ["model.g_widths=[16,8]", "model.d_widths=[8]", "model.latent_dim=8", "model.kernel=3"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks (conftest.one_thread)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "ds", n=128)


class BatchNormAE(TinyAE):
    """The tiny autoencoder with batch norm in its encoder: a layer DP-SGD cannot train."""

    def __init__(self, config: TinyAEConfig):
        super().__init__(config)
        d = config.channels * config.image_size**2
        self.encoder = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(d), nn.Linear(d, config.latent))


if "test-bn-ae" not in MODELS:
    MODELS.register("test-bn-ae", BatchNormAE)


def _trainer(out, dataset, model="test-ae", steps=8, sets=(), privacy=None, conditional=False, resume=False,
             batch_size=16):  # fmt: skip
    # a given sigma: calibrating one below 1 takes Opacus seconds (test_calibrated_noise_... and the
    # resume and CLI tests calibrate)
    privacy = {"epsilon": 8.0, "noise_multiplier": 1.0, "delta": 1e-3} if privacy is None else privacy
    return build_trainer(
        out, model_name=model, data=dataset, flags={"steps": steps, "batch_size": batch_size},
        sets=[*QUIET, "train.log_every=2", *sets], privacy=privacy, conditional=conditional, resume=resume,
    )  # fmt: skip


def _model_json(run) -> dict:
    return json.loads((run / "model.json").read_text())


# --- accounting ---------------------------------------------------------------------------------------


def test_epsilon_matches_opacus_rdp_computation():
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    q, sigma, steps, delta = 256 / 60000, 1.1, 3000, 1e-5
    # Opacus' own analysis, called directly: RDP of the subsampled Gaussian, then the conversion
    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=orders)
    reference, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    assert accountant_epsilon("rdp", sigma, q, steps, delta) == pytest.approx(reference, rel=1e-12)
    # the accountant stepped one step at a time, as the DP optimiser's hook does, agrees
    acc = RDPAccountant()
    for _ in range(steps):
        acc.step(noise_multiplier=sigma, sample_rate=q)
    assert acc.get_epsilon(delta) == pytest.approx(reference, rel=1e-12)
    assert accountant_epsilon("rdp", sigma, q, 0, delta) == 0.0


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_calibrated_noise_reaches_the_target(accountant):
    q, steps, delta, target = 0.05, 200, 1e-5, 4.0
    sigma = calibrate_noise(target, delta, q, steps, accountant)
    eps = accountant_epsilon(accountant, sigma, q, steps, delta)
    assert target - 0.02 <= eps <= target  # within Opacus' tolerance, never above
    assert accountant_epsilon(accountant, sigma * 0.97, q, steps, delta) > target  # the smallest such sigma
    if accountant == "rdp":  # no sigma up to Opacus' limit reaches a near-zero epsilon
        with pytest.raises(ConfigError, match="privacy.epsilon: no noise multiplier"):
            calibrate_noise(1e-9, delta, 0.9, 10**6, accountant)


def test_largest_steps_search():
    assert largest_steps(lambda n: n <= 37) == 37
    assert largest_steps(lambda n: n <= 37, known=20) == 37
    assert largest_steps(lambda n: n <= 0) == 0


# --- refusals -----------------------------------------------------------------------------------------


def test_refuses_batch_norm_naming_the_layer(tmp_path, dataset):
    with pytest.raises(ConfigError, match=r"encoder\.1 \(BatchNorm1d\): batch statistics mix"):
        _trainer(tmp_path / "bn", dataset, model="test-bn-ae")
    # batch norm without affine parameters (which Opacus' own validator skips) is refused too
    bare = {"encoder": nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, affine=False))}
    with pytest.raises(ConfigError, match=r"encoder\.1 \(BatchNorm1d\)"):
        check_layers("m", bare)
    sn = {"discriminator": nn.Sequential(nn.utils.parametrizations.spectral_norm(nn.Linear(4, 1)))}
    with pytest.raises(
        ConfigError, match=r"discriminator\.0 \(ParametrizedLinear\): its weight is reparametrised"
    ):
        check_layers("m", sn)
    check_layers("m", {"encoder": nn.Sequential(nn.Linear(4, 4), nn.GroupNorm(2, 4))})  # fine


def test_refuses_what_dp_cannot_honour(tmp_path, dataset):
    # the families name the config field and the fix
    cases = [
        ("dcgan", ["model.d_norm=batch"], "model.d_norm"),
        ("sngan", [], "model.spectral_norm"),
        ("wgan-gp", [], "model.gp_weight"),
        ("dcgan", ["model.update=simultaneous"], "model.update"),
        ("cgan", ["model.reuse_fakes=true"], "model.reuse_fakes"),
        ("cvae", ["model.variance=learned"], "model.variance"),
    ]
    for i, (model, sets, field) in enumerate(cases):
        with pytest.raises(ConfigError, match=field):
            _trainer(tmp_path / f"r{i}", dataset, model=model, sets=[*SMALL_GAN * (model != "cvae"), *sets],
                     conditional=model in ("cgan", "cvae"))  # fmt: skip
    with pytest.raises(ConfigError, match="train.precision: bf16"):
        _trainer(tmp_path / "p", dataset, sets=["train.precision=bf16"])
    with pytest.raises(ConfigError, match="noise_multiplicity"):
        _trainer(tmp_path / "k", dataset, privacy={"epsilon": 8.0, "delta": 1e-3, "noise_multiplicity": 2})
    with pytest.raises(ConfigError, match=r"privacy.delta: 0.01 is not below 1/N = 1/128"):
        _trainer(tmp_path / "d", dataset, privacy={"epsilon": 8.0, "delta": 0.01})
    with pytest.raises(ConfigError, match="privacy.steps"):  # a time budget alone plans no steps
        build_trainer(tmp_path / "t", model_name="test-ae", data=dataset, flags={"max_time": "5s"},
                      sets=QUIET, privacy={"epsilon": 8.0, "delta": 1e-3})  # fmt: skip
    with pytest.raises(ConfigError, match="no privacy.epsilon"):
        _trainer(tmp_path / "e", dataset, privacy={"delta": 1e-3})
    with pytest.raises(ConfigError, match="privacy.noise_multiplier: must be > 0"):
        _trainer(tmp_path / "z", dataset, privacy={"noise_multiplier": 0.0, "delta": 1e-3})


# --- the mechanism --------------------------------------------------------------------------------------


def test_per_example_gradients_are_clipped_and_averaged(tmp_path, dataset):
    c = 0.01  # far below every example's gradient norm, so every one is clipped
    trainer = _trainer(tmp_path / "clip", dataset, privacy={"noise_multiplier": 1.0, "delta": 1e-3, "max_grad_norm": c},
                       sets=["model.noise=0", "model.dropout=0", "train.ema=false"])  # fmt: skip
    ph = trainer.phases[0]
    ph.optimizer.noise_multiplier = 0.0  # noise off, to see the clipped sum alone
    params = dict(trainer.model.named_parameters())
    loader = trainer.feed.loader
    x = to_float(loader.gather(loader.poisson_indices(0, 0)).images)
    assert 4 < len(x) < 32  # a Poisson batch: its size varies around 16
    # by hand: each example's gradient, clipped to norm c, summed, over the EXPECTED batch size
    expected = {k: torch.zeros_like(p) for k, p in params.items()}
    norms = []
    for xi in x:
        grads = torch.autograd.grad(F.mse_loss(trainer.model._decode(trainer.model.encoder(xi[None])), xi[None]),
                                    list(params.values()))  # fmt: skip
        norm = torch.sqrt(sum(g.square().sum() for g in grads))
        norms.append(float(norm))
        for k, g in zip(params, grads, strict=True):
            expected[k] += g * min(1.0, c / (float(norm) + 1e-6))
    assert min(norms) > c
    trainer._train_step(0)
    for k, p in params.items():
        torch.testing.assert_close(p.grad, expected[k] / 16, rtol=1e-4, atol=1e-9)
    assert trainer.private.steps_taken == 1


def test_noise_has_the_calibrated_scale(tmp_path, dataset):
    """With every example's gradient clipped to zero length, the gradient is the noise alone:
    N(0, (sigma C / B)^2) per coordinate."""
    sigma, c = 1.3, 0.5
    trainer = _trainer(
        tmp_path / "noise", dataset, privacy={"noise_multiplier": sigma, "delta": 1e-3, "max_grad_norm": c}
    )
    ph = trainer.phases[0]
    ph.optimizer.clip_and_accumulate = lambda: [
        setattr(p, "summed_grad", torch.zeros_like(p)) for p in ph.params
    ]
    trainer._train_step(0)
    noise = torch.cat([p.grad.flatten() for p in ph.params])
    assert len(noise) > 500
    assert float(noise.mean()) == pytest.approx(0.0, abs=4 * sigma * c / 16 / math.sqrt(len(noise)))
    assert float(noise.std()) == pytest.approx(sigma * c / 16, rel=0.1)


def test_gan_generator_phase_never_sees_the_private_batch(tmp_path, dataset):
    trainer = _trainer(tmp_path / "gan", dataset, model="cgan", steps=6, sets=SMALL_GAN, conditional=True)
    seen = []
    step_fn = trainer.model.training_step

    def spy(phase, batch, step):
        seen.append((phase, batch.images.detach().clone(), batch.labels.clone()))
        return step_fn(phase, batch, step)

    trainer.model.training_step = spy
    trainer.fit()
    info = _model_json(tmp_path / "gan")["privacy"]
    assert info["private_phases"] == ["discriminator"] and info["public_phases"] == ["generator"]
    assert info["private_modules"] == ["discriminator"] and info["steps"] == 6
    gen = [(x, y) for phase, x, y in seen if phase == "generator"]
    real = [x for phase, x, _ in seen if phase == "discriminator"]
    assert len(gen) == 6 and all(x.shape[0] == 16 and not x.any() for x, _ in gen)  # zeros, expected size
    assert any(float(x.abs().max()) > 0.5 for x in real)
    # the public labels: uniform over the classes, drawn from (seed, step), not the batch's
    labels = torch.cat([y for _, y in gen])
    assert set(labels.tolist()) == {0, 1}
    assert not torch.equal(gen[0][1], gen[1][1])


def test_empty_poisson_batches_take_a_noise_only_step(tmp_path, dataset):
    # q = 1/128: about a third of the batches are empty
    trainer = _trainer(tmp_path / "empty", dataset, steps=12, batch_size=1,
                       privacy={"noise_multiplier": 1.0, "delta": 1e-3})  # fmt: skip
    loader = trainer.feed.loader
    sizes = [len(loader.poisson_indices(0, k)) for k in range(12)]
    assert 0 in sizes and max(sizes) > 0
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    summary = trainer.fit()
    assert summary["step"] == 12 and trainer.private.steps_taken == 12
    assert all(not torch.equal(before[k], v) for k, v in trainer.model.named_parameters())


def test_diffusion_noise_multiplicity_runs_k_forwards(tmp_path, dataset):
    sets = [
        "model.base_channels=8",
        "model.channel_mults=[1]",
        "model.attention_resolutions=[]",
        "model.patch_size=1",
    ]
    trainer = _trainer(tmp_path / "dm", dataset, model="ddpm", steps=2, sets=sets, conditional=True,
                       privacy={"noise_multiplier": 1.0, "delta": 1e-3, "noise_multiplicity": 3})  # fmt: skip
    training_calls = []  # forwards with gradients: training steps, not the final sample grid
    trainer.model.denoiser.register_forward_hook(
        lambda *_: training_calls.append(1) if torch.is_grad_enabled() else None
    )
    trainer.fit()
    assert len(training_calls) == 2 * 3 and trainer.model.noise_multiplicity == 3
    assert _model_json(tmp_path / "dm")["privacy"]["noise_multiplicity"] == 3


# --- budget, resume, sampling -----------------------------------------------------------------------------


def test_privacy_budget_stops_training(tmp_path, dataset):
    privacy = {"epsilon": 1.5, "noise_multiplier": 1.0, "delta": 1e-3}
    trainer = _trainer(tmp_path / "b", dataset, steps=500, privacy=privacy)
    summary = trainer.fit()
    assert summary["stop_reason"].startswith("privacy budget spent (epsilon")
    steps = summary["step"]
    assert 0 < steps < 500
    p = trainer.private
    assert p.epsilon() <= 1.5 < p.epsilon_after(steps + 1)  # stopped at the last step within the target
    info = _model_json(tmp_path / "b")["privacy"]
    assert info["steps"] == steps and info["epsilon"] == pytest.approx(p.epsilon_after(steps))
    # the stop rule counts DP steps: a GAN with 2 critic steps per trainer step stops at half
    gan = _trainer(tmp_path / "g", dataset, model="dcgan", steps=500, privacy=privacy,
                   sets=[*SMALL_GAN, "model.n_critic=2"])  # fmt: skip
    assert gan.fit()["step"] == steps // 2 and gan.private.steps_taken == 2 * (steps // 2)


@pytest.mark.parametrize("model", ["test-ae", "cgan"])
def test_dp_resume_is_bit_exact(tmp_path, dataset, model):
    extra = {"test-ae": {}, "cgan": {"sets": SMALL_GAN, "conditional": True}}[model]
    sets = ["train.checkpoint_every=4", *extra.get("sets", [])]
    # the noise is planned for 10 steps in both; the interrupted run stops at 6, then resumes
    kw = {"model": model, "conditional": extra.get("conditional", False), "sets": sets,
          "privacy": {"epsilon": 3.0, "delta": 1e-3, "steps": 10}}  # fmt: skip
    _trainer(tmp_path / "full", dataset, steps=10, **kw).fit()
    _trainer(tmp_path / "part", dataset, steps=6, **kw).fit()
    trainer = _trainer(tmp_path / "part", dataset, steps=10, resume=True, **kw)
    assert trainer.fit(resume=True)["step"] == 10
    full, part = (
        load_file(str(tmp_path / "full" / "model.safetensors")),
        load_file(str(tmp_path / "part" / "model.safetensors")),
    )
    assert full.keys() == part.keys()
    for key in full:
        assert np.array_equal(full[key], part[key]), key
    a, b = _model_json(tmp_path / "full")["privacy"], _model_json(tmp_path / "part")["privacy"]
    assert a == b and a["steps"] == 10
    state = json.loads((tmp_path / "part" / "checkpoints" / "step-0000008" / "state.json").read_text())
    assert state["privacy"]["history"][0][2] == 8 and len(state["privacy"]["noise"]) > 0
    # a resumed run keeps its privacy settings
    with pytest.raises(ConfigError, match="privacy fields differ: max_grad_norm"):
        _trainer(tmp_path / "part", dataset, steps=12, resume=True,
                 **{**kw, "privacy": {**kw["privacy"], "max_grad_norm": 2.0}})  # fmt: skip


def test_poisson_batches():
    n, b = 1000, 50
    images = np.zeros((n, 2, 2, 1), np.uint8)
    loader = BatchLoader(images, np.arange(n) % 3, batch_size=b, seed=4, poisson=True, in_memory=True)
    assert loader.sample_rate == b / n and loader.num_examples == n
    sizes, has_zero = [], 0
    for _ in range(400):
        batch = next(loader)
        sizes.append(len(batch.labels))
        has_zero += bool((batch.labels == 0).any())
    sizes = np.array(sizes)
    q = b / n
    assert abs(sizes.mean() - b) < 4 * math.sqrt(n * q * (1 - q) / 400)  # mean batch_size
    assert sizes.var() == pytest.approx(n * q * (1 - q), rel=0.25)  # binomial spread: sizes vary
    assert (loader.epoch, loader.position) == (19, (n // b) * b)  # nominal epochs of N / B batches
    # resume: the state is {seed, epoch, position}, the next batch the same
    state = loader.state_dict()
    expected = next(loader).labels
    other = BatchLoader(images, np.arange(n) % 3, batch_size=b, seed=4, poisson=True, in_memory=True)
    other.load_state_dict(state)
    assert torch.equal(next(other).labels, expected)
    with pytest.raises(Exception, match="Poisson"):
        BatchLoader(images, None, batch_size=b, poisson=True, world_size=2, rank=0)


def test_privacy_config_fields():
    cfg = PrivacyConfig(epsilon=10)
    assert cfg.enabled and cfg.delta == 1e-5 and cfg.accountant == "rdp" and cfg.poisson
    assert not PrivacyConfig().enabled and PrivacyConfig(noise_multiplier=1.0).enabled
    for bad in (
        {"epsilon": 0},
        {"delta": 1.0},
        {"max_grad_norm": 0},
        {"steps": 0},
        {"noise_multiplicity": 0},
    ):
        with pytest.raises(ConfigError, match="privacy."):
            PrivacyConfig(**bad)


# --- the CLI and the records ------------------------------------------------------------------------------


def test_cli_flags_and_what_the_run_records(tmp_path, dataset, monkeypatch, capsys):
    from genforge.cli import main

    run = tmp_path / "run"
    args = ["genforge", "train", "--model", "cvae", "--conditional", "--data", str(dataset), "--out", str(run),
            "--steps", "6", "-b", "16", "--dp-epsilon", "5", "--dp-delta", "1e-4", "--dp-max-grad-norm", "0.5",
            "--set", "model.widths=[4,8]", "--set", "privacy.accountant=prv", *(f"--set={s}" for s in QUIET)]  # fmt: skip
    monkeypatch.setattr("sys.argv", args)
    try:
        main()
    except SystemExit as exc:
        assert exc.code == 0, capsys.readouterr().err
    info = _model_json(run)
    p = info["privacy"]
    assert (p["target_epsilon"], p["delta"], p["max_grad_norm"], p["accountant"]) == (5.0, 1e-4, 0.5, "prv")
    assert p["steps"] == 6 and 4.9 <= p["epsilon"] <= 5.0 and p["sampling"] == "poisson"
    assert p["sample_rate"] == 16 / 128 and p["private_modules"] == ["encoder", "decoder", "scale"]
    assert p["epsilon"] == pytest.approx(accountant_epsilon("prv", p["noise_multiplier"], 16 / 128, 6, 1e-4))
    assert info["config"]["variance"] == "fixed"  # the family's private default
    assert "class_counts" not in info["dataset"]  # a statistic of the private split
    run_json = json.loads((run / "run.json").read_text())
    assert run_json["privacy"]["epsilon"] == 5.0 and run_json["precision"] == "fp32"
    assert run_json["privacy"]["noise_multiplier"] == p["noise_multiplier"]  # resolved: resumes keep it
    assert run_json["private_training"]["private_modules"] == p["private_modules"]
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert (
        logged[-1]["privacy/epsilon"] == pytest.approx(p["epsilon"]) and logged[-1]["privacy/dp_steps"] == 6
    )


def test_metrics_report_and_service_carry_the_guarantee(tmp_path, dataset, monkeypatch):
    from genforge.deploy.config import ServeConfig
    from genforge.deploy.service import ServiceState
    from genforge.evaluate.evaluate import EvalConfig, evaluate
    from genforge.evaluate.report import write_report

    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    _trainer(run, dataset, steps=4).fit()
    record = _model_json(run)["privacy"]
    metrics = evaluate(run, dataset, EvalConfig(n=40, features="random", metrics=["fid"], memorisation=False))
    assert metrics["values"]["dp_epsilon"] == record["epsilon"] and metrics["values"]["dp_delta"] == 1e-3
    assert metrics["privacy"] == record and "fid" in metrics["values"]
    page = write_report(run, n=4).read_text()
    assert "<h2>Differential privacy" in page and f"epsilon {record['epsilon']:.5g}" in page
    state = ServiceState(ServeConfig(run_dir=str(run), warmup=False), None)
    state.start()
    try:
        info = state.model_info()
    finally:
        state.stop()
    assert info["privacy"] == record
    assert set(info["metrics"]["values"]) == {"dp_epsilon", "dp_delta", "dp_noise_multiplier", "dp_sample_rate",
                                              "dp_steps", "dp_max_grad_norm"}  # fmt: skip
    assert "withheld" in info["metrics"] and "class_counts" not in info["dataset"]
    plain = {"values": {"fid": 1.0}}
    assert public_metrics(plain, {}) is plain  # runs without DP show everything


def test_runs_without_privacy_are_untouched(tmp_path, dataset):
    trainer = build_trainer(tmp_path / "plain", model_name="test-ae", data=dataset, flags={"steps": 2, "batch_size": 8},
                            sets=QUIET)  # fmt: skip
    assert trainer.private is None and trainer.privacy is None and trainer.feed.loader.sample_rate is None
    trainer.fit()
    info = _model_json(tmp_path / "plain")
    assert "privacy" not in info and "class_counts" in info["dataset"]
    with pytest.raises(GenforgeError, match="privacy fields differ"):  # no DP switched on midway
        build_trainer(tmp_path / "plain", model_name="test-ae", data=dataset, flags={"steps": 4, "batch_size": 8},
                      sets=QUIET, privacy={"epsilon": 8.0, "delta": 1e-3}, resume=True)  # fmt: skip


def test_scenario_privacy_section_reaches_training(tmp_path, dataset):
    import io

    from rich.console import Console

    from genforge.core.config import from_dict
    from genforge.scenarios.runner import _train, metric_value
    from genforge.scenarios.schema import Scenario

    sc = from_dict(Scenario, {
        "name": "dp", "model": {"name": "test-ae"},
        "train": {"max_time": None, "steps": 3, "config": {"batch_size": 16, "progress": "none",
                                                            "tensorboard": False, "sample_every": 0}},
        "privacy": {"epsilon": 8.0, "noise_multiplier": 1.0, "delta": 1e-3},
    })  # fmt: skip
    run = tmp_path / "run"
    _train(sc, dataset, run, Console(file=io.StringIO()))
    record = _model_json(run)["privacy"]
    assert record["target_epsilon"] == 8.0 and record["steps"] == 3
    # a gate on the epsilon spent reads it from metrics.json values
    assert metric_value({"values": {"dp_epsilon": record["epsilon"]}}, "dp_epsilon") == record["epsilon"]
