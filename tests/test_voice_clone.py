"""Voice cloning (issue 11): speakers known by name, `--init-from` growing the speaker tables
(known rows bit-exact, a new row the mean of the base's), `--freeze-trunk`, adaptation improving
the target speaker's accuracy over the base model, the clip-hash record, the target-speaker
evaluation and the `voice-clone` scenario's wiring (`adapt:` section, `--speaker`, `--base`)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

import genforge.evaluate.audio.evaluator as evaluator_module
from audio_fixtures import make_synth_dataset, synth_clips
from cli_runner import run_cli
from genforge.core.errors import ConfigError
from genforge.data.canonical import open_dataset
from genforge.evaluate.audio.evaluator import AudioEvaluatorConfig, audio_evaluator
from genforge.evaluate.audio.samples import shared_speakers
from genforge.models.pipeline import load_pipeline
from genforge.scenarios.runner import run_scenario
from genforge.scenarios.schema import load_scenario
from genforge.scenarios.voice_clone import balanced_take, speaker_subset
from genforge.train.launch import build_trainer
from test_audio_models import TINY

QUIET = ["train.progress=none", "train.tensorboard=false", "train.log_every=10", "train.sample_every=0"]


@dataclass
class FastEvaluatorConfig(AudioEvaluatorConfig):
    """The default evaluator, made small for tests (same recipe, fewer steps)."""

    steps: int = 60
    width: int = 8
    feature_dim: int = 32


@pytest.fixture(scope="module", autouse=True)
def _setup(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: a second thread only contends on the shared machine
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENFORGE_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setattr(evaluator_module, "AudioEvaluatorConfig", FastEvaluatorConfig)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def voices(tmp_path_factory) -> dict[str, Path]:
    """Three synthetic voices s0, s1, s2 (a voice scales the tones' pitch): all of them, the base
    voices s0 and s1, and 30 training clips of s2 (the new voice)."""
    root = tmp_path_factory.mktemp("voices")
    full = make_synth_dataset(root / "full", n_train=180, n_val=45, classes=3, speakers=3)
    ds = open_dataset(full)
    return {"full": full, "base": speaker_subset(ds, root / "base", ["s0", "s1"]),
            "target": speaker_subset(ds, root / "target", ["s2"], max_train=30),
            "mixed": speaker_subset(ds, root / "mixed", ["s1", "s2"], max_train=30)}  # fmt: skip


def _sets(name: str) -> list[str]:
    return [f"model.{k}={json.dumps(v)}" for k, v in TINY[name].items()]


def _base(root: Path, data: Path, name: str, steps: int = 2) -> Path:
    out = root / f"{name}-base"
    if not (out / "model.json").is_file():
        build_trainer(out, model_name=name, data=data, flags={"steps": steps, "batch_size": 16, "seed": 1},
                      sets=[*_sets(name), *QUIET], conditional=True).fit()  # fmt: skip
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


# --- speakers by name, and the tables that grow ---------------------------------------------------


def test_factored_conditional_norm_starts_as_the_joint_one_and_shares_a_speaker_row():
    from genforge.models.nets.norm import ConditionalNorm2d, factor_indices

    labels = torch.arange(12)  # digit * 4 + speaker, 3 digits x 4 speakers
    digit, speaker = factor_indices(labels, [3, 4])
    assert torch.equal(digit, labels // 4) and torch.equal(speaker, labels % 4)
    torch.manual_seed(0)
    joint, factored = ConditionalNorm2d(5, 12).eval(), ConditionalNorm2d(5, 12, [3, 4]).eval()
    x = torch.randn(12, 5, 2, 2)
    assert torch.equal(joint(x, labels), factored(x, labels))  # factor tables start at zero
    with torch.no_grad():
        factored.factor_biases[1].weight[2] += 1.0  # speaker 2's row: every digit of that speaker moves
    moved = (factored(x, labels) - joint(x, labels)).abs().amax((1, 2, 3))
    assert torch.equal(moved > 0.5, speaker == 2)


def test_mel_sngan_factors_digits_and_speakers_and_grows_the_speaker_factor(voices, runs):
    base = _base(runs, voices["base"], "mel-sngan", steps=1)
    assert json.loads((base / "model.json").read_text())["config"]["inner_config"]["class_factors"] == [3, 2]
    base_state = load_file(str(base / "model.safetensors"))
    trainer = build_trainer(runs / "mel-sngan-ft", data=voices["target"], flags={"steps": 1, "batch_size": 8},
                            sets=QUIET, init_from=base)  # fmt: skip
    inner = trainer.model.config.inner_config
    assert (inner["num_classes"], inner["class_factors"]) == (9, [3, 3])
    own = trainer.model.state_dict()
    speaker_tables = [k for k in base_state if ".factor_" in k and k.endswith("s.1.weight")]
    digit_tables = [k for k in base_state if ".factor_" in k and k.endswith("s.0.weight")]
    assert speaker_tables and len(speaker_tables) == len(digit_tables)
    for key in speaker_tables:  # base voices keep their rows; the new voice starts from their mean
        assert own[key].shape[0] == 3 and torch.equal(own[key][:2], base_state[key])
        torch.testing.assert_close(own[key][2], base_state[key].mean(0), rtol=0, atol=1e-7)
    assert all(torch.equal(own[k], base_state[k]) for k in digit_tables)  # the digits are the base's
    frozen_trunk = set(trainer.model.adaptation_parameters())
    assert set(speaker_tables) <= frozen_trunk and not set(digit_tables) & frozen_trunk


@pytest.mark.parametrize("name, table", [("wavegan", "condition.speakers.weight"),
                                         ("wavegan", "discriminator.embed.speakers.weight"),
                                         ("diffwave", "denoiser.embed.speakers.weight")])  # fmt: skip
def test_init_from_grows_the_speaker_tables_by_name(voices, runs, name, table):
    base = _base(runs, voices["base"], name)
    base_state = load_file(str(base / "model.safetensors"))
    trainer = build_trainer(runs / f"{name}-{table}-ft", data=voices["mixed"], flags={"steps": 1, "batch_size": 8},
                            sets=QUIET, init_from=base)  # fmt: skip
    cfg = trainer.model.config
    assert cfg.speaker_names == ["s0", "s1", "s2"] and cfg.num_speakers == 3  # the base's, then the new one
    own, old = trainer.model.state_dict()[table], base_state[table]
    null = len(old) - 2  # diffwave's "no speaker" row for guidance stays last
    assert own.shape[0] == old.shape[0] + 1
    assert torch.equal(own[:2], old[:2])  # known speakers keep their rows bit for bit
    torch.testing.assert_close(own[2], old[:2].mean(0), rtol=0, atol=1e-7)  # the new one: the mean voice
    assert torch.equal(own[3:], old[2:]) and own.shape[0] - 3 == null
    others = [k for k in base_state if "speakers" not in k]
    assert others and all(torch.equal(trainer.model.state_dict()[k], base_state[k]) for k in others)
    # the data's ids (s1 = 0, s2 = 1 in the mixed set) become the model's by name (1, 2)
    data_ids = open_dataset(voices["mixed"]).train_split.speakers
    assert set(data_ids.tolist()) == {0, 1}
    np.testing.assert_array_equal(trainer.feed.speakers, data_ids + 1)


@pytest.mark.parametrize("name", ["mel-ddpm", "mel-vae"])
def test_mel_families_grow_their_joint_classes_digit_by_digit(voices, runs, name):
    base = _base(runs, voices["base"], name, steps=1)
    base_state = load_file(str(base / "model.safetensors"))
    trainer = build_trainer(runs / f"{name}-ft", data=voices["target"], flags={"steps": 1, "batch_size": 8},
                            sets=QUIET, init_from=base)  # fmt: skip
    assert trainer.model.config.inner_config["num_classes"] == 9  # 3 digits x 3 voices (was 3 x 2)
    own = trainer.model.state_dict()
    grown = [k for k in base_state if own[k].shape != base_state[k].shape]
    assert grown and sorted(trainer.model.adaptation_parameters()) == sorted(
        grown
    )  # what --freeze-trunk trains
    for key in grown:
        new, old = own[key], base_state[key]
        if name == "mel-vae":  # one-hot class columns joined last: (out, other + joint)
            new, old = new.T[-9:], old.T[-6:]
        for digit in range(3):  # joint class = digit * speakers + speaker
            assert torch.equal(new[digit * 3 : digit * 3 + 2], old[digit * 2 : digit * 2 + 2])
            torch.testing.assert_close(
                new[digit * 3 + 2], old[digit * 2 : digit * 2 + 2].mean(0), rtol=0, atol=1e-6
            )
        if name == "mel-ddpm":
            assert torch.equal(new[9:], old[6:])  # the null class stays last


def test_unknown_speakers_and_misfits_are_refused_clearly(voices, runs, tmp_path):
    base = _base(runs, voices["base"], "wavegan")
    # a trained model asked to train on a voice it does not know, without --init-from
    with pytest.raises(ConfigError, match=r"speaker\(s\) s2 that the model does not know.*--init-from"):
        build_trainer(tmp_path / "a", model_name="wavegan", data=voices["target"],
                      flags={"steps": 1, "batch_size": 8},
                      sets=[*_sets("wavegan"), *QUIET, "model.num_speakers=2", 'model.speaker_names=["s0", "s1"]'],
                      conditional=True)  # fmt: skip
    # other tensors must still match: the existing error names them and the config fields
    with pytest.raises(ConfigError, match="g_widths"):
        build_trainer(tmp_path / "b", data=voices["target"], flags={"steps": 1}, sets=[*QUIET, "model.g_widths=[16, 8]"],
                      init_from=base)  # fmt: skip
    with pytest.raises(ConfigError, match="--freeze-trunk fine-tunes a base run"):
        build_trainer(tmp_path / "c", model_name="wavegan", data=voices["base"], flags={"steps": 1},
                      sets=_sets("wavegan"), freeze_trunk=True)  # fmt: skip
    # a base run that predates speaker names cannot be matched by name
    legacy = tmp_path / "legacy"
    shutil.copytree(base, legacy)
    info = json.loads((legacy / "model.json").read_text())
    info["config"]["speaker_names"] = []
    (legacy / "model.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="records no speaker names"):
        build_trainer(tmp_path / "d", data=voices["target"], flags={"steps": 1}, sets=QUIET, init_from=legacy)


def test_freeze_trunk_trains_only_the_conditioning_and_output_layers(voices, runs):
    base = _base(runs, voices["base"], "diffwave")
    base_state = load_file(str(base / "model.safetensors"))
    out = runs / "frozen"
    trainer = build_trainer(out, data=voices["target"], flags={"steps": 4, "batch_size": 8},
                            sets=[*QUIET, "train.ema=false", "train.checkpoint_every=2"], init_from=base,
                            freeze_trunk=True)  # fmt: skip
    trainer.fit()
    keep = set(trainer.model.adaptation_parameters())
    assert "denoiser.embed.speakers.weight" in keep and "denoiser.out.weight" in keep
    assert "denoiser.layers.0.conv.weight" not in keep and "denoiser.inp.weight" not in keep
    final = load_file(str(out / "model.safetensors"))
    frozen = [k for k, _ in trainer.model.named_parameters() if k not in keep]
    assert frozen and all(torch.equal(final[k], base_state[k]) for k in frozen)
    assert any(
        not torch.equal(final[k], base_state[k]) for k in keep if final[k].shape == base_state[k].shape
    )
    record = json.loads((out / "run.json").read_text())["init_from"]
    assert record["freeze_trunk"] is True and record["frozen_parameters"] > record["trainable_parameters"] > 0
    assert json.loads((out / "model.json").read_text())["init_from"]["freeze_trunk"] is True
    # a resumed run freezes the same parameters (from the record; no --freeze-trunk needed)
    resumed = build_trainer(out, flags={"steps": 6}, sets=QUIET, resume=True)
    assert {k for k, p in resumed.model.named_parameters() if p.requires_grad} == keep
    with pytest.raises(ConfigError, match="drop --freeze-trunk"):
        build_trainer(runs / "diffwave-base", flags={"steps": 3}, resume=True, freeze_trunk=True)


# --- adaptation measured -------------------------------------------------------------------------


def test_adaptation_improves_the_target_speakers_accuracy_over_the_base(voices, runs):
    """The base (trained on s0, s1) asked for s2 through its new mean row, against the same model
    after 60 steps on 30 clips of s2: the evaluator (trained on all three voices) hears s2 more."""
    ds = open_dataset(voices["full"])
    evaluator = audio_evaluator(ds, AudioEvaluatorConfig(steps=60, width=8, feature_dim=32))
    assert evaluator.info["heldout_speaker_accuracy"] >= 0.9  # it tells the voices apart on held-out takes
    base = runs / "improve-base"
    build_trainer(base, model_name="wavegan", data=voices["base"], flags={"steps": 150, "batch_size": 16, "seed": 1},
                  sets=[*_sets("wavegan"), *QUIET], conditional=True).fit()  # fmt: skip
    labels = torch.arange(60) % 3

    def target_accuracy(model) -> float:
        model.eval()
        sid = model.config.speaker_names.index("s2")
        clips = model.sample(60, generator=torch.Generator().manual_seed(5), labels=labels,
                             speakers=torch.full((60,), sid))  # fmt: skip
        model.train()  # the trainer trains the model in the mode it finds it (phase shuffle, spectral norm)
        pred = evaluator.extract(clips.numpy()).speaker_probs.argmax(1)
        return float((pred == ds.speaker_names.index("s2")).mean())

    tuned = build_trainer(runs / "improve-ft", data=voices["target"], flags={"steps": 60, "batch_size": 16, "seed": 1},
                          sets=QUIET, init_from=base)  # fmt: skip
    before = target_accuracy(tuned.model)  # the base's weights, the new row the mean of the base voices
    tuned.fit()
    after = target_accuracy(load_pipeline(runs / "improve-ft").model)
    assert after >= 0.75 and after >= before + 0.25, (before, after)


# --- the scenario --------------------------------------------------------------------------------

SCENARIO = """
name: tiny-voice
data: {source: null, modality: audio, options: {label_pattern: "{label}_{speaker}_{take}", clip_seconds: 0.5,
       val_fraction: 0.25, dup_policy: keep-first}}
model: {name: wavegan, conditional: true, config: {g_widths: [32, 16], d_widths: [8, 16]}}
train: {max_time: null, steps: 3, config: {batch_size: 8, progress: none, tensorboard: false, sample_every: 0}}
adapt: {max_clips: 12, steps: 3, max_time: null}
evaluate: {n: 30, gates: [{metric: target_speaker_accuracy, min: 0.0}, {metric: target_digit_accuracy, min: 0.0},
           {metric: target_memorised_share, max: 1.0}]}
export: {formats: []}
"""


def test_rehearsal_adds_each_base_voices_clips_to_the_adaptation_set(voices, tmp_path):
    from genforge.scenarios.voice_clone import adaptation_datasets

    full = open_dataset(voices["full"])
    _, target = adaptation_datasets(full, tmp_path, "s2", ["s0", "s1"], 12, seed=0, rehearsal=6)
    ds = open_dataset(target)
    train = ds.train_split
    per = {name: int((np.asarray(train.speakers) == i).sum()) for i, name in enumerate(ds.speaker_names)}
    assert per == {"s0": 6, "s1": 6, "s2": 12}
    # each speaker's take is balanced over the digits as far as its count allows, and every clip is the full set's
    assert set(train.index["hashes"]) <= set(full.train_split.index["hashes"])
    _, alone = adaptation_datasets(full, tmp_path / "alone", "s2", ["s0", "s1"], 12, seed=0)
    assert open_dataset(alone).speaker_names == ["s2"] and len(open_dataset(alone).train_split) == 12


@pytest.fixture(scope="module")
def wavs(tmp_path_factory) -> Path:
    """Synthetic recordings {digit}_{speaker}_{take}.wav of three named voices."""
    folder = tmp_path_factory.mktemp("wavs")
    audio, labels, spk = synth_clips(180, 3, 3, 4000, 8000, 0)
    names, takes = ["ann", "bob", "cat"], {}
    for clip, label, s in zip(audio, labels, spk, strict=True):
        takes[label, s] = takes.get((label, s), 0) + 1
        sf.write(folder / f"{label}_{names[s]}_{takes[label, s]}.wav", clip, 8000, subtype="PCM_16")
    return folder


def test_voice_clone_scenario_trains_base_then_adapts_and_scores_the_target(
    wavs, tmp_path, monkeypatch, capsys
):
    path = tmp_path / "tiny.yaml"
    path.write_text(SCENARIO)
    run = tmp_path / "run"
    result = run_scenario(str(path), data=str(wavs), out=run)
    assert result.passed and list(result.timings)[:4] == [
        "collect + process",
        "split voices",
        "train base",
        "adapt",
    ]
    summary = json.loads((run / "summary.json").read_text())
    adapt = summary["adapt"]
    assert adapt["speaker"] == "cat" and adapt["base_speakers"] == ["ann", "bob"] and adapt["clips"] == 12
    assert json.loads((run / "base" / "model.json").read_text())["config"]["speaker_names"] == ["ann", "bob"]
    info = json.loads((run / "model.json").read_text())
    assert info["config"]["speaker_names"] == ["ann", "bob", "cat"]
    assert info["init_from"]["path"] == str((run / "base").resolve())
    # the clips it trained on: their content hashes, the adaptation set's, and no audio
    record = json.loads((run / "training-clips.json").read_text())
    target = open_dataset(run / "datasets" / "target").train_split
    assert [c["hash"] for c in record["clips"]] == target.index["hashes"] and record["per_speaker"] == {
        "cat": 12
    }
    assert set(record["clips"][0]) == {"hash", "speaker"}
    metrics = json.loads((run / "metrics.json").read_text())
    details = metrics["target_speaker"]["details"]
    assert details["trained_clips"] == 12 and details["trained_from"] == "training-clips.json"
    assert details["n_samples"] == 30 and sum(details["attributed_to"].values()) == 30
    # per digit: the clips add up, and the shares, weighted by the clips, give the accuracy
    per = details["by_class"]
    assert sum(v["requested"] for v in per.values()) == 30
    assert all(sum(v["attributed_to"].values()) == v["requested"] for v in per.values())
    assert sum(v["requested"] * v["target_share"] for v in per.values()) / 30 == pytest.approx(
        metrics["values"]["target_speaker_accuracy"]
    )
    assert "heard as the target" in (run / "report.html").read_text()
    for key in ("target_speaker_accuracy", "target_digit_accuracy", "target_fad", "target_memorised_share",
                "target_real_speaker_accuracy", "target_false_share"):  # fmt: skip
        assert 0.0 <= metrics["values"][key] < float("inf")
    assert metrics["values"]["target_false_share"] <= 1.0  # of the other voices' clips, heard as the target
    assert metrics["values"]["target_real_speaker_accuracy"] >= 0.9  # the evaluator knows the new voice
    # the adapted run serves its voices by name; the allow-list takes names
    from genforge.deploy.audio import allowed_speakers

    pipe = load_pipeline(run)
    assert pipe.speaker_names == ["ann", "bob", "cat"] and allowed_speakers(pipe, ["cat"]) == (2,)
    assert pipe.generate(2, speaker="cat")[0].shape == (2, 4000)

    # --base: a finished base run is adapted without training another; --speaker picks the voice
    # (with FreezeD: the discriminator's first convolution stays at the base's weights)
    frozen_d = tmp_path / "freeze-d.yaml"
    frozen_d.write_text(SCENARIO.replace("adapt: {max_clips: 12,", "adapt: {max_clips: 12, freeze_d: 1,"))
    again = run_scenario(str(frozen_d), data=str(wavs), out=tmp_path / "again", base=run / "base")
    assert again.passed and "train base" not in again.timings
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["adapt"]["freeze_d"] == 1
    record = json.loads((tmp_path / "again" / "model.json").read_text())["init_from"]
    assert record["freeze_d"] == 1 and record["frozen_discriminator_layers"] == ["discriminator.convs.0"]
    assert "first 1 convolutions frozen (FreezeD)" in (tmp_path / "again" / "report.html").read_text()
    with pytest.raises(ConfigError, match="already knows speaker 'cat'"):
        run_scenario(str(path), data=str(wavs), out=tmp_path / "twice", base=run)
    with pytest.raises(ConfigError, match="not a speaker of"):
        run_scenario(str(path), data=str(wavs), out=tmp_path / "nobody", speaker="dan")
    # the same scores from the command line, for a fine-tune made with `genforge train --init-from`
    out = tmp_path / "cli-metrics.json"
    code, _, _ = run_cli(monkeypatch, capsys, "eval", run, "--ref", run / "dataset", "-n", "30", "--target-speaker",
                         "cat", "--out", out)  # fmt: skip
    assert code == 0 and json.loads(out.read_text())["values"]["target_speaker_accuracy"] == pytest.approx(
        metrics["values"]["target_speaker_accuracy"]
    )


def _last_check_against_eval(text: str, wavs: Path, tmp_path: Path, monkeypatch, capsys, *eval_args: str
                             ) -> tuple[dict, dict, Path]:  # fmt: skip
    """Run the scenario `text`, whose gates pass from the start with a check every step (so two
    checks in a row stop training), and `genforge eval` its run with the probe's seed and n (the
    train seed + 1; min(early_stop.n, evaluate.n)): (the last check, the evaluation's values, run)."""
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    run = tmp_path / "run"
    assert run_scenario(str(path), data=str(wavs), out=run).passed
    es = json.loads((run / "summary.json").read_text())["early_stop"]
    assert es["outcome"] == "passed" and [c["step"] for c in es["checks"]] == [1, 2]
    out = tmp_path / "m.json"
    code, _, _ = run_cli(monkeypatch, capsys, "eval", run, "--ref", run / "dataset", "-n", "30", "--seed", "1",
                         *eval_args, "--out", out)  # fmt: skip
    assert code == 0
    return es["checks"][-1], json.loads(out.read_text())["values"], run


def test_the_fine_tune_measures_its_gates_as_the_evaluation_does_and_stops_when_they_pass(wavs, tmp_path, monkeypatch,
                                                                                          capsys):  # fmt: skip
    text = SCENARIO.replace("adapt: {max_clips: 12, steps: 3,", "adapt: {max_clips: 12, steps: 6,").replace(
        "sample_every: 0}}", "sample_every: 0}, early_stop: {every: 1}}")
    # the last check scored the weights the run kept, against every voice, as the evaluation does
    check, values, run = _last_check_against_eval(text, wavs, tmp_path, monkeypatch, capsys, "--target-speaker", "cat")
    assert json.loads((run / "model.json").read_text())["step"] == 2  # stopped at the second check of six steps
    for key in ("target_speaker_accuracy", "target_digit_accuracy", "target_memorised_share"):
        assert check[key] == pytest.approx(values[key], abs=1e-9), key


def test_an_audio_scenarios_gates_are_measured_during_training_as_the_evaluation_measures_them(
    wavs, tmp_path, monkeypatch, capsys
):
    gates = ("[{metric: conditional_accuracy, min: 0.0}, {metric: coverage, min: 0.0}, {metric: speaker_accuracy, "
             "min: 0.0}, {metric: fad_memoriser_ratio, max: 1.0e+9}]")  # fmt: skip
    text = SCENARIO.replace("sample_every: 0}}", "sample_every: 0}, early_stop: {every: 1}}")
    text = "\n".join(line for line in text.splitlines() if not line.startswith(("adapt:", "           {metric")))
    text = text.replace("evaluate: {n: 30, gates: [{metric: target_speaker_accuracy, min: 0.0}, {metric: "
                        "target_digit_accuracy, min: 0.0},", "evaluate: {n: 30, gates: " + gates + "}")
    text = text.replace("steps: 3,", "steps: 6,")
    check, values, _ = _last_check_against_eval(text, wavs, tmp_path, monkeypatch, capsys)
    for key in ("conditional_accuracy", "coverage", "speaker_accuracy", "fad_memoriser_ratio"):
        assert check[key] == pytest.approx(values[key], rel=1e-6), key


def test_voice_clone_preset_and_its_pieces():
    sc = load_scenario("voice-clone")
    assert sc.adapt is not None and sc.adapt.max_clips <= 250 and "--speaker" in sc.description
    assert {g.metric for g in sc.evaluate.gates} >= {"target_speaker_accuracy", "target_digit_accuracy",
                                                     "target_memorised_share"}  # fmt: skip
    with pytest.raises(ConfigError, match="has no adapt: section"):
        run_scenario("few-shot", speaker="theo")
    # at most `limit` clips, the same number of each digit
    labels = np.repeat(np.arange(10), 45)
    picked = balanced_take(labels, 250, seed=0)
    assert len(picked) == 250 and np.bincount(labels[picked]).tolist() == [25] * 10
    # evaluation requests speakers by the model's ids and scores them by the dataset's, matched by name
    pipe = SimpleNamespace(speaker_names=["bob", "cat", "ann"], num_speakers=3)
    model_ids, data_ids, names = shared_speakers(pipe, ["ann", "bob", "cat", "dan"])
    assert (
        model_ids.tolist() == [0, 1, 2] and data_ids.tolist() == [1, 2, 0] and names == ["bob", "cat", "ann"]
    )
