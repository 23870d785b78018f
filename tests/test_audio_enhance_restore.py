"""`genforge restore` on audio runs: a WAV -> WAV, a folder -> folder, other rates resampled,
channels kept, demo corruption seeded, bad input refused before anything is written; image runs
still dispatch to their own restore."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from cli_runner import run_cli
from genforge.audio.resample import resample
from genforge.audio.wav import write_wav
from genforge.models.audio.denoiser import Denoiser
from genforge.models.pipeline import load_pipeline, save_model

SR = 8000
PCM16 = 1.5 / 32768  # one 16-bit step, and rounding


def _speech(length: int, seed: int, rate: int = SR) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length) / rate
    return (
        0.3 * np.sin(2 * np.pi * 300 * t) * (np.sin(2 * np.pi * 3 * t) > 0)
        + 0.05 * rng.standard_normal(length)
    ).astype(np.float32)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.manual_seed(0)
    model = Denoiser(Denoiser.default_config(SR, 4000, hidden=16, blocks=2)).eval()
    path = tmp_path_factory.mktemp("run") / "run"
    save_model(model, "denoiser", path, {"step": 0})
    return path


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _expected(run, audio: np.ndarray) -> np.ndarray:
    """What the run makes of float (T,) or (T, ch) audio already at its rate, as a WAV reads back."""
    return load_pipeline(run).restore(np.ascontiguousarray(np.atleast_2d(audio.T))).T.reshape(audio.shape)


def test_wav_file_to_wav_file(run, tmp_path, monkeypatch, capsys):
    x = _speech(6000, 0)
    write_wav(tmp_path / "noisy.wav", x, SR)
    code, out, err = run_cli(
        monkeypatch, capsys, "restore", run, tmp_path / "noisy.wav", "--out", tmp_path / "clean.wav"
    )
    assert code == 0, err
    assert "restored 1 file(s)" in out and "8000 Hz" in out
    y, rate = sf.read(tmp_path / "clean.wav", dtype="float32")
    assert rate == SR and y.shape == (6000,)
    read_back, _ = sf.read(tmp_path / "noisy.wav", dtype="float32")
    assert np.abs(y - _expected(run, read_back)).max() <= PCM16
    assert np.abs(y - read_back).max() > 0.01  # the model changed it
    assert _files(tmp_path) == ["clean.wav", "noisy.wav"]
    code, _, err = run_cli(
        monkeypatch, capsys, "restore", run, tmp_path / "noisy.wav", "--out", tmp_path / "clean.wav"
    )
    assert code == 2 and "already exists" in err
    code, _, err = run_cli(
        monkeypatch, capsys, "restore", run, tmp_path / "noisy.wav", "--out", tmp_path / "clean.mp3"
    )
    assert code == 2 and "*.wav" in err


def test_atten_limit_option_sets_how_much_of_the_input_is_mixed_back(run, tmp_path, monkeypatch, capsys):
    """--atten-limit DB replaces the run's limit for the call: the output is (1 - s) x the network's
    plus s x the input, s = 10^(-DB/20); 'none' gives the network's output alone; bad values and
    image runs are refused before anything is written."""
    x = _speech(6000, 3)
    write_wav(tmp_path / "noisy.wav", x, SR)
    outs = {}
    for limit in ("none", "6"):
        code, _, err = run_cli(monkeypatch, capsys, "restore", run, tmp_path / "noisy.wav",
                               "--out", tmp_path / f"{limit}.wav", "--atten-limit", limit)  # fmt: skip
        assert code == 0, err
        outs[limit], _ = sf.read(tmp_path / f"{limit}.wav", dtype="float32")
    read_back, _ = sf.read(tmp_path / "noisy.wav", dtype="float32")
    assert np.abs(outs["none"] - _expected(run, read_back)).max() <= PCM16
    share = 10 ** (-6 / 20)
    assert np.abs(outs["6"] - ((1 - share) * outs["none"] + share * read_back)).max() <= 2 * PCM16
    assert np.abs(outs["6"] - outs["none"]).max() > 0.01
    before = _files(tmp_path)
    for bad in ("0", "-3", "loud", "nan"):
        code, _, err = run_cli(monkeypatch, capsys, "restore", run, tmp_path / "noisy.wav",
                               "--out", tmp_path / "bad.wav", "--atten-limit", bad)  # fmt: skip
        assert code == 2 and "--atten-limit" in err and repr(bad) in err
    assert _files(tmp_path) == before


def test_other_rate_is_resampled_and_channels_are_kept(run, tmp_path, monkeypatch, capsys):
    stereo = np.stack([_speech(16000, 1, 16000), _speech(16000, 2, 16000)], 1)
    sf.write(tmp_path / "hi.flac", stereo, 16000)
    code, out, err = run_cli(
        monkeypatch, capsys, "restore", run, tmp_path / "hi.flac", "--out", tmp_path / "lo.wav"
    )
    assert code == 0, err
    assert "resampled to 8000 Hz with soxr-HQ: hi.flac: 16000 Hz" in out
    y, rate = sf.read(tmp_path / "lo.wav", dtype="float32")
    assert rate == SR and y.shape == (8000, 2)
    source, _ = sf.read(tmp_path / "hi.flac", dtype="float32")
    assert np.abs(y - _expected(run, resample(source, 16000, SR))).max() <= PCM16


def test_folder_to_folder_and_a_bad_file_writes_nothing(run, tmp_path, monkeypatch, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for i, n in enumerate((3000, 5000, 4100)):
        write_wav(src / f"clip{i}.wav", _speech(n, 10 + i), SR)
    (src / "notes.txt").write_text("not audio: skipped")
    code, out, err = run_cli(monkeypatch, capsys, "restore", run, src, "--out", tmp_path / "out")
    assert code == 0, err
    assert _files(tmp_path / "out") == ["clip0.wav", "clip1.wav", "clip2.wav"]
    for i, n in enumerate((3000, 5000, 4100)):
        y, rate = sf.read(tmp_path / "out" / f"clip{i}.wav", dtype="float32")
        x, _ = sf.read(src / f"clip{i}.wav", dtype="float32")
        assert rate == SR and y.shape == (n,) and np.abs(y - _expected(run, x)).max() <= PCM16
    (src / "broken.wav").write_bytes(b"RIFF....WAVEfmt not really")
    before = _files(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "restore", run, src, "--out", tmp_path / "out2")
    assert code == 2 and "broken.wav" in err and "not a readable audio file" in err
    assert _files(tmp_path) == before  # no out2, no temporary left behind
    code, _, err = run_cli(
        monkeypatch, capsys, "restore", run, src / "broken.wav", "--out", tmp_path / "b.wav"
    )
    assert code == 2 and "broken.wav" in err and _files(tmp_path) == before
    code, _, err = run_cli(
        monkeypatch, capsys, "restore", run, src / "notes.txt", "--out", tmp_path / "n.wav"
    )
    assert code == 2 and "expected an audio file" in err and _files(tmp_path) == before


def test_demo_corruption_is_seeded_and_written_beside(run, tmp_path, monkeypatch, capsys):
    write_wav(tmp_path / "clean.wav", _speech(8000, 3), SR)
    for name in ("a", "b"):
        code, _, err = run_cli(
            monkeypatch,
            capsys,
            "restore",
            run,
            tmp_path / "clean.wav",
            "--out",
            tmp_path / f"{name}.wav",
            "--corrupt",
            "white,babble",
            "--snr",
            "0",
            "--seed",
            "4",
        )
        assert code == 0, err
    noisy_a, _ = sf.read(tmp_path / "a.noisy.wav", dtype="float32")
    noisy_b, _ = sf.read(tmp_path / "b.noisy.wav", dtype="float32")
    clean, _ = sf.read(tmp_path / "clean.wav", dtype="float32")
    assert np.array_equal(noisy_a, noisy_b)
    snr = 10 * np.log10((clean**2).sum() / ((noisy_a - clean) ** 2).sum())
    assert abs(snr) < 0.1  # --snr 0 (PCM rounding aside)
    assert np.array_equal(sf.read(tmp_path / "a.wav")[0], sf.read(tmp_path / "b.wav")[0])
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "restore",
        run,
        tmp_path / "clean.wav",
        "--out",
        tmp_path / "c.wav",
        "--corrupt",
        "rain",
    )
    assert code == 2 and "unknown noise kind 'rain'" in err
    code, _, err = run_cli(
        monkeypatch, capsys, "restore", run, tmp_path / "clean.wav", "--out", tmp_path / "c.wav", "--snr", "3"
    )
    assert code == 2 and "--corrupt" in err


def test_image_runs_still_restore_through_the_same_command(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from genforge.models.dae import DAE

    torch.manual_seed(0)
    save_model(DAE(DAE.default_config(16, 1, widths=[8, 16])).eval(), "dae", tmp_path / "dae", {"step": 0})
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8)).save(
        tmp_path / "in.png"
    )
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "restore",
        tmp_path / "dae",
        tmp_path / "in.png",
        "--out",
        tmp_path / "out.png",
        "--corrupt",
        "gaussian",
    )
    assert code == 0 and "restored" in out and (tmp_path / "out.png").is_file(), err
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "restore",
        tmp_path / "dae",
        tmp_path / "in.png",
        "--out",
        tmp_path / "o2.png",
        "--snr",
        "5",
    )
    assert code == 2 and "--snr applies to audio runs" in err
    code, _, err = run_cli(monkeypatch, capsys, "restore", tmp_path / "dae", tmp_path / "in.png",
                           "--out", tmp_path / "o3.png", "--atten-limit", "20")  # fmt: skip
    assert code == 2 and "--atten-limit applies to speech enhancement" in err
