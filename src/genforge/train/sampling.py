"""`genforge sample`: what a trained run generates, written by its modality's sample writer.

`SAMPLE_WRITERS` maps a modality to a `SampleWriter`: the `genforge sample` options it takes and
the function that generates and writes. The command reads the run's modality from `model.json`
and refuses options the run's writer does not take (e.g. --prompt on an image run), so each
modality keeps its own options without branches on its name. Images: an .npz or a folder of
PNGs (this module); text: train/sample_text.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.atomic import atomic_dir, atomic_path
from genforge.core.errors import GenforgeError
from genforge.core.modality import DEFAULT as DEFAULT_MODALITY
from genforge.core.modality import lookup, modality_registry
from genforge.train.samples import encode_png

# options every writer takes (the run directory aside)
COMMON_OPTIONS = frozenset({"n", "out", "seed", "device", "overwrite"})


@dataclass(frozen=True)
class SampleWriter:
    options: frozenset[str]  # option names beyond COMMON_OPTIONS, as `sample_run` receives them
    # (run_dir, options given: name -> value) -> the message to print
    write: Callable[[Path, dict[str, Any]], str]


# modality -> SampleWriter
SAMPLE_WRITERS = modality_registry("sample writer")


def run_modality(run_dir: str | Path) -> str:
    """The modality recorded in RUN_DIR/model.json (image for runs from before modalities)."""
    from genforge.models.pipeline import MODEL_JSON

    path = Path(run_dir) / MODEL_JSON
    if not path.is_file():
        raise GenforgeError(f"{run_dir}: no {MODEL_JSON}; is this a finished `genforge train` run directory?")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise GenforgeError(f"{path}: cannot read the model description ({exc})") from None
    return str(info.get("modality", DEFAULT_MODALITY))


def _flag(name: str) -> str:
    return "--" + name.rstrip("_").replace("_", "-") if len(name) > 1 else "-" + name


def sample_run(run_dir: str | Path, options: dict[str, Any]) -> str:
    """Generate from the run with its modality's writer; `options` holds every option of the
    command, None (or False for switches) where not given. Returns the message to print."""
    modality = run_modality(run_dir)
    writer = lookup(SAMPLE_WRITERS, modality, "genforge.train.sample_writers")
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    foreign = sorted(set(given) - writer.options - COMMON_OPTIONS)
    if foreign:
        takes = sorted(writer.options | COMMON_OPTIONS)
        raise GenforgeError(
            f"{run_dir} is a {modality} run: {', '.join(_flag(k) for k in foreign)} "
            f"{'does' if len(foreign) == 1 else 'do'} not apply; it takes {', '.join(_flag(k) for k in takes)}"
        )
    return writer.write(Path(run_dir), given)


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


def _write_image_samples(run_dir: Path, opts: dict[str, Any]) -> str:
    if "out" not in opts:
        raise GenforgeError("--out is required for an image run: FILE.npz or a directory for PNG files")
    n = int(opts.get("n", 64))
    images, labels = generate(
        run_dir,
        n,
        seed=int(opts.get("seed", 0)),
        class_label=opts.get("class_"),
        steps=opts.get("steps"),
        interpolate=bool(opts.get("interpolate", False)),
        seed_b=opts.get("seed_b"),
        device=opts.get("device", "cpu"),
    )
    write_images(opts["out"], images, labels, overwrite=bool(opts.get("overwrite", False)))
    return f"wrote {len(images)} images to {opts['out']}"


SAMPLE_WRITERS.register(
    "image", SampleWriter(frozenset({"class_", "steps", "interpolate", "seed_b"}), _write_image_samples)
)
