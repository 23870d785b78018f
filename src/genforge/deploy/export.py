"""Export a trained model's network to ONNX or TorchScript.

What gets exported is a model's `export_spec()` when it has one, else the entry of `EXPORT_SPECS`
for its family: `(module, example_inputs, input_names, output_names, dynamic_axes)`, with the
batch axis dynamic. Generators map latents (+ labels) to images in [-1, 1], VAEs export their
decoder the same way, restoration models map corrupted images to clean ones, and diffusion models
export the denoiser (x_t, t[, labels]) -> eps|v plus the schedule table (`OUT.schedule.npz`) that
`genforge.deploy.onnx_sampler` needs. `OUT.json` describes inputs, outputs and the model, with the
fields of its modality (`EXPORT_FIELDS`: images their shape; audio, registered with the audio
families' specs in `deploy.export_audio`, its sample rate and clip length).
The files of one export replace the previous ones together, once all are written: a full disk
leaves the previous export as it was.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genforge.core.atomic import atomic_files, atomic_path, write_json
from genforge.core.config import to_dict
from genforge.core.errors import GenforgeError
from genforge.core.modality import lookup, modality_registry
from genforge.core.registry import Registry
from genforge.models.base import GenerativeModel
from genforge.models.pipeline import load_pipeline

ExportSpec = tuple[nn.Module, tuple[torch.Tensor, ...], list[str], list[str], dict[str, dict[int, str]]]
OPSET = 17


class TracedCall(nn.Module):
    """A module around a function of the model, so that tracing records just that function."""

    def __init__(self, model: GenerativeModel, fn: Callable[..., torch.Tensor]):
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.fn(self.model, *inputs)


def _latent_spec(model: GenerativeModel, fn: Callable[..., torch.Tensor]) -> ExportSpec:
    z = torch.zeros_like(model.noise(2))  # the latent's width, noise maps included
    inputs: tuple[torch.Tensor, ...] = (z,)
    names = ["z"]
    if model.conditional:
        inputs += (torch.zeros(2, dtype=torch.long),)
        names.append("labels")
    return TracedCall(model, fn), inputs, names, ["images"], {name: {0: "batch"} for name in [*names, "images"]}


def _restore_spec(model: GenerativeModel, fn: Callable[..., torch.Tensor]) -> ExportSpec:
    c = model.config
    x = torch.zeros(2, c.channels, c.image_size, c.image_size)
    return (
        TracedCall(model, fn),
        (x,),
        ["corrupted"],
        ["images"],
        {"corrupted": {0: "batch"}, "images": {0: "batch"}},
    )


EXPORT_SPECS: Registry[Callable[[GenerativeModel], ExportSpec]] = Registry("export spec")
EXPORT_SPECS.register("gan", lambda m: _latent_spec(m, lambda m, *a: m.generator(*a)))
EXPORT_SPECS.register("vae", lambda m: _latent_spec(m, lambda m, *a: m.likelihood.mean(m.decode(*a))))
EXPORT_SPECS.register("mmd", EXPORT_SPECS.get("gan"))  # a generator of (z, labels), as a GAN's
EXPORT_SPECS.register("dae", lambda m: _restore_spec(m, lambda m, x: m.net(x).clamp(-1.0, 1.0)))


def export_spec(model: GenerativeModel, family: str) -> ExportSpec:
    if callable(getattr(model, "export_spec", None)):
        return model.export_spec()
    if family not in EXPORT_SPECS:
        raise GenforgeError(
            f"model family {family!r} cannot be exported yet (known: {', '.join(EXPORT_SPECS.names())}); "
            "give the model an export_spec() method"
        )
    return EXPORT_SPECS.get(family)(model)


def _onnx(spec: ExportSpec, path: Path) -> None:
    module, inputs, in_names, out_names, axes = spec
    with warnings.catch_warnings():
        # the TorchScript-based exporter is deprecated in favour of one that needs onnxscript; it is
        # still the one that works with what genforge installs
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module,
                inputs,
                str(path),
                dynamo=False,
                input_names=in_names,
                output_names=out_names,
                dynamic_axes=axes,
                opset_version=OPSET,
                do_constant_folding=True,
            )
        except torch.onnx.errors.OnnxExporterError as exc:  # an operator ONNX has no form for
            # the exporter's message goes on with a dump of the traced graph: its first line says it
            reason = str(exc).splitlines()[0].split(" [Caused by")[0].strip()
            raise GenforgeError(
                f"this network cannot be written as ONNX ({reason}); --format torchscript may still work"
            ) from exc


def _torchscript(spec: ExportSpec, path: Path) -> None:
    module, inputs = spec[0], spec[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about constant shapes in argument checks
        traced = torch.jit.trace(module, inputs, check_trace=False)
    traced.save(str(path))


FORMATS: Registry[Callable[[ExportSpec, Path], None]] = Registry("export format")
FORMATS.register("onnx", _onnx)
FORMATS.register("torchscript", _torchscript)


def diffusion_extra(model: GenerativeModel, out: Path) -> dict[str, Any]:
    """The schedule table and sampler settings a numpy sampler needs beside the denoiser."""
    c = model.config
    table = out.with_name(out.name + ".schedule.npz")
    with atomic_path(table) as tmp:
        np.savez(
            tmp, alpha_bar=np.asarray(model.schedule.alpha_bar, dtype=np.float64), betas=model.schedule.betas
        )
    keys = ("timesteps", "schedule", "prediction", "sample_steps", "guidance_scale", "eta", "clip_x0")
    return {"schedule_file": table.name, "null_label": c.num_classes, **{k: getattr(c, k) for k in keys}}


EXPORT_EXTRAS: Registry[Callable[[GenerativeModel, Path], dict[str, Any]]] = Registry("export extra")
EXPORT_EXTRAS.register("diffusion", diffusion_extra)


# modality -> the fields of OUT.json that describe what the network makes (from the pipeline)
EXPORT_FIELDS = modality_registry("export description")


def _image_fields(pipe: Any) -> dict[str, Any]:
    c = pipe.model.config
    return {"image_shape": [c.image_size, c.image_size, c.channels]}


EXPORT_FIELDS.register("image", _image_fields)


def sidecar_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".json")


def export_run(run_dir: str | Path, fmt: str, out: str | Path) -> dict[str, Any]:
    """Export the model of `run_dir` as `fmt` to `out`; returns the description written to OUT.json."""
    writer = FORMATS.get(fmt)
    pipe = load_pipeline(run_dir)
    model = pipe.model.eval()
    # looked up first: importing a modality's module registers its families' export specs
    fields = lookup(EXPORT_FIELDS, model.modality, "genforge.deploy.export_audio")
    family = str(pipe.info.get("family") or model.family)
    spec = export_spec(model, family)
    out = Path(out)
    with torch.no_grad(), atomic_files(out.parent, out.name) as stage:
        staged = stage / out.name  # OUT, OUT.json and any extra file are written here first
        writer(spec, staged)
        reference = spec[0](*spec[1])
        meta = {**_describe(run_dir, fmt, out, pipe, model, family, spec, reference), **fields(pipe)}
        if family in EXPORT_EXTRAS:
            meta[family] = EXPORT_EXTRAS.get(family)(model, staged)
        write_json(sidecar_path(staged), meta)
    return meta


def _describe(run_dir: str | Path, fmt: str, out: Path, pipe: Any, model: GenerativeModel, family: str,
              spec: ExportSpec, reference: torch.Tensor) -> dict[str, Any]:  # fmt: skip
    return {
        "format": fmt,
        "file": out.name,
        "model": pipe.name,
        "family": family,
        "task": str(getattr(model, "task", "generate")),
        "conditional": pipe.conditional,
        "num_classes": pipe.num_classes,
        "inputs": [
            {"name": n, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
            for n, t in zip(spec[2], spec[1], strict=True)
        ],
        "outputs": [{"name": spec[3][0], "shape": list(reference.shape)}],
        "dynamic_axes": spec[4],
        "config": to_dict(model.config),
        "source": str(Path(run_dir).resolve()),
    }
