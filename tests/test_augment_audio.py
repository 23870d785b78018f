"""Audio augmentation: configs, what each op does to the waves (measured), determinism,
SpecAugment masks, the differentiable set for GAN discriminators, and the modality registry
the trainer builds a run's augmentation from."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from safetensors.numpy import load_file

from audio_fixtures import make_synth_dataset
from genforge.augment import (
    AudioAugment,
    AudioAugmentConfig,
    AudioDiffAugment,
    AudioDiffAugmentConfig,
    DiffAugment,
    SpecAugmentConfig,
    augmentation_for,
    build_ada,
    build_diffaugment,
    spec_augment,
)
from genforge.augment.audio import (
    diff_cutout,
    diff_gain,
    diff_noise,
    diff_shift,
    draw_gains_db,
    draw_shifts,
    draw_spec_masks,
    draw_speeds,
)
from genforge.augment.registry import WAVE_OPS
from genforge.core.config import from_dict, to_dict
from genforge.core.errors import ConfigError, DataError
from genforge.data.canonical import open_dataset
from genforge.models.gan import Augmentation
from genforge.train.launch import augment_from_config, build_trainer

RATE = 8000
EVERYTHING = {
    "speed": {"p": 0.5, "factor": [0.9, 1.1]},
    "shift": {"p": 0.5, "fraction": 0.1, "mode": "circular"},
    "gain": {"p": 0.5, "db": [-6.0, 6.0]},
    "noise": {"p": 0.5, "kinds": {"white": 1.0, "pink": 1.0, "babble": 1.0}, "snr_db": [5.0, 20.0]},
}
POLICY = {"policy": ["shift", "gain", "noise", "cutout"]}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def aug(clamp: bool = True, **ops) -> AudioAugment:
    return AudioAugment(from_dict(AudioAugmentConfig, {**ops, "clamp": clamp}), RATE)


def speechy(n: int = 8, length: int = 4000, seed: int = 0) -> torch.Tensor:
    """Tone bursts with decaying envelopes at random onsets, peak about 0.4."""
    g = gen(seed)
    t = torch.arange(length) / RATE
    freq = 200 + 1500 * torch.rand(n, 1, generator=g)
    onset = (torch.rand(n, 1, generator=g) * length / 2).long()
    idx = torch.arange(length)[None, :]
    env = torch.where(idx >= onset, torch.exp(-(idx - onset) / (length / 6)), torch.zeros(()))
    return 0.4 * env * torch.sin(2 * math.pi * freq * t)


def test_config_round_trip_and_errors():
    cfg = from_dict(AudioAugmentConfig, EVERYTHING)
    assert from_dict(AudioAugmentConfig, to_dict(cfg)) == cfg
    assert to_dict(cfg)["speed"]["factor"] == [0.9, 1.1]
    # every registered op is a config field, and the pipeline runs them in registry order
    assert set(WAVE_OPS.names()) <= set(to_dict(cfg))
    assert AudioAugment(cfg, RATE).names == WAVE_OPS.names_in_order() == ["speed", "shift", "gain", "noise"]
    bad = [
        ({"gain": {"p": 1.5}}, r"gain\.p"),
        ({"gain": {"db": [6, -6]}}, r"gain\.db"),
        ({"speed": {"factor": [1.1, 0.9]}}, r"speed\.factor"),
        ({"speed": {"factor": [0.0, 1.0]}}, r"speed\.factor"),
        ({"shift": {"fraction": 1.5}}, r"shift\.fraction"),
        ({"shift": {"mode": "reflect"}}, r"shift\.mode"),
        ({"noise": {"kinds": {"thunder": 1.0}}}, "unknown noise kind 'thunder'"),
        ({"noise": {"kinds": {"white": -1.0}}}, r"noise\.kinds\.white"),
        ({"noise": {"kinds": {"white": 0.0}}}, "sum to 0"),
        ({"noise": {"snr_db": [20, 5]}}, r"noise\.snr_db"),
        ({"reverb": {"p": 0.5}}, "unknown field"),
    ]
    for section, message in bad:
        with pytest.raises(ConfigError, match=message):
            from_dict(AudioAugmentConfig, section, where="augment")
    for section, message in [
        ({"freq_width": 1.5}, r"specaugment\.freq_width"),
        ({"time_masks": -1}, r"specaugment\.time_masks"),
        ({"fill": "noise"}, "fill"),
    ]:
        with pytest.raises(ConfigError, match=message):
            from_dict(SpecAugmentConfig, section)
    for section, message in [
        ({"p": -0.1}, r"diffaugment\.p"),
        ({"snr_db": [30, 10]}, r"diffaugment\.snr_db"),
        ({"ada_interval": 0}, "ada_interval"),
    ]:
        with pytest.raises(ConfigError, match=message):
            from_dict(AudioDiffAugmentConfig, section)
    with pytest.raises(ConfigError, match="unknown audio DiffAugment policy 'hflip'"):
        build_diffaugment(from_dict(AudioDiffAugmentConfig, {"policy": ["shift", "hflip"]}))
    with pytest.raises(DataError, match=r"float \(B, T\)"):
        aug(**EVERYTHING)(torch.zeros(2, 1, 100), gen(0))
    with pytest.raises(DataError, match=r"float \(B, T\)"):
        aug(**EVERYTHING)(torch.zeros(2, 100, dtype=torch.int16), gen(0))
    with pytest.raises(DataError, match="spec_augment"):
        spec_augment(torch.zeros(2, 100), gen(0), SpecAugmentConfig(p=1.0))


def test_p_zero_is_identity_and_determinism_under_a_seed():
    x = speechy(16)
    assert aug()(x, gen(0)) is x  # nothing enabled
    spec = x.view(16, 40, 100)
    assert spec_augment(spec, gen(0), SpecAugmentConfig(p=0.0)) is spec
    assert build_diffaugment(from_dict(AudioDiffAugmentConfig, {**POLICY, "p": 0.0}))(x, gen(0)) is x
    # enabled ops that draw the identity leave every sample as it was
    identity = {
        "speed": {"p": 1.0, "factor": [1.0, 1.0]},
        "shift": {"p": 1.0, "fraction": 0.0},
        "gain": {"p": 1.0, "db": [0.0, 0.0]},
    }
    assert torch.equal(aug(**identity)(x, gen(0)), x)
    a = aug(**EVERYTHING)
    y1, y2, y3 = a(x, gen(1)), a(x, gen(1)), a(x, gen(2))
    assert torch.equal(y1, y2) and not torch.allclose(y1, y3)
    assert y1.shape == x.shape and y1.dtype == x.dtype and y1.abs().max() <= 1
    # at p = 0.5 about half the samples are touched, the others come back bit-identical
    touched = (y1 != x).any(1)
    assert 0 < touched.sum() < len(x)
    for dtype in (torch.float64, torch.bfloat16):
        assert a(x.to(dtype), gen(1)).dtype == dtype


def test_shift_moves_the_onset_by_the_drawn_amount():
    n, length = 12, 1000
    x = torch.zeros(n, length)
    x[:, 400:600] = torch.linspace(0.1, 0.5, 200)  # onset at 400, a ramp so position is unambiguous
    for mode in ("zeros", "circular"):
        cfg = from_dict(AudioAugmentConfig, {"shift": {"p": 1.0, "fraction": 0.3, "mode": mode}}).shift
        drawn = draw_shifts(cfg, n, length, gen(3))
        assert drawn.abs().max() <= 300 and len(set(drawn.tolist())) > 4
        y = aug(shift=to_dict(cfg))(x, gen(3))
        onset = (y != 0).float().argmax(1)
        assert torch.equal(onset, 400 + drawn)
        assert torch.equal(y, torch.stack([row.roll(int(s)) for row, s in zip(x, drawn, strict=True)]))
    # zero-filled: what leaves the clip is gone (not wrapped round)
    edge = torch.zeros(1, 100)
    edge[0, 90:] = 1.0
    cfg = from_dict(AudioAugmentConfig, {"shift": {"p": 1.0, "fraction": 0.5}}).shift
    seed = next(s for s in range(100) if draw_shifts(cfg, 1, 100, gen(s))[0] > 10)
    assert aug(shift=to_dict(cfg))(edge, gen(seed)).sum() == 0
    assert aug(shift={**to_dict(cfg), "mode": "circular"})(edge, gen(seed)).sum() == 10


def test_gain_changes_rms_by_the_drawn_db():
    x = 0.05 * speechy(16)  # quiet, so +12 dB stays inside [-1, 1] and nothing is clamped
    cfg = from_dict(AudioAugmentConfig, {"gain": {"p": 0.7, "db": [-12.0, 12.0]}}).gain
    drawn = draw_gains_db(cfg, 16, gen(4))
    y = aug(gain=to_dict(cfg))(x, gen(4))
    rms = lambda t: t.double().pow(2).mean(1).sqrt()  # noqa: E731
    measured = 20 * torch.log10(rms(y) / rms(x))
    assert torch.allclose(measured, drawn.double(), atol=1e-4)
    assert (drawn == 0).sum() > 0 and drawn.abs().max() > 6  # some skipped (p 0.7), some large


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
def test_noise_hits_the_snr_and_babble_never_uses_the_clip_itself(kind):
    n, length = 10, 4000
    # clip i is a pure tone on FFT bin 40 (i + 1): circular shifts keep each tone on its own bin
    t = torch.arange(length)
    bins = 40 * (torch.arange(n) + 1)
    x = 0.3 * torch.sin(2 * math.pi * bins[:, None] * t / length)
    for snr in (0.0, 12.0):
        a = aug(clamp=False, noise={"p": 1.0, "kinds": {kind: 1.0}, "snr_db": [snr, snr]})
        y = a(x, gen(5))
        noise = (y - x).double()
        measured = 10 * torch.log10(x.double().pow(2).sum(1) / noise.pow(2).sum(1))
        assert (measured - snr).abs().max() < 0.1
    a = aug(clamp=False, noise={"p": 1.0, "kinds": {kind: 1.0}, "snr_db": [5.0, 20.0]})
    y = a(x, gen(6))
    measured = 10 * torch.log10(x.double().pow(2).sum(1) / (y - x).double().pow(2).sum(1))
    assert measured.min() >= 5 - 0.1 and measured.max() <= 20 + 0.1 and measured.std() > 1
    if kind == "babble":
        spectrum = torch.fft.rfft(y - x).abs()
        own = spectrum[torch.arange(n), bins]
        # each noise is made of other clips' tones: nothing at the clip's own bin, energy at others'
        assert own.max() < 1e-3 * spectrum.max()
        half = n // 2
        assert (spectrum[:half][:, bins[half:]].amax(1) > 1).all()
        assert (spectrum[half:][:, bins[:half]].amax(1) > 1).all()


def test_speed_changes_the_dominant_frequency_by_the_factor():
    n, length, f0 = 8, 8001, 500.0  # about one second (1 Hz FFT bins); odd, so the centre is a sample
    t = torch.arange(length) / RATE
    x = 0.5 * torch.sin(2 * math.pi * f0 * t).repeat(n, 1)
    cfg = from_dict(AudioAugmentConfig, {"speed": {"p": 1.0, "factor": [0.8, 1.25]}}).speed
    factors = draw_speeds(cfg, n, gen(7))
    y = aug(speed=to_dict(cfg))(x, gen(7))
    peak = torch.fft.rfft(y).abs().argmax(1).double() * RATE / length
    assert ((peak - f0 * factors.double()).abs() <= 2).all()
    assert factors.min() < 0.9 and factors.max() > 1.1
    # anchored at the centre: the middle sample is kept; a faster clip is padded with silence
    mid = (length - 1) // 2
    assert torch.allclose(y[:, mid], x[:, mid], atol=1e-6)
    faster = factors > 1
    edge = int(length * (1 - 1 / factors.max()) / 2) - 2
    assert (y[faster][:, :1] == 0).all() and (y[factors.argmax(), :edge] == 0).all()
    assert (y[~faster].abs().amax(1) > 0.45).all()  # slower: cropped, never padded


def test_spec_augment_masks_exactly_the_drawn_bands():
    n, f, frames = 6, 40, 50
    spec = torch.randn(n, f, frames, generator=gen(0)) + 3.0
    cfg = SpecAugmentConfig(p=1.0, freq_masks=2, freq_width=0.2, time_masks=2, time_width=0.2, fill="zero")
    bands, spans = draw_spec_masks(cfg, n, (f, frames), gen(8))
    out = spec_augment(spec, gen(8), cfg)
    expected = torch.zeros(n, f, frames, dtype=torch.bool)
    for i in range(n):
        for lo, hi in bands[i].tolist():
            assert 0 <= lo <= hi <= f and hi - lo <= 8
            expected[i, lo:hi, :] = True
        for lo, hi in spans[i].tolist():
            assert 0 <= lo <= hi <= frames and hi - lo <= 10
            expected[i, :, lo:hi] = True
    assert expected.any()
    assert (out[expected] == 0).all() and torch.equal(out[~expected], spec[~expected])
    # mean fill: masked cells hold each sample's mean; a (B, 1, F, frames) batch works the same
    mean_cfg = SpecAugmentConfig(p=1.0, freq_width=0.2, time_width=0.2)
    filled = spec_augment(spec[:, None], gen(8), mean_cfg)[:, 0]
    means = spec.mean((1, 2))
    masked = filled != spec
    assert masked.any() and torch.allclose(filled[masked], means[:, None, None].expand_as(spec)[masked])
    # p: skipped samples are untouched
    half = spec_augment(spec, gen(9), SpecAugmentConfig(p=0.5, freq_width=0.2, time_width=0.2))
    changed = (half != spec).flatten(1).any(1)
    assert 0 < changed.sum() < n


def test_differentiable_set_passes_gradients():
    x = speechy(6, length=800).double().requires_grad_(True)
    cfg = from_dict(AudioDiffAugmentConfig, {**POLICY, "cutout_ratio": 0.2, "shift_ratio": 0.2})
    d = build_diffaugment(cfg)
    assert isinstance(d, AudioDiffAugment) and d.enabled
    d(x, gen(0)).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    small = torch.rand(3, 40, dtype=torch.float64, requires_grad=True)
    # (noise is left out: its level follows the detached input, by design not part of the gradient)
    for op in (diff_shift, diff_gain, diff_cutout):
        assert torch.autograd.gradcheck(lambda t, op=op: op(t, 0.7, cfg, gen(5)), (small,))
    # straight gradients: shift and cutout select samples (0/1), noise adds a constant, gain scales
    ones = torch.ones(4, 200, dtype=torch.float64, requires_grad=True)
    for op, check in (
        (diff_shift, lambda grad: set(grad.unique().tolist()) <= {0.0, 1.0}),
        (diff_cutout, lambda grad: set(grad.unique().tolist()) == {0.0, 1.0}),
        (diff_noise, lambda grad: torch.equal(grad, torch.ones_like(grad))),
    ):
        ones.grad = None
        op(ones, 1.0, cfg, gen(1)).sum().backward()
        assert check(ones.grad)
    # (B, 1, T) from a 1-D generator comes back in its shape; samples p skips are bit-identical
    fake = speechy(8, length=800)[:, None]
    half = AudioDiffAugment(from_dict(AudioDiffAugmentConfig, {**POLICY, "p": 0.5}))
    out = half(fake, gen(2))
    assert out.shape == fake.shape and (out == fake).flatten(1).all(1).any()
    assert torch.equal(out, half(fake, gen(2)))
    silent = torch.zeros(2, 100, requires_grad=True)
    diff_noise(silent, 1.0, cfg, gen(0)).sum().backward()
    assert torch.isfinite(silent.grad).all()


def test_discriminator_step_with_ada_on_waves():
    # a GAN step's shape: the same policy on real and generated waves; gan.py's Augmentation
    # builds the audio DiffAugment and its ADA controller from the config the model carries
    torch.manual_seed(0)
    cfg = from_dict(
        AudioDiffAugmentConfig, {**POLICY, "ada": True, "p": 0.2, "ada_interval": 1, "ada_speed_images": 64}
    )
    augment = Augmentation(cfg)
    assert isinstance(augment.diffaugment, AudioDiffAugment) and build_ada(cfg) is not None
    gen_net = torch.nn.Linear(8, 400)
    disc = torch.nn.Linear(400, 1)
    fake = torch.tanh(gen_net(torch.randn(16, 8)))
    real = speechy(16, length=400)
    loss = torch.nn.functional.softplus(-disc(augment(fake))).mean()
    loss.backward()
    assert gen_net.weight.grad.abs().sum() > 0
    augment.observe(torch.ones(16, 1))  # D sure of every real clip: p rises by 16 / 64
    assert augment.p == pytest.approx(0.45)
    state = augment.state_dict()
    again = Augmentation(cfg)
    again.load_state_dict(state)
    assert again.p == pytest.approx(0.45)
    assert augment(real).shape == real.shape


def test_registry_builds_each_modalitys_augmentation(tmp_path):
    data = open_dataset(make_synth_dataset(tmp_path / "synth", n_train=8, n_val=4, sample_rate=16000))
    built, cfg = augment_from_config({"gain": {"p": 1.0, "db": [3.0, 3.0]}, "noise": {"p": 0.5}}, data)
    assert isinstance(built, AudioAugment) and isinstance(cfg, AudioAugmentConfig)
    assert built.sample_rate == 16000 and built.names == ["gain", "noise"]
    waves = torch.from_numpy(data.train_split.audio[:4].copy())
    assert torch.allclose(
        AudioAugment(from_dict(AudioAugmentConfig, {"gain": {"p": 1.0, "db": [3.0, 3.0]}}), 16000)(
            waves, gen(0)
        ),
        (waves * 10 ** (3 / 20)).clamp(-1, 1),
    )
    assert augment_from_config({}, data) == (None, None)
    with pytest.raises(ConfigError, match=r"unknown field.*hflip"):
        augment_from_config({"hflip": {"p": 0.5}}, data)  # an image op named on audio data
    assert augmentation_for("image").config.__name__ == "AugmentConfig"
    assert isinstance(
        build_diffaugment(augmentation_for("image").diff_config(policy=["cutout"])), DiffAugment
    )
    with pytest.raises(ConfigError, match="no augmentation for modality 'text'"):
        augmentation_for("text")


TINY_DIFFWAVE = {"channels": 8, "layers": 2, "cycle": 2, "fold": 8, "timesteps": 50, "sample_steps": 2}
WAVE_AUGMENT = {
    "speed": {"p": 0.5, "factor": [0.9, 1.1]},
    "shift": {"p": 0.5, "fraction": 0.1},
    "gain": {"p": 0.5, "db": [-6.0, 3.0]},
    "noise": {"p": 0.5, "kinds": {"white": 1.0, "babble": 1.0}, "snr_db": [10.0, 30.0]},
}


def test_training_through_the_trainer_with_an_audio_augment_section(tmp_path):
    data = make_synth_dataset(tmp_path / "synth", n_train=16, n_val=4, length=1024)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": TINY_DIFFWAVE, "augment": WAVE_AUGMENT}))
    quiet = [
        "train.progress=none",
        "train.tensorboard=false",
        "train.checkpoint_every=1",
        "train.sample_count=2",
    ]

    def trainer(out, steps, resume=False, augment=True):
        return build_trainer(
            out, model_name="diffwave", data=data, config_file=config if augment else None,
            sets=quiet if augment else [*quiet, *(f"model.{k}={v}" for k, v in TINY_DIFFWAVE.items())],
            flags={"steps": steps, "batch_size": 8, "seed": 5, "log_every": 1}, resume=resume,
        )  # fmt: skip

    # the feed hands the model augmented waves: same clips and labels as without, other samples
    plain, augmented = trainer(tmp_path / "plain", 2, augment=False), trainer(tmp_path / "aug", 2)
    assert plain.augment is None and isinstance(augmented.augment, AudioAugment)
    assert augmented.augment.sample_rate == 8000 and augmented.augment.names == list(WAVE_AUGMENT)
    a, b = plain.feed.next_batch(), augmented.feed.next_batch()
    assert torch.equal(a.labels, b.labels) and torch.equal(a.speakers, b.speakers)
    changed = (a.data != b.data).any(1)
    assert changed.any() and b.data.abs().max() <= 1
    # a run with it resumes bit for bit (the augmentation's draws come from checkpointed state)
    trainer(tmp_path / "full", 3).fit()
    trainer(tmp_path / "part", 1).fit()
    resumed = trainer(tmp_path / "part", 3, resume=True)
    assert isinstance(resumed.augment, AudioAugment)
    resumed.fit(resume=True)
    full = load_file(str(tmp_path / "full" / "model.safetensors"))
    part = load_file(str(tmp_path / "part" / "model.safetensors"))
    assert full.keys() == part.keys() and all(np.array_equal(full[k], part[k]) for k in full)
    losses = [
        json.loads(line)["loss"] for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(losses) == 3 and np.isfinite(losses).all()
    saved = json.loads((tmp_path / "part" / "run.json").read_text())["augment"]
    assert saved == to_dict(from_dict(AudioAugmentConfig, WAVE_AUGMENT))
    assert saved["noise"]["kinds"] == {"white": 1.0, "babble": 1.0} and saved["clamp"] is True
