"""ONNX / TorchScript export of audio runs (deploy/export_audio.py): onnxruntime reproduces
PyTorch within 1e-4 for each audio family's exported network (fresh inputs at another batch
size), OUT.json carries the audio fields, the spectral route's Griffin-Lim runs outside the
graph on the ONNX output, and a network ONNX cannot express fails with a clear error."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from genforge.core.errors import GenforgeError
from genforge.deploy.export import export_run, export_spec, sidecar_path
from genforge.models.pipeline import load_pipeline, save_model
from genforge.models.registry import MODELS
from test_export import TOL, _inputs, check_onnx

RATE, LENGTH = 8000, 1600
SPEAKERS = ["ann", "bob"]
MEL = {"n_mels": 16, "n_fft": 256}


def audio_run(path, name: str, **overrides):
    """A tiny untrained audio model of family module `name` (skips when it is not there yet),
    with non-zero weights everywhere (zero-initialised output layers would make any two networks
    agree) and non-trivial normalisation statistics, as after training."""
    pytest.importorskip("genforge.models.audio.wavegan")
    if name == "denoiser":
        pytest.importorskip("genforge.models.audio.denoiser")
    torch.manual_seed(0)
    cls = MODELS.get(name)
    model = cls(cls.default_config(RATE, LENGTH, **overrides))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.uniform_(-0.2, 0.2)
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.1)
    dataset = {"speaker_names": SPEAKERS, "class_names": ["0", "1", "2"], "sample_rate": RATE}
    save_model(model, name, path, {"dataset": dataset, "step": 0})
    return path


@pytest.mark.parametrize(
    ("name", "config", "inputs"),
    [
        ("wavegan", {"g_widths": [16, 8], "d_widths": [8, 16], "latent_dim": 8}, ["z"]),
        (
            "wavegan",
            {"num_classes": 3, "num_speakers": 2, "g_widths": [16, 8], "d_widths": [8, 16], "latent_dim": 8},
            ["z", "labels", "speakers"],
        ),
        (
            "diffwave",
            {"num_classes": 3, "num_speakers": 2, "channels": 8, "layers": 2, "cycle": 2, "timesteps": 50},
            ["x_t", "t", "labels", "speakers"],
        ),
        (
            "mel-sngan",
            {
                "num_classes": 3,
                "num_speakers": 2,
                **MEL,
                "inner_config": {"g_widths": [16, 8], "d_widths": [8, 16]},
            },
            ["z", "labels"],
        ),
        ("mel-vae", {"num_classes": 3, **MEL}, ["z", "labels"]),
        (
            "mel-ddpm",
            {
                **MEL,
                "num_speakers": 2,
                "inner_config": {
                    "base_channels": 8,
                    "channel_mults": [1, 2],
                    "attention_resolutions": [],
                    "timesteps": 50,
                },
            },
            ["x_t", "t", "labels"],
        ),  # fmt: skip
    ],
)
def test_audio_family_onnx_matches_torch(tmp_path, name, config, inputs):
    run = audio_run(tmp_path / "run", name, **config)
    meta = check_onnx(run, tmp_path / "m.onnx")
    assert [i["name"] for i in meta["inputs"]] == inputs
    assert meta["sample_rate"] == RATE and meta["length"] == LENGTH and meta["task"] == "generate"
    pipe = load_pipeline(run)
    assert meta["speaker_conditional"] == pipe.speaker_conditional
    assert meta["speaker_names"] == (SPEAKERS if pipe.speaker_conditional else [])
    assert "image_shape" not in meta
    written = json.loads(sidecar_path(tmp_path / "m.onnx").read_text())
    assert {k: written[k] for k in ("sample_rate", "length", "num_speakers", "speaker_names", "inputs")} == {
        k: meta[k] for k in ("sample_rate", "length", "num_speakers", "speaker_names", "inputs")
    }


def test_wavegan_onnx_generates_the_pipelines_clips(tmp_path):
    """The exported generator on the noise `noise(seed)` draws = `AudioPipeline.generate` (the
    graph is the whole model: no step runs outside it)."""
    run = audio_run(tmp_path / "run", "wavegan", num_classes=3, num_speakers=2, g_widths=[16, 8],
                    d_widths=[8, 16], latent_dim=8)  # fmt: skip
    export_run(run, "onnx", tmp_path / "g.onnx")
    pipe = load_pipeline(run)
    z = pipe.model.noise(4, generator=torch.Generator().manual_seed(3)).numpy()
    labels, speakers = np.array([0, 1, 2, 0]), np.array([1, 1, 0, 0])
    session = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"z": z, "labels": labels, "speakers": speakers})[0]
    expected, _ = pipe.generate(4, seed=3, labels=labels, speakers=speakers)
    assert got.shape == (4, LENGTH) and np.abs(got - expected).max() < TOL


def test_diffwave_export_writes_the_schedule_and_null_conditions(tmp_path):
    run = audio_run(tmp_path / "run", "diffwave", num_classes=3, num_speakers=2, channels=8, layers=2,
                    cycle=2, timesteps=50)  # fmt: skip
    meta = export_run(run, "onnx", tmp_path / "d.onnx")
    d = meta["diffwave"]
    assert d["null_label"] == 3 and d["null_speaker"] == 2 and d["timesteps"] == 50
    with np.load(tmp_path / d["schedule_file"]) as tables:
        model = load_pipeline(run).model
        assert np.allclose(tables["alpha_bar"], np.asarray(model.schedule.alpha_bar))
    # the null ids (classifier-free guidance's unconditional pass) are valid inputs
    session = ort.InferenceSession(str(tmp_path / "d.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, LENGTH)).astype(np.float32)
    t = np.array([49, 3])
    null = {"labels": np.array([3, 3]), "speakers": np.array([2, 2])}
    got = session.run(None, {"x_t": x, "t": t, **null})[0]
    with torch.no_grad():
        expected = model.denoiser(
            torch.from_numpy(x), torch.from_numpy(t), torch.tensor([3, 3]), torch.tensor([2, 2])
        )
    assert np.abs(got - expected.numpy()).max() < TOL


def test_spectral_griffin_lim_runs_outside_the_graph(tmp_path):
    """mel-sngan: the graph makes log-mel images; `mel_images_to_waves` turns the ONNX output into
    the clips the model samples (same noise, same Griffin-Lim phase seed)."""
    from genforge.deploy.export_audio import mel_images_to_waves

    run = audio_run(tmp_path / "run", "mel-sngan", num_classes=3, **MEL, griffin_lim_iters=8,
                    inner_config={"g_widths": [16, 8], "d_widths": [8, 16]})  # fmt: skip
    meta = export_run(run, "onnx", tmp_path / "m.onnx")
    spectral = meta["spectral-gan"]
    assert spectral["inner"] == "sngan" and spectral["inner_family"] == "gan"
    assert spectral["joint_classes"] == 3 and spectral["mel"]["n_mels"] == 16
    model = load_pipeline(run).model
    inner = model.inner_model
    z = torch.randn(3, inner.config.latent_dim, generator=torch.Generator().manual_seed(5))
    labels = torch.tensor([0, 2, 1])
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    images = session.run(None, {"z": z.numpy(), "labels": labels.numpy()})[0]
    assert images.shape == (3, 1, 16, 16)
    waves = mel_images_to_waves(images, meta, seed=9)
    with torch.no_grad():
        torch_images = inner.generator(z, labels)
        expected = model.representation.to_wave(torch_images, 8, torch.Generator().manual_seed(9))
    assert waves.shape == (3, LENGTH) and waves.dtype == np.float32
    assert np.abs(waves - expected.numpy()).max() < 1e-3
    assert np.abs(waves).max() > 1e-3
    with pytest.raises(GenforgeError, match="not an export of a mel"):
        mel_images_to_waves(images, {"file": "x.onnx"})


def test_denoiser_wave_unet_onnx_and_mask_refused_with_a_clear_error(tmp_path):
    run = audio_run(tmp_path / "wave", "denoiser", arch="wave", channels=8, depth=2)
    meta = check_onnx(run, tmp_path / "wave.onnx")
    assert meta["task"] == "restore" and [i["name"] for i in meta["inputs"]] == ["noisy"]
    mask = audio_run(tmp_path / "mask", "denoiser", arch="mask", hidden=16, blocks=2, lstm=8, deep_filter=1)
    with pytest.raises(GenforgeError, match=r"cannot be written as ONNX \(STFT .*--format torchscript"):
        export_run(mask, "onnx", tmp_path / "mask.onnx")
    assert not (tmp_path / "mask.onnx").exists() and not sidecar_path(tmp_path / "mask.onnx").exists()
    # TorchScript keeps the complex STFT: the mask denoiser exports there, at any clip length
    meta = export_run(mask, "torchscript", tmp_path / "mask.pt")
    loaded = torch.jit.load(str(tmp_path / "mask.pt"))
    model = load_pipeline(mask).model
    for length in (LENGTH, 2400):
        x = torch.randn(3, length, generator=torch.Generator().manual_seed(length))
        assert torch.allclose(loaded(x), model.restore(x), atol=TOL, rtol=0)
    assert meta["format"] == "torchscript"


def test_export_cli_on_an_audio_run(tmp_path, monkeypatch, capsys):
    from cli_runner import run_cli

    run = audio_run(
        tmp_path / "run", "wavegan", num_speakers=2, g_widths=[16, 8], d_widths=[8, 16], latent_dim=8
    )
    code, out, err = run_cli(
        monkeypatch, capsys, "export", run, "--format", "onnx", "--out", tmp_path / "w.onnx"
    )
    assert code == 0, err
    assert "wavegan generate" in out and "z[2, 8]" in out and "speakers[2]" in out
    model, inputs, names, _, _ = export_spec(load_pipeline(run).model, "wavegan")
    fresh = _inputs(inputs, 3)
    session = ort.InferenceSession(str(tmp_path / "w.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: t.numpy() for n, t in zip(names, fresh, strict=True)})[0]
    with torch.no_grad():
        assert np.abs(got - model(*fresh).numpy()).max() < TOL


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_onnx_sampler_reproduces_diffwave_ddim(tmp_path, guidance):
    """numpy + onnxruntime DDIM on the exported DiffWave denoiser = `DiffWave.sample` on the same
    x_T, conditioned on digit and speaker, with and without classifier-free guidance."""
    from genforge.deploy.onnx_sampler import OnnxDiffusionSampler

    run = audio_run(tmp_path / "run", "diffwave", num_classes=3, num_speakers=2, channels=8, layers=2,
                    cycle=2, timesteps=50, sample_steps=4)  # fmt: skip
    export_run(run, "onnx", tmp_path / "d.onnx")
    sampler = OnnxDiffusionSampler(tmp_path / "d.onnx")
    assert sampler.shape == (LENGTH,)
    model = load_pipeline(run).model
    labels, speakers = torch.tensor([0, 2, 1]), torch.tensor([1, 0, 1])
    x_T = torch.randn((3, LENGTH), generator=torch.Generator().manual_seed(7))
    expected = model.sample(3, generator=torch.Generator().manual_seed(7), labels=labels, speakers=speakers,
                            guidance=guidance).numpy()  # fmt: skip
    got = sampler.sample(
        3, x_T=x_T.numpy(), labels=labels.numpy(), speakers=speakers.numpy(), guidance=guidance
    )
    # measured: 5e-6 (guidance 1), 2e-5 (guidance 2); leaving out the speakers moves samples by 2
    assert got.shape == (3, LENGTH) and np.abs(got - expected).max() < 1e-4
    assert np.abs(expected).max() > 0.05
    with pytest.raises(GenforgeError, match="not conditioned on speakers"):
        OnnxDiffusionSampler(_unconditional_diffwave(tmp_path)).sample(1, speakers=np.array([0]))


def _unconditional_diffwave(tmp_path):
    run = audio_run(tmp_path / "plain", "diffwave", channels=8, layers=2, cycle=2, timesteps=50)
    export_run(run, "onnx", tmp_path / "plain.onnx")
    return tmp_path / "plain.onnx"
