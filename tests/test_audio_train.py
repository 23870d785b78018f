"""Audio through the one trainer and the CLI: the audio feed (batches, speakers, resume position,
refusals), save -> load -> identical samples, bit-exact resume, the periodic sample files, and
`genforge sample` writing WAV folders and .npz files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.numpy import load_file

from audio_fixtures import make_fsdd_subset, make_synth_dataset
from cli_runner import run_cli
from genforge.core.errors import ConfigError, GenforgeError
from genforge.data.loader import BatchLoader
from genforge.models.pipeline import load_pipeline
from genforge.train.callbacks import Callback
from genforge.train.launch import build_trainer
from test_audio_models import TINY

QUIET = ["train.progress=none", "train.tensorboard=false", "train.log_every=2", "train.sample_every=0"]


def _sets(name: str) -> list[str]:
    """TINY's config of `name` as --set items."""
    out = []
    for key, value in TINY[name].items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in items:
            out.append(f"model.{key}{'.' + sub if sub else ''}={json.dumps(v)}")
    return out


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks (conftest.one_thread)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synth_dataset(tmp_path_factory.mktemp("audio") / "ds")


def _train(out, data, name, steps=6, sets=(), resume=False, callbacks=(), conditional=True, **flags):
    trainer = build_trainer(out, model_name=name, data=data, flags={"steps": steps, "batch_size": 8, "seed": 3, **flags},
                            sets=[*_sets(name), *QUIET, *sets], resume=resume, conditional=conditional,
                            callbacks=list(callbacks))  # fmt: skip
    return trainer, trainer.fit(resume=resume)


# --- the loader and the feed ---------------------------------------------------------------------


def test_loader_serves_float_clips_from_ram_or_the_memory_map(synth):
    from genforge.data.canonical import open_dataset

    split = open_dataset(synth).train_split
    batches = {}
    for in_memory in (True, False):
        loader = BatchLoader.from_split(split, batch_size=8, seed=1, in_memory=in_memory)
        batches[in_memory] = [next(loader) for _ in range(9)]  # past the end of the first epoch
    for a, b in zip(batches[True], batches[False], strict=True):
        assert a.images.dtype == torch.float32 and a.images.shape == (8, 4000)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    with pytest.raises(Exception, match="float32 clips"):
        BatchLoader(np.zeros((4, 10), np.float64), batch_size=2)


def test_feed_batches_are_train_clips_with_their_speakers_and_resume(tmp_path, synth):
    trainer = build_trainer(tmp_path / "run", model_name="diffwave", data=synth, flags={"steps": 1, "batch_size": 8},
                            sets=[*_sets("diffwave"), *QUIET], conditional=True)  # fmt: skip
    feed, split = trainer.feed, trainer.dataset.train_split
    audio, speakers = np.asarray(split.audio), split.speakers
    batch = feed.next_batch()
    assert batch.data.shape == (8, 4000) and batch.data.dtype == torch.float32
    for wave, label, speaker in zip(
        batch.data.numpy(), batch.labels.numpy(), batch.speakers.numpy(), strict=True
    ):
        row = int(np.flatnonzero((audio == wave).all(1))[0])  # each clip is a train clip, unchanged
        assert split.labels[row] == label and speakers[row] == speaker
    state = feed.state_dict()
    following = feed.next_batch()
    feed.load_state_dict(state)
    again = feed.next_batch()
    assert torch.equal(again.data, following.data) and torch.equal(again.speakers, following.speakers)


def test_model_and_data_mismatch_is_refused(tmp_path, synth):
    def build(*sets, model="mel-vae"):
        return build_trainer(tmp_path / "x", model_name=model, data=synth, flags={"steps": 1, "batch_size": 8},
                             sets=[*_sets(model), *QUIET, *sets], conditional=True)  # fmt: skip

    with pytest.raises(
        ConfigError, match=r"model.sample_rate is 16000 but the dataset .* has sample_rate 8000"
    ):
        build("model.sample_rate=16000")
    with pytest.raises(ConfigError, match="model.length is 8000 .* length 4000"):
        build("model.length=8000", model="wavegan")
    with pytest.raises(ConfigError, match="num_speakers=7 speakers"):  # the data names 2
        build("model.num_speakers=7", model="diffwave")
    with pytest.raises(ConfigError, match="audio model .* image dataset|image dataset"):
        from test_train_models import make_dataset

        build_trainer(tmp_path / "img", model_name="diffwave", data=make_dataset(tmp_path / "img-ds"),
                      flags={"steps": 1})  # fmt: skip


