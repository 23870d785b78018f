"""The text feed: random windows of block_size + 1 tokens from the split's token memory map.

Batch k draws the window starts of the whole global batch from a generator seeded by (seed, k);
DDP rank r takes its share, starts [r * B, (r + 1) * B) of them. So the feed's whole state is the
count of batches drawn (resuming restores one integer and continues bit for bit), ranks read
different windows, and N processes of batch B see exactly the windows one process of batch N * B
sees. Windows may span a document separator, as nanoGPT's windows span GPT-2's end-of-text
token: the model learns where documents end.
"""

from __future__ import annotations

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
