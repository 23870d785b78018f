"""Training feeds: the per-modality part of the one trainer.

A feed turns a canonical dataset split into `Batch`es on the training device (resumably: its
`state_dict` goes into every checkpoint), checks that the data fits the model before training,
and writes the periodic samples a person looks at. The trainer picks the feed registered for the
dataset's modality; everything else (phases, EMA, precision, checkpoints, DDP) is shared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genforge.core.errors import ConfigError
from genforge.core.modality import lookup, modality_registry

# modality -> Feed subclass
FEEDS = modality_registry("training feed")


class Feed:
    """Base of the per-modality feeds; `trainer` is the `Trainer` being built (its model,
    config, dataset, device and DDP context are set)."""

    def __init__(self, trainer: Any):
        raise NotImplementedError

    def write_run_files(self, run_dir: Path) -> None:
        """Write what a run of this modality needs beside its weights to be used on its own
        (e.g. the text dataset's tokenizer); called once the run directory exists."""

    def check_fits(self, model: Any) -> None:
        """Raise ConfigError when the model's config does not match the data."""

    def check_base_run(self, base_run: Path) -> None:
        """Raise ConfigError when a fine-tuning run's base (`--init-from`) cannot continue on
        this data (e.g. it reads tokens with another tokenizer)."""

    def examples(self) -> Any:
        """Every example of the training split once, in order, unaugmented, as `Batch`es: the
        statistics pass of a `data_statistics` family (train/statistics.py)."""
        raise ConfigError("this modality's feed cannot pass over its training examples (no statistics pass)")

    def next_batch(self) -> Any:
        """The next `Batch` (data on the trainer's device)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def write_samples(
        self, model: Any, path_stem: Path, log: Any, step: int, *, n: int, seed: int, labels: Any
    ) -> Path | None:
        """Write n samples `model` makes now (EMA weights, eval mode, RNG preserved by the
        caller; `labels` cycle the classes of a conditional model) beside `path_stem`."""
        return None


def feed_for(modality: str) -> type[Feed]:
    return lookup(FEEDS, modality, "genforge.train.feeds.builtin")
