"""The data side of a scenario's `adapt:` section (voice cloning, `genforge run --scenario
voice-clone`): which speaker is the new voice, and the two datasets its trainings read.

From the canonical dataset the ingest made of every speaker's recordings (`dataset/`, which the
evaluation keeps: its evaluator knows the base speakers and the target), the adapt stage writes

    RUN_DIR/datasets/base/     the base speakers' clips, every split (the base run trains on it)
    RUN_DIR/datasets/target/   the target speaker's clips: at most `max_clips` of its training
                               clips (the same number of each digit, drawn with the seed) and
                               all of its held-out ones; with `rehearsal: N`, also N training
                               clips of each base speaker (and their held-out ones), so the
                               fine-tune keeps hearing the voices it knows

Both are canonical audio datasets whose speakers are named as in the full one (so the models map
them by name, models/audio/adapt.py); their manifests record what they were cut from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.atomic import atomic_dir
from genforge.core.errors import ConfigError
from genforge.data.audio.canonical import AudioSplitData, write_audio_dataset

BASE_DATA, TARGET_DATA = "datasets/base", "datasets/target"


def pick_target(speaker_names: list[str], speaker: str | None, where: Any) -> str:
    """The new voice: `speaker` (a name of the data), else the last name alphabetically."""
    if len(speaker_names) < 2:
        raise ConfigError(
            f"{where}: voice cloning needs clips of at least two speakers (base voices and the new one), "
            f"found {len(speaker_names)}; name them in the files, e.g. --label-pattern '{{label}}_{{speaker}}_{{take}}'"
        )
    if speaker is None:
        return sorted(speaker_names)[-1]
    if speaker not in speaker_names:
        raise ConfigError(
            f"--speaker {speaker!r}: not a speaker of {where}; its speakers: {', '.join(speaker_names)}"
        )
    return speaker


def balanced_take(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most `limit` items, as many of each label as the labels allow (a
    seeded order within each label, labels in turn): 250 clips of 10 digits = 25 of each."""
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    queues = [list(rng.permutation(np.flatnonzero(labels == k))) for k in np.unique(labels)]
    picked: list[int] = []
    while len(picked) < limit:
        for q in queues:
            if q and len(picked) < limit:
                picked.append(int(q.pop(0)))
    return np.sort(np.array(picked, np.int64))


def speaker_subset(dataset: Any, out: Path, speakers: list[str], *, max_train: int | None = None,
                   seed: int = 0, per_speaker: dict[str, int] | None = None) -> Path:  # fmt: skip
    """Write a canonical audio dataset of `speakers`' clips of `dataset` into `out` (atomically):
    every split filtered, the train split cut to at most `max_train` clips (`balanced_take`), or
    with `per_speaker`, each speaker's training clips to at most its own count."""
    names = dataset.speaker_names
    keep_ids = [names.index(s) for s in speakers]
    lut = np.full(len(names) + 1, -1, np.int64)  # old id -> new id; index -1 (unknown) -> -1
    lut[keep_ids] = np.arange(len(keep_ids))
    splits: dict[str, AudioSplitData] = {}
    for split_name in dataset.split_names:
        split = dataset.split(split_name)
        ids = np.asarray(split.speakers, np.int64)
        rows = np.flatnonzero(np.isin(ids, keep_ids))
        if split_name == "train":
            labels = np.asarray(split.labels)
            # one balanced take over every speaker's clips, or one per speaker with its own count
            groups = [(rows, max_train)] if per_speaker is None else [
                (rows[ids[rows] == names.index(s)], per_speaker[s]) for s in speakers]  # fmt: skip
            rows = np.sort(np.concatenate([g[balanced_take(labels[g], cap, seed)] for g, cap in groups]))
        if not len(rows):
            continue
        index = split.index
        splits[split_name] = AudioSplitData(
            np.asarray(split.audio[rows]), np.asarray(split.labels)[rows], np.asarray(split.lengths)[rows],
            fields={"speaker": lut[ids[rows]]}, origins=[index["origins"][i] for i in rows],
            hashes=[index["hashes"][i] for i in rows],
        )  # fmt: skip
    if "train" not in splits:
        raise ConfigError(f"{dataset.path}: no training clips of {', '.join(speakers)}")
    meta = {"source": dataset.manifest.get("source"),
            "subset_of": {"path": str(Path(dataset.path).resolve()), "fingerprint": dataset.fingerprint,
                          "speakers": list(speakers), "max_train": max_train, "seed": seed}}  # fmt: skip
    with atomic_dir(out, overwrite=True) as tmp:
        write_audio_dataset(tmp, splits, sample_rate=dataset.sample_rate, class_names=dataset.class_names,
                            item_fields={"speaker": list(speakers)}, meta=meta)  # fmt: skip
    return out


def adaptation_datasets(dataset: Any, run_dir: Path, target: str, base_speakers: list[str],
                        max_clips: int, seed: int, rehearsal: int = 0) -> tuple[Path, Path]:  # fmt: skip
    """(base dataset, target dataset) under run_dir (module docstring); `rehearsal` > 0 adds that
    many training clips of each base speaker to the target dataset."""
    base = speaker_subset(dataset, run_dir / BASE_DATA, base_speakers, seed=seed)
    if not rehearsal:
        return base, speaker_subset(dataset, run_dir / TARGET_DATA, [target], max_train=max_clips, seed=seed)
    counts = {**{s: rehearsal for s in base_speakers}, target: max_clips}
    return base, speaker_subset(dataset, run_dir / TARGET_DATA, [*base_speakers, target], seed=seed,
                                per_speaker=counts)  # fmt: skip


def check_base_run(base_run: Path, target: str) -> Path:
    """A given base run (`--base RUN`) for adapting to `target`: a finished run whose model does
    not know the target already (a "clone" of a voice it trained on would measure nothing new)."""
    from genforge.train.init_from import read_base_run

    config = read_base_run(base_run).config or {}
    known = list(config.get("speaker_names") or [])
    if target in known:
        raise ConfigError(
            f"--base {base_run}: its model already knows speaker {target!r} (speakers: {', '.join(known)}); adapt a "
            "base trained without the new voice, or leave --base out to train one"
        )
    return base_run
