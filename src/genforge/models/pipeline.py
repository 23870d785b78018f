"""Inference: a trained model loaded from its run directory, producing uint8 images.

A run directory holds `model.json` (model name, its config, dataset description, step,
whether the weights are the EMA ones) and `model.safetensors` (the weights). Loading builds
the model from its saved config alone and never unpickles anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from genforge.core.atomic import atomic_files, write_json
from genforge.core.config import to_dict
from genforge.core.errors import GenforgeError
from genforge.core.modality import lookup, modality_registry
from genforge.models.base import GenerativeModel
from genforge.models.registry import MODELS, build_model

MODEL_JSON = "model.json"
MODEL_WEIGHTS = "model.safetensors"


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N,C,H,W) in [-1,1] -> uint8 (N,H,W,C)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """uint8 (N,H,W,C) -> float (N,C,H,W) in [-1,1]."""
    t = torch.from_numpy(np.array(images, dtype=np.uint8)).permute(0, 3, 1, 2).float()  # a copy: memmaps are read-only
    return t / 127.5 - 1.0


def interleaved_quotas(weights: np.ndarray, n: int) -> np.ndarray:
    """n class indices, class k appearing round(n * weights[k]) times (largest remainder, ties to
    the lower index), spread evenly: the j-th of class k's q_k labels sits at (j + 0.5) / q_k.
    Uniform weights with n a multiple of the class count give 0, 1, ..., K-1, 0, 1, ..."""
    exact = np.asarray(weights, dtype=np.float64) * n
    quotas = np.floor(exact).astype(np.int64)
    short = n - int(quotas.sum())
    if short:
        quotas[np.argsort(-(exact - quotas), kind="stable")[:short]] += 1
    classes = np.repeat(np.arange(len(quotas)), quotas)
    position = np.concatenate([(np.arange(q) + 0.5) / q for q in quotas if q]) if n else np.zeros(0)
    return classes[np.lexsort((classes, position))].astype(np.int64)


def class_mix_labels(class_counts: list[int] | None, num_classes: int, n: int) -> np.ndarray:
    """n labels for scoring a conditional model: in the proportions of the classes it trained on
    (`class_counts`; uniform when absent), interleaved.

    A conditional model samples p(x | y); its samples follow the data only when y does. A fixed
    quota per class (largest remainder, no random draw) keeps the class mix exact at every n. The
    class mix alone moves FID: MNIST training images redrawn in their own class mix score 0.37
    against val, in a uniform mix 0.83 (bench/results/quality.md)."""
    counts = np.asarray(class_counts or [], dtype=np.float64)
    if counts.shape != (num_classes,) or counts.sum() <= 0:
        counts = np.ones(num_classes)
    return interleaved_quotas(counts / counts.sum(), n)


def save_model(model: GenerativeModel, name: str, directory: str | Path, info: dict[str, Any]) -> None:
    """Write model.safetensors + model.json into `directory`; both replace the previous pair only
    once both are written (a full disk leaves the previous model as it was)."""
    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_files(directory, MODEL_WEIGHTS) as stage:
        save_file(state, str(stage / MODEL_WEIGHTS))
        write_json(
            stage / MODEL_JSON,
            {
                "model": name,
                "family": model.family,
                "modality": model.modality,
                "config": to_dict(model.config),
                **info,
            },
        )


@dataclass
class RunPipeline:
    """What every modality's pipeline has: the loaded model, its model.json and run directory."""

    model: GenerativeModel
    info: dict[str, Any]  # the contents of model.json
    path: Path

    @property
    def name(self) -> str:
        return self.info["model"]

    @property
    def modality(self) -> str:
        return self.model.modality

    def require_restoration(self) -> None:
        """A GenforgeError unless the run's model restores its inputs (task "restore")."""
        if getattr(self.model, "task", "generate") != "restore":
            raise GenforgeError(
                f"{self.path}: model {self.name!r} generates {self.modality} data; restoring needs a "
                "restoration model (images: e.g. dae; audio: denoiser)"
            )


@dataclass
class Pipeline(RunPipeline):
    """Images: `generate`."""

    @property
    def conditional(self) -> bool:
        return bool(getattr(self.model, "conditional", False))

    @property
    def num_classes(self) -> int:
        return int(getattr(self.model.config, "num_classes", 0) or 0)

    def class_labels(self, n: int) -> np.ndarray:
        """n labels in the training data's class mix (`class_mix_labels`), as evaluation samples."""
        return class_mix_labels(self.info.get("dataset", {}).get("class_counts"), self.num_classes, n)

    @torch.no_grad()
    def generate(
        self, n: int, *, seed: int = 0, class_label: int | None = None, labels: np.ndarray | None = None, **options: Any
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """n images as uint8 (n,H,W,C) and their labels (or None when unconditional)."""
        gen = torch.Generator().manual_seed(int(seed))
        lab = self.resolve_labels(n, class_label, labels)
        self.model.eval()
        images = self.model.sample(n, generator=gen, labels=lab, **options)
        return to_uint8(images), (lab.numpy() if lab is not None else None)

    @torch.no_grad()
    def restore(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """A restoration run (task "restore", e.g. `dae`): uint8 (N,H,W,C) images of the run's size
        and channels -> the restored images, uint8, same shape."""
        self.require_restoration()
        x = from_uint8(np.asarray(images))
        self.model.eval()
        return np.concatenate([to_uint8(self.model.restore(chunk)) for chunk in x.split(batch_size)])

    def resolve_labels(self, n: int, class_label: int | None, labels: np.ndarray | None) -> torch.Tensor | None:
        """The class labels of n samples: `labels`, else n of `class_label`, else the training
        data's class mix; None for an unconditional model (which refuses a class)."""
        lab = None
        if self.conditional:
            if labels is not None:
                lab = torch.as_tensor(labels, dtype=torch.long)
            elif class_label is not None:
                if not 0 <= class_label < self.num_classes:
                    raise GenforgeError(f"class {class_label} out of range 0..{self.num_classes - 1}")
                lab = torch.full((n,), int(class_label), dtype=torch.long)
            else:
                lab = torch.from_numpy(self.class_labels(n))
        elif class_label is not None:
            raise GenforgeError(f"model {self.name!r} is not class-conditional; omit the class")
        return lab


def load_pipeline(run_dir: str | Path, device: str = "cpu") -> Pipeline:
    run_dir = Path(run_dir)
    mjson = run_dir / MODEL_JSON
    if not mjson.is_file():
        raise GenforgeError(f"{run_dir}: no {MODEL_JSON}; is this a finished `genforge train` run directory?")
    info = json.loads(mjson.read_text())
    if info.get("model") not in MODELS:
        # importing the families registers them
        import genforge.models.zoo  # noqa: F401
    model = build_model(info["model"], info.get("config"))
    try:
        state = load_file(run_dir / MODEL_WEIGHTS, device=device)
    except Exception as exc:
        raise GenforgeError(f"{run_dir / MODEL_WEIGHTS}: cannot read weights ({exc})") from None
    model.load_state_dict(state)
    model.to(device).eval()
    cls = lookup(PIPELINES, model.modality, "genforge.models.zoo")
    return cls(model=model, info=info, path=run_dir)


# modality -> inference pipeline class, constructed as cls(model=, info=, path=); every
# pipeline has `name`, `modality`, `conditional`, `num_classes`, `info` and `path`
PIPELINES = modality_registry("inference pipeline")
PIPELINES.register("image", Pipeline)
