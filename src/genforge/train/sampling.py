"""`genforge sample`: images from a trained run into an .npz or a folder of PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genforge.core.atomic import atomic_dir, atomic_path
from genforge.core.errors import GenforgeError
from genforge.train.samples import encode_png


def generate(
    run_dir: str | Path,
    n: int,
    *,
    seed: int = 0,
    class_label: int | None = None,
    steps: int | None = None,
    interpolate: bool = False,
    seed_b: int | None = None,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray | None]:
    """n images uint8 (n,H,W,C) and labels (None when unconditional); `interpolate` walks seed -> seed_b."""
    import torch

    from genforge.models.pipeline import load_pipeline, to_uint8

    if n < 1:
        raise GenforgeError(f"-n must be >= 1, got {n}")
    pipe = load_pipeline(run_dir, device=device)
    options = {"steps": steps} if steps is not None else {}
    if not interpolate:
        return pipe.generate(n, seed=seed, class_label=class_label, **options)
    walk = getattr(pipe.model, "interpolate", None)
    if not callable(walk):
        raise GenforgeError(
            f"model {pipe.name!r} has no latent space to interpolate in (no interpolate method)"
        )
    labels = None
    if pipe.conditional:
        if class_label is None:
            raise GenforgeError(f"model {pipe.name!r} is class-conditional: give --class for --interpolate")
        labels = torch.full((n,), int(class_label), dtype=torch.long, device=device)
    elif class_label is not None:
        raise GenforgeError(f"model {pipe.name!r} is not class-conditional; omit --class")
    with torch.no_grad():
        images = walk(n, seed, seed + 1 if seed_b is None else seed_b, labels=labels, **options)
    return to_uint8(images), (labels.cpu().numpy() if labels is not None else None)


def write_images(
    out: str | Path, images: np.ndarray, labels: np.ndarray | None, overwrite: bool = False
) -> None:
    """An .npz (`images`, `labels` when given) or a directory of NNNNN.png files, written atomically."""
    out = Path(out)
    if out.suffix == ".npz":
        if out.exists() and not overwrite:
            raise GenforgeError(f"{out} already exists; pass --overwrite")
        arrays = {"images": images} if labels is None else {"images": images, "labels": labels}
        with atomic_path(out) as tmp:
            np.savez(tmp, **arrays)
        return
    if out.suffix:
        raise GenforgeError(f"--out {out}: expected FILE.npz or a directory name without an extension")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for i, image in enumerate(images):
            name = f"{i:05d}.png" if labels is None else f"{i:05d}_class{int(labels[i])}.png"
            (tmp / name).write_bytes(encode_png(image))
