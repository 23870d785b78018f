"""DDPM (Ho et al. 2020) trained with eps- or v-prediction, sampled with DDIM or ancestral DDPM.

Wires the U-Net (network), the schedule (forward process) and the samplers (reverse process);
class conditioning drops labels to the null class with probability `cfg_dropout` so one network
also learns the unconditional model that classifier-free guidance needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from genforge.core.errors import ConfigError, GenforgeError
from genforge.models.base import Batch, GenerativeModel, ModelOutput, OptimizerSpec, Phase
from genforge.models.diffusion.samplers import SAMPLERS, guide, sample_loop
from genforge.models.diffusion.schedule import PREDICTIONS, SCHEDULES, make_schedule, q_sample
from genforge.models.diffusion.unet import UNet, level_sizes


@dataclass
class DiffusionConfig:
    image_size: int = 32
    channels: int = 3
    num_classes: int = 0  # 0 = unconditional; > 0 = class-conditional with classifier-free guidance
    base_channels: int = 16
    channel_mults: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (8,)  # feature-map sizes (pixels) with self-attention
    patch_size: int = 1  # p > 1: the U-Net runs on p x p pixel blocks folded into channels
    dropout: float = 0.0
    timesteps: int = 1000
    schedule: str = "linear"  # linear | cosine
    prediction: str = "eps"  # eps | v
    cfg_dropout: float = 0.1  # probability of training a labelled image as unlabelled
    sample_steps: int = 50  # default DDIM steps
    guidance_scale: float = 2.0  # default classifier-free guidance (1 = plain conditional)
    eta: float = 0.0  # default DDIM stochasticity (0 = deterministic)
    clip_x0: bool = True  # clip predicted x0 to [-1, 1] while sampling
    lr: float = 2e-4
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        SCHEDULES.get(self.schedule)
        PREDICTIONS.get(self.prediction)
        checks = [
            (self.image_size >= 4, "image_size must be >= 4"),
            (self.channels >= 1, "channels must be >= 1"),
            (self.num_classes >= 0, "num_classes must be >= 0"),
            (self.base_channels >= 8 and self.base_channels % 2 == 0, "base_channels must be even and >= 8"),
            (len(self.channel_mults) >= 1 and min(self.channel_mults) >= 1, "channel_mults must be >= 1"),
            (self.num_res_blocks >= 1, "num_res_blocks must be >= 1"),
            (self.patch_size >= 1, "patch_size must be >= 1"),
            (self.timesteps >= 2, "timesteps must be >= 2"),
            (1 <= self.sample_steps <= self.timesteps, "sample_steps must be in 1..timesteps"),
            (0.0 <= self.cfg_dropout < 1.0, "cfg_dropout must be in [0, 1)"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (self.eta >= 0.0, "eta must be >= 0"),
            (self.lr > 0, "lr must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"ddpm config: {message}")


def default_unet(image_size: int) -> dict[str, Any]:
    """A U-Net that trains usefully in minutes on a small CPU: 2x2 pixel blocks folded into
    channels (no convolution at full resolution, where few channels make a CPU convolution
    least efficient), 32 channels at the top level and wider below, three levels up to 32 px
    (28 px: 14 -> 7 -> 4; 32 px: 16 -> 8 -> 4), four from 48 px, self-attention only at the
    lowest resolution. bench/results/diffusion.md measures the choice."""
    patch = 2
    mults = (1, 2, 2) if image_size < 48 else (1, 2, 4, 4)
    lowest = level_sizes(image_size, patch, len(mults))[-1]
    return {"base_channels": 32, "channel_mults": mults, "patch_size": patch, "attention_resolutions": (lowest,)}


class DDPM(GenerativeModel):
    family: ClassVar[str] = "diffusion"
    config_class: ClassVar[type] = DiffusionConfig
    ema_modules: ClassVar[tuple[str, ...]] = ("denoiser",)
    # noise levels drawn per example per step (DPDM's noise multiplicity, set by train/privacy.py):
    # the K losses of an example are averaged before DP-SGD clips its gradient, so K lowers the
    # gradient's variance at no privacy cost
    noise_multiplicity: int = 1

    def __init__(self, config: DiffusionConfig):
        super().__init__(config)
        self.conditional = config.num_classes > 0
        self.denoiser = UNet(
            image_size=config.image_size,
            channels=config.channels,
            base_channels=config.base_channels,
            channel_mults=tuple(config.channel_mults),
            num_res_blocks=config.num_res_blocks,
            attention_resolutions=tuple(config.attention_resolutions),
            num_classes=config.num_classes,
            dropout=config.dropout,
            patch_size=config.patch_size,
        )
        self.schedule = make_schedule(config.schedule, config.timesteps)
        self.prediction = PREDICTIONS.get(config.prediction)
        # derived from the config, so not saved with the weights
        ab = torch.as_tensor(self.schedule.alpha_bar, dtype=torch.float32)
        self.register_buffer("alpha_bar", ab, persistent=False)

    @classmethod
    def default_config(cls, image_size: int, channels: int, num_classes: int = 0, **overrides: Any) -> Any:
        return super().default_config(
            image_size, channels, num_classes, **{**default_unet(image_size), **overrides}
        )

    @property
    def null_label(self) -> int:
        return self.config.num_classes

    def phases(self) -> list[Phase]:
        opt = OptimizerSpec(
            name="adamw", lr=self.config.lr, betas=(0.9, 0.999), weight_decay=self.config.weight_decay
        )
        return [Phase(name="main", modules=["denoiser"], optimizer=opt)]

    def _train_labels(self, labels: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor | None:
        if not self.conditional:
            return None
        if labels is None:
            return torch.full((n,), self.null_label, dtype=torch.long, device=device)
        labels = labels.to(device=device, dtype=torch.long)
        if n and int(labels.max()) >= self.null_label:
            raise GenforgeError(
                f"ddpm: training label {int(labels.max())} is out of range for num_classes = {self.null_label}"
            )
        # unlabelled images (-1) and a random cfg_dropout fraction train the unconditional model
        drop = (labels < 0) | (torch.rand(n, device=device) < self.config.cfg_dropout)
        return torch.where(drop, torch.full_like(labels, self.null_label), labels)

    def training_step(self, phase: str, batch: Batch, step: int) -> ModelOutput:
        return multiplicity_step(self._denoising_loss, batch, self.noise_multiplicity)

    def _denoising_loss(self, batch: Batch) -> torch.Tensor:
        x0 = batch.images
        n = x0.shape[0]
        # the global torch RNG: the trainer saves and restores its state for exact resume
        t = torch.randint(0, self.config.timesteps, (n,), device=x0.device)
        # drawn in logical (NCHW) order: the same noise whatever the batch's memory format, and
        # randn_like on a channels-last tensor takes a path ~9x slower
        eps = torch.randn(x0.shape, dtype=x0.dtype, device=x0.device)
        ab = self.alpha_bar[t].view(n, 1, 1, 1)
        x_t = q_sample(x0, eps, ab)
        out = self.denoiser(x_t, t, self._train_labels(batch.labels, n, x0.device))
        return F.mse_loss(out, self.prediction.target(x0, eps, ab))

    def predict(
        self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None, guidance: float
    ) -> torch.Tensor:
        """The network's output (eps or v) at (x, t), guided towards `labels` with scale `guidance`."""
        if not self.conditional or labels is None or guidance == 1.0:
            return self.denoiser(x, t, labels)
        null = torch.full_like(labels, self.null_label)
        cond, uncond = self.denoiser(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).chunk(2)
        return guide(cond, uncond, guidance)

    def _check_labels(self, labels: torch.Tensor | None, n: int) -> torch.Tensor | None:
        if labels is None:
            return None
        if not self.conditional:
            raise GenforgeError(
                "this ddpm model is unconditional (num_classes = 0); sample it without labels"
            )
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if labels.shape[0] != n or labels.min() < 0 or labels.max() > self.null_label:
            raise GenforgeError(
                f"labels must be {n} class indices in 0..{self.null_label - 1} ({self.null_label} = unconditional)"
            )
        return labels

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        steps: int | None = None,
        sampler: str = "ddim",
        guidance: float | None = None,
        eta: float | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """n images (n, C, H, W) in [-1, 1]. `steps` defaults to the config's sample_steps for DDIM and
        to all timesteps for DDPM; `guidance` and `eta` default to the config's."""
        if options:
            raise GenforgeError(f"ddpm sample: unknown option(s) {', '.join(sorted(options))}")
        cfg = self.config
        spec = SAMPLERS.get(sampler)
        if guidance is not None and not self.conditional:
            raise GenforgeError("guidance needs a class-conditional ddpm model (num_classes > 0)")
        labels = self._check_labels(labels, n)
        scale = cfg.guidance_scale if guidance is None else float(guidance)
        eta = cfg.eta if eta is None else float(eta)
        if steps is None:
            steps = cfg.timesteps if spec.full_chain else cfg.sample_steps
        device = self.alpha_bar.device
        lab = labels.to(device) if labels is not None else None
        shape = (n, cfg.channels, cfg.image_size, cfg.image_size)
        x = torch.randn(shape, generator=generator).to(device)

        def eps_fn(x_t: torch.Tensor, t: int) -> torch.Tensor:
            tt = torch.full((n,), t, dtype=torch.long, device=device)
            ab = float(self.schedule.alpha_bar[t])
            return self.prediction.to_eps(x_t, self.predict(x_t, tt, lab, scale), ab)

        def noise_fn() -> torch.Tensor:
            return torch.randn(shape, generator=generator).to(device)

        x = sample_loop(eps_fn, x, self.schedule, int(steps), sampler, eta, noise_fn, cfg.clip_x0)
        return x.clamp(-1.0, 1.0)

    def export_spec(self) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...], list[str], list[str], dict]:
        """The exportable denoiser (x_t, t[, labels]) -> eps|v with example inputs. Labels are an input
        only when conditional; the null class index `num_classes` means unconditional. The schedule
        tables are `self.schedule.alpha_bar`, the step math `samplers.ddim_step`."""
        cfg = self.config
        x = torch.zeros(2, cfg.channels, cfg.image_size, cfg.image_size)
        inputs: tuple[torch.Tensor, ...] = (x, torch.zeros(2, dtype=torch.long))
        names = ["x_t", "t"]
        if self.conditional:
            inputs += (torch.full((2,), self.null_label, dtype=torch.long),)
            names.append("labels")
        axes = {name: {0: "batch"} for name in [*names, "out"]}
        return self.denoiser, inputs, names, ["out"], axes


def multiplicity_step(denoising_loss: Callable[[Batch], torch.Tensor], batch: Batch, k: int) -> ModelOutput:
    """A diffusion training step at noise multiplicity k (DPDM): the mean of k denoising losses, one
    denoiser forward per noise level, so per-sample gradient hooks sum an example's k gradients
    before clipping (one batch of B*k would clip each of them on its own)."""
    losses = [denoising_loss(batch) for _ in range(k)]
    loss = losses[0] if len(losses) == 1 else torch.stack(losses).mean()
    return ModelOutput(loss=loss, terms={"mse": loss.detach()})
