"""Export of audio runs (`genforge export RUN --format onnx|torchscript`): what each audio family
exports (`deploy.export.EXPORT_SPECS`, by family), the extra OUT.json fields (`EXPORT_EXTRAS`)
and the audio fields of OUT.json (`EXPORT_FIELDS["audio"]`: sample rate, clip length, speakers).
Importing this module registers them; `export_run` imports it for audio runs.

- `wavegan`: the generator, (z[, labels][, speakers]) -> audio (n, T) in [-1, 1].
- `diffwave`: the denoiser, (x_t (n, T), t[, labels][, speakers]) -> eps|v, plus the schedule
  table OUT.schedule.npz as for image diffusion; label `num_classes` and speaker `num_speakers`
  are the null conditions classifier-free guidance samples against. The sampling loop runs
  outside the graph (`models.diffusion.samplers` works on numpy arrays).
- `mel-vae`, `mel-sngan`, `mel-ddpm` (families `spectral-*`): the inner image network on log-mel
  images (n, 1, M, M) in [-1, 1] (generator, VAE decoder or denoiser, exported as the image
  family's), whose class input is the joint class `digit * num_speakers + speaker` (or the digit,
  or the speaker, when only one conditions it). Griffin-Lim, the way back to a waveform, runs
  OUTSIDE the graph: it is an iterative phase reconstruction through the inverse STFT, which the
  torch.onnx exporter cannot write. `mel_images_to_waves(images, meta)` runs it on the exported
  network's output with the representation recorded in OUT.json (`spectral.config`).
- `denoiser` (speech enhancement, task "restore"): the network, noisy (n, T) -> clean (n, T), with
  the batch axis dynamic; the clip length is fixed at the export's (`length`), since the
  network's padding to its strides is computed from the length when traced.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genforge.deploy.export import (
    EXPORT_EXTRAS,
    EXPORT_FIELDS,
    EXPORT_SPECS,
    ExportSpec,
    TracedCall,
    diffusion_extra,
    export_spec,
)
from genforge.models.base import GenerativeModel

Fn = Callable[..., torch.Tensor]


class _Conditioned(nn.Module):
    """`fn(model, *tensors, labels, speakers)` as a module whose inputs are the tensors plus the
    conditions the model uses (a condition it does not use is passed as None)."""

    def __init__(self, model: GenerativeModel, fn: Fn, tensors: int, labels: bool, speakers: bool):
        super().__init__()
        self.model, self.fn = model, fn
        self.tensors, self.labels, self.speakers = tensors, labels, speakers

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        rest = list(inputs[self.tensors :])
        labels = rest.pop(0) if self.labels else None
        speakers = rest.pop(0) if self.speakers else None
        return self.fn(self.model, *inputs[: self.tensors], labels, speakers)


def conditioned_spec(
    model: GenerativeModel, fn: Fn, tensors: dict[str, torch.Tensor], output: str, nulls: bool = False
) -> ExportSpec:
    """An export spec for `fn` on the named example `tensors` plus the model's condition inputs
    (`labels`, `speakers`; with `nulls` the examples are the null ids, which must be valid)."""
    labels, speakers = bool(model.conditional), bool(getattr(model, "speaker_conditional", False))
    batch = len(next(iter(tensors.values())))
    inputs, names = tuple(tensors.values()), list(tensors)
    conditions = (
        ("labels", labels, model.config.num_classes),
        ("speakers", speakers, model.config.num_speakers),
    )
    for name, used, null in conditions:
        if used:
            inputs += (torch.full((batch,), null if nulls else 0, dtype=torch.long),)
            names.append(name)
    module = _Conditioned(model, fn, len(tensors), labels, speakers)
    return module, inputs, names, [output], {name: {0: "batch"} for name in [*names, output]}


def _wavegan(model: Any) -> ExportSpec:
    z = torch.zeros(2, model.config.latent_dim)
    return conditioned_spec(
        model, lambda m, z, lab, spk: m.generator(z, m.condition(lab, spk)), {"z": z}, "audio"
    )


def _diffwave(model: Any) -> ExportSpec:
    x = torch.zeros(2, model.config.length)
    t = torch.zeros(2, dtype=torch.long)
    return conditioned_spec(
        model, lambda m, x, t, lab, spk: m.denoiser(x, t, lab, spk), {"x_t": x, "t": t}, "out", nulls=True
    )


def _denoiser(model: Any) -> ExportSpec:
    x = torch.zeros(2, model.config.length)
    return (
        TracedCall(model, lambda m, x: m.restore(x)),
        (x,),
        ["noisy"],
        ["audio"],
        {"noisy": {0: "batch"}, "audio": {0: "batch"}},
    )


def _spectral(model: Any) -> ExportSpec:
    inner = model.inner_model
    return export_spec(inner, inner.family)


def _diffwave_extra(model: Any, out: Path) -> dict[str, Any]:
    speakers = model.config.num_speakers if model.speaker_conditional else None
    return {**diffusion_extra(model, out), "null_speaker": speakers, "sample_shape": [model.config.length]}


def _spectral_extra(model: Any, out: Path) -> dict[str, Any]:
    from genforge.core.config import to_dict
    from genforge.models.audio.spectral import joint_classes

    inner, rep = model.inner_model, model.representation
    speakers = model.config.num_speakers if model.speaker_conditional else 0
    extra = {
        "inner": model.config.inner,
        "inner_family": inner.family,
        "output": "log-mel images (n, 1, M, M) in [-1, 1]; Griffin-Lim runs outside the graph",
        "labels": "joint class: digit * num_speakers + speaker (the digit or the speaker alone when only "
        "one conditions the model)",
        "joint_classes": joint_classes(model.config.num_classes, speakers),
        "num_speakers": speakers,
        "frames": rep.frames,
        "mel": rep.mel.to_dict(),
        "config": to_dict(model.config),
        "vocoder": "genforge.deploy.export_audio.mel_images_to_waves(images, meta)",
    }
    if inner.family in EXPORT_EXTRAS:  # e.g. the diffusion schedule table of mel-ddpm
        extra[inner.family] = EXPORT_EXTRAS.get(inner.family)(inner, out)
    return extra


def mel_images_to_waves(
    images: np.ndarray, meta: dict[str, Any], seed: int = 0, iterations: int | None = None
) -> np.ndarray:
    """The vocoder the exported graph leaves out: log-mel images (n, 1, M, M) in [-1, 1] from an
    exported `mel-*` network -> waves float32 (n, T), by Griffin-Lim with the representation
    recorded in OUT.json (its random initial phase from `seed`)."""
    from genforge.core.config import from_dict
    from genforge.models.audio.spectral import MelImage, SpectralConfig

    spectral = next((v for k, v in meta.items() if k.startswith("spectral-") and isinstance(v, dict)), None)
    if spectral is None:
        from genforge.core.errors import GenforgeError

        raise GenforgeError(f"{meta.get('file', 'export')}: not an export of a mel-* (spectral) audio model")
    cfg = from_dict(SpectralConfig, spectral["config"], where="spectral config")
    iters = cfg.griffin_lim_iters if iterations is None else int(iterations)
    x = torch.as_tensor(np.asarray(images, np.float32))
    with torch.no_grad():
        waves = MelImage(cfg).to_wave(x, iters, torch.Generator().manual_seed(seed))
    return waves.clamp(-1, 1).numpy().astype(np.float32)


def _audio_fields(pipe: Any) -> dict[str, Any]:
    return {
        "sample_rate": pipe.sample_rate,
        "length": pipe.clip_length,
        "speaker_conditional": pipe.speaker_conditional,
        "num_speakers": pipe.num_speakers,
        "speaker_names": pipe.speaker_names if pipe.speaker_conditional else [],
    }


EXPORT_FIELDS.register("audio", _audio_fields)
EXPORT_SPECS.register("wavegan", _wavegan)
EXPORT_SPECS.register("diffwave", _diffwave)
EXPORT_SPECS.register("denoiser", _denoiser)
EXPORT_EXTRAS.register("diffwave", _diffwave_extra)
for _family in ("spectral-gan", "spectral-vae", "spectral-diffusion"):
    EXPORT_SPECS.register(_family, _spectral)
    EXPORT_EXTRAS.register(_family, _spectral_extra)