# --- save -> load -> identical samples ---------------------------------------------------------


@pytest.mark.parametrize("name", list(TINY))
def test_trained_run_loads_and_samples_identically_under_a_seed(tmp_path, synth, name):
    trainer, summary = _train(tmp_path / "run", synth, name, steps=4, sets=["train.sample_count=6"])
    assert summary["step"] == 4
    info = json.loads((tmp_path / "run" / "model.json").read_text())
    assert (
        info["modality"] == "audio"
        and info["config"]["sample_rate"] == 8000
        and info["config"]["length"] == 4000
    )
    assert info["dataset"]["speaker_names"] == ["s0", "s1"]
    pipe = load_pipeline(tmp_path / "run")
    assert (
        pipe.sample_rate == 8000
        and pipe.clip_length == 4000
        and pipe.conditional
        and pipe.speaker_conditional
    )
    a, labels = pipe.generate(4, seed=5)
    b, _ = load_pipeline(tmp_path / "run").generate(4, seed=5)
    assert a.shape == (4, 4000) and a.dtype == np.float32 and np.array_equal(a, b)
    assert labels.tolist() == [0, 1, 2, 0]
    assert not np.array_equal(a, pipe.generate(4, seed=6)[0])
    # the final weights are the trainer's EMA weights: its model samples the same clips
    with trainer.ema_weights() as model:
        gen = torch.Generator().manual_seed(5)
        direct = model.sample(
            4, generator=gen, labels=torch.as_tensor(labels), speakers=torch.tensor([0, 1, 0, 1])
        )
    assert np.array_equal(direct.numpy(), a)
    # the last step's samples: a log-mel grid (3 classes a row) and the clips joined into a WAV
    from PIL import Image

    grid = Image.open(tmp_path / "run" / "samples" / "step-0000004.png")
    wav, rate = sf.read(tmp_path / "run" / "samples" / "step-0000004.wav")
    assert rate == 8000 and len(wav) == 6 * 4000 + 5 * 2000
    # 3 columns (a class each) and 2 rows of 64 mel bands x 32 frames (0.5 s in 16 ms hops), 2 px apart
    assert grid.size == (3 * (32 + 2) + 2, 2 * (64 + 2) + 2)


# --- resume ------------------------------------------------------------------------------------


class _Interrupt(Callback):
    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, trainer, step):
        if step == self.at:
            raise KeyboardInterrupt


def test_resume_is_bit_exact(tmp_path, synth):
    """Killed after the checkpoint at step 4 and resumed, a WaveGAN (phase shuffle and noise
    from the global RNG, two phases, the loader's position) ends with an uninterrupted run's weights."""
    sets = ["train.checkpoint_every=4", "model.n_critic=2"]
    _train(tmp_path / "full", synth, "wavegan", steps=8, sets=sets)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "part", synth, "wavegan", steps=8, sets=sets, callbacks=[_Interrupt(5)])
    assert not (tmp_path / "part" / "model.safetensors").exists()
    _, summary = _train(tmp_path / "part", synth, "wavegan", steps=8, sets=sets, resume=True)
    assert summary["step"] == 8
    full = load_file(str(tmp_path / "full" / "model.safetensors"))
    part = load_file(str(tmp_path / "part" / "model.safetensors"))
    assert full.keys() == part.keys()
    for key in full:
        assert np.array_equal(full[key], part[key]), key


# --- the CLI: train and sample -------------------------------------------------------------------


