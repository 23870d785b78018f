"""The audio evaluation on real speech: a subset of FSDD (5 speakers x 10 digits x 10 takes, takes
0-2 held out). The evaluator recognises held-out digits and speakers; FAD puts real clips near
the memoriser floor and noise, silence and a collapsed model far away; correct labels beat
shuffled ones. Skips when ../shared/data/fsdd is absent."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from audio_fixtures import make_fsdd_subset
from genforge.data.canonical import open_dataset
from genforge.evaluate.audio.evaluator import AudioEvaluatorConfig, audio_evaluator
from genforge.evaluate.evaluate import EvalConfig, evaluate

# the recipe of the default evaluator, smaller and shorter: this subset has 350 training clips
CONFIG = AudioEvaluatorConfig(steps=150, width=8, feature_dim=64)
# measured on this subset (takes 3-9 train, 0-2 held out): digit 0.947, speaker 0.993 (25 s on one
# busy core); the floors leave room for other CPUs' arithmetic
DIGIT_FLOOR, SPEAKER_FLOOR = 0.8, 0.9


@pytest.fixture(scope="module")
def fsdd(fsdd_dir: Path, tmp_path_factory) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small network: a second thread only contends on the shared machine
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENFORGE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield make_fsdd_subset(fsdd_dir, tmp_path_factory.mktemp("fsdd") / "ds", per_class_speaker=10, val_takes=3,
                               length=6000)  # fmt: skip
    torch.set_num_threads(threads)


def score(fsdd: Path, path: Path, audio: np.ndarray, labels: np.ndarray | None) -> dict:
    arrays = {"audio": audio, "sample_rate": 8000, **({"labels": labels} if labels is not None else {})}
    np.savez(path, **arrays)
    # fewer KAD subsets than the default 100: the test's time
    cfg = EvalConfig(n=len(audio), extractor_options=asdict(CONFIG), kid_subsets=20)
    return evaluate(path, fsdd, cfg)["values"]


def test_evaluator_recognises_held_out_digits_and_speakers(fsdd) -> None:
    ds = open_dataset(fsdd)
    info = audio_evaluator(ds, CONFIG).info
    assert (info["train_count"], info["heldout_count"], info["num_speakers"]) == (350, 150, 5)
    assert info["heldout_accuracy"] >= DIGIT_FLOOR, info
    assert info["heldout_speaker_accuracy"] >= SPEAKER_FLOOR, info


def test_fad_and_accuracy_rank_real_speech_above_failures(fsdd, tmp_path) -> None:
    val = open_dataset(fsdd).split("val")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(val))  # the split is stored digit by digit; the classifier score reads order
    audio, labels = np.array(val.audio)[order], np.array(val.labels)[order]
    real = score(fsdd, tmp_path / "real.npz", audio, labels)
    shuffled = score(fsdd, tmp_path / "shuffled.npz", audio, rng.permutation(labels))
    noise = score(fsdd, tmp_path / "noise.npz", rng.uniform(-0.3, 0.3, audio.shape).astype(np.float32), None)
    silence = score(fsdd, tmp_path / "silence.npz", np.zeros_like(audio), None)
    ones = np.flatnonzero(labels == 1)
    collapsed = score(fsdd, tmp_path / "ones.npz", audio[np.resize(ones, len(audio))], np.full(len(audio), 1))
    floor = real["fad_memoriser"]
    # the memoriser floor: lowest FAD of every row but the reference itself (which scores 0)
    assert real["fad"] < 1e-9 and real["fad_control"] < 3 * floor
    for bad in (noise, silence, collapsed):
        assert bad["fad"] > 5 * floor and bad["fad_memoriser"] == pytest.approx(floor)
    assert noise["fad"] > 20 * floor and silence["fad"] > 20 * floor
    # one digit's 15 clips replayed: inside the real manifold, but covering few of its balls
    assert collapsed["coverage"] < 0.5 < real["coverage"] and collapsed["recall"] < 0.1 < real["recall"]
    assert real["conditional_accuracy"] >= DIGIT_FLOOR > shuffled["conditional_accuracy"] + 0.5
    assert real["classifier_score"] > 3 > 2 > collapsed["classifier_score"]
    assert real["copy_rate"] < 0.1
