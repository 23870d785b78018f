"""Inference for text runs: prompts in, completions out, batched through the model's KV cache.

`load_pipeline(RUN_DIR)` returns a `TextPipeline` for a text model (the run directory holds the
tokenizer the model was trained with, `tokenizer.json`, beside its weights).

Decode runtime (`runtime`, per pipeline or per `complete` call; default $GENFORGE_TEXT_RUNTIME,
else auto): torch (the model's own step), onnx (the step in ONNX Runtime, models.text.onnx_decode),
auto (onnx for an fp32 CPU gpt when onnxruntime imports and the step exports, else torch). Both
draw from the same sampler on their logits: the same seed gives the same tokens up to float
rounding of the logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genforge.core.errors import ConfigError, GenforgeError
from genforge.models.pipeline import PIPELINES, RunPipeline
from genforge.models.text.gpt import small_ops
from genforge.models.text.onnx_decode import check_runtime, default_runtime, text_decoder
from genforge.models.text.sampling import SamplingParams, TextStream, next_tokens, sequence_generator

# an empty prompt starts the model after a line break, as nanoGPT's sample.py does: the corpus'
# documents start after one (they are joined with a blank line); the line break is context only,
# not part of the completion
EMPTY_PROMPT_CONTEXT = "\n"
MAX_SLOTS = 64  # sequences decoded together; more are completed in rounds


@dataclass
class Completion:
    prompt: str
    text: str  # the generated text, cut before the first stop string
    token_ids: list[int] = field(default_factory=list)  # generated tokens (a stop string's included)
    finish_reason: str = "length"  # "stop": a stop string ended it; "length": max_tokens did
    n_prompt_tokens: int = 0
    index: int = 0  # position among the request's completions (prompt-major, then n)

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class TextPipeline(RunPipeline):
    # model: a text model with new_cache / prefill / decode (models.text.gpt.GPT)
    tokenizer: Any = None  # read from RUN_DIR/tokenizer.json when not given
    runtime: str = field(default_factory=default_runtime)  # decode step: auto | torch | onnx

    def __post_init__(self) -> None:
        check_runtime(self.runtime)
        if self.tokenizer is None:
            from genforge.data.text.tokenizer import TOKENIZER_FILE, load_tokenizer

            self.tokenizer = load_tokenizer(Path(self.path) / TOKENIZER_FILE)
        vocab = int(getattr(self.model.config, "vocab_size", 0))
        if self.tokenizer.vocab_size != vocab:
            raise GenforgeError(
                f"{self.path}: the tokenizer has {self.tokenizer.vocab_size} tokens but the model's "
                f"vocab_size is {vocab} (model.json config.vocab_size)"
            )

    @property
    def conditional(self) -> bool:
        return False

    @property
    def num_classes(self) -> int:
        return 0

    @property
    def block_size(self) -> int:
        return int(self.model.config.block_size)

    def encode_prompt(self, prompt: str) -> list[int]:
        ids = self.tokenizer.encode(prompt) if prompt else []
        return ids or self.tokenizer.encode(EMPTY_PROMPT_CONTEXT)

    @torch.no_grad()
    def complete(
        self,
        prompts: Sequence[str],
        *,
        n: int = 1,
        max_tokens: int = 256,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: Sequence[str] | str | None = None,
        seed: int = 0,
        runtime: str | None = None,
    ) -> list[Completion]:
        """n completions of each prompt, prompt-major; completion i draws from its own
        generator seeded by (seed, i), so each is reproducible whatever else is in the batch.
        `runtime` (auto | torch | onnx) overrides the pipeline's for this call."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if n < 1:
            raise ConfigError(f"n: must be >= 1, got {n}")
        if max_tokens < 1:
            raise ConfigError(f"max_tokens: must be >= 1, got {max_tokens}")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        params = SamplingParams(temperature, top_k, top_p)
        jobs = [(p, i * n + j) for i, p in enumerate(prompts) for j in range(n)]
        out: list[Completion] = []
        self.model.eval()
        decoder = self.decoder(runtime, tokens=len(jobs) * max_tokens)
        for start in range(0, len(jobs), MAX_SLOTS):
            out += self._complete_round(jobs[start : start + MAX_SLOTS], max_tokens, params, stops, seed, decoder)
        return out

    def decoder(self, runtime: str | None = None, tokens: int | None = None) -> Any:
        """What decodes under `runtime` (the pipeline's by default) at most `tokens` tokens (None:
        a long-lived caller, such as the service): the model (torch) or its ONNX Runtime step
        (models.text.onnx_decode.text_decoder); both have new_cache / prefill / decode."""
        return text_decoder(self.model, check_runtime(runtime or self.runtime), tokens)

    def _complete_round(self, jobs: list[tuple[str, int]], max_tokens: int, params: SamplingParams,
                        stops: list[str], seed: int, model: Any) -> list[Completion]:  # fmt: skip
        cache = model.new_cache(len(jobs))
        first_logits: dict[str, tuple[int, torch.Tensor]] = {}  # prompt -> (slot, logits)
        logits = []
        for slot, (prompt, _index) in enumerate(jobs):
            if prompt in first_logits:  # n completions of one prompt share its prefill
                src, row = first_logits[prompt]
                cache.copy(src, slot)
            else:
                row = model.prefill(cache, slot, self.encode_prompt(prompt))
                first_logits[prompt] = (slot, row)
            logits.append(row)
        streams = [TextStream(self.tokenizer.decode, stops) for _ in jobs]
        generators = [sequence_generator(seed, index) for _prompt, index in jobs]
        active = list(range(len(jobs)))
        rows = torch.stack(logits)
        with small_ops():  # the decode loop's operations are small: see models.text.gpt.small_ops
            for step in range(max_tokens):
                tokens = next_tokens(rows, [params] * len(active), [generators[j] for j in active]).tolist()
                for j, tok in zip(active, tokens, strict=True):
                    streams[j].push(tok)
                active_tokens = [(j, t) for j, t in zip(active, tokens, strict=True) if not streams[j].stopped]
                if not active_tokens or step == max_tokens - 1:
                    break
                active = [j for j, _t in active_tokens]
                rows = model.decode(cache, active, [t for _j, t in active_tokens])
        completions = []
        for (prompt, index), stream in zip(jobs, streams, strict=True):
            reason = "stop" if stream.stopped else "length"
            stream.finish()
            completions.append(
                Completion(prompt, stream.text, list(stream.ids), reason, len(self.tokenizer.encode(prompt)), index)
            )
        return completions


PIPELINES.register("text", TextPipeline)
