"""Target-speaker evaluation of a voice-cloning run (`genforge eval RUN --ref DATA` with option
`target_speaker: NAME`; the `voice-clone` scenario sets it).

The reference dataset holds every speaker (the base voices and the target), so its evaluator
(`evaluator.py`) has a speaker head that knows the target. The run makes `n` clips requested
for the target speaker (digits in its training class mix), and they are scored against the
target's own clips:

- `target_speaker_accuracy`: share of the clips the evaluator's speaker head gives to the target;
- `target_digit_accuracy`: share whose digit the evaluator recognises as the one requested;
- `target_fad`: Fréchet Audio Distance (evaluator features) to the target's held-out clips of
  the reference split; `target_fad_control` is the same distance from the target's clips the
  run trained on (real clips: what a perfect clone would score at that reference size);
- `target_memorised_share`: the memorisation audit (`evaluate.memorisation`, feature space)
  against the target clips the run trained on, calibrated on the target clips it never saw:
  the share of samples closer to a training clip than 99% of those unseen real takes are
  (about 0.01 for a model that makes new takes, 1 for one that replays its training clips);
  the waveform-space audit (literal copies) is in the details;
- `target_false_share`: of the clips the evaluation requested for the model's *other* voices
  (its balanced draw over every speaker), the share the evaluator gives to the target. A model
  whose clips all sound like the target whatever was asked (an undertrained one's noise can be
  heard as one voice) scores a high target_speaker_accuracy and a high share here; a clone that
  keeps its voices apart, a low one;
- `target_real_speaker_accuracy`, `target_real_digit_accuracy`: the evaluator itself on the
  target's held-out takes (its ceiling on this voice).

The clips the run trained on are those its `training-clips.json` names (content hashes,
train/feeds/audio.py), found in the reference dataset by hash; without that record, the
target's clips of the train split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.errors import ConfigError
from genforge.evaluate.audio.samples import generate_from_run
from genforge.evaluate.memorisation import AuditConfig, audit_space
from genforge.evaluate.metrics.base import FeatureSet
from genforge.evaluate.metrics.fid import fid_between, small_sample_warning

OPTION = "target_speaker"
CLIPS_RECORD = "training-clips.json"  # train/feeds/audio.py writes it
MEANINGS = {
    "target_speaker_accuracy": "share of the clips requested for the target speaker that the evaluator attributes "
                               "to the target; 0..1",
    "target_digit_accuracy": "share of those clips whose digit the evaluator recognises as requested; 0..1",
    "target_fad": "FAD of those clips to the target's held-out clips (compare with target_fad_control)",
    "target_fad_control": "FAD of the target's training clips to its held-out clips: what real takes score",
    "target_memorised_share": "share of those clips closer to a target training clip than 99% of the target's unseen "
                              "real takes are (feature space); ~0.01 = new takes, 1 = replays",
    "target_false_share": "share of the clips requested for the model's other voices that the evaluator attributes "
                          "to the target; 0..1, low = the voices stay apart",
    "target_real_speaker_accuracy": "the evaluator's speaker accuracy on the target's held-out takes (its ceiling)",
    "target_real_digit_accuracy": "the evaluator's digit accuracy on the target's held-out takes",
}  # fmt: skip


def trained_hashes(run_dir: Path) -> set[str] | None:
    path = run_dir / CLIPS_RECORD
    if not path.is_file():
        return None
    return {c["hash"] for c in json.loads(path.read_text())["clips"]}


def target_rows(dataset: Any, split: str, speaker_id: int) -> np.ndarray:
    """Indices of `split`'s clips of the speaker."""
    data = dataset.split(split)
    ids = np.asarray(data.speakers if data.speakers is not None else np.full(len(data), -1), np.int64)
    return np.flatnonzero(ids == speaker_id)


@dataclass
class TargetClips:
    """The target speaker's real clips that score a run's clips made for it (`target_clips`):
    rows of the held-out split, of the train split the run trained on and did not, and the
    evaluator's features of the latter two sets (the memorisation audit's)."""

    speaker: str
    sid: int  # the speaker's id in the dataset
    held: np.ndarray
    trained: np.ndarray
    unseen_train: np.ndarray
    trained_from: str
    trained_features: np.ndarray
    unseen_features: np.ndarray  # held-out takes and training clips the run did not use


