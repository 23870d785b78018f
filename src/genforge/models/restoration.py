"""Restoration models (task "restore"): `RestorationModel`, the base of the families that learn to
undo a corruption (`dae`, `denoiser`); `restore_path`, which runs a trained image one over image
files or arrays; `RESTORERS`, `genforge restore` per modality.

`restore_path`: input and output are the same kind: one image file -> one PNG, a folder of images
-> a folder of PNGs with the same stems, an .npz with an `images` array (uint8 (N,H,W,C) or
(N,H,W)) -> an .npz with `images` (and `corrupted` when a demo corruption was applied). Every
output is written atomically. Images must already have the model's size; grey/RGB are converted
to its channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from genforge.core.atomic import atomic_dir, atomic_file, atomic_path
from genforge.core.config import from_dict
from genforge.core.errors import DataError, GenforgeError
from genforge.core.modality import lookup, modality_registry
from genforge.models.base import Batch, GenerativeModel, LRSchedule, ModelOutput, OptimizerSpec, Phase
from genforge.models.corruption import CorruptionConfig, corrupt
from genforge.models.pipeline import from_uint8, load_pipeline, to_uint8

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class RestorationModel(GenerativeModel):
    """One network, `net`, trained to undo a corruption made on the fly from clean training data.

    A family gives its corruption (`corrupt`), its loss (`restoration_loss`), what `restore`
    accepts (`restore_input`) and, when its batches need it, the clean training data of a batch
    (`clean_batch`); the step, `restore` and the progress view are shared. Its config has `lr`
    and `betas`.

    A restoration model does not generate: `restore(x)` maps corrupted data to clean (deploy and
    `genforge restore` call that). `sample` is only the trainer's progress view: while training,
    the model keeps its latest clean batch (not saved), and `sample(n)` returns pairs (corrupted,
    restored) of it, corrupted with the given generator. A loaded model has no such batch, and
    `sample` raises a GenforgeError that says to use `restore` instead: a pipeline or service
    asking it for new data fails clearly rather than returning restorations that look like samples.
    """

    task = "restore"
    ema_modules = ("net",)
    preview_size: ClassVar[int] = 32  # clean training items kept for the progress view
    restores: ClassVar[str] = "images"  # what it restores, for `sample`'s refusal
    restore_usage: ClassVar[str] = "INPUT --out OUTPUT"  # `genforge restore RUN_DIR` arguments, likewise

    net: nn.Module

    def __init__(self, config: Any):
        super().__init__(config)
        self._preview: torch.Tensor | None = None

    def compile_regions(self) -> list[nn.Module]:
        # the training step calls `net`, never the model's own forward (the default region): a
        # family names the layers of its net worth compiling (the denoiser's), none by default
        return []

    def phases(self) -> list[Phase]:
        spec = OptimizerSpec("adam", self.config.lr, self.config.betas)
        return [Phase("main", ["net"], spec, schedule=self.lr_schedule())]

    def lr_schedule(self) -> LRSchedule:
        """The learning rate over the run (constant unless the family's config says otherwise)."""
        return LRSchedule()

    def clean_batch(self, batch: Batch) -> torch.Tensor:
        return batch.data

    def corrupt(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Corrupted versions of `clean`, drawn from `generator` (None: the global RNG)."""
        raise NotImplementedError

    def restoration_loss(self, clean: torch.Tensor, estimate: torch.Tensor) -> ModelOutput:
        raise NotImplementedError

    def restore_input(self, x: torch.Tensor) -> torch.Tensor:
        """`x` as the network takes it, or a GenforgeError naming the shape it should have."""
        raise NotImplementedError

    def training_step(self, phase: str, batch: Batch, step: int) -> ModelOutput:
        clean = self.clean_batch(batch)
        self._preview = clean[: self.preview_size].detach()
        noisy = self.corrupt(clean)  # global RNG: saved by the trainer for resume
        return self.restoration_loss(clean, self.net(noisy))

    @torch.no_grad()
    def restore(self, x: torch.Tensor) -> torch.Tensor:
        """Corrupted float data in [-1, 1] -> restored, same shape and range."""
        device = next(self.parameters()).device
        return self.net(self.restore_input(x).to(device)).clamp(-1.0, 1.0)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """Training progress view: n items alternating corrupted / restored (see the class doc)."""
        if self._preview is None:
            raise GenforgeError(
                f"{self.family} is a restoration model: it does not generate new {self.restores}; use "
                f"`genforge restore RUN_DIR {self.restore_usage}` (or model.restore({self.restores}))"
            )
        pairs = (n + 1) // 2
        clean = self._preview[torch.arange(pairs) % len(self._preview)]
        noisy = self.corrupt(clean, generator).clamp(-1, 1)  # as a saved file of it would hold
        return torch.stack([noisy, self.restore(noisy)], 1).flatten(0, 1)[:n]


@dataclass
class Restored:
    kind: str  # "image" | "folder" | "npz"
    out: Path
    restored: np.ndarray  # uint8 (N, H, W, C)
    corrupted: np.ndarray  # uint8 (N, H, W, C): the model's input (the original when no corruption)
    names: list[str]


def _read_image(path: Path, channels: int, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            arr = np.array(im, dtype=np.uint8)  # a writable copy: torch refuses read-only buffers
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"{path}: cannot read as an image ({exc})") from None
    if arr.shape[:2] != (size, size):
        raise DataError(
            f"{path}: image is {arr.shape[1]}x{arr.shape[0]}, the model restores {size}x{size} images"
        )
    return arr.reshape(size, size, channels)


def _read_npz(path: Path, channels: int, size: int) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as data:
            if "images" not in data:
                raise DataError(f"{path}: no `images` array (found: {', '.join(data.files) or 'none'})")
            arr = data["images"]
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read as .npz ({exc})") from None
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != (size, size, channels):
        raise DataError(
            f"{path}: `images` must be uint8 (N, {size}, {size}, {channels}), got {arr.dtype} {tuple(arr.shape)}"
        )
    return arr


def _save_png(arr: np.ndarray, target: Path) -> None:
    from PIL import Image

    with atomic_file(target) as fh:
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(fh, format="PNG")


def restore_path(
    run_dir: str | Path,
    input: str | Path,
    out: str | Path,
    corruption: CorruptionConfig | None = None,
    *,
    seed: int = 0,
    batch_size: int = 64,
    overwrite: bool = False,
    device: str = "cpu",
) -> Restored:
    """Restore `input` (image file, folder of images or .npz) with the model in `run_dir` into `out`.

    `corruption` (with `seed`) is applied to the inputs first, for demonstrations on clean data.
    """
    pipe = load_pipeline(run_dir, device=device)
    model = pipe.model
    pipe.require_restoration()
    channels, size = model.config.channels, model.config.image_size
    src, out = Path(input), Path(out)
    if not src.exists():
        raise DataError(f"{src}: no such file or folder")
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{src}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        kind, names = "folder", [p.stem for p in files]
        images = np.stack([_read_image(p, channels, size) for p in files])
    elif src.suffix.lower() == ".npz":
        kind, images = "npz", _read_npz(src, channels, size)
        names = [str(i) for i in range(len(images))]
    elif src.suffix.lower() in IMAGE_SUFFIXES:
        kind, names = "image", [src.stem]
        images = _read_image(src, channels, size)[None]
    else:
        raise DataError(
            f"{src}: expected an image file ({', '.join(IMAGE_SUFFIXES)}), a folder of them or an .npz"
        )

    corrupted = images
    if corruption is not None:
        # quantised like a real corrupted image, so the saved `corrupted` is exactly the model's input
        corrupted = to_uint8(corrupt(from_uint8(images), corruption, torch.Generator().manual_seed(int(seed))))
    restored = pipe.restore(corrupted, batch_size)

    if kind == "npz":
        arrays = {"images": restored, **({"corrupted": corrupted} if corruption is not None else {})}
        with atomic_path(out) as tmp:
            np.savez_compressed(tmp, **arrays)
    elif kind == "folder":
        with atomic_dir(out, overwrite=overwrite) as tmp_dir:
            for name, arr in zip(names, restored, strict=True):
                _save_png(arr, tmp_dir / f"{name}.png")
    else:
        _save_png(restored[0], out)
    return Restored(kind=kind, out=out, restored=restored, corrupted=corrupted, names=names)


# modality -> `genforge restore` for runs of that modality: (run_dir, input, out, corrupt kinds or
# None, *, seed, snr, overwrite, device, atten_limit) -> the message to print
RESTORERS = modality_registry("restore command")


def restorer_for(modality: str):
    return lookup(RESTORERS, modality, "genforge.models.zoo")


@RESTORERS.register("image")
def _restore_images(run_dir: str | Path, input: str | Path, out: str | Path, corrupt_kinds: list[str] | None, *,
                    seed: int = 0, snr: float | None = None, overwrite: bool = False, device: str = "cpu",
                    atten_limit: str | None = None) -> str:
    if snr is not None:
        raise GenforgeError("--snr applies to audio runs; image corruptions are set by --corrupt kinds")
    if atten_limit is not None:
        raise GenforgeError("--atten-limit applies to speech enhancement (denoiser) runs, not image runs")
    corruption = from_dict(CorruptionConfig, {"kinds": corrupt_kinds}, where="--corrupt") if corrupt_kinds else None
    restore_path(run_dir, input, out, corruption, seed=seed, overwrite=overwrite, device=device)
    return f"restored {input} -> {out}"
