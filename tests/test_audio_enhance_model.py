"""The speech-enhancement family (`denoiser`, task "restore"): trained through the one trainer on
the synthetic fixture its loss falls and it improves SI-SDR; `restore` takes any length; saved and
loaded it restores identically; its sample view and config validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audio_fixtures import make_synth_dataset, synth_clips
from genforge.audio.noise import make_noise, mix_at_snr
from genforge.audio.sdr import si_sdr
from genforge.audio.spectrogram import MelConfig
from genforge.core.config import from_dict
from genforge.core.errors import ConfigError, GenforgeError
from genforge.models.audio.denoiser import Denoiser, DenoiserConfig, _shifted, compressed_loss
from genforge.models.base import Batch, LRSchedule
from genforge.models.pipeline import load_pipeline
from genforge.train.launch import build_trainer

TINY = [
    "model.hidden=32",
    "model.blocks=2",
    "model.lr=0.003",
    "train.progress=none",
    "train.tensorboard=false",
    "train.log_every=5",
    "train.sample_every=0",
    "train.checkpoint_every=0",
    "train.sample_count=4",
]


def _fit(model: Denoiser, clean: torch.Tensor, steps: int) -> list[float]:
    """`steps` Adam steps of the model's training step on one clean batch; the losses."""
    opt = torch.optim.Adam(model.parameters(), lr=model.config.lr)
    losses = []
    for step in range(steps):
        out = model.training_step("main", Batch(clean), step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    return losses


def _noisy_heldout(n: int = 12, snr: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    clean, _, _ = synth_clips(n, 3, 2, 4000, 8000, seed=99)
    clean_t = torch.from_numpy(clean)
    noise = make_noise("white", n, 4000, 8000, torch.Generator().manual_seed(7))
    return clean_t, mix_at_snr(clean_t, noise, snr)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("denoiser")
    data = make_synth_dataset(root / "data", n_train=48, n_val=12)
    trainer = build_trainer(
        root / "run",
        model_name="denoiser",
        data=data,
        flags={"steps": 60, "batch_size": 12},
        sets=[*TINY, "model.noise.kinds={white: 1.0, pink: 1.0, babble: 1.0}"],
    )
    summary = trainer.fit()
    return root / "run", summary


def test_training_lowers_the_loss_and_improves_si_sdr(trained):
    run, summary = trained
    assert summary["step"] == 60
    logs = [line for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss' in line]
    import json

    losses = [json.loads(line) for line in logs]
    key = next(k for k in losses[0] if k.endswith("loss"))
    first, last = np.mean([r[key] for r in losses[:2]]), np.mean([r[key] for r in losses[-2:]])
    assert last < first - 0.1, (first, last)
    pipe = load_pipeline(run)
    clean, noisy = _noisy_heldout()
    restored = torch.from_numpy(pipe.restore(noisy.numpy()))
    gain = float((si_sdr(clean, restored) - si_sdr(clean, noisy)).mean())
    assert gain > 2.0, gain  # dB, on held-out clips


def test_saved_run_restores_like_the_model_and_records_the_recipe(trained):
    run, _ = trained
    pipe = load_pipeline(run)
    assert pipe.modality == "audio" and pipe.model.task == "restore" and pipe.sample_rate == 8000
    assert pipe.info["config"]["noise"]["kinds"] == {"white": 1.0, "pink": 1.0, "babble": 1.0}
    _, noisy = _noisy_heldout(3)
    direct = pipe.model.restore(noisy).numpy()
    assert np.array_equal(pipe.restore(noisy.numpy()), direct)
    assert np.allclose(
        pipe.restore(noisy[0].numpy()), direct[0], atol=1e-6
    )  # (T,) in, (T,) out; batch-size rounding
    with pytest.raises(GenforgeError, match="does not generate"):
        pipe.generate(2)


@pytest.mark.parametrize("arch", ["mask", "wave"])
def test_restore_takes_any_length(arch):
    torch.manual_seed(0)
    model = Denoiser(
        Denoiser.default_config(8000, 4000, arch=arch, hidden=16, blocks=2, channels=4, depth=3)
    ).eval()
    for length in (1, 7, 100, 257, 4000, 12345):
        x = 0.1 * torch.randn(2, length)
        y = model.restore(x)
        assert y.shape == (2, length) and bool(torch.isfinite(y).all()) and float(y.abs().max()) <= 1.0
    # gain-invariant: the network sees RMS-normalised input
    x = 0.1 * torch.randn(1, 3000)
    assert torch.allclose(model.restore(0.5 * x), 0.5 * model.restore(x), atol=1e-4)


def test_wave_arch_learns_too():
    torch.manual_seed(0)
    cfg = Denoiser.default_config(
        8000,
        4000,
        arch="wave",
        channels=8,
        depth=3,
        lr=3e-3,
        crop=2000,
        noise={"kinds": {"white": 1.0}, "snr_db": [5.0, 5.0]},
    )
    model = Denoiser(cfg)
    clean = torch.from_numpy(synth_clips(8, 3, 2, 4000, 8000, seed=1)[0])
    losses = _fit(model, clean, 25)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1


def test_recurrent_mask_with_a_decaying_lr_learns():
    """The residual BiLSTM over frames (`lstm`) and the lr schedule: the phase carries the
    config's schedule, and a few dozen steps lower the loss and raise SI-SDR on unheard clips."""
    torch.manual_seed(0)
    cfg = Denoiser.default_config(
        8000, 4000, hidden=32, blocks=2, lstm=16, lr=3e-3, lr_decay="cosine", warmup_steps=5, crop=2000,
        noise={"kinds": {"white": 1.0}, "snr_db": [5.0, 5.0]},
    )  # fmt: skip
    model = Denoiser(cfg)
    assert sum(isinstance(m, torch.nn.LSTM) for m in model.net.modules()) == 1
    assert model.phases()[0].schedule == LRSchedule("cosine", 5, 0.1)
    clean_h, noisy_h = _noisy_heldout()
    before = float((si_sdr(clean_h, model.restore(noisy_h)) - si_sdr(clean_h, noisy_h)).mean())
    clean = torch.from_numpy(synth_clips(16, 3, 2, 4000, 8000, seed=1)[0])
    losses = _fit(model, clean, 40)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1, losses
    after = float((si_sdr(clean_h, model.restore(noisy_h)) - si_sdr(clean_h, noisy_h)).mean())
    assert after > 2.0 and after > before + 2.0, (before, after)  # dB, on held-out clips
    with pytest.raises(ConfigError, match="lstm"):
        from_dict(DenoiserConfig, {"lstm": -1})
    with pytest.raises(ConfigError, match="min_lr_ratio"):
        from_dict(DenoiserConfig, {"min_lr_ratio": 1.5})


def test_compressed_loss_term():
    """`compressed_weight` adds the compressed-spectrum MSE: zero for the clean wave, larger for
    noisier input, the same at any level (each clip is scaled by its clean RMS)."""
    clean, noisy = _noisy_heldout(4, snr=10.0)
    _, noisier = _noisy_heldout(4, snr=0.0)
    cfg = MelConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=1)
    assert float(compressed_loss(clean, clean, cfg)) < 1e-6
    mild, harsh = float(compressed_loss(clean, noisy, cfg)), float(compressed_loss(clean, noisier, cfg))
    assert 0 < mild < harsh
    assert float(compressed_loss(0.1 * clean, 0.1 * noisy, cfg)) == pytest.approx(mild, rel=1e-3)
    model = Denoiser(Denoiser.default_config(8000, 4000, hidden=16, blocks=1, compressed_weight=2.0))
    out = model.restoration_loss(clean, noisy)
    plain = Denoiser(Denoiser.default_config(8000, 4000, hidden=16, blocks=1)).restoration_loss(clean, noisy)
    assert "compressed" not in plain.terms
    torch.testing.assert_close(out.loss, plain.loss + 2.0 * out.terms["compressed"])


def test_sample_view_and_config_checks():
    model = Denoiser(Denoiser.default_config(8000, 4000, hidden=16, blocks=1))
    with pytest.raises(GenforgeError, match="genforge restore"):
        model.sample(2)
    clean = torch.from_numpy(synth_clips(6, 3, 2, 4000, 8000, seed=2)[0])
    model.training_step("main", Batch(clean), 0)
    view = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert view.shape == (4, 4000)
    assert torch.allclose(
        view[1], model.restore(view[0:1])[0], atol=1e-5
    )  # pairs: noisy, then its restoration
    # the STFT follows the sample rate: a 32 ms window, an 8 ms hop
    wide = Denoiser.default_config(16000, 16000)
    assert (wide.n_fft, wide.hop_length) == (512, 128)
    with pytest.raises(ConfigError, match="power of two"):
        from_dict(DenoiserConfig, {"n_fft": 200})
    with pytest.raises(ConfigError, match="unknown noise kind"):
        from_dict(DenoiserConfig, {"noise": {"kinds": {"rain": 1.0}}})


def _starts_as_plain_and_learns(extra: dict, added: str) -> tuple[Denoiser, torch.Tensor]:
    """A denoiser with `extra` settings, whose parameters under `added` are its only ones beyond
    the plain model's: seeded alike, it restores exactly as the plain model does at the start;
    40 steps on synthetic clips lower its loss and raise SI-SDR on unheard clips by 2 dB.
    Returns the trained model and the unheard noisy clips."""
    kw = dict(hidden=32, blocks=2, lr=3e-3, crop=2000, noise={"kinds": {"white": 1.0}, "snr_db": [5.0, 5.0]})
    torch.manual_seed(0)
    plain = Denoiser(Denoiser.default_config(8000, 4000, **kw))
    torch.manual_seed(0)
    model = Denoiser(Denoiser.default_config(8000, 4000, **extra, **kw))
    clean_h, noisy_h = _noisy_heldout()
    plain.net.load_state_dict({k: v for k, v in model.net.state_dict().items() if not k.startswith(added)})
    torch.testing.assert_close(model.restore(noisy_h), plain.restore(noisy_h))
    clean = torch.from_numpy(synth_clips(16, 3, 2, 4000, 8000, seed=1)[0])
    losses = _fit(model, clean, 40)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1, losses
    gain = float((si_sdr(clean_h, model.restore(noisy_h)) - si_sdr(clean_h, noisy_h)).mean())
    assert gain > 2.0, gain
    return model, noisy_h


def test_refiner_starts_as_the_identity_and_learns():
    """`refine: C` adds a 2-D convolution stack over (bins, frames) whose zero-initialised last
    layer leaves the 1-D mask unchanged at the start; trained, it lowers the loss and raises SI-SDR
    on unheard clips; it needs the complex mask."""
    model, _ = _starts_as_plain_and_learns({"refine": 8}, "refine.")
    assert float(model.net.refine.net[-1].weight.detach().abs().sum()) > 0  # the refiner itself was trained
    with pytest.raises(ConfigError, match="complex"):
        from_dict(DenoiserConfig, {"refine": 8, "mask": "magnitude"})
    with pytest.raises(ConfigError, match="refine"):
        from_dict(DenoiserConfig, {"refine": -1})


def test_shifted_frames_match_a_zero_padded_roll():
    spec = torch.randn(2, 5, 7, dtype=torch.complex64)
    for k in (-8, -7, -2, -1, 1, 3, 7):
        expected = torch.roll(spec, -k, -1)
        if k > 0:
            expected[..., spec.shape[-1] - k :] = 0
        else:
            expected[..., : min(-k, spec.shape[-1])] = 0
        torch.testing.assert_close(_shifted(spec, k), expected)


def test_deep_filter_starts_as_the_mask_and_learns():
    """`deep_filter: k` adds complex taps on the k frames either side of each bin, from a
    zero-initialised head: at the start the output is the mask's alone; trained, the taps move
    and the model raises SI-SDR on unheard clips; it needs the complex mask."""
    model, noisy_h = _starts_as_plain_and_learns({"deep_filter": 2}, "taps.")
    assert model.net.offsets == [-2, -1, 1, 2]
    assert model.net.taps.out_channels == 4 * 2 * (256 // 2 + 1)
    assert float(model.net.taps.weight.detach().abs().sum()) > 0  # the taps were trained
    # the taps change the output: silencing them gives another restoration
    with torch.no_grad():
        before = model.restore(noisy_h)
        model.net.taps.weight.zero_()
        model.net.taps.bias.zero_()
    assert float((model.restore(noisy_h) - before).abs().max()) > 1e-4
    with pytest.raises(ConfigError, match="complex"):
        from_dict(DenoiserConfig, {"deep_filter": 1, "mask": "magnitude"})
    with pytest.raises(ConfigError, match="deep_filter"):
        from_dict(DenoiserConfig, {"deep_filter": -1})


def test_joined_crops_are_strips_of_several_clips():
    """`join: true` with `crop`: each crop is cut from one clip's speech, a silence of `join_gap`
    seconds and two other clips' speech (padding dropped): seeded by the global RNG, every crop's
    samples come from the batch's clips, and a crop longer than one clip's speech holds a pause."""
    n, length = 6, 4000
    clean = torch.zeros(n, length)
    for i in range(n):  # 0.1 s of a distinct tone per clip, padded with silence
        t = torch.arange(800) / 8000
        clean[i, 1000:1800] = 0.3 * torch.sin(2 * math.pi * (200 + 100 * i) * t)
    model = Denoiser(
        Denoiser.default_config(8000, length, hidden=16, blocks=1, crop=3000, join=True, join_gap=[0.1, 0.1])
    )
    torch.manual_seed(3)
    a = model.clean_batch(Batch(clean))
    torch.manual_seed(3)
    b = model.clean_batch(Batch(clean))
    torch.testing.assert_close(a, b)
    assert a.shape == (n, 3000)
    speech = torch.cat([clean[i, 1000:1800] for i in range(n)])
    for row in a:
        voiced = row[row.abs() > 0]
        assert len(voiced) > 800  # more than one clip's speech
        assert bool(torch.isin(voiced, speech).all())  # nothing but the clips' own samples
        silent = (row.abs() < 1e-12).int()  # a run of >= 0.1 s of silence: the gap between clips
        runs = torch.diff(torch.cat([torch.tensor([0]), silent, torch.tensor([0])]))
        starts, ends = (runs == 1).nonzero().flatten(), (runs == -1).nonzero().flatten()
        assert int((ends - starts).max()) >= 0.1 * 8000 - 1
    with pytest.raises(ConfigError, match="join_gap"):
        from_dict(DenoiserConfig, {"join_gap": [0.3, 0.1]})


def test_mask_limit_bounds_the_gain_of_every_bin():
    """`mask_limit` bounds |M| (a tanh of the raw mask's magnitude, scaled): with a raw mask driven
    far past it, a bin's output is at most `mask_limit` x its input's; the default 1 can only
    attenuate, 2 may also raise a bin."""
    x = torch.from_numpy(synth_clips(2, 2, 1, 4000, 8000, seed=3)[0])
    for limit in (1.0, 2.0):
        model = Denoiser(Denoiser.default_config(8000, 4000, hidden=16, blocks=1, mask_limit=limit))
        net = model.net
        with torch.no_grad():
            net.out[1].weight.zero_()
            net.out[1].bias.fill_(50.0)  # re = im = 50 in every bin: |m| far above the limit
        y = model.net(x)
        spec_in, spec_out = (torch.stft(v, 256, 64, window=torch.hann_window(256), return_complex=True) for v in (x, y))
        ratio = spec_out.abs()[..., 4:-4] / spec_in.abs()[..., 4:-4].clamp_min(1e-3)
        loud = spec_in.abs()[..., 4:-4] > 1e-2
        torch.testing.assert_close(ratio[loud].median(), torch.tensor(limit), atol=0.02, rtol=0.0)
    with pytest.raises(ConfigError, match="mask_limit"):
        from_dict(DenoiserConfig, {"mask_limit": 0.0})


def test_atten_limit_mixes_the_input_back_into_what_restore_returns():
    """`atten_limit_db: L` returns (1 - s) x the network's output + s x the input, s = 10^(-L/20):
    a mask that removes everything leaves the input L dB down, not silence. Training is unaffected:
    the same weights and draws give the same loss with and without the limit."""
    x = torch.from_numpy(synth_clips(3, 2, 1, 4000, 8000, seed=4)[0])
    clean = torch.from_numpy(synth_clips(6, 3, 2, 4000, 8000, seed=5)[0])
    losses, outputs = [], {}
    for limit in (None, 20.0, 26.0):
        torch.manual_seed(0)
        model = Denoiser(Denoiser.default_config(8000, 4000, hidden=16, blocks=1, atten_limit_db=limit))
        torch.manual_seed(1)
        losses.append(float(model.training_step("main", Batch(clean), 0).loss.detach()))
        with torch.no_grad():
            outputs[limit] = (model.net(x), model.restore(x))
            # a mask of zero in every bin: the network removes everything
            model.net.out[1].weight.zero_()
            model.net.out[1].bias.zero_()
        silence = model.restore(x)
        share = 0.0 if limit is None else 10 ** (-limit / 20)
        torch.testing.assert_close(silence, share * x, atol=1e-5, rtol=0.0)
    assert losses[0] == losses[1] == losses[2]
    net_out, restored = outputs[20.0]
    torch.testing.assert_close(restored, (0.9 * net_out + 0.1 * x).clamp(-1, 1), atol=1e-5, rtol=0.0)
    torch.testing.assert_close(outputs[None][1], outputs[None][0].clamp(-1, 1), atol=1e-6, rtol=0.0)
    with pytest.raises(ConfigError, match="atten_limit_db"):
        from_dict(DenoiserConfig, {"atten_limit_db": 0.0})


def _burst(seconds: float = 1.0, sr: int = 8000) -> torch.Tensor:
    """(1, T): a harmonic burst in the middle half of the clip, silence around it."""
    t = torch.arange(int(seconds * sr)) / sr
    env = ((t > 0.25) & (t < 0.75)).float() * torch.sin(torch.pi * (t - 0.25) / 0.5).clamp_min(0)
    return 0.3 * sum(torch.sin(2 * math.pi * f * t) / k for k, f in enumerate([150, 300, 450, 900], 1))[None] * env


def test_remove_floor_lowers_a_recordings_floor_and_keeps_its_speech():
    from genforge.audio.floor import floor_spectrum, remove_floor

    cfg = MelConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=1)
    speech = _burst()
    noise = make_noise("white", 1, 8000, 8000, torch.Generator().manual_seed(0))
    for floor_db in (15.0, 25.0):
        recorded = mix_at_snr(speech, noise, floor_db)
        cleaned = remove_floor(recorded, cfg)
        # the floor is lowered: at least 5 dB closer to the speech alone (measured: +8 dB)
        assert float(si_sdr(speech, cleaned)) > float(si_sdr(speech, recorded)) + 5.0
        quiet = slice(0, 1500)  # noise alone before the burst: lowered by >= 10 dB
        ratio = cleaned[0, quiet].pow(2).mean() / recorded[0, quiet].pow(2).mean()
        assert 10 * math.log10(float(ratio)) < -10.0
        loud = slice(3500, 4500)  # the burst's loud middle keeps its level within 0.5 dB
        level = cleaned[0, loud].pow(2).mean() / recorded[0, loud].pow(2).mean()
        assert abs(10 * math.log10(float(level))) < 0.5
    # digital silence is not a floor: an all-zero clip stays zero, and a clip padded with zeros
    # takes its floor from its recorded frames only
    assert torch.equal(remove_floor(torch.zeros(2, 4000), cfg), torch.zeros(2, 4000))
    power = torch.zeros(1, 3, 10)
    power[0, :, 5:] = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])  # frames 0-4 silent
    est = floor_spectrum(power, quiet=0.2)  # the quietest of 5 recorded frames: 1.0 in each bin
    torch.testing.assert_close(est, torch.ones(1, 3, 1))
    with pytest.raises(ValueError, match="quiet"):
        remove_floor(speech, cfg, quiet=0.0)


def test_clean_targets_train_on_clips_with_their_floor_lowered():
    from genforge.audio.floor import remove_floor

    noise = make_noise("pink", 4, 8000, 8000, torch.Generator().manual_seed(1))
    clips = mix_at_snr(_burst().repeat(4, 1), noise, 20.0)
    plain = Denoiser(Denoiser.default_config(8000, 8000, hidden=16, blocks=1))
    cleaned = Denoiser(Denoiser.default_config(8000, 8000, hidden=16, blocks=1, clean_targets=True))
    assert not plain.config.clean_targets  # off by default: saved recipes train as before
    torch.testing.assert_close(plain.clean_batch(Batch(clips)), clips)
    torch.testing.assert_close(cleaned.clean_batch(Batch(clips)), remove_floor(clips, cleaned.stft_config()))
    losses = _fit(cleaned, clips, 3)
    assert all(math.isfinite(v) for v in losses)
