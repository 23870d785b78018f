"""The audio feed: float32 (N, T) clips -> float (B, T) waves in [-1, 1] with labels and speaker
ids, augmented, on the device.

Batches come from the one `BatchLoader` (seeded epoch orders, DDP shards, Poisson sampling for
differentially private runs), so the feed's resumable state is the loader's; speakers are read
with the same indices as the clips. Periodic samples: the clips concatenated into one WAV (with
a short silence between them) and a grid of their log-mel spectrograms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge.core.errors import ConfigError
from genforge.data.loader import BatchLoader
from genforge.models.base import Batch
from genforge.train.feeds import FEEDS, Feed
from genforge.train.sample_audio import concatenate_clips, spectrogram_images
from genforge.train.samples import make_grid, write_grid

SAMPLES_IN_WAV = 16  # clips in a sample WAV: a person listens to a few, not to a grid's worth
CLIPS_RECORD = "training-clips.json"


def model_speaker_ids(ids: np.ndarray | None, data_names: list[str], model_names: list[str],
                      where: Any) -> np.ndarray | None:  # fmt: skip
    """The data's speaker ids (-1 unknown) as the model's ids, matched by name; a speaker the
    model does not know is an error (adapting to a new voice grows the model: --init-from)."""
    if ids is None:
        return None
    unknown = [n for n in data_names if n not in model_names]
    if unknown:
        raise ConfigError(
            f"the dataset {where} has speaker(s) {', '.join(unknown)} that the model does not know (its speakers: "
            f"{', '.join(model_names)}); to adapt a trained model to a new voice, train with --init-from BASE_RUN"
        )
    lut = np.array([model_names.index(n) for n in data_names] + [-1], np.int64)  # index -1 -> -1
    return lut[np.asarray(ids, np.int64)]


def write_clip_record(run_dir: Path, dataset: Any, split: Any) -> Path:
    """RUN_DIR/training-clips.json: which clips the run trains on, as the content hashes of the
    dataset's index (not copies, not file names: a voice is personal data) with their speakers'
    names, so a person can ask whether their recordings trained a model (docs/training.md). The
    record is itself membership information: it stays in the run directory (exports and the
    service do not carry it)."""
    from genforge.core.atomic import write_json
    from genforge.core.hashing import hash_json

    hashes = list(split.index["hashes"])
    names, ids = dataset.speaker_names, split.speakers
    speakers = ([names[i] if i >= 0 else None for i in np.asarray(ids).tolist()] if ids is not None
                else [None] * len(hashes))  # fmt: skip
    counts: dict[str, int] = {}
    for name in speakers:
        key = "unknown" if name is None else name
        counts[key] = counts.get(key, 0) + 1
    path = run_dir / CLIPS_RECORD
    write_json(path, {"dataset_fingerprint": dataset.fingerprint, "split": split.name, "count": len(hashes),
                      "hash_kind": "content hash of the decoded clip (the dataset's index.json)",
                      "digest": hash_json(hashes), "per_speaker": counts,
                      "clips": [{"hash": h, "speaker": s} for h, s in zip(hashes, speakers, strict=True)]})  # fmt: skip
    return path


@FEEDS.register("audio")
class AudioFeed(Feed):
    def __init__(self, trainer: Any):
        cfg = trainer.config
        self.dataset, self.device = trainer.dataset, trainer.device
        split = self.dataset.split(cfg.split)
        self.augment, self.generator = trainer.augment, trainer.augment_generator
        privacy = getattr(trainer, "privacy", None)
        self.loader = BatchLoader.from_split(
            split,
            batch_size=cfg.batch_size // trainer.ctx.world_size,
            seed=cfg.seed,
            rank=trainer.ctx.rank,
            world_size=trainer.ctx.world_size,
            # differentially private runs sample as their accountant assumes (train/privacy.py)
            poisson=bool(privacy is not None and privacy.poisson),
        )
        self.labelled = split.has_labels
        self.speakers = split.speakers  # int64 (N,) ids or None; the model's ids once check_fits mapped them
        self.split = split

    def check_fits(self, model: Any) -> None:
        cfg, data = model.config, self.dataset
        fields = {"sample_rate": data.sample_rate, "length": data.clip_length}
        names = list(getattr(cfg, "speaker_names", None) or [])
        if getattr(model, "speaker_conditional", False):
            if names:  # the data's speaker ids become the model's by name (models/audio/adapt.py)
                self.speakers = model_speaker_ids(self.speakers, data.speaker_names, names, data.path)
            else:  # a model without names: its speaker ids must mean this data's speakers
                fields["num_speakers"] = data.num_speakers
        for name, value in fields.items():
            if hasattr(cfg, name) and getattr(cfg, name) != value:
                raise ConfigError(
                    f"model.{name} is {getattr(cfg, name)} but the dataset {data.path} has {name} {value}"
                    + (" (resample the data at ingest or train a new model)" if name == "sample_rate" else "")
                )

    def write_run_files(self, run_dir: Path) -> None:
        write_clip_record(run_dir, self.dataset, self.split)

    def next_batch(self) -> Batch:
        idx = self.loader.next_indices()
        raw = self.loader.gather(idx)
        waves = raw.images.to(self.device, non_blocking=True)
        if self.augment is not None and len(waves):  # a Poisson batch may be empty
            waves = self.augment(waves, self.generator)
        labels = raw.labels.to(self.device, non_blocking=True) if self.labelled else None
        speakers = None
        if self.speakers is not None:
            speakers = torch.from_numpy(np.take(self.speakers, idx)).to(self.device, non_blocking=True)
        return Batch(waves, labels, speakers=speakers)

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)

    def write_samples(self, model: Any, path_stem: Path, log: Any, step: int, *, n: int, seed: int,
                      labels: torch.Tensor | None) -> Path | None:  # fmt: skip
        """n clips from fixed noise: PATH_STEM.png (log-mel grid, one row per speaker when the
        model uses speakers, a column per class), PATH_STEM.wav (the first few clips, in order)
        and TensorBoard."""
        from genforge.audio.wav import write_wav

        gen = torch.Generator().manual_seed(seed)  # as AudioPipeline.generate draws
        clips = model.sample(n, generator=gen, labels=labels).detach().float().reshape(n, -1).clamp(-1, 1)
        clips = clips.cpu().numpy()
        rate = int(model.config.sample_rate)
        path = path_stem.with_suffix(".png")
        images = spectrogram_images(clips, rate)
        columns = (
            int(getattr(model.config, "num_classes", 0) or 0) if getattr(model, "conditional", False) else 0
        )
        write_grid(path, images, ncols=columns or None)
        joined = concatenate_clips(clips[:SAMPLES_IN_WAV], rate)
        write_wav(path_stem.with_suffix(".wav"), joined, rate)
        if log is not None:
            log.add_image("samples", make_grid(images, columns or None), step)
            log.add_audio("samples", joined, step, rate)
        return path
