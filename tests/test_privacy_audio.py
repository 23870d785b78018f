"""Differentially private audio runs (train/privacy.py through the audio feed): which audio
families train under DP-SGD and which refuse with their reason, the budget stop and the record a
private mel-VAE leaves, per-example gradients of every private audio family against autograd, DPDM's
noise multiplicity on the wrapped and the waveform diffusion models, and `genforge eval` of a
private audio run carrying the guarantee into metrics.json."""

from __future__ import annotations

import json

import pytest
import torch

from audio_fixtures import make_synth_dataset
from genforge.core.errors import ConfigError
from genforge.evaluate.audio import evaluator as evaluator_module
from genforge.train.launch import build_trainer
from test_audio_eval import FastEvaluatorConfig
from test_audio_train import QUIET, _sets

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks (conftest.one_thread)

# a given sigma: calibrating one takes Opacus seconds; delta below 1 / 48 clips
PRIVACY = {"epsilon": 8.0, "noise_multiplier": 1.0, "delta": 1e-3}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synth_dataset(tmp_path_factory.mktemp("audio") / "ds", n_train=48, n_val=24)


def _trainer(out, data, name, steps=3, sets=(), privacy=None, batch_size=8):
    return build_trainer(out, model_name=name, data=data, flags={"steps": steps, "batch_size": batch_size, "seed": 3},
                         sets=[*_sets(name), *QUIET, *sets], privacy=PRIVACY if privacy is None else privacy,
                         conditional=True)  # fmt: skip


def _model_json(run) -> dict:
    return json.loads((run / "model.json").read_text())


# --- which families train, which refuse ------------------------------------------------------------


def test_dp_mel_vae_stops_at_its_budget_and_records_the_guarantee(tmp_path, synth):
    trainer = _trainer(tmp_path / "run", synth, "mel-vae", steps=500, privacy={**PRIVACY, "epsilon": 2.0})
    summary = trainer.fit()
    assert summary["stop_reason"].startswith("privacy budget spent (epsilon")
    steps, p = summary["step"], trainer.private
    assert 0 < steps < 500 and p.steps_taken == steps
    assert p.epsilon() <= 2.0 < p.epsilon_after(steps + 1)  # the last step within the target
    info = _model_json(tmp_path / "run")
    record = info["privacy"]
    assert record["epsilon"] == pytest.approx(p.epsilon_after(steps)) and record["steps"] == steps
    assert (record["sampling"], record["dataset_size"], record["sample_rate"]) == ("poisson", 48, 8 / 48)
    assert record["private_modules"] == ["encoder", "decoder", "scale"] and record["public_phases"] == []
    # the inner VAE's private default reaches it through the wrapper, and so does the fp32 rule
    assert info["config"]["inner_config"]["variance"] == "fixed"
    assert json.loads((tmp_path / "run" / "run.json").read_text())["precision"] == "fp32"


@pytest.mark.parametrize(
    ("name", "sets", "private"),
    [
        ("mel-ddpm", [], ["denoiser"]),
        ("diffwave", [], ["denoiser"]),
        # the GANs: only the discriminator is private, the generator phase is public
        ("wavegan", [], ["discriminator"]),
        ("mel-sngan", ["model.inner_config.spectral_norm=false"], ["discriminator"]),
    ],
)
def test_audio_families_train_privately(tmp_path, synth, name, sets, private):
    trainer = _trainer(tmp_path / name, synth, name, sets=sets)
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    assert trainer.fit()["step"] == 3
    record = _model_json(tmp_path / name)["privacy"]
    assert record["private_modules"] == private and record["steps"] == 3
    moved = {k for k, v in trainer.model.named_parameters() if not torch.equal(before[k], v)}
    assert any(k.startswith(private[0] + ".") for k in moved)


def test_gan_private_defaults_drop_what_dp_cannot_honour(tmp_path, synth):
    trainer = _trainer(tmp_path / "wg", synth, "wavegan")
    config = trainer.model.config
    assert not config.spectral_norm
    speakers = config.num_speakers
    assert trainer.model.speaker_conditional and speakers > 1
    seen = []
    step = trainer.model.training_step

    def spy(phase, batch, at):
        seen.append((phase, batch.data.detach().clone(), batch.speakers))
        return step(phase, batch, at)

    trainer.model.training_step = spy
    trainer.fit()
    generator = [(x, s) for phase, x, s in seen if phase == "generator"]
    # the generator's batch is public: zeros, speakers drawn uniformly (not the private speaker mix)
    assert len(generator) == 3 and all(x.shape[0] == 8 and not x.any() for x, _s in generator)
    drawn = torch.cat([s for _x, s in generator])
    assert drawn.shape == (24,) and 0 <= int(drawn.min()) and int(drawn.max()) < speakers
    assert len(set(drawn.tolist())) > 1