def test_cli_train_then_sample_wavs_and_npz(tmp_path, synth, monkeypatch, capsys):
    run = tmp_path / "run"
    sets = [x for s in [*_sets("mel-vae"), *QUIET] for x in ("--set", s)]
    code, _, err = run_cli(monkeypatch, capsys, "train", "--model", "mel-vae", "--data", synth, "--out", run,
                           "--steps", "3", "-b", "8", "--conditional", *sets)  # fmt: skip
    assert code == 0, err
    assert json.loads((run / "model.json").read_text())["model"] == "mel-vae"

    clips = tmp_path / "clips"
    code, printed, err = run_cli(monkeypatch, capsys, "sample", run, "-n", "4", "--out", clips, "--class", "2",
                                 "--speaker", "s1", "--seed", "7")  # fmt: skip
    assert code == 0, err
    assert "wrote 4 clips" in printed
    names = sorted(p.name for p in clips.iterdir())
    assert names == [f"{i:05d}_class2_speaker1.wav" for i in range(4)]
    for name in names:
        wave, rate = sf.read(clips / name, dtype="float32")
        info = sf.info(clips / name)
        assert rate == 8000 and wave.shape == (4000,) and info.subtype == "PCM_16" and info.channels == 1

    code, _, err = run_cli(
        monkeypatch, capsys, "sample", run, "-n", "6", "--out", tmp_path / "x.npz", "--seed", "7"
    )
    assert code == 0, err
    data = np.load(tmp_path / "x.npz")
    assert set(data.files) == {"audio", "sample_rate", "labels", "speakers"}
    assert (
        data["audio"].dtype == np.float32
        and data["audio"].shape == (6, 4000)
        and int(data["sample_rate"]) == 8000
    )
    assert data["labels"].tolist() == [0, 1, 2, 0, 1, 2] and data["speakers"].tolist() == [0, 1, 0, 1, 0, 1]
    # the WAVs hold the npz's clips for the same seed and conditions, to 16-bit precision
    code, _, _ = run_cli(monkeypatch, capsys, "sample", run, "-n", "4", "--out", tmp_path / "same.npz", "--class", "2",
                         "--speaker", "1", "--seed", "7")  # fmt: skip
    same = np.load(tmp_path / "same.npz")["audio"]
    for i, name in enumerate(names):
        np.testing.assert_allclose(sf.read(clips / name, dtype="float32")[0], same[i], atol=1 / 32767)

    code, _, err = run_cli(monkeypatch, capsys, "sample", run, "-n", "2", "--out", clips)
    assert code == 2 and "--overwrite" in err
    code, _, err = run_cli(monkeypatch, capsys, "sample", run, "--prompt", "hi", "--out", clips)
    assert code == 2 and "--prompt" in err and "audio run" in err
    code, _, err = run_cli(monkeypatch, capsys, "sample", run, "-n", "2")
    assert code == 2 and "--out is required" in err
    code, _, err = run_cli(
        monkeypatch, capsys, "sample", run, "--speaker", "nobody", "--out", tmp_path / "y.npz"
    )
    assert code == 2 and "unknown speaker 'nobody'" in err and "s0, s1" in err
    code, _, err = run_cli(monkeypatch, capsys, "sample", run, "--out", tmp_path / "y.wav")
    assert code == 2 and "FILE.npz or a directory" in err


def test_speaker_is_refused_by_a_model_without_speakers(tmp_path, synth):
    from genforge.train.sampling import sample_run

    _train(tmp_path / "run", synth, "diffwave", steps=1, sets=["model.speaker_conditional=false"])
    with pytest.raises(GenforgeError, match="not speaker-conditional"):
        sample_run(tmp_path / "run", {"out": tmp_path / "a.npz", "speaker": "s0"})
    sample_run(tmp_path / "run", {"out": tmp_path / "a.npz", "n": 2})
    assert "speakers" not in np.load(tmp_path / "a.npz").files


def test_fsdd_subset_trains_with_speaker_names(tmp_path, fsdd_dir):
    """Real clips: two digits of the five FSDD speakers; the mel cVAE's loss falls and the run
    knows the speakers by name."""
    data = make_fsdd_subset(fsdd_dir, tmp_path / "fsdd", per_class_speaker=4, length=8000, digits=(0, 1))
    sets = [
        "model.inner_config.widths=[8,16,32]",
        "model.inner_config.latent_dim=8",
        "model.inner_config.lr=0.003",
    ]
    build = dict(model_name="mel-vae", data=data, flags={"steps": 30, "batch_size": 10},
                 sets=[*QUIET, *sets, "train.log_every=5"], conditional=True)  # fmt: skip
    build_trainer(tmp_path / "run", **build).fit()
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["main/loss"] for r in records]
    assert losses[-1] < 0.9 * losses[0], losses
    pipe = load_pipeline(tmp_path / "run")
    assert pipe.speaker_names == ["george", "jackson", "lucas", "nicolas", "theo"] and pipe.num_speakers == 5
    audio, labels = pipe.generate(3, seed=0, speaker="theo", class_label=1)
    assert audio.shape == (3, 8000) and labels.tolist() == [1, 1, 1]
