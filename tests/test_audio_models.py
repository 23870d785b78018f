"""Audio model families on their own (no trainer): the log-mel representation and its way back
to waves, the 1-D blocks, conditioning on digit and speaker, and each family's loss falling on
the synthetic tone "digits" (tests/audio_fixtures.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import genforge.models.zoo  # noqa: F401  (registers every family)
from audio_fixtures import synth_clips
from genforge.audio.spectrogram import log_mel
from genforge.core.errors import ConfigError, GenforgeError
from genforge.models.audio.conditioning import sample_condition, training_condition
from genforge.models.audio.nets import PhaseShuffle, WaveGenerator, fold, unfold
from genforge.models.audio.spectral import MelImage, SpectralConfig, joint_classes, joint_labels
from genforge.models.base import Batch
from genforge.models.registry import MODELS, build_model

RATE, LENGTH, CLASSES, SPEAKERS = 8000, 4000, 3, 2
# tiny versions of each family for these clips (the defaults are sized for 1 s at 8 kHz)
TINY = {
    "mel-vae": {"n_mels": 32, "inner_config": {"widths": [8, 16], "latent_dim": 4, "lr": 3e-3}},
    "mel-sngan": {"n_mels": 32, "inner_config": {"g_widths": [32, 16, 8], "d_widths": [8, 16]}},
    "mel-ddpm": {"n_mels": 32, "inner_config": {"base_channels": 8, "channel_mults": [1, 2], "lr": 2e-3,
                                                "attention_resolutions": [], "sample_steps": 4}},
    "wavegan": {"g_widths": [32, 16], "d_widths": [8, 16], "n_critic": 1},
    "diffwave": {"channels": 32, "layers": 4, "cycle": 4, "fold": 8, "sample_steps": 4, "lr": 5e-3},
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks (conftest.one_thread)


def _clips(n: int = 12, seed: int = 0) -> Batch:
    audio, labels, speakers = synth_clips(n, CLASSES, SPEAKERS, LENGTH, RATE, seed)
    return Batch(torch.from_numpy(audio), torch.from_numpy(labels), speakers=torch.from_numpy(speakers))


def _model(name: str, classes: int = CLASSES, speakers: int = SPEAKERS, **over):
    torch.manual_seed(0)
    cls = MODELS.get(name)
    return cls(
        cls.default_config(RATE, LENGTH, num_classes=classes, num_speakers=speakers, **{**TINY[name], **over})
    )


# --- the spectrogram representation ------------------------------------------------------------


def test_mel_image_is_square_normalised_and_inverts_exactly():
    cfg = SpectralConfig(sample_rate=RATE, length=8000)
    assert cfg.hop == 126 and cfg.mel().frames(8000) == 64  # 1 s at 8 kHz fills a 64 x 64 image
    rep = MelImage(cfg)
    waves = _clips(4).data
    rep4k = MelImage(SpectralConfig(sample_rate=RATE, length=LENGTH, n_mels=32))
    image = rep4k.to_image(waves)
    assert image.shape == (4, 1, 32, 32) and image.min() >= -1 and image.max() <= 1
    # the image is the clamped log-mel, scaled: undoing the scale gives it back
    lm = log_mel(waves, rep4k.mel).clamp(max=rep4k.high)
    torch.testing.assert_close(rep4k.to_log_mel(image)[..., : lm.shape[-1]], lm, atol=1e-4, rtol=0)
    assert rep.to_image(torch.zeros(2, 8000)).eq(-1).all()  # silence is the floor everywhere
    with pytest.raises(ConfigError, match="n_fft"):
        SpectralConfig(length=4000, n_mels=16, n_fft=256)  # hop 266 > n_fft 256
    with pytest.raises(ConfigError, match="STFT bins"):
        SpectralConfig(n_mels=200, n_fft=256)  # 129 bins; n_fft 0 would pick 512


def test_the_window_spans_four_hops_unless_set():
    # Griffin-Lim needs the frames to overlap: n_fft 0 picks the smallest power of two over 4 hops
    assert SpectralConfig(sample_rate=8000, length=8000).n_fft == 512  # hop 126
    assert SpectralConfig(sample_rate=16000, length=16000).n_fft == 1024  # hop 253
    assert SpectralConfig(length=4000, n_mels=16).n_fft == 2048  # hop 266
    assert SpectralConfig(length=8000, hop_length=32).n_fft == 128  # 4 hops, and a bin per mel band
    assert SpectralConfig(length=8000, n_fft=256).n_fft == 256  # set (runs saved before): kept
    cfg = SpectralConfig(sample_rate=RATE, length=LENGTH, n_mels=32)
    assert cfg.n_fft >= 4 * cfg.hop and cfg.n_fft // 2 < 4 * cfg.hop
    # a saved config is concrete: rebuilding it from its dict keeps the window
    assert SpectralConfig(**dataclasses.asdict(cfg)).n_fft == cfg.n_fft


def test_mel_round_trip_through_griffin_lim_keeps_the_log_mel():
    rep = MelImage(SpectralConfig(sample_rate=RATE, length=LENGTH, n_mels=32))
    waves = _clips(6).data
    image = rep.to_image(waves)
    errors = {}
    for iters in (0, 32):
        back = rep.to_image(rep.to_wave(image, iters, torch.Generator().manual_seed(0)))
        loud = image > -0.5
        errors[iters] = float((back - image).abs()[loud].mean())
    # in normalised units (2 = the 16.1-nat range from floor to ceiling): 32 iterations land
    # within 0.05 (0.4 nats) on the cells that carry sound, and improve on the random phase
    assert errors[32] < 0.05 and errors[32] < 0.5 * errors[0], errors
    wave = rep.to_wave(image, 4, torch.Generator().manual_seed(3))
    assert wave.shape == (6, LENGTH) and wave.abs().max() <= 1
    assert torch.equal(
        wave, rep.to_wave(image, 4, torch.Generator().manual_seed(3))
    )  # the seed fixes the phase


def test_joint_classes_combine_digit_and_speaker():
    assert joint_classes(10, 5) == 50 and joint_classes(10, 0) == 10 and joint_classes(0, 5) == 5
    labels, speakers = torch.tensor([0, 3, 9]), torch.tensor([4, 0, 2])
    assert joint_labels(labels, speakers, 5).tolist() == [4, 15, 47]
    assert joint_labels(labels, None, 0).tolist() == [0, 3, 9]
    assert joint_labels(None, speakers, 5).tolist() == [4, 0, 2]


def test_spectral_model_holds_the_inner_models_weights():
    m = _model("mel-vae")
    inner = m.inner_model
    assert m.config.inner == "cvae" and inner.config.num_classes == CLASSES * SPEAKERS
    assert inner.config.image_size == 32 and inner.config.channels == 1
    assert list(m.state_dict()) == list(inner.state_dict())  # same keys, stored once
    assert m.ema_modules == ("decoder",) and m.conditional and m.speaker_conditional
    rebuilt = build_model("mel-vae", m.config.__dict__)  # what load_pipeline does with model.json
    assert rebuilt.config == m.config
    assert _model("mel-vae", classes=0, speakers=0).config.inner == "vae"
    assert not _model("mel-vae", speaker_conditional=False).speaker_conditional
    bad = dict(m.config.__dict__, inner_config={**m.config.inner_config, "image_size": 64})
    with pytest.raises(ConfigError, match="image_size"):
        build_model("mel-vae", bad)
    with pytest.raises(ConfigError, match="not an image family"):
        build_model("mel-vae", dict(m.config.__dict__, inner="diffwave"))


def test_mel_sngan_generator_norm_defaults_to_layer_and_older_runs_keep_batch_norm():
    from genforge.scenarios.schema import load_scenario

    def batch_norms(model):
        return sum(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in model.inner_model.generator.modules())

    m = _model("mel-sngan")
    assert m.config.inner_config["g_norm"] == "layer" and batch_norms(m) == 0
    # a model.json written before g_norm existed rebuilds the batch-norm generator it trained
    older = dict(m.config.__dict__, inner_config={k: v for k, v in m.config.inner_config.items() if k != "g_norm"})
    assert batch_norms(build_model("mel-sngan", older)) > 0
    # the voice-clone scenario keeps batch norm (the adaptation measured better with it)
    pinned = load_scenario("voice-clone").model.config["inner_config"]
    assert batch_norms(_model("mel-sngan", inner_config={**TINY["mel-sngan"]["inner_config"], **pinned})) > 0


# --- 1-D blocks --------------------------------------------------------------------------------


def test_fold_unfold_and_generator_lengths():
    x = torch.randn(3, 1001)
    folded = fold(x, 8)
    assert folded.shape == (3, 8, 126) and torch.equal(folded[:, :, 0], x[:, :8])
    assert torch.equal(unfold(folded, 1001), x)
    for upsample in ("transposed", "nearest"):
        for length in (4000, 8000, 1234):
            g = WaveGenerator(8, length, [16, 8, 4], kernel=25, stride=4, upsample=upsample)
            out = g(torch.randn(2, 8))
            assert out.shape == (2, length) and out.abs().max() <= 1


def test_phase_shuffle_shifts_in_training_only():
    torch.manual_seed(0)
    ps = PhaseShuffle(2)
    x = torch.arange(20.0).repeat(6, 3, 1)
    y = ps(x)
    assert y.shape == x.shape
    for row in y[:, 0]:  # each example moved as a whole by s in -2..2, reflected at the edges
        s = int(row[10] - x[0, 0, 10]) * -1
        assert -2 <= s <= 2 and torch.equal(row[2:-2], x[0, 0, 2 - s : 18 - s])
    assert len({int(r[10]) for r in y[:, 0]}) > 1  # examples draw their own shifts
    assert torch.equal(ps.eval()(x), x)


# --- conditioning ------------------------------------------------------------------------------


def test_sample_conditions_default_to_a_grid_and_refuse_what_the_model_lacks():
    lab, spk = sample_condition("m", 7, 3, 2, None, None, "cpu")
    assert lab.tolist() == [0, 1, 2, 0, 1, 2, 0] and spk.tolist() == [0, 0, 0, 1, 1, 1, 0]
    lab, spk = sample_condition("m", 3, 3, 2, 2, torch.tensor([1, 0, 1]), "cpu")
    assert lab.tolist() == [2, 2, 2] and spk.tolist() == [1, 0, 1]
    assert sample_condition("m", 2, 0, 0, None, None, "cpu") == (None, None)
    with pytest.raises(GenforgeError, match="not speaker-conditional"):
        sample_condition("m", 2, 3, 0, None, 1, "cpu")
    with pytest.raises(GenforgeError, match="speaker ids in 0..1"):
        sample_condition("m", 2, 3, 2, None, 2, "cpu")
    with pytest.raises(GenforgeError, match="unlabelled"):
        training_condition("m", 3, 0, torch.tensor([0, -1]), None)
    with pytest.raises(GenforgeError, match="speaker_conditional=false"):
        training_condition("m", 3, 2, torch.tensor([0, 1]), None)


@pytest.mark.parametrize("name", list(TINY))
def test_samples_follow_the_seed_and_the_speaker(name):
    m = _model(name).eval()
    with torch.no_grad():  # off the initialisation, where zero output layers ignore every condition
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    a = m.sample(4, generator=torch.Generator().manual_seed(1))
    assert a.shape == (4, LENGTH) and a.abs().max() <= 1
    assert torch.equal(a, m.sample(4, generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(a, m.sample(4, generator=torch.Generator().manual_seed(2)))
    labels = torch.zeros(2, dtype=torch.long)
    s0 = m.sample(2, generator=torch.Generator().manual_seed(1), labels=labels, speakers=torch.tensor([0, 0]))
    s1 = m.sample(2, generator=torch.Generator().manual_seed(1), labels=labels, speakers=torch.tensor([1, 1]))
    assert not torch.equal(s0, s1)  # the speaker changes the sample for the same noise
    plain = _model(name, speaker_conditional=False).eval()
    assert not plain.speaker_conditional
    with pytest.raises(GenforgeError, match="not speaker-conditional"):
        plain.sample(2, speakers=torch.tensor([0, 1]))


def test_griffin_lim_iterations_can_be_chosen_at_sampling_time():
    # bench/results/audio.md compares 10/16/32 iterations on one trained model this way
    base, more = _model("mel-vae").eval(), _model("mel-vae", griffin_lim_iters=16).eval()
    assert base.config.griffin_lim_iters == 10
    at16 = base.sample(3, generator=torch.Generator().manual_seed(3), griffin_lim_iters=16)
    # same weights: the option does what the config field does, and changes the clips
    assert torch.equal(at16, more.sample(3, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(at16, base.sample(3, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(GenforgeError, match="griffin_lim_iters must be >= 0"):
        base.sample(1, griffin_lim_iters=-1)


# --- training: each family's loss falls ------------------------------------------------------


def _fit(model, phase: str, batch: Batch, steps: int, lr: float | None = None) -> list[float]:
    spec = next(p for p in model.phases() if p.name == phase)
    params = [p for name in spec.modules for p in getattr(model, name).parameters()]
    opt = torch.optim.Adam(params, lr=lr or spec.optimizer.lr, betas=spec.optimizer.betas)
    losses = []
    for step in range(steps):
        out = model.training_step(phase, batch, step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    return losses


# the share of its first losses each family's loss falls below within the steps: the VAE's
# Bernoulli likelihood on continuous pixels has a high floor (the targets' own entropy)
FALLS = {"mel-vae": (40, 0.95), "mel-ddpm": (40, 0.7), "diffwave": (60, 0.65)}


@pytest.mark.parametrize("name", list(FALLS))
def test_likelihood_families_loss_falls(name):
    m = _model(name)
    steps, share = FALLS[name]
    losses = _fit(m, "main", _clips(12), steps)
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < share * np.mean(losses[:5]), losses


@pytest.mark.parametrize("name", ["mel-sngan", "wavegan"])
def test_gan_families_discriminator_then_generator_loss_falls(name):
    m = _model(name)
    real = _clips(8)
    d_losses = _fit(m, "discriminator", real, 15, lr=1e-3)
    assert np.mean(d_losses[-3:]) < np.mean(d_losses[:3]) - 0.1, d_losses
    g_losses = _fit(m, "generator", real, 15, lr=1e-3)  # D held fixed: G learns to fool it
    assert np.mean(g_losses[-3:]) < np.mean(g_losses[:3]), g_losses


def test_wavegan_gradient_penalty_is_per_clip():
    m = _model("wavegan", loss="wasserstein", gp_weight=10.0, n_critic=5)
    out = m.training_step("discriminator", _clips(4), 0)
    assert float(out.terms["gp"]) > 0 and torch.isfinite(out.loss)
    assert {p.name for p in m.phases()} == {"discriminator", "generator"}
    assert next(p for p in m.phases() if p.name == "discriminator").repeats == 5


def test_diffwave_guidance_one_is_the_conditional_model():
    m = _model("diffwave").eval()
    # a non-zero output layer, so the network's output depends on its conditions
    torch.nn.init.normal_(m.denoiser.out.weight, std=0.1)
    x, t = torch.randn(2, LENGTH), torch.tensor([10, 500])
    lab, spk = torch.tensor([0, 2]), torch.tensor([1, 0])
    plain = m.denoiser(x, t, lab, spk)
    torch.testing.assert_close(m.predict(x, t, lab, spk, 1.0), plain)
    guided = m.predict(x, t, lab, spk, 3.0)
    null = m.denoiser(x, t, *m._nulls(2, x.device))
    torch.testing.assert_close(guided, null + 3.0 * (plain - null), atol=1e-5, rtol=1e-4)
    short = m.sample(1, generator=torch.Generator().manual_seed(0), steps=2)
    assert short.shape == (1, LENGTH)
    with pytest.raises(GenforgeError, match="unknown option"):
        m.sample(1, temperature=2.0)