def target_clips(dataset: Any, evaluator: Any, reference: FeatureSet, train: FeatureSet | None, split: str,
                 speaker: str, run_dir: Path) -> TargetClips:  # fmt: skip
    """The target's clips in `dataset` for the run at `run_dir` (which names what it trained on)."""
    if speaker not in dataset.speaker_names:
        raise ConfigError(f"option {OPTION}: {speaker!r} is not a speaker of {dataset.path} "
                          f"(its speakers: {', '.join(dataset.speaker_names)})")  # fmt: skip
    if evaluator.num_speakers == 0 or train is None:
        raise ConfigError(
            f"option {OPTION}: needs an evaluator with a speaker head and a train split in {dataset.path}"
        )
    sid = dataset.speaker_names.index(speaker)
    held = target_rows(dataset, split, sid)
    train_rows = target_rows(dataset, "train", sid)
    seen = trained_hashes(run_dir)
    train_hashes = dataset.train_split.index["hashes"]
    trained = (
        train_rows if seen is None else np.array([i for i in train_rows if train_hashes[i] in seen], np.int64)
    )
    if not len(held) or not len(trained):
        raise ConfigError(f"option {OPTION}: {dataset.path} needs clips of {speaker!r} in both its {split!r} split "
                          f"and the run's training clips (found {len(held)} and {len(trained)})")  # fmt: skip
    unseen_train = np.setdiff1d(train_rows, trained)
    return TargetClips(speaker, sid, held, trained, unseen_train,
                       CLIPS_RECORD if seen is not None else "the target's clips of the train split",
                       train.features[trained], np.concatenate([reference.features[held], train.features[unseen_train]]))  # fmt: skip


def target_scores(clips: TargetClips, feats: Any, labels: np.ndarray | None) -> tuple[dict[str, float], Any]:
    """(speaker accuracy, digit accuracy, memorised share) of clips made for the target, from
    their evaluator features `feats`, and the feature-space audit behind the last."""
    values = {"target_speaker_accuracy": float((feats.speaker_probs.argmax(1) == clips.sid).mean())}
    if labels is not None:
        values["target_digit_accuracy"] = float((feats.probs.argmax(1) == labels).mean())
    # the unseen takes calibrate the audit: held-out ones and training clips the run did not use
    audit = audit_space("features", feats.features, clips.trained_features, clips.unseen_features, AuditConfig())
    values["target_memorised_share"] = audit.summary["copy_rate"]
    return values, audit


