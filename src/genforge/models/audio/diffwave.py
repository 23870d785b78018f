"""DiffWave (Kong et al. 2021): diffusion on raw waveforms, registered as `diffwave`.

The network (`nets.DiffWaveNet`: dilated residual 1-D convolutions, a diffusion-step embedding,
digit and speaker embeddings) is wired to the image diffusion family's forward process
(`models.diffusion.schedule`) and reverse-process samplers (`models.diffusion.samplers`), which
are written for arrays of any shape. Conditions are dropped to their null rows with probability
`cfg_dropout` so one network also learns the unconditional model that classifier-free guidance
needs; sampling defaults to a few deterministic DDIM steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from genforge.core.config import from_dict
from genforge.core.errors import ConfigError, GenforgeError
from genforge.models.audio.adapt import SpeakerAdaptation, check_speaker_names
from genforge.models.audio.conditioning import effective_speakers, sample_condition, training_condition
from genforge.models.audio.nets import DiffWaveNet
from genforge.models.base import Batch, GenerativeModel, ModelOutput, OptimizerSpec, Phase
from genforge.models.diffusion.model import multiplicity_step
from genforge.models.diffusion.samplers import SAMPLERS, guide, sample_loop
from genforge.models.diffusion.schedule import PREDICTIONS, SCHEDULES, make_schedule, q_sample
from genforge.models.registry import MODELS


@dataclass
class DiffWaveConfig:
    sample_rate: int = 8000
    length: int = 8000
    num_classes: int = 0  # > 0: conditioned on the digit, with classifier-free guidance
    num_speakers: int = 0  # the data's speakers; used when speaker_conditional
    speaker_names: list[str] = field(default_factory=list)  # the speakers' names by id (models/audio/adapt.py)
    speaker_conditional: bool = True
    # a CPU recipe (the paper's SC09 model: C = 256, 36 layers): 12 layers of 64 channels on
    # frames of 16 samples, dilations 1..128 then 1..8 frames, so the receptive field
    # (1 + 2 * 270 frames = 8,656 samples) spans a whole 1 s clip at 8 kHz
    channels: int = 64  # residual channels C
    layers: int = 12
    cycle: int = 8  # dilations 1, 2, ..., 2**(cycle-1) frames, repeated
    kernel: int = 3
    fold: int = 16  # samples per frame (nets.fold)
    timesteps: int = 1000
    schedule: str = "linear"  # linear | cosine
    prediction: str = "eps"  # eps | v
    cfg_dropout: float = 0.1  # probability of training a clip without its conditions
    sample_steps: int = 8  # default DDIM steps
    guidance_scale: float = 2.0  # default classifier-free guidance (1 = plain conditional)
    eta: float = 0.0  # default DDIM stochasticity
    clip_x0: bool = True  # clip predicted x0 to [-1, 1] while sampling
    lr: float = 2e-4
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        SCHEDULES.get(self.schedule)
        PREDICTIONS.get(self.prediction)
        check_speaker_names("diffwave", self.speaker_names, self.num_speakers)
        checks = [
            (self.sample_rate >= 1 and self.length >= 1, "sample_rate and length must be >= 1"),
            (self.num_classes >= 0 and self.num_speakers >= 0, "num_classes and num_speakers must be >= 0"),
            (
                self.channels >= 2 and self.layers >= 1 and self.cycle >= 1,
                "channels >= 2, layers and cycle >= 1",
            ),
            (self.kernel >= 1 and self.kernel % 2 == 1, "kernel must be odd"),
            (self.fold >= 1, "fold must be >= 1"),
            (self.timesteps >= 2, "timesteps must be >= 2"),
            (1 <= self.sample_steps <= self.timesteps, "sample_steps must be in 1..timesteps"),
            (0.0 <= self.cfg_dropout < 1.0, "cfg_dropout must be in [0, 1)"),
            (self.eta >= 0.0 and self.lr > 0, "eta must be >= 0 and lr > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"diffwave config: {message}")


@MODELS.register("diffwave")
class DiffWave(SpeakerAdaptation, GenerativeModel):
    family: ClassVar[str] = "diffwave"
    modality: ClassVar[str] = "audio"
    config_class: ClassVar[type] = DiffWaveConfig
    ema_modules: ClassVar[tuple[str, ...]] = ("denoiser",)
    # noise levels per clip per step (DPDM, set by train/privacy.py), as the image DDPM's
    noise_multiplicity: int = 1

    def __init__(self, config: DiffWaveConfig):
        super().__init__(config)
        c = config
        self.conditional = c.num_classes > 0
        self._speakers = effective_speakers(c.num_speakers, c.speaker_conditional)
        self.speaker_conditional = self._speakers > 0
        self.denoiser = DiffWaveNet(c.length, c.channels, c.layers, c.cycle, c.kernel, c.fold,
                                    c.num_classes, self._speakers)  # fmt: skip
        self.schedule = make_schedule(c.schedule, c.timesteps)
        self.prediction = PREDICTIONS.get(c.prediction)
        ab = torch.as_tensor(self.schedule.alpha_bar, dtype=torch.float32)
        self.register_buffer("alpha_bar", ab, persistent=False)  # derived from the config

    @classmethod
    def default_config(cls, sample_rate: int, length: int, num_classes: int = 0, num_speakers: int = 0,
                       **overrides: Any) -> DiffWaveConfig:  # fmt: skip
        data = {
            "sample_rate": sample_rate,
            "length": length,
            "num_classes": num_classes,
            "num_speakers": num_speakers,
        }
        return from_dict(cls.config_class, {**data, **overrides}, where="diffwave config")

    def adaptation_layers(self) -> tuple[str, ...]:
        # each layer's projection of the condition embedding, and the output convolutions
        return ("denoiser.layers.*.cond.*", "denoiser.skip_out.*", "denoiser.out.*")

    @property
    def guided(self) -> bool:
        return self.conditional or self.speaker_conditional

    def phases(self) -> list[Phase]:
        c = self.config
        opt = OptimizerSpec(name="adamw", lr=c.lr, betas=(0.9, 0.999), weight_decay=c.weight_decay)
        return [Phase(name="main", modules=["denoiser"], optimizer=opt)]

    def _nulls(self, n: int, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The "no condition" ids of each condition the model uses."""
        lab = (
            torch.full((n,), self.config.num_classes, dtype=torch.long, device=device)
            if self.conditional
            else None
        )
        spk = (
            torch.full((n,), self._speakers, dtype=torch.long, device=device)
            if self.speaker_conditional
            else None
        )
        return lab, spk

    def training_step(self, phase: str, batch: Batch, step: int) -> ModelOutput:
        return multiplicity_step(self._denoising_loss, batch, self.noise_multiplicity)

    def _denoising_loss(self, batch: Batch) -> torch.Tensor:
        x0 = batch.data
        n = x0.shape[0]
        lab, spk = training_condition(
            "diffwave", self.config.num_classes, self._speakers, batch.labels, batch.speakers
        )
        if self.guided:  # a clip dropped to the null conditions trains the unconditional model
            drop = torch.rand(n, device=x0.device) < self.config.cfg_dropout
            null_lab, null_spk = self._nulls(n, x0.device)
            lab = torch.where(drop, null_lab, lab) if lab is not None else None
            spk = torch.where(drop, null_spk, spk) if spk is not None else None
        # the global torch RNG: the trainer saves and restores its state for exact resume
        t = torch.randint(0, self.config.timesteps, (n,), device=x0.device)
        eps = torch.randn(x0.shape, dtype=x0.dtype, device=x0.device)
        ab = self.alpha_bar[t].view(n, 1)
        out = self.denoiser(q_sample(x0, eps, ab), t, lab, spk)
        return F.mse_loss(out, self.prediction.target(x0, eps, ab))

    def predict(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None,
                speakers: torch.Tensor | None, guidance: float) -> torch.Tensor:  # fmt: skip
        """The network's output at (x, t), guided towards the conditions with scale `guidance`
        (the conditional and unconditional passes share one batched forward)."""
        if not self.guided or guidance == 1.0:
            return self.denoiser(x, t, labels, speakers)
        null_lab, null_spk = self._nulls(x.shape[0], x.device)

        def both(ids: torch.Tensor | None, null: torch.Tensor | None) -> torch.Tensor | None:
            return torch.cat([ids, null]) if ids is not None else None

        out = self.denoiser(
            torch.cat([x, x]), torch.cat([t, t]), both(labels, null_lab), both(speakers, null_spk)
        )
        cond, uncond = out.chunk(2)
        return guide(cond, uncond, guidance)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, labels: torch.Tensor | None = None,
               speakers: torch.Tensor | None = None, steps: int | None = None, sampler: str = "ddim",
               guidance: float | None = None, eta: float | None = None, **options: Any) -> torch.Tensor:  # fmt: skip
        """n clips (n, length) in [-1, 1]. `steps` defaults to the config's sample_steps for DDIM
        and all timesteps for DDPM; `guidance` and `eta` default to the config's."""
        if options:
            raise GenforgeError(f"diffwave sample: unknown option(s) {', '.join(sorted(options))}")
        c = self.config
        spec = SAMPLERS.get(sampler)
        if guidance is not None and not self.guided:
            raise GenforgeError(
                "guidance needs a conditional diffwave model (num_classes or num_speakers > 0)"
            )
        device = self.alpha_bar.device
        lab, spk = sample_condition("diffwave", n, c.num_classes, self._speakers, labels, speakers, device)
        scale = c.guidance_scale if guidance is None else float(guidance)
        eta = c.eta if eta is None else float(eta)
        steps = (c.timesteps if spec.full_chain else c.sample_steps) if steps is None else int(steps)
        shape = (n, c.length)
        x = torch.randn(shape, generator=generator).to(device)

        def eps_fn(x_t: torch.Tensor, t: int) -> torch.Tensor:
            tt = torch.full((n,), t, dtype=torch.long, device=device)
            ab = float(self.schedule.alpha_bar[t])
            return self.prediction.to_eps(x_t, self.predict(x_t, tt, lab, spk, scale), ab)

        def noise_fn() -> torch.Tensor:
            return torch.randn(shape, generator=generator).to(device)

        x = sample_loop(eps_fn, x, self.schedule, steps, sampler, eta, noise_fn, c.clip_x0)
        return x.clamp(-1.0, 1.0)
