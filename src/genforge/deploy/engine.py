"""What the service runs in its worker thread: generation and restoration jobs, merged.

Merging generation requests while keeping each request's output a function of its own seed
needs the noise to be drawn per request and the network to run once on the concatenation. A
model that can be merged says how itself (the GAN and VAE families do):

    model.noise(n, generator=..., **options) -> Tensor     # all randomness `sample` consumes
    model.sample(n, latents=z, labels=..., **options)     # uses z instead of drawing noise

A model without them still works, one request per forward pass (`mergeable` is False).

The engine is shared by the modalities that serve through the micro-batcher: images here, audio
in `deploy.audio.AudioEngine`, which overrides the conversions (`item_shape`, `to_output`,
`from_input`) and how a merged pass runs (`decode`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from genforge.core.errors import GenforgeError
from genforge.core.registry import Registry
from genforge.models.base import GenerativeModel
from genforge.models.pipeline import Pipeline, from_uint8, to_uint8

# Per-request sampler options a family accepts (the gallery shows their controls); families not
# listed accept none.
REQUEST_OPTIONS: Registry[tuple[str, ...]] = Registry("request options")
REQUEST_OPTIONS.register("diffusion", ("steps", "guidance"))

# A short warm-up pass: the first forward pass pays for allocations and kernel selection.
WARMUP_OPTIONS: dict[str, Any] = {"steps": 2}


@dataclass(frozen=True)
class GenerateJob:
    n: int
    seed: int
    labels: tuple[int, ...] | None  # one per image, or None for unconditional models
    options: tuple[tuple[str, Any], ...] = ()  # sorted (name, value) pairs
    speakers: tuple[int, ...] | None = None  # one per clip (speaker-conditional audio models)


@dataclass(frozen=True, eq=False)
class RestoreJob:
    images: np.ndarray  # the modality's items: uint8 (n, H, W, C) images, float32 (n, T) clips


@dataclass
class GenerateResult:
    images: np.ndarray  # `Engine.to_output`: uint8 (n, H, W, C) images, float32 (n, T) clips
    labels: np.ndarray | None


@dataclass(frozen=True)
class LatentHook:
    """How to draw one request's noise, and how to run the network once on merged noise."""

    noise: Callable[[GenerativeModel, int, torch.Generator, dict[str, Any]], torch.Tensor]
    decode: Callable[[GenerativeModel, torch.Tensor, torch.Tensor | None, dict[str, Any]], torch.Tensor]


MODEL_HOOK = LatentHook(
    noise=lambda model, n, generator, options: model.noise(n, generator=generator, **options),
    decode=lambda model, z, labels, options: model.sample(len(z), latents=z, labels=labels, **options),
)


def latent_hook(model: GenerativeModel) -> LatentHook | None:
    """The model's hook, or None (its requests then run one at a time)."""
    sample = getattr(model, "sample", None)
    if callable(getattr(model, "noise", None)) and "latents" in inspect.signature(sample).parameters:
        return MODEL_HOOK
    return None