def evaluate_target(pipe: Any, dataset: Any, evaluator: Any, reference: FeatureSet, train: FeatureSet | None,
                    split: str, config: Any, speaker: str,
                    others: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:  # fmt: skip
    """{"values": the target_* numbers, "details": counts, audits and per-speaker attributions}.
    `others`: (requested speaker ids, attributed speaker ids) of the evaluation's own clips over
    every voice (dataset ids), for `target_false_share`."""
    if pipe is None:
        raise ConfigError(f"option {OPTION}: the target-speaker evaluation generates from a run directory")
    if not pipe.speaker_conditional:
        raise ConfigError(f"option {OPTION}: model {pipe.name!r} is not speaker-conditional")
    clips = target_clips(dataset, evaluator, reference, train, split, speaker, Path(pipe.path))
    assert train is not None  # target_clips checked it
    sid, held = clips.sid, clips.held
    samples = generate_from_run(pipe, config.n, config.seed, dataset.sample_rate, dataset.clip_length,
                                dataset.speaker_names, speaker=speaker)  # fmt: skip
    feats = evaluator.extract(samples.audio, config.batch_size)
    values, audit = target_scores(clips, feats, samples.labels)
    held_set = FeatureSet(reference.features[held])
    values["target_fad"] = fid_between(FeatureSet(feats.features), held_set)
    values["target_fad_control"] = fid_between(FeatureSet(clips.trained_features), held_set)
    train_audio = np.asarray(dataset.train_split.audio)
    unseen_audio = np.concatenate([np.asarray(dataset.split(split).audio[held]), train_audio[clips.unseen_train]])
    wave = audit_space("waveform", samples.audio, train_audio[clips.trained], unseen_audio, AuditConfig())
    real = evaluator.extract(np.asarray(dataset.split(split).audio[held]), config.batch_size)
    values["target_real_speaker_accuracy"] = float((real.speaker_probs.argmax(1) == sid).mean())
    values["target_real_digit_accuracy"] = float(
        (real.probs.argmax(1) == np.asarray(dataset.split(split).labels)[held]).mean()
    )
    if others is not None:
        asked, heard = (np.asarray(a) for a in others)
        other = asked != sid
        if other.any():
            values["target_false_share"] = float((heard[other] == sid).mean())
    heard = feats.speaker_probs.argmax(1)
    attributed = np.bincount(heard, minlength=len(dataset.speaker_names))
    details = {
        "speaker": speaker, "n_samples": len(samples.audio), "heldout_split": split, "heldout_clips": int(len(held)),
        "trained_clips": int(len(clips.trained)), "unseen_train_clips": int(len(clips.unseen_train)),
        "trained_from": clips.trained_from,
        "attributed_to": {name: int(c) for name, c in zip(dataset.speaker_names, attributed, strict=True)},
        "by_class": by_class(heard, samples.labels, sid, dataset.class_names, dataset.speaker_names),
        "memorisation": {"features": audit.summary, "waveform": wave.summary},
        "warnings": small_sample_warning("target FAD", min(len(held), len(samples.audio))),
        "meanings": MEANINGS,
    }  # fmt: skip
    return {"values": values, "details": details}


def by_class(heard: np.ndarray, labels: np.ndarray | None, sid: int, class_names: list[str],
             speaker_names: list[str]) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Per requested class (digit): how many clips, the share heard as the target, and who the
    rest were heard as. A clone can take the voice for some digits and miss it for others
    (bench/results/voice_clone.md)."""
    out: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(class_names if labels is not None else []):
        asked = labels == k
        if asked.any():
            counts = np.bincount(heard[asked], minlength=len(speaker_names))
            out[name] = {"requested": int(asked.sum()), "target_share": float((heard[asked] == sid).mean()),
                         "attributed_to": {s: int(c) for s, c in zip(speaker_names, counts, strict=True) if c}}  # fmt: skip
    return out


def voice_section(ctx: Any) -> str:
    """The report's section on voices as personal data: the target speaker's scores (a voice-
    cloning evaluation), the run's base, which clips it trained on, and the service's allow-list."""
    from genforge.evaluate.report import esc, table

    out = []
    target = (ctx.metrics or {}).get("target_speaker")
    if target:
        d = target["details"]
        rows = [[k, v, MEANINGS.get(k, "")] for k, v in target["values"].items()]
        out += [f"<p>Clips requested for the target voice <b>{esc(d['speaker'])}</b> ({esc(d['n_samples'])}), "
                f"scored against its {esc(d['heldout_clips'])} held-out takes ({esc(d['heldout_split'])} split) and "
                f"the {esc(d['trained_clips'])} clips the run trained on ({esc(d['trained_from'])}). The evaluator "
                f"attributed them to: {esc(', '.join(f'{k} {v}' for k, v in d['attributed_to'].items()))}.</p>",
                table(["metric", "value", "what it means"], rows)]  # fmt: skip
        per = d.get("by_class") or {}
        if per:
            out += ["<p>By the class (digit) requested: the share heard as the target, and who the clips were heard as.</p>",
                    table(["class", "clips", "heard as the target", "heard as"],
                          [[k, v["requested"], f"{v['target_share']:.2f}",
                            ", ".join(f"{s} {c}" for s, c in v["attributed_to"].items())] for k, v in per.items()])]  # fmt: skip
    base = ctx.info.get("init_from")
    if base:
        frozen = " with its trunk frozen" if base.get("freeze_trunk") else ""
        if base.get("freeze_d"):
            frozen += f" with its discriminator's first {int(base['freeze_d'])} convolutions frozen (FreezeD)"
        out.append(f"<p>Adapted{frozen} from the base run <code>{esc(base.get('path'))}</code> ({esc(base.get('model'))}, "
                   f"step {esc(base.get('step'))}, weights SHA-256 {esc(base.get('weights_sha256'))}).</p>")  # fmt: skip
    record = ctx.run_dir / CLIPS_RECORD
    if record.is_file():
        clips = json.loads(record.read_text())
        per = ", ".join(f"{k} {v}" for k, v in clips.get("per_speaker", {}).items())
        out.append(f"<p>A voice is personal data. This run records which clips it trained on in "
                   f"<code>{esc(record)}</code>: the content hashes of its {esc(clips.get('count'))} clips ({esc(per)}; "
                   f"digest {esc(clips.get('digest'))}), not copies of the audio nor file names, so anyone can check "
                   "whether a recording of theirs is among them. Serve it with <code>genforge serve RUN --allow-speaker "
                   "NAME</code> to refuse requests for every voice not on the list (HTTP 403).</p>")  # fmt: skip
    return "\n".join(out) or '<p class="muted">No speaker record for this run.</p>'
