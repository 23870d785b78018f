"""The public Python API: its docstring example (doctest) and every runnable block of
docs/python-api.md, executed as a user would paste them into a notebook."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import numpy as np
import pytest

import genforge

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_api_docstring_examples():
    import genforge.api

    result = doctest.testmod(genforge.api, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8
    assert result.failed == 0


def _blocks() -> list[str]:
    return BLOCK.findall(DOC.read_text())


def test_doc_has_runnable_blocks():
    text = DOC.read_text()
    assert len(_blocks()) >= 2
    assert text.count("```python no-test") == 1  # the scenario block (minutes) is the only one skipped


@pytest.mark.parametrize("index", range(len(BLOCK.findall(DOC.read_text()))))
def test_doc_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(_blocks()[index], f"{DOC.name}[block {index}]", "exec"), {})


def test_top_level_names_and_errors(tmp_path):
    assert {"ingest", "train", "load", "evaluate", "run_scenario"} <= set(genforge.__all__)
    assert (Path(genforge.__file__).parent / "py.typed").is_file()
    with pytest.raises(genforge.GenforgeError, match="manifest.json"):
        genforge.open_dataset(tmp_path)
    with pytest.raises(genforge.GenforgeError, match="model.json"):
        genforge.load(tmp_path)
    with pytest.raises(AttributeError):
        genforge.no_such_function  # noqa: B018


def test_audio_runs_generate_typed_clips_by_speaker_name_and_save_them(tmp_path):
    """An audio run from the API: `GeneratedAudio` (float clips, sample rate, the labels and
    speaker ids used), the same for the same seed, a speaker by name or id, and `save` writing
    what `genforge sample --out` writes."""
    import soundfile as sf

    from audio_fixtures import make_synth_dataset

    data = make_synth_dataset(tmp_path / "data", n_train=40, n_val=20, classes=3, speakers=2, length=4000)
    run = genforge.train("mel-vae", data, tmp_path / "run", conditional=True, steps=3, batch_size=16,
                         config={"model": {"n_mels": 32, "inner_config": {"widths": [8, 16], "latent_dim": 4}},
                                 "train": {"sample_every": 0}})  # fmt: skip
    model = genforge.load(run.path)
    assert repr(model) == f"Model(run={str(run.path)!r}, model='mel-vae', modality='audio')"
    out = model.generate(6, seed=2, label=1, speaker="s1")
    assert isinstance(out, genforge.GeneratedAudio)
    assert out.audio.shape == (6, 4000) and out.audio.dtype == np.float32 and out.sample_rate == 8000
    assert out.labels.tolist() == [1] * 6 and out.speakers.tolist() == [1] * 6
    assert out.speaker_names == ["s0", "s1"]
    assert np.array_equal(model.generate(6, seed=2, label=1, speaker=1).audio, out.audio)
    assert not np.array_equal(model.generate(6, seed=3, label=1, speaker=1).audio, out.audio)
    assert model.generate(4, seed=0).speakers.tolist() == [0, 1, 0, 1]  # the speakers in turn
    with pytest.raises(genforge.GenforgeError, match="unknown speaker 'nobody'; speakers: s0, s1"):
        model.generate(2, speaker="nobody")
    with pytest.raises(genforge.GenforgeError, match="restoring needs a restoration model"):
        model.restore(out.audio)

    folder = out.save(tmp_path / "clips")
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"{i:05d}_class1_speaker1.wav" for i in range(6)]
    wave, rate = sf.read(folder / names[0], dtype="float32")
    assert rate == 8000 and np.abs(wave - out.audio[0]).max() <= 1.5 / 32768  # 16-bit PCM
    arrays = np.load(out.save(tmp_path / "clips.npz"))
    assert np.array_equal(arrays["audio"], out.audio) and int(arrays["sample_rate"]) == 8000
    assert arrays["speakers"].tolist() == [1] * 6
    with pytest.raises(genforge.GenforgeError, match="already exists"):
        out.save(tmp_path / "clips.npz")


def test_restoration_runs_restore_arrays_as_the_command_does(tmp_path):
    """`Model.restore` on an image run (`dae`) gives what `genforge restore` writes for the same
    images, and on a speech run (`denoiser`) what the run's pipeline makes of the same waves."""
    import torch

    from genforge.models.audio.denoiser import Denoiser
    from genforge.models.dae import DAE
    from genforge.models.pipeline import save_model
    from genforge.models.restoration import restore_path

    torch.manual_seed(0)
    dae = DAE(DAE.default_config(16, 1, widths=[8, 16]))
    with torch.no_grad():
        dae.net.out.weight.normal_(0, 0.05)  # not the identity map it starts as
    save_model(dae.eval(), "dae", tmp_path / "dae", {"step": 0})
    images = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 1), dtype=np.uint8)
    np.savez(tmp_path / "in.npz", images=images)
    restore_path(tmp_path / "dae", tmp_path / "in.npz", tmp_path / "out.npz")
    restored = genforge.load(tmp_path / "dae").restore(images)
    assert restored.dtype == np.uint8 and restored.shape == images.shape
    assert np.array_equal(restored, np.load(tmp_path / "out.npz")["images"])
    assert not np.array_equal(restored, images)

    save_model(Denoiser(Denoiser.default_config(8000, 4000, hidden=16, blocks=2)).eval(), "denoiser",
               tmp_path / "denoiser", {"step": 0})  # fmt: skip
    speech = np.random.default_rng(1).normal(0, 0.1, (2, 5000)).astype(np.float32)
    model = genforge.load(tmp_path / "denoiser")
    clean = model.restore(speech)
    assert clean.shape == speech.shape and clean.dtype == np.float32
    # one clip (T,) as in a batch, up to float rounding (batched kernels sum in another order)
    assert np.allclose(model.restore(speech[0]), clean[0], atol=1e-6)
    with pytest.raises(genforge.GenforgeError, match="restores its inputs|restoration model"):
        genforge.load(tmp_path / "dae").generate(2)