class Engine:
    """A loaded pipeline plus the rules for merging its jobs."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.model = pipeline.model
        self.task = str(getattr(self.model, "task", "generate"))
        family = str(pipeline.info.get("family") or getattr(self.model, "family", ""))
        self.options = REQUEST_OPTIONS.get(family) if family in REQUEST_OPTIONS else ()
        self.hook = latent_hook(self.model)
        self.mergeable = self.task == "restore" or self.hook is not None
        self.item_shape = self.output_shape()
        self._runners = {GenerateJob: self._generate, RestoreJob: self._restore}

    # the modality's items (deploy.audio.AudioEngine overrides these) -------------------------

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.item_shape

    def output_shape(self) -> tuple[int, ...]:
        """The shape of one output item: (H, W, C)."""
        cfg = self.model.config
        return (int(cfg.image_size), int(cfg.image_size), int(cfg.channels))

    def to_output(self, x: torch.Tensor) -> np.ndarray:
        """The network's output batch as the service returns it: uint8 (n, H, W, C)."""
        return to_uint8(x)

    def from_input(self, items: np.ndarray) -> torch.Tensor:
        """Uploaded items (uint8 (n, H, W, C)) as the network's input batch."""
        return from_uint8(items)

    def decode(
        self, latents: torch.Tensor, labels: torch.Tensor | None, options: dict[str, Any]
    ) -> torch.Tensor:
        """The network once on merged noise (and labels, and per-item options such as speakers)."""
        assert self.hook is not None
        return self.hook.decode(self.model, latents, labels, options)

    # job construction (request thread) -------------------------------------------------------

    def job_labels(self, n: int, class_label: int | None) -> tuple[int, ...] | None:
        """Labels as `Pipeline.generate` picks them: the class, else classes in turn."""
        if not self.pipeline.conditional:
            if class_label is not None:
                raise GenforgeError(f"model {self.pipeline.name!r} is not class-conditional; omit the class")
            return None
        k = self.pipeline.num_classes
        if class_label is None:
            return tuple(i % k for i in range(n))
        if not 0 <= class_label < k:
            raise GenforgeError(f"class {class_label} out of range 0..{k - 1}")
        return (int(class_label),) * n

    @staticmethod
    def key(job: GenerateJob | RestoreJob) -> Hashable:
        return ("generate", job.options) if isinstance(job, GenerateJob) else ("restore",)

    @staticmethod
    def size(job: GenerateJob | RestoreJob) -> int:
        return job.n if isinstance(job, GenerateJob) else len(job.images)

    # running (worker thread) -----------------------------------------------------------------

    def run(self, jobs: list[Any]) -> list[Any]:
        """Results for jobs that share a batching key (as the batcher groups them)."""
        return self._runners[type(jobs[0])](jobs)

    @torch.no_grad()
    def _generate(self, jobs: list[GenerateJob]) -> list[GenerateResult]:
        options = dict(jobs[0].options)
        if self.hook is None:
            return [self._generate_one(job, options) for job in jobs]
        latents = torch.cat(
            [self.hook.noise(self.model, j.n, torch.Generator().manual_seed(j.seed), options) for j in jobs]
        )
        labels = (
            None if jobs[0].labels is None else np.concatenate([np.asarray(j.labels, np.int64) for j in jobs])
        )
        if jobs[0].speakers is not None:  # per item, like labels: merged in the same order
            options["speakers"] = torch.cat([torch.tensor(j.speakers, dtype=torch.long) for j in jobs])
        self.model.eval()
        out = self.decode(latents, None if labels is None else torch.from_numpy(labels), options)
        return self._split(jobs, self.to_output(out), labels)

    def _generate_one(self, job: GenerateJob, options: dict[str, Any]) -> GenerateResult:
        labels = None if job.labels is None else np.asarray(job.labels, dtype=np.int64)
        if job.speakers is not None:
            options = {**options, "speakers": np.asarray(job.speakers, dtype=np.int64)}
        images, labels = self.pipeline.generate(job.n, seed=job.seed, labels=labels, **options)
        return GenerateResult(images, labels)

    @staticmethod
    def _split(
        jobs: list[GenerateJob], images: np.ndarray, labels: np.ndarray | None
    ) -> list[GenerateResult]:
        results, start = [], 0
        for job in jobs:
            stop = start + job.n
            results.append(GenerateResult(images[start:stop], None if labels is None else labels[start:stop]))
            start = stop
        return results

    @torch.no_grad()
    def _restore(self, jobs: list[RestoreJob]) -> list[np.ndarray]:
        batch = self.from_input(np.concatenate([j.images for j in jobs]))
        self.model.eval()
        out = self.to_output(self.model.restore(batch))
        bounds = np.cumsum([len(j.images) for j in jobs])[:-1]
        return list(np.split(out, bounds))

    def warmup(self) -> None:
        if self.task == "restore":
            self.run([RestoreJob(np.zeros((1, *self.image_shape), dtype=np.uint8))])
            return
        options = tuple(sorted((k, v) for k, v in WARMUP_OPTIONS.items() if k in self.options))
        self.run([GenerateJob(1, 0, self.job_labels(1, None), options)])