@pytest.mark.parametrize(
    ("name", "sets", "privacy", "message"),
    [
        ("mel-sngan", [], {}, r"model\.inner_config\.spectral_norm: spectral norm reparametrises"),
        ("wavegan", ["model.spectral_norm=true"], {}, r"model\.spectral_norm: spectral norm"),
        ("wavegan", ["model.loss=wasserstein", "model.gp_weight=10"], {}, r"model\.gp_weight: the gradient penalty"),
        ("mel-vae", ["model.inner_config.variance=learned"], {}, r"model\.inner_config\.variance: a learned"),
        ("mel-vae", [], {"noise_multiplicity": 2}, r"privacy\.noise_multiplicity: model mel-vae draws one noise"),
    ],
)  # fmt: skip
def test_what_dp_cannot_honour_is_refused_naming_the_field(tmp_path, synth, name, sets, privacy, message):
    with pytest.raises(ConfigError, match=message):
        _trainer(tmp_path / "run", synth, name, sets=sets, privacy={**PRIVACY, **privacy})


def test_denoiser_refuses_since_its_objective_couples_the_clips(tmp_path, synth):
    with pytest.raises(
        ConfigError, match=r"model denoiser: .*couples the clips of a batch.*without --dp-epsilon"
    ):
        build_trainer(tmp_path / "dn", model_name="denoiser", data=synth, flags={"steps": 2, "batch_size": 8},
                      sets=["model.hidden=16", "model.blocks=1", *QUIET], privacy=PRIVACY)  # fmt: skip


# --- the mechanism ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "sets"),
    [("mel-vae", []), ("mel-ddpm", []), ("diffwave", []), ("wavegan", []),
     ("mel-sngan", ["model.inner_config.spectral_norm=false"])],
)  # fmt: skip
def test_per_example_gradients_sum_to_autograds_batch_gradient(tmp_path, synth, name, sets):
    """Opacus' per-clip gradients of the private modules (the hooks DP-SGD clips) average to
    autograd's gradient of the batch loss, in fp32, with the same random draws in both."""
    trainer = _trainer(tmp_path / name, synth, name, sets=sets)
    private = trainer.private
    phase = next(ph for ph in trainer.phases if ph.name in private.private_phases)
    model = trainer.model.train()
    batch = trainer.feed.next_batch()
    n = len(batch.data)
    assert n >= 2  # a Poisson batch of the 48 clips at q = 1/6
    with torch.no_grad():  # zero-initialised output layers would leave the layers before them no gradient
        for param in phase.params:
            param.add_(0.05 * torch.randn_like(param))
    torch.manual_seed(11)
    reference = torch.autograd.grad(model.training_step(phase.name, batch, 0).loss, phase.params)
    private._enable_hooks(True)
    try:
        torch.manual_seed(11)
        model.training_step(phase.name, batch, 0).loss.backward()
    finally:
        private._enable_hooks(False)
    summed = [param.grad_sample.sum(0) / n for param in phase.params]
    assert all(s.shape == ref.shape for s, ref in zip(summed, reference, strict=True))
    flat_ref, flat = torch.cat([r.flatten() for r in reference]), torch.cat([s.flatten() for s in summed])
    # fp32 sums in another order: ~1e-6 of the gradient's norm (biases before a GroupNorm get
    # ~1e-7 gradients, so no per-tensor relative test); clipping would see the same norms
    assert float((flat - flat_ref).norm()) <= 1e-5 * float(flat_ref.norm())
    per_example = torch.cat([p.grad_sample.flatten(1) for p in phase.params], 1).norm(dim=1)
    # a hinge loss gives a clip past both margins no gradient, so most clips, not all
    assert float((per_example > 0).float().mean()) >= 0.5 and float((flat_ref != 0).float().mean()) > 0.9


@pytest.mark.parametrize("name", ["mel-ddpm", "diffwave"])
def test_diffusion_noise_multiplicity_reaches_the_denoiser(tmp_path, synth, name):
    trainer = _trainer(tmp_path / name, synth, name, steps=2, privacy={**PRIVACY, "noise_multiplicity": 3})
    calls = []  # forwards with gradients: training steps, not the final samples
    trainer.model.denoiser.register_forward_hook(
        lambda *_: calls.append(1) if torch.is_grad_enabled() else None
    )
    trainer.fit()
    assert len(calls) == 2 * 3 and trainer.model.noise_multiplicity == 3
    assert _model_json(tmp_path / name)["privacy"]["noise_multiplicity"] == 3


# --- evaluation ----------------------------------------------------------------------------------------


def test_eval_of_a_private_audio_run_carries_the_guarantee(tmp_path, synth, monkeypatch):
    from genforge.evaluate.evaluate import EvalConfig, evaluate

    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(evaluator_module, "AudioEvaluatorConfig", FastEvaluatorConfig)
    run = tmp_path / "run"
    _trainer(run, synth, "mel-vae", steps=3).fit()
    record = _model_json(run)["privacy"]
    metrics = evaluate(run, synth, EvalConfig(n=12))
    values = metrics["values"]
    assert values["dp_epsilon"] == record["epsilon"] and values["dp_delta"] == 1e-3
    assert values["dp_steps"] == 3 and values["dp_noise_multiplier"] == 1.0
    assert values["dp_sample_rate"] == pytest.approx(8 / 48) and values["dp_max_grad_norm"] == 1.0
    assert metrics["privacy"] == record and "fad" in values
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["values"]["dp_epsilon"] == record["epsilon"] and saved["privacy"] == record
