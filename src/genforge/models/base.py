"""The contract between a model family and the one trainer.

A model is its network(s) plus its objective. It declares its optimisation phases as data
(which submodules a phase updates, its optimiser settings, how often it runs) and returns a
`ModelOutput` from `training_step`, so one trainer serves GANs, VAEs, autoencoders, encoders
and diffusion alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn


class Batch:
    """One training batch: the modality's representation in `data` and optional class labels.

    images: float (B, C, H, W) in [-1, 1] (also readable as `batch.images`); text: int64 token
    ids (B, T+1), inputs `[:, :-1]`, targets `[:, 1:]`; audio: float (B, T) waves in [-1, 1].
    `labels`: int64 (B,) or None. `speakers`: int64 (B,) speaker ids (audio data that records
    them; -1 unknown) or None.
    """

    __slots__ = ("data", "labels", "speakers")

    def __init__(
        self,
        data: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        images: torch.Tensor | None = None,
        speakers: torch.Tensor | None = None,
    ):
        if (data is None) == (images is None):
            raise TypeError("Batch takes its data either positionally or as images=, exactly once")
        self.data = data if data is not None else images
        self.labels = labels
        self.speakers = speakers

    @property
    def images(self) -> torch.Tensor:
        return self.data

    def __repr__(self) -> str:
        shape = tuple(self.data.shape)
        return f"Batch(data={self.data.dtype} {shape}, labels={None if self.labels is None else tuple(self.labels.shape)})"


@dataclass
class ModelOutput:
    loss: torch.Tensor  # scalar the phase's optimiser minimises
    terms: dict[str, torch.Tensor | float] = field(default_factory=dict)  # named parts, for logs
    # a grouped step (phases sharing `Phase.group`): one output per phase of the group, by name
    parts: dict[str, ModelOutput] = field(default_factory=dict)


@dataclass
class OptimizerSpec:
    name: str = "adam"  # adam | adamw
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    # weight decay on matrices only (linear and embedding weights); biases, norm gains and other
    # 1-D parameters get none, as GPT-2 and nanoGPT train transformers
    decay_matrices_only: bool = False


@dataclass
class LRSchedule:
    """The learning rate over a run, as a multiplier of the optimiser's lr: linear warmup over
    the first `warmup_steps` steps, then `decay` (constant | cosine | linear) from 1 down to
    `min_ratio` over the run's budget (its progress: steps, images or wall time, whichever ends
    first, so a time-budgeted run still decays fully by its end)."""

    decay: str = "constant"
    warmup_steps: int = 0
    min_ratio: float = 0.1


@dataclass
class Phase:
    name: str  # e.g. "discriminator", "generator", "main"
    modules: list[str]  # attribute names of the submodules this phase updates
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    every: int = 1  # run on steps where step % every == 0 (lazy regularisers)
    repeats: int = 1  # e.g. n_critic for WGAN-GP
    # consecutive phases with the same group run from ONE `training_step(group, ...)` forward whose
    # output has a part per phase: every phase's gradients are taken before any optimiser steps
    # (simultaneous updates, as the TensorFlow DCGAN tutorial's train_step does)
    group: str = ""
    schedule: LRSchedule = field(default_factory=LRSchedule)
    clip_grad_norm: float = 0.0  # clip the phase's global gradient norm to this; 0 = off


class GenerativeModel(nn.Module):
    """Base of every registered model. Subclasses set `family` and `config_class`."""

    family: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    # the kind of data the model is trained on and generates (core/modality.py)
    modality: ClassVar[str] = "image"
    # submodules whose exponential moving average is kept and used for sampling
    ema_modules: ClassVar[tuple[str, ...]] = ()
    # True when `sample` accepts class labels
    conditional: bool = False
    # "generate": `sample` makes new images; "restore": the model maps corrupted images to clean
    # ones through `restore(images)` (deploy and the CLI pick the entry point from this)
    task: ClassVar[str] = "generate"
    # differentially private training (train/privacy.py): the submodules whose parameters see real
    # data. DP-SGD clips and noises every phase that updates one of them; the other phases get a
    # batch without real data. None: every submodule a phase updates (the whole network).
    private_modules: ClassVar[tuple[str, ...] | None] = None
    # model config fields a new private run starts from (the config file and --set still win)
    private_defaults: ClassVar[dict[str, Any]] = {}
    # how --dp-epsilon makes the run private (train/privacy.py MECHANISMS): "dp-sgd" (noisy
    # clipped gradients at every step) or "release" (one noisy release of `data_statistics`)
    privacy_mechanism: ClassVar[str] = "dp-sgd"
    # True: before its first step the trainer computes per-class means of the family's embedding
    # over the training split (`statistics_shape`, `fit_statistics`, `set_targets`; models/mmd.py)
    data_statistics: ClassVar[bool] = False

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    @classmethod
    def default_config(cls, image_size: int, channels: int, num_classes: int = 0, **overrides: Any) -> Any:
        """The family's default config for data of this shape; `overrides` are config fields.

        Every image model's config has `image_size`, `channels` and `num_classes` (0 =
        unconditional) fields; families override this to pick widths/depths per image size.
        The trainer passes the fields the dataset fixes (`dataset.model_fields()`); families of
        other modalities declare their own (e.g. `vocab_size` for text).
        """
        from genforge.core.config import from_dict

        data = {"image_size": image_size, "channels": channels, "num_classes": num_classes}
        return from_dict(cls.config_class, {**data, **overrides}, where=f"{cls.__name__} config")

    # --- fine-tuning from a base run (`genforge train --init-from`, train/init_from.py) --------

    @classmethod
    def adapt_base_config(cls, base_config: dict[str, Any], data_fields: dict[str, Any]) -> dict[str, Any]:
        """A fine-tuning run's config (as a dict) from its base run's and the new data's
        `model_fields()`; the default keeps the base's (the architecture must match). Families
        whose tables grow with the data (audio speakers) extend them here."""
        return base_config

    def adapt_base_state(
        self, base_state: dict[str, torch.Tensor], base_config: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        """The base run's weights fitted to this model (built from `adapt_base_config`'s config);
        the default returns them unchanged, so every tensor must match."""
        return base_state

    def base_state_optional(self, name: str) -> bool:
        """Whether state `name` may be in a fine-tune and not in its base, or the other way round:
        training-process state (adaptive augmentation's), which a fine-tune starts afresh, not
        weights. False by default: every tensor must match the base's."""
        return False

    def adaptation_parameters(self) -> list[str]:
        """Names of the parameters a fine-tune with a frozen trunk (`--freeze-trunk`) still
        trains: conditioning embeddings and output layers; [] = the family cannot freeze its trunk."""
        return []

    def phases(self) -> list[Phase]:
        raise NotImplementedError

    def private_training_problems(self) -> list[str]:
        """Config choices that DP-SGD cannot honour, each naming the field and what to set
        instead (train/privacy.py refuses the run with them); [] when there are none."""
        return []

    def training_step(self, phase: str, batch: Batch, step: int) -> ModelOutput:
        raise NotImplementedError

    def compile_regions(self) -> list[nn.Module]:
        """The modules `train.compile` compiles (train/compile.py): the whole model by default;
        families with repeated blocks name the blocks, which then share one compiled graph."""
        return [self]

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """n images as float (n, C, H, W) in [-1, 1]."""
        raise NotImplementedError
