"""The text feed: random windows of block_size + 1 tokens from the split's token memory map.

Batch k draws the window starts of the whole global batch from a generator seeded by (seed, k);
DDP rank r takes its share, starts [r * B, (r + 1) * B) of them. So the feed's whole state is the
count of batches drawn (resuming restores one integer and continues bit for bit), ranks read
different windows, and N processes of batch B see exactly the windows one process of batch N * B
sees. Windows may span a document separator, as nanoGPT's windows span GPT-2's end-of-text
token: the model learns where documents end.

A differentially private run (train/privacy.py) needs a fixed set of examples to sample from, so
it trains on fixed windows instead (`WindowLoader`): the split's token stream cut into N
non-overlapping windows of block_size + 1 tokens (the trailing tokens that fill no window are not
trained on), each joining batch k independently with probability q = batch_size / N (Poisson, as
the accountant assumes), drawn from (seed, k) alone: the state is still the one count. A window
is the privacy unit (docs/privacy.md).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge.core.atomic import write_bytes, write_text
from genforge.core.errors import ConfigError
from genforge.models.base import Batch
from genforge.train.feeds import FEEDS, Feed

SAMPLES_MAX = 4  # completions per sample file: a person reads a few, and each costs decode steps
SAMPLE_TOKENS = 200
# mixed into the seeds of the fixed windows' draws, so they never share a stream with the
# random-start draws of a run without DP
WINDOW_STREAM = 0x57494E44


class WindowLoader:
    """The examples of a differentially private text run: `tokens` cut into N = len // `window`
    fixed, non-overlapping windows (window i is tokens [i * window, (i + 1) * window)). Batch k
    is a function of (seed, k) alone: with `poisson`, every window independently with probability
    `sample_rate` q = batch_size / N (so its size varies around batch_size and may be 0); without,
    batch_size distinct windows drawn uniformly. `num_examples` and `sample_rate` are what
    train/privacy.py reads for its accounting."""

    def __init__(self, tokens: np.ndarray, window: int, batch_size: int, seed: int, poisson: bool):
        self.tokens, self.window, self.batch_size, self.seed = tokens, int(window), int(batch_size), int(seed)
        self.num_examples = len(tokens) // self.window
        self.sample_rate = self.batch_size / self.num_examples if poisson and self.num_examples else None

    def indices(self, k: int) -> np.ndarray:
        """The windows of batch k, in index order."""
        rng = np.random.default_rng([self.seed, k, WINDOW_STREAM])
        if self.sample_rate is not None:
            return np.flatnonzero(rng.random(self.num_examples) < self.sample_rate)
        return np.sort(rng.choice(self.num_examples, size=self.batch_size, replace=False))

    def gather(self, idx: np.ndarray) -> np.ndarray:
        """Windows `idx` as int64 (len(idx), window)."""
        starts = np.asarray(idx, np.int64) * self.window
        windows = self.tokens[starts[:, None] + np.arange(self.window)]
        return np.asarray(windows, np.int64).reshape(-1, self.window)


@FEEDS.register("text")
class TextFeed(Feed):
    def __init__(self, trainer: Any):
        cfg = trainer.config
        self.dataset, self.device = trainer.dataset, trainer.device
        self.split = self.dataset.split(cfg.split)
        self.tokens = self.split.tokens  # uint16/uint32 memory map
        self.window = int(getattr(trainer.model.config, "block_size", 0)) + 1
        self.global_batch, self.batch_size = cfg.batch_size, cfg.batch_size // trainer.ctx.world_size
        self.seed, self.rank = int(cfg.seed), trainer.ctx.rank
        self.drawn = 0  # batches drawn so far: the feed's whole state
        privacy = getattr(trainer, "privacy", None)
        self.private = privacy is not None
        if self.private:  # fixed windows to sample from (one process: train/privacy.py refuses DDP)
            self.loader = WindowLoader(self.tokens, self.window, cfg.batch_size, self.seed, privacy.poisson)
            tokenizer = self.privacy_record()["tokenizer"]
            if not tokenizer["covered"]:
                warnings.warn(
                    f"differentially private text run: {tokenizer['why']}", UserWarning, stacklevel=2
                )

    def check_fits(self, model: Any) -> None:
        vocab = getattr(model.config, "vocab_size", None)
        if vocab != self.dataset.vocab_size:
            raise ConfigError(
                f"model.vocab_size is {vocab} but the tokenizer of {self.dataset.path} has "
                f"{self.dataset.vocab_size} tokens (manifest.json tokenizer.vocab_size)"
            )
        if len(self.tokens) < self.window:
            raise ConfigError(
                f"split {self.split.name!r} of {self.dataset.path} holds {len(self.tokens)} tokens, fewer than "
                f"one training window of model.block_size + 1 = {self.window}; lower model.block_size"
            )
        if self.private and self.loader.num_examples < self.global_batch:
            raise ConfigError(
                f"train.batch_size: a private run samples batches of {self.global_batch} from the "
                f"{self.loader.num_examples} windows of {self.window} tokens that split {self.split.name!r} of "
                f"{self.dataset.path} holds; lower the batch size or model.block_size"
            )

    def privacy_record(self) -> dict[str, Any]:
        """What a private text run adds to its privacy record (model.json `privacy`): the unit,
        and whether the tokenizer is covered by the guarantee (one learnt from the train split is
        a statistic of it, computed without noise)."""
        from genforge.data.text.tokenizer import TOKENIZERS

        kind = self.dataset.manifest["tokenizer"]["kind"]
        learnt = TOKENIZERS.get(kind).learns_from_data
        why = (
            f"the {kind} tokenizer's vocabulary was learnt from the train split without noise, so it is not "
            "covered by the guarantee (and ships with the run as tokenizer.json); ingest with --tokenizer bytes "
            "for a tokenizer that learns nothing from the data"
            if learnt
            else f"the {kind} tokenizer learns nothing from the data"
        )
        return {
            "unit": f"one window of {self.window} tokens (non-overlapping, of the train split's token stream), "
            "added or removed; a text spanning k windows is protected at k times epsilon (group privacy)",
            "tokenizer": {"kind": kind, "covered": not learnt, "why": why},
        }

    def check_base_run(self, base_run: Path) -> None:
        """The base must read tokens as this data does: the same tokenizer, byte for byte."""
        from genforge.data.text.tokenizer import TOKENIZER_FILE

        base_file = Path(base_run) / TOKENIZER_FILE
        if not base_file.is_file():
            why = f"has no {TOKENIZER_FILE}"
        elif base_file.read_bytes() != self._tokenizer_file().read_bytes():
            why = f"used another tokenizer than {self.dataset.path}"
        else:
            return
        raise ConfigError(
            f"--init-from {base_run}: the base run {why}, so its token ids would mean other text; "
            "fine-tune on data tokenized with the base run's tokenizer"
        )

    def _tokenizer_file(self) -> Path:
        from genforge.data.text.tokenizer import TOKENIZER_FILE

        return self.dataset.path / self.dataset.manifest["tokenizer"].get("file", TOKENIZER_FILE)

    def write_run_files(self, run_dir: Path) -> None:
        """The dataset's tokenizer.json, byte for byte: the run decodes with exactly it."""
        from genforge.data.text.tokenizer import TOKENIZER_FILE

        write_bytes(Path(run_dir) / TOKENIZER_FILE, self._tokenizer_file().read_bytes())

    def next_batch(self) -> Batch:
        if self.private:
            windows = self.loader.gather(self.loader.indices(self.drawn))
        else:
            rng = np.random.default_rng([self.seed, self.drawn])
            starts = rng.integers(0, len(self.tokens) - self.window + 1, size=self.global_batch)
            starts = starts[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
            windows = self.tokens[starts[:, None] + np.arange(self.window)]
        self.drawn += 1
        return Batch(torch.from_numpy(windows.astype(np.int64)).to(self.device, non_blocking=True))

    def state_dict(self) -> dict[str, Any]:
        return {"drawn": self.drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.drawn = int(state["drawn"])

    def write_samples(self, model: Any, path_stem: Path, log: Any, step: int, *, n: int, seed: int,
                      labels: Any) -> Path | None:  # fmt: skip
        """A few completions of an empty prompt (fixed seed) into PATH_STEM.txt."""
        from genforge.models.text.pipeline import TextPipeline

        pipe = TextPipeline(model=model, info={"model": ""}, path=self.dataset.path, tokenizer=self.dataset.tokenizer)
        completions = pipe.complete([""], n=min(n, SAMPLES_MAX), max_tokens=SAMPLE_TOKENS, seed=seed)
        text = "".join(f"--- sample {c.index} (step {step})\n{c.text}\n" for c in completions)
        path = path_stem.with_suffix(".txt")
        write_text(path, text)
        if log is not None:
            log.add_text("samples", text, step)
        return path
